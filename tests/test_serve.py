"""`jrft serve` with generating vectors, against the real server (uvicorn on 127.0.0.1, a free port) through the
official `openai` client and raw HTTP: models listed, every answer equal to the same request served alone (greedy
token for token, and sampled with a seed) whether requests come one by one or from many threads at once (rows
joining and leaving the running batch), streaming, stop strings, client disconnects, vectors added and removed while
serving, the API key, and every bad request answered with a 4xx in OpenAI's error shape.

Tiny random decoders and vectors; fp32 on the CPU, where the batched products differ from the lone ones by a few
ulps (1e-7), far below the margins that would change a greedy token."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
import time
from functools import cache
from pathlib import Path

import httpx
import openai
import pytest
import torch
from serve_vectors import make_vector, mean_per_batch, metric_values
from test_generate import CHATML
from tiny_models import build_tiny_model

from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import Decoding, ModelSpec
from jrft_desktop.core.export.vector import restore
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.tasks.generate import generate_ids
from jrft_desktop.serve.server import Running, ServeSettings, exposure_warning, open_server

pytestmark = pytest.mark.usefixtures("one_thread")
KEY = "test-key"
PROMPTS = ("a gorgeous , witty film", "the plot is a mess", "tell me about the acting", "why ?", "it is good")
# name -> (method, options): two SLaSh vectors at the output, one at the intermediate position (rows mixing sites),
# and a JR-WARP vector, whose prompt token needs a model of its own
VECTORS = {"alpha": ("slash", {"d": 16, "seed": 1, "position": "output"}),
           "beta": ("slash", {"d": 16, "seed": 2, "position": "output"}),
           "gamma": ("slash", {"d": 8, "seed": 3, "position": "intermediate"}),
           "warp": ("jr-warp", {"d": 8, "seed": 4, "scale": 0.5})}


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    model = build_tiny_model("qwen2", root / "qwen2-chat")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(model)
    runs = {name: make_vector(model, root / name, "generate", method, scale=options.pop("scale", 1.0),
                              max_length=128, **options)  # prompts are never cut (the server refuses instead)
            for name, (method, options) in ((name, (method, dict(options))) for name, (method, options)
                                            in VECTORS.items())}
    return model, runs


@pytest.fixture(scope="module")
def server(decoder):
    _, runs = decoder
    opened = open_server(ServeSettings(sources=tuple(map(str, runs.values())), api_key=KEY, device="cpu",
                                       max_batch=8, window_ms=20))
    running = Running(opened).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


@cache
def _restored(path: Path):
    return restore(path / "vector.safetensors")


@cache
def _base(model: Path):
    task = get_task("generate")
    spec = ModelSpec(name_or_path=str(model))
    built = build_model(spec, None, task, loaded=load_backbone(spec, task)).model.eval()
    return built, task.make_encoder(load_backbone(spec, task).tokenizer, 128, built)


def alone(decoder, name: str, prompt: str, options: Decoding) -> tuple[str, int]:
    """(text, tokens) of the answer the vector (or the base model) gives alone, as `jrft predict` makes it."""
    model, runs = decoder
    if name in runs:
        restored = _restored(runs[name])
        built, encoder = restored.model, restored.encoder
    else:
        built, encoder = _base(model)
    ids = generate_ids(built, encoder.prompt_ids((("user", prompt),)), encoder.stop_ids, options, torch.device("cpu"))
    return encoder.tokenizer.decode(ids, skip_special_tokens=True), len(ids)


def ask(client, name: str, prompt: str, **options):
    return client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}], **options)


def test_models_are_listed_with_their_task_method_and_metrics(client, decoder):
    listed = {model.id: model for model in client.models.list().data}
    assert set(listed) == {str(decoder[0]), *VECTORS}
    alpha = listed["alpha"].model_dump()
    assert (alpha["task"], alpha["method"], alpha["metrics"]["accuracy"]) == ("generate", "slash", 0.5)
    assert alpha["batched_with_other_vectors"] and alpha["shift_bytes"] == 2 * 32 * 4  # 2 layers of 32 floats
    assert listed["gamma"].model_dump()["shift_bytes"] == 2 * 64 * 4  # the MLP's width at the intermediate position
    assert not listed["warp"].model_dump()["batched_with_other_vectors"]  # JR-WARP: a model of its own
    assert listed[str(decoder[0])].model_dump()["routes"] == ["/v1/chat/completions", "/v1/completions"]


def test_every_vector_answers_as_it_does_alone(client, decoder):
    names = [*VECTORS, str(decoder[0])]
    answers = {name: ask(client, name, PROMPTS[0], max_tokens=10) for name in names}
    for name, response in answers.items():
        text, tokens = alone(decoder, name, PROMPTS[0], Decoding(max_new_tokens=10))
        assert (response.choices[0].message.content, response.usage.completion_tokens) == (text, tokens), name
        assert response.choices[0].finish_reason == ("length" if tokens == 10 else "stop")
    assert len({response.choices[0].message.content for response in answers.values()}) >= 4  # vectors differ


def test_a_streamed_answer_is_the_whole_answer_in_pieces(client):
    whole = ask(client, "beta", PROMPTS[1], max_tokens=12)
    stream = ask(client, "beta", PROMPTS[1], max_tokens=12, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_requests_from_many_threads_share_batches_and_answer_as_alone(client, decoder, server):
    """Rows join the running batch as they arrive (staggered) and leave it at their own lengths (3 to 16 tokens):
    each answer is the one the same request gets alone."""
    cases = [(name, PROMPTS[index % len(PROMPTS)], 3 + (index * 5) % 14)
             for index, name in enumerate(["alpha", "beta", "gamma", "warp", str(decoder[0])] * 3)]
    before = metric_values(server.url, KEY)
    results: dict[int, object] = {}

    def send(index: int, name: str, prompt: str, tokens: int) -> None:
        time.sleep(0.004 * index)
        results[index] = ask(client, name, prompt, max_tokens=tokens)

    threads = [threading.Thread(target=send, args=(index, *case)) for index, case in enumerate(cases)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for index, (name, prompt, tokens) in enumerate(cases):
        expected = alone(decoder, name, prompt, Decoding(max_new_tokens=tokens))
        got = results[index]
        assert (got.choices[0].message.content, got.usage.completion_tokens) == expected, (name, prompt, tokens)
    after = metric_values(server.url, KEY)
    assert mean_per_batch(after, "jrft_decode_batch_rows", before) > 2  # answers advanced together, step by step,
    assert mean_per_batch(after, "jrft_decode_batch_vectors", before) > 1.5  # ...for several vectors at once


def test_sampling_with_a_seed_repeats_the_answer_alone(client, decoder):
    sampled = ask(client, "alpha", PROMPTS[2], max_tokens=10, temperature=0.9, top_p=0.95, seed=7)
    expected = alone(decoder, "alpha", PROMPTS[2], Decoding(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=7))
    assert (sampled.choices[0].message.content, sampled.usage.completion_tokens) == expected


def test_completions_and_stop_strings(client):
    first = client.completions.create(model="alpha", prompt=["the film", "a mess"], max_tokens=8)
    assert [choice.index for choice in first.choices] == [0, 1] and first.usage.completion_tokens > 0
    text = first.choices[0].text
    stop = text[3:5] if len(text) > 5 else text[-1]
    cut = client.completions.create(model="alpha", prompt="the film", max_tokens=8, stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="alpha", prompt="the film", max_tokens=8, stop=stop, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == cut.choices[0].text


def _post(server, path: str, body, key: str | None = KEY, **extra) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(f"{server.url}{path}", content=content, headers={**headers, "Content-Type": "application/json"},
                      timeout=60, **extra)


CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(("what", "path", "body", "key", "status", "code"), [
    ("unknown model", CHAT, {"model": "nope", "messages": MESSAGES}, KEY, 404, "model_not_found"),
    ("malformed JSON", CHAT, '{"model": "alpha", "messages": [', KEY, 400, "invalid_json"),
    ("not an object", CHAT, "[1, 2]", KEY, 400, "model_attributes_type"),
    ("prompt longer than the context", CHAT, {"model": "alpha", "messages": [
        {"role": "user", "content": "the film is good " * 60}]}, KEY, 400, "context_length_exceeded"),
    ("answer past the context", CHAT, {"model": "alpha", "messages": MESSAGES, "max_tokens": 500}, KEY, 400,
     "context_length_exceeded"),
    ("negative max_tokens", CHAT, {"model": "alpha", "messages": MESSAGES, "max_tokens": -5}, KEY, 400,
     "greater_than_equal"),
    ("wrong API key", CHAT, {"model": "alpha", "messages": MESSAGES}, "wrong", 401, "invalid_api_key"),
    ("no API key", "/v1/models", {}, None, 401, "missing_api_key"),
    ("several answers", CHAT, {"model": "alpha", "messages": MESSAGES, "n": 2}, KEY, 400, "unsupported_parameter"),
    ("a tool message", CHAT, {"model": "alpha", "messages": [{"role": "tool", "content": "x"}]}, KEY, 400, None),
    ("no messages", CHAT, {"model": "alpha", "messages": []}, KEY, 400, "too_short"),
    ("temperature too high", CHAT, {"model": "alpha", "messages": MESSAGES, "temperature": 5}, KEY, 400,
     "less_than_equal"),
    ("predict on a generating vector", "/predict", {"model": "alpha", "inputs": "x"}, KEY, 400,
     "model_not_predictive"),
    ("embeddings of a decoder", "/v1/embeddings", {"model": "alpha", "input": "x"}, KEY, 400, "model_not_embedding"),
    ("an unknown route", "/v1/nothing", {}, KEY, 404, "not_found"),
    ("a vector that is not there", "/v1/vectors", {"path": "/no/such/run"}, KEY, 400, "vector_refused"),
])
def test_bad_requests_get_a_clear_4xx_in_openai_error_shape(server, what, path, body, key, status, code):
    response = (_post(server, path, body, key) if path != "/v1/models" else
                httpx.get(f"{server.url}{path}", timeout=30))
    assert response.status_code == status, (what, response.text)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], what
    assert error["code"] == code, (what, error)
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_the_openai_client_sees_the_errors_it_knows(server, client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        ask(client, "nope", "hi")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        ask(client, "alpha", "hi", max_tokens=-1)


def test_a_client_leaving_mid_stream_leaves_the_server_running(server, client):
    body = {"model": "alpha", "messages": MESSAGES, "max_tokens": 60, "stream": True}
    with httpx.stream("POST", f"{server.url}{CHAT}", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # the answer started; the client goes away
    deadline = time.monotonic() + 30
    while metric_values(server.url, KEY)["jrft_running_answers"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric_values(server.url, KEY)["jrft_running_answers"] == 0  # its row left the batch
    assert ask(client, "alpha", "hi", max_tokens=3).usage.completion_tokens <= 3


def test_vectors_are_added_and_removed_while_serving(server, client, decoder):
    """A request in flight finishes on the vector it named even when that vector is removed meanwhile."""
    _, runs = decoder
    result = {}
    flight = threading.Thread(target=lambda: result.update(answer=ask(client, "beta", PROMPTS[3], max_tokens=40)))
    flight.start()
    time.sleep(0.05)
    removed = httpx.delete(f"{server.url}/v1/vectors/beta", headers={"Authorization": f"Bearer {KEY}"})
    assert removed.json() == {"id": "beta", "object": "model", "deleted": True}
    flight.join(timeout=60)
    text, tokens = alone(decoder, "beta", PROMPTS[3], Decoding(max_new_tokens=40))
    assert (result["answer"].choices[0].message.content, result["answer"].usage.completion_tokens) == (text, tokens)
    with pytest.raises(openai.NotFoundError):
        ask(client, "beta", "hi")
    added = _post(server, "/v1/vectors", {"path": str(runs["beta"]), "name": "beta-again"})
    assert added.status_code == 201 and added.json()["id"] == "beta-again"
    assert ask(client, "beta-again", PROMPTS[3], max_tokens=40).choices[0].message.content == text
    assert _post(server, "/v1/vectors", {"path": str(runs["alpha"])}).json()["error"]["code"] == "vector_refused"


def test_health_is_open_and_metrics_count(server):
    assert httpx.get(f"{server.url}/health").json()["vectors"] >= 3
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'jrft_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'jrft_request_latency_seconds{route="/v1/chat/completions",quantile="0.95"}' in text
    assert 'jrft_tokens_total{kind="generated"}' in text


def test_one_server_serves_one_base_model(decoder, tmp_path):
    _, runs = decoder
    other = make_vector(build_tiny_model("llama", tmp_path / "llama"), tmp_path / "other", "generate", d=8)
    with pytest.raises(Exception, match="another base model.*one base model"):
        open_server(ServeSettings(sources=(str(runs["alpha"]), str(other)), device="cpu"))


def test_an_address_other_machines_reach_is_warned_about():
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("localhost", None) is None
    assert "without an API key" in exposure_warning("0.0.0.0", None)
    assert "without an API key" not in exposure_warning("0.0.0.0", "key")


def test_jrft_serve_announces_its_address_and_answers(decoder):
    """The command itself: a free port, one JSON line with the address, then answers until interrupted."""
    _, runs = decoder
    process = subprocess.Popen([sys.executable, "-m", "jrft_desktop.cli", "serve", str(runs["alpha"]), "--port", "0",
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    try:
        announced = json.loads(process.stdout.readline())
        assert announced["vectors"] == ["alpha"]
        assert httpx.get(f"{announced['url']}/health", timeout=30).json()["status"] == "ok"
    finally:
        process.send_signal(2)  # Ctrl-C
        process.wait(timeout=30)
    assert process.returncode == 0, process.stderr.read()[-2000:]


def test_the_apps_snippet_for_a_generate_run_works_as_pasted(server, monkeypatch):
    from jrft_desktop.gui.pages.serve_page import snippets

    monkeypatch.setenv("JRFT_API_KEY", KEY)
    text = snippets(server.url, {"id": "alpha", "routes": ["/v1/chat/completions"]}, True, "JRFT_API_KEY")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(text.split("\n\n", 1)[1], {})  # noqa: S102 - the Python half, as a user pastes it
    assert printed.getvalue().strip()
