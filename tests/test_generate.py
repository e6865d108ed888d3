"""The generate task on tiny decoders: reading instruction, chat and text data (placeholders filled), answers-only
loss, evaluation with perplexity and samples, token-by-token generation equal to full forward passes, `jrft
predict` answers, merged `AutoModelForCausalLM` folders whose greedy answers equal the run's in a clean process,
private training, and the bad inputs the issue lists."""

from __future__ import annotations

import json
import math

import pytest
import torch
from clean_process import run_clean
from tiny_models import build_tiny_model

from jrft_desktop import cli
from jrft_desktop.core.export import merged as merged_form, vector as vector_file
from jrft_desktop.core.config import DataSpec, Decoding, MethodSpec, ModelSpec, Privacy, RunConfig, TrainingSpec
from jrft_desktop.core.errors import DataError, UserError
from jrft_desktop.core.export.vector import restore
from jrft_desktop.core.inference import Predictor
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks import get_task, task_for
from jrft_desktop.core.tasks.generate import IGNORED, Conversations, generate_ids
from jrft_desktop.core.train.loop import Trainer
from jrft_desktop.core.build import build_model

# SmolLM2's chat template (ChatML with a default system prompt), set on a tiny Qwen2 tokenizer (whose <|im_end|> is a
# special token; <|im_start|> is plain text there) to test templated encoding
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
FILL = ("name=Ada", "author=Lab")


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen-models")
    folders = {family: build_tiny_model(family, root / family) for family in ("llama", "gpt2")}
    chat = build_tiny_model("qwen2", root / "qwen2-chat")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(chat)
    folders["chat"] = chat
    return folders


@pytest.fixture()
def identity(shared_data):
    return shared_data / "instruct" / "identity.json"


def _config(model, train, method="slash", steps=6, **data):
    return RunConfig(model=ModelSpec(name_or_path=str(model)),
                     data=DataSpec(train=str(train), max_length=96, **data), method=MethodSpec(name=method),
                     training=TrainingSpec(max_steps=steps, batch_size=4, eval_every=3, device="cpu"))


def _train(config, run_dir):
    finished = Trainer(config, run_dir).run()
    assert finished.status == "completed"
    return run_dir


# --- data -------------------------------------------------------------------------------------------------------
def test_the_task_is_guessed_from_the_columns(identity, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n", encoding="utf-8")
    text = tmp_path / "notes.txt"
    text.write_text("one document\n\nanother one\n", encoding="utf-8")
    for source in (identity, chat, text):
        assert task_for("auto", str(source)).name == "generate"


def test_placeholders_must_be_filled(identity):
    task = get_task("generate")
    assert task.data_view.placeholders(str(identity)) == ["name", "author"]
    with pytest.raises(DataError, match=r"\{\{name\}\}, \{\{author\}\}.*--fill name=\.\.\. --fill author=\.\.\."):
        task.load_data(DataSpec(train=str(identity)), seed=0)
    data = task.load_data(DataSpec(train=str(identity), fill=FILL + ("unused=1",)), seed=0)
    assert len(data.train) + len(data.validation) == 91
    text = json.dumps(data.train.conversations)
    assert "{{" not in text and "Ada" in text and "Lab" in text
    assert any("unused" in note for note in data.notes)


def test_chat_sharegpt_and_text_layouts(tmp_path):
    task = get_task("generate")
    rows = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": f"q{i}"},
                               {"from": "gpt", "value": f"a{i}"}]} for i in range(4)]
    share = tmp_path / "share.jsonl"
    share.write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    data = task.load_data(DataSpec(train=str(share), validation_fraction=0.25), seed=0)
    assert data.layout == "sharegpt"
    assert data.train.conversations[0][0] == ("system", "Be brief.") and data.train.conversations[0][2][0] == "assistant"
    text = tmp_path / "docs.txt"
    text.write_text("first doc\n\nsecond doc\nthird doc\n", encoding="utf-8")
    data = task.load_data(DataSpec(train=str(text), validation_fraction=0.34), seed=0)
    assert data.layout == "text" and len(data.train) + len(data.validation) == 3


