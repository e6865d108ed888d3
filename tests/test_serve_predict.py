"""`jrft serve` with classify and tag vectors on an encoder, through raw HTTP (as curl sends it) and the `openai`
client's embeddings: /predict answers in text-embeddings-inference's shape (labels with scores, best first) and the
token-classification pipeline's (entities), equal to the same texts predicted alone within 1e-4, whether requests
for many vectors come one by one or all at once (rows of different vectors in one batch, each read by its own
head); embeddings of the base model and of a vector; refusals of inputs a vector cannot read."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import openai
import pytest
import torch
from serve_vectors import make_vector, mean_per_batch, metric_values
from tiny_models import build_tiny_model

from jrft_desktop.core.export.vector import restore
from jrft_desktop.core.inference import Predictor
from jrft_desktop.serve.server import Running, ServeSettings, open_server

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["a gorgeous , witty and moving film", "a tedious mess", "Ada Lovelace met Charles Babbage in London",
         "the plot never finds its footing , but the acting is good", "ok"]
SENTIMENT, TOPICS = ["neg", "pos"], ["film", "music", "sport"]
TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
# name -> (task, method, labels, options): SLaSh at two positions, a linear probe (no shift, its own head only), a
# tagger, and LoRA, which needs a model of its own
VECTORS = {"sentiment": ("classify", "slash", SENTIMENT, {"d": 16, "seed": 1}),
           "topic": ("classify", "slash", TOPICS, {"d": 16, "seed": 2, "position": "intermediate"}),
           "probe": ("classify", "head", SENTIMENT, {"seed": 3}),
           "names": ("tag", "slash", TAGS, {"d": 16, "seed": 4}),
           "lora": ("classify", "lora", TOPICS, {"rank": 2, "seed": 5, "scale": 0.3})}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-encoder")
    model = build_tiny_model("bert", root / "bert")
    runs = {}
    for name, (task, method, labels, options) in VECTORS.items():
        options = dict(options)
        runs[name] = make_vector(model, root / name, task, method, labels, scale=options.pop("scale", 1.0), **options)
    return model, runs


@pytest.fixture(scope="module")
def server(encoder):
    _, runs = encoder
    opened = open_server(ServeSettings(sources=tuple(map(str, runs.values())), device="cpu", max_batch=16,
                                       window_ms=20))
    running = Running(opened).start()
    yield running
    running.stop()


def predict(server, name: str, inputs) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", json={"model": name, "inputs": inputs}, timeout=60)


def alone(encoder, name: str, texts: list[str]) -> list[dict]:
    restored = restore(encoder[1][name] / "vector.safetensors")
    predictor = Predictor.from_restored(restored, "cpu")
    return predictor.predict(restored.model.task.examples_from_texts(texts))


def assert_like_alone(encoder, name: str, texts: list[str], answers: list) -> None:
    for answer, record in zip(answers, alone(encoder, name, texts), strict=True):
        if VECTORS[name][0] == "classify":
            assert answer[0]["label"] == record["label"]
            assert [item["score"] for item in answer] == sorted((item["score"] for item in answer), reverse=True)
            for item in answer:
                assert item["score"] == pytest.approx(record["probabilities"][item["label"]], abs=1e-4)
        else:
            assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in answer] == [
                (e["type"], e["text"], e["start"], e["end"]) for e in record["entities"]]
            assert [e["score"] for e in answer] == pytest.approx([e["score"] for e in record["entities"]], abs=1e-4)


@pytest.mark.parametrize("name", list(VECTORS))
def test_each_vector_predicts_as_it_does_alone(server, encoder, name):
    response = predict(server, name, TEXTS)
    assert response.status_code == 200 and response.headers["X-Truncated-Inputs"] == "0"
    assert_like_alone(encoder, name, TEXTS, response.json())
    assert predict(server, name, TEXTS[0]).json() == response.json()[0]  # one text: its answer, not a list of one


def test_requests_for_many_vectors_at_once_share_batches(server, encoder):
    jobs = [(name, TEXTS[index % len(TEXTS):] + TEXTS[:index % len(TEXTS)])
            for index, name in enumerate([*VECTORS] * 4)]
    answers: dict[int, list] = {}
    before = metric_values(server.url)

    def send(index: int, name: str, texts: list[str]) -> None:
        answers[index] = predict(server, name, texts).json()

    threads = [threading.Thread(target=send, args=(index, *job)) for index, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for index, (name, texts) in enumerate(jobs):
        assert_like_alone(encoder, name, texts, answers[index])
    after = metric_values(server.url)
    assert mean_per_batch(after, "jrft_predict_batch_vectors", before) > 1.5  # batches held several vectors' texts
    assert mean_per_batch(after, "jrft_predict_batch_rows", before) > len(TEXTS)  # ...more than one request's


def test_embeddings_through_the_openai_client(server, encoder):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    base = client.embeddings.create(model=str(encoder[0]), input=TEXTS[:2])  # base64 on the wire, as the client asks
    floats = httpx.post(f"{server.url}/v1/embeddings", json={"model": str(encoder[0]), "input": TEXTS[:2]}).json()
    assert np.allclose([item.embedding for item in base.data], [item["embedding"] for item in floats["data"]])
    vectors = np.array([item.embedding for item in base.data])
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    restored = restore(encoder[1]["probe"] / "vector.safetensors")  # the base model's states, mean-pooled
    rows = restored.encoder.collate(restored.encoder.encode(TEXTS[:2])[0])
    with torch.no_grad():
        hidden = restored.model.hidden_states(rows["input_ids"], rows["attention_mask"], rows.get("token_type_ids"))
    mask = rows["attention_mask"].unsqueeze(-1)
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert np.allclose(vectors, pooled.numpy(), atol=1e-5)
    shifted = client.embeddings.create(model="sentiment", input=TEXTS[:2])
    assert not np.allclose(vectors, [item.embedding for item in shifted.data], atol=1e-3)
    assert base.usage.prompt_tokens > 0


@pytest.mark.parametrize(("name", "inputs", "status", "code"), [
    ("sentiment", [["a", "b"]], 400, None),  # pairs for a run that reads single texts
    ("sentiment", [], 400, "too_short"),
    ("sentiment", 5, 400, "string_type"),
    ("missing", "text", 404, "model_not_found"),
])
def test_inputs_a_vector_cannot_read_are_refused(server, name, inputs, status, code):
    response = predict(server, name, inputs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_chat_with_a_classifier_is_refused(server):
    response = httpx.post(f"{server.url}/v1/chat/completions",
                          json={"model": "sentiment", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400 and "does not generate" in response.json()["error"]["message"]
    assert "/predict" in response.json()["error"]["message"]


def test_the_base_model_has_no_head_to_predict_with(server, encoder):
    response = predict(server, str(encoder[0]), "text")
    assert response.status_code == 400 and "/v1/embeddings" in response.json()["error"]["message"]