@pytest.mark.parametrize("rows, message", [
    ([{"instruction": "q", "input": ""}] * 3, "no output column"),
    ([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "again?"}]}] * 3, "ends with a user turn"),
    ([{"instruction": "q", "output": ""}] * 3, "empty answer"),
    ([{"messages": [{"role": "robot", "content": "q"}]}] * 3, "roles are system, user and assistant"),
])
def test_bad_instruction_files_are_refused(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    with pytest.raises(DataError, match=message):
        get_task("generate").load_data(DataSpec(train=str(path)), seed=0)


# --- encoding ---------------------------------------------------------------------------------------------------
def test_only_the_answers_are_learnt_with_the_chat_template(decoders):
    loaded = load_backbone(ModelSpec(name_or_path=str(decoders["chat"])), get_task("generate"))
    model, _, _ = build_model(ModelSpec(), MethodSpec(name="slash"), get_task("generate"), 1, loaded=loaded)
    task = get_task("generate")
    examples = Conversations.of([(("user", "the film"), ("assistant", "was good")),
                                 (("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))], True)
    encoder = task.make_encoder(loaded.tokenizer, 128, model)
    rows, cut = encoder.encode(examples)
    assert cut == 0 and encoder.templated
    learnt = [loaded.tokenizer.decode([t for t in row["targets"] if t != IGNORED]) for row in rows]
    assert learnt == ["was good<|im_end|>\n", "b<|im_end|>\nd<|im_end|>\n"]
    assert loaded.tokenizer.decode(list(rows[0]["input_ids"])) == loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "the film"}, {"role": "assistant", "content": "was good"}], tokenize=False)
    every = task.make_encoder(loaded.tokenizer, 128, model, DataSpec(train_on_prompts=True)).encode(examples)[0]
    assert list(every[0]["targets"]) == list(every[0]["input_ids"])
    assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in encoder.stop_ids
    short = task.make_encoder(loaded.tokenizer, 12, model).encode(examples)
    assert short[1] == 2 and all(len(row["input_ids"]) == 12 for row in short[0])


# --- training, evaluation, generation ---------------------------------------------------------------------------
def test_a_slash_run_learns_answers_and_keeps_the_head_out_of_the_vector(decoders, identity, tmp_path):
    config = RunConfig(model=ModelSpec(name_or_path=str(decoders["llama"])),
                       data=DataSpec(train=str(identity), max_length=96, fill=FILL), method=MethodSpec(name="slash", d=64),
                       training=TrainingSpec(max_steps=30, batch_size=8, eval_every=15, device="cpu", lr=0.05))
    run = _train(config, tmp_path / "run")
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    evals = [entry["eval"] for entry in history if "eval" in entry]
    assert evals[-1]["loss"] < evals[0]["loss"]
    assert math.isclose(evals[-1]["perplexity"], math.exp(evals[-1]["loss"]), rel_tol=1e-9)
    assert len(evals[0]["samples"]) == 3 and {"prompt", "expected", "generated"} <= set(evals[0]["samples"][0])
    tensors, metadata = vector_file.read_vector(run / "vector.safetensors")
    assert set(tensors) == {"projected.z"} and metadata["task_name"] == "generate"
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["head_params"] == 0 and metrics["trainable_params_without_head"] == 64


def test_cached_generation_equals_full_forward_passes(decoders, identity, tmp_path):
    run = _train(_config(decoders["llama"], identity, method="jr-warp", fill=FILL), tmp_path / "run")
    restored = restore(run / "vector.safetensors")
    model, encoder = restored.model, restored.encoder
    with torch.no_grad():  # a trained-looking prompt: nonzero z, so prompt tokens matter
        model.projected.z.normal_()
    prompt = encoder.prompt_ids((("user", "Who are you?"),))
    cached = generate_ids(model, prompt, frozenset(), Decoding(max_new_tokens=8, repetition_penalty=1.0),
                          torch.device("cpu"))
    ids = list(prompt)
    for _ in range(8):
        with torch.no_grad():
            logits = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
        ids.append(int(logits[0, -1].argmax()))
    assert cached == ids[len(prompt):]


def test_predict_prints_answers(decoders, identity, tmp_path, capsys):
    run = _train(_config(decoders["gpt2"], identity, fill=FILL), tmp_path / "run")
    assert cli.main(["predict", str(run), "Who are you?", "--max-new-tokens", "5"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["text"] == "Who are you?" and isinstance(line["generated"], str)
    assert cli.main(["predict", str(run), "--data", str(identity), "--max-new-tokens", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 91
    sampled = [json.loads(line)["generated"] for _ in range(2) for line in (
        cli.main(["predict", str(run), "hi", "--temperature", "1.5", "--seed", "3", "--max-new-tokens", "6"]),
        capsys.readouterr().out.strip())[1:]]
    assert sampled[0] == sampled[1]
    assert cli.main(["predict", str(run), "hi", "--top-p", "0"]) == 2


def test_head_does_not_apply_and_encoders_cannot_generate(decoders, identity, tmp_path, capsys, tiny_models):
    with pytest.raises(UserError, match="nothing would train"):
        Trainer(_config(decoders["llama"], identity, method="head", fill=FILL), tmp_path / "a").run()
    with pytest.raises(UserError, match="Generation needs a decoder"):
        Trainer(_config(tiny_models["bert"], identity, fill=FILL), tmp_path / "b").run()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


MERGED_ANSWERS = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
job = json.load(sys.stdin)
tokenizer = AutoTokenizer.from_pretrained(job["folder"])
model = AutoModelForCausalLM.from_pretrained(job["folder"]).eval()
answers = []
for prompt in job["prompts"]:
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_dict=True, return_tensors="pt")["input_ids"]
    else:
        ids = tokenizer("### Instruction:\n" + prompt + "\n\n### Response:\n", add_special_tokens=False,
                        return_tensors="pt")["input_ids"]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                         min_new_tokens=10, pad_token_id=tokenizer.pad_token_id)
    answers.append(out[0, ids.shape[1]:].tolist())
print(json.dumps({"answers": answers, "jrft_desktop_imported": "jrft_desktop" in sys.modules}))
"""


@pytest.mark.parametrize("family, method", [("chat", "slash"), ("llama", "lora"), ("gpt2", "slash")])
def test_merged_causal_lm_answers_as_the_run(decoders, identity, tmp_path, family, method):
    run = _train(_config(decoders[family], identity, method=method, fill=FILL), tmp_path / "run")
    restored = restore(run / "vector.safetensors")
    with torch.no_grad():  # make the method matter: a random z / adapter, not the few steps' near-zero one
        for parameter in restored.model.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.5)
    out = merged_form.export_merged(restored.model, restored.method, restored.tokenizer, restored.metadata,
                               tmp_path / "merged")
    prompts = ["Who are you?", "hello there"]
    ours = [generate_ids(restored.model, restored.encoder.prompt_ids((("user", p),)), frozenset(),
                         Decoding(max_new_tokens=10, repetition_penalty=1.0), torch.device("cpu"))
            for p in prompts]
    theirs = run_clean(MERGED_ANSWERS, {"folder": str(out), "prompts": prompts}, tmp_path)["answers"]
    assert theirs == ours
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"][0].endswith(("ForCausalLM", "LMHeadModel"))


def test_private_instruction_tuning_reports_epsilon(decoders, identity, tmp_path):
    for method in ("slash", "lora"):
        config = _config(decoders["llama"], identity, method=method, steps=4, fill=FILL)
        config = RunConfig(model=config.model, data=config.data, method=config.method, training=config.training,
                           privacy=Privacy(epsilon=8.0))
        run = _train(config, tmp_path / method)
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        assert 0 < metrics["privacy"]["epsilon_spent"] <= 8.0


def test_predictor_streams_the_answer(decoders, identity, tmp_path):
    run = _train(_config(decoders["llama"], identity, fill=FILL), tmp_path / "run")
    predictor = Predictor.from_restored(restore(run / "vector.safetensors"), "cpu")
    pieces = []
    records = predictor.predict(get_task("generate").examples_from_texts(["Who are you?"]),
                                Decoding(max_new_tokens=6), pieces.append)
    assert "".join(pieces) == records[0]["generated"]


def test_the_cli_refuses_bad_data_in_one_line_and_writes_nothing(decoders, identity, tmp_path, capsys):
    unanswered = tmp_path / "chat.jsonl"
    unanswered.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n", encoding="utf-8")
    for data, extra, message in ((unanswered, [], "has no assistant turn"),
                                 (identity, [], "placeholders to fill in"),
                                 (identity, ["--fill", "name"], "name=value")):
        out = tmp_path / "run"
        code = cli.main(["train", "--model", str(decoders["llama"]), "--data", str(data), "--output", str(out),
                         "--max-steps", "2", *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()
