"""Decoder families (GPT-2 with its Conv1D projections, Llama without biases, Qwen2 with query/key/value biases) for
every method: parameter counts, the last-token read-out, prompts a causal model can attend to, exact merging into
stock classifiers (bias flags switched on where the family has none), vector round trips, and the refusals.

The merged models are reloaded in a separate Python process that never imports jrft_desktop."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from clean_process import run_clean
from test_methods_matrix import perturb, sentences
from tiny_models import DECODERS, HIDDEN, LAYERS, build_tiny_model

from jrft_desktop.core.export import merged as merged_form, vector as vector_file
from jrft_desktop.core.config import MethodSpec, ModelSpec
from jrft_desktop.core.errors import ArtifactError, ModelError
from jrft_desktop.core.families import features
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks.classify import Encoder
from jrft_desktop.core.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

D, RANK, PROMPTS, MAX_LENGTH = 24, 2, 2, 48
LABELS = ("negative", "positive")
SIZES = {"slash": {"d": D}, "jr-warp": {"d": D}, "lora": {"rank": RANK}, "vera": {"rank": RANK},
         "warp": {"prompt_tokens": PROMPTS}}
# Every method that folds, on each family (Llama has no bias terms for BitFit).
FOLDABLE = {family: [("slash", "attention"), ("slash", "intermediate"), ("slash", "output"), ("head", None),
                     ("lora", None), ("vera", None), ("full", None)] + ([] if family == "llama" else [("bitfit", None)])
            for family in DECODERS}
# What each merge is written as: a SLaSh shift that needs biases Qwen2 cannot switch on becomes a stock Llama.
STOCK_CLASS = {"gpt2": "GPT2ForSequenceClassification", "llama": "LlamaForSequenceClassification",
               "qwen2": "Qwen2ForSequenceClassification"}


@pytest.fixture(scope="session")
def decoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-decoders")
    return {family: build_tiny_model(family, root / family) for family in DECODERS}


def build(folder, method: str, position: str | None = None, pooling: str = "auto"):
    loaded = load_backbone(ModelSpec(str(folder)))
    spec = MethodSpec(name=method, **SIZES.get(method, {}), **({"position": position} if position else {}))
    model, method_object, plan = build_model(ModelSpec(pooling=pooling), spec, None, len(LABELS), loaded=loaded)
    model.eval()
    return loaded, model, method_object, plan, spec


def logits_of(model, encoder, texts):
    rows, _ = encoder.encode(texts)
    with torch.no_grad():
        return model(**encoder.collate(rows))


def metadata_for(model, plan, folder, spec) -> dict:
    return vector_file.vector_metadata(
        model=model, plan=plan, method_spec=spec, model_spec=ModelSpec(str(folder), pooling=model.pooling),
        max_length=MAX_LENGTH, problem="classification", label_names=LABELS,
        columns={"text": "sentence", "text_pair": None, "label": "label"}, seed=0, metrics={"accuracy": 0.5})


# --- structure -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", DECODERS)
def test_a_decoder_reads_its_last_token_and_pads_with_an_existing_token(decoders, family):
    loaded, model, _, plan, _ = build(decoders[family], "head")
    vocabulary = len(loaded.tokenizer)
    assert model.pooling == "last" and loaded.info.causal and loaded.info.context_length == 128
    assert loaded.tokenizer.pad_token is not None and len(loaded.tokenizer) == vocabulary  # nothing was added
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id
    assert model.head.bias is None and plan.head_params == HIDDEN * len(LABELS)  # as the stock `score` layer
    encoder = Encoder(loaded.tokenizer, MAX_LENGTH, model)
    texts = ["a fine film", "dull , slow and far too long for what it has to say"]
    rows, _ = encoder.encode(texts)
    batch = encoder.collate(rows)
    hidden = model.hidden_states(**batch)
    last = batch["attention_mask"].sum(1) - 1  # right padding: the last real token of each row
    expected = model.head(hidden[torch.arange(2), last])
    assert torch.allclose(model(**batch), expected, atol=1e-6)
    alone = logits_of(model, encoder, texts[:1])  # padding changes nothing for the shorter text
    assert torch.allclose(alone[0], expected[0], atol=1e-5)


@pytest.mark.parametrize("family", DECODERS)
def test_trainable_parameter_counts(decoders, family):
    loaded = load_backbone(ModelSpec(str(decoders[family])))
    backbone = loaded.model
    targets = {"gpt2": ("c_attn",), "llama": ("q_proj", "v_proj"), "qwen2": ("q_proj", "v_proj")}[family]
    projections = [m for name, m in backbone.named_modules() if name.rsplit(".", 1)[-1] in targets]
    assert len(projections) == LAYERS * len(targets)
    biases = sum(p.numel() for name, p in backbone.named_parameters() if name.endswith("bias"))
    expected = {"slash": D, "jr-warp": D, "head": 0, "warp": PROMPTS * HIDDEN,
                "lora": RANK * sum(sum(features(m)) for m in projections),
                "vera": sum(features(m)[1] + RANK for m in projections),
                "full": sum(p.numel() for p in backbone.parameters())}
    if biases:
        expected["bitfit"] = biases
    for method, count in expected.items():
        _, model, _, plan, _ = build(decoders[family], method)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert plan.method_params == count, method
        assert plan.trainable_params == trainable == count + HIDDEN * len(LABELS), method


def test_bitfit_on_a_model_without_biases_is_refused(decoders):
    with pytest.raises(ModelError, match="llama model has none; choose slash"):
        build(decoders["llama"], "bitfit")


def test_the_first_token_is_refused_as_a_decoder_pooling(decoders):
    with pytest.raises(ModelError, match="first token sees nothing"):
        build(decoders["gpt2"], "head", pooling="cls")


@pytest.mark.parametrize("method", ["jr-warp", "warp"])
def test_prompts_come_first_in_a_causal_model_so_every_token_sees_them(decoders, method):
    loaded, model, _, _, _ = build(decoders["llama"], method)
    encoder = Encoder(loaded.tokenizer, MAX_LENGTH, model)
    rows, _ = encoder.encode(["a fine film"])
    batch = encoder.collate(rows)
    before = model.hidden_states(**batch)
    assert before.shape[1] == batch["input_ids"].shape[1]  # the prompts are taken out again
    perturb(model, seed=3, head=False)
    after = model.hidden_states(**batch)
    assert (after[0, 0] - before[0, 0]).abs().max() > 1e-3  # even the first text token attends to the prompt


# --- merged stock models -------------------------------------------------------------------------------------------

LOADER = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    job = json.load(sys.stdin)
    torch.set_num_threads(1)
    out = {}
    for key, folder in job["models"].items():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
        model.eval()
        encoded = tokenizer(job["sentences"], padding=True, truncation=True, max_length=job["max_length"],
                            return_tensors="pt")
        with torch.no_grad():
            logits = model(**encoded).logits
        out[key] = {"logits": logits.tolist(), "class": type(model).__name__,
                    "id2label": {str(k): v for k, v in model.config.id2label.items()},
                    "missing": list(info["missing_keys"]), "unexpected": list(info["unexpected_keys"])}
    out["jrft_desktop_imported"] = "jrft_desktop" in sys.modules
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def merged_decoders(decoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("merged-decoders")
    texts = sentences(12)
    results, job = {}, {"sentences": texts, "max_length": MAX_LENGTH, "models": {}}
    for family, cases in FOLDABLE.items():
        for method, position in cases:
            key = f"{family}/{method}-{position}"
            loaded, model, method_object, plan, spec = build(decoders[family], method, position)
            encoder = Encoder(loaded.tokenizer, MAX_LENGTH, model)
            perturb(model, seed=1, head=True)
            reference = logits_of(model, encoder, texts)
            perturb(model, seed=2, head=False)
            unmerged = logits_of(model, encoder, texts)
            out = root / key.replace("/", "-")
            merged_form.export_merged(model, method_object, loaded.tokenizer, metadata_for(model, plan, decoders[family],
                                                                                         spec), out)
            results[key] = {"unmerged": unmerged, "reference": reference}
            job["models"][key] = str(out)
    for key, value in run_clean(LOADER, job, root).items():
        results[key]["stock"] = value
    return results


@pytest.mark.parametrize("case", [f"{family}/{method}-{position}" for family, cases in FOLDABLE.items()
                                  for method, position in cases])
def test_merged_decoder_equals_unmerged(merged_decoders, case):
    family, method = case.split("/")[0], case.split("/")[1].split("-")[0]
    result = merged_decoders[case]
    stock = result["stock"]
    difference = (torch.tensor(stock["logits"]) - result["unmerged"]).abs().max().item()
    assert difference < 1e-4, f"merged and unmerged logits differ by {difference:.2e}"
    if method != "head":  # the perturbed method must matter, or the comparison proves nothing
        assert (result["unmerged"] - result["reference"]).abs().max().item() > 0.02
    assert stock["id2label"] == {"0": "negative", "1": "positive"}
    assert stock["missing"] == [] and stock["unexpected"] == []
    needs_llama = family == "qwen2" and case.endswith(("slash-attention", "slash-intermediate", "slash-output"))
    assert stock["class"] == ("LlamaForSequenceClassification" if needs_llama else STOCK_CLASS[family])


def test_a_bias_free_merge_switches_on_the_stock_flags(decoders, tmp_path):
    loaded, model, method_object, plan, spec = build(decoders["llama"], "slash", "intermediate")
    perturb(model, seed=4, head=False)
    out = tmp_path / "merged"
    merged_form.export_merged(model, method_object, loaded.tokenizer, metadata_for(model, plan, decoders["llama"], spec),
                         out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["mlp_bias"] is True and config["attention_bias"] is False
    assert loaded.model.config.mlp_bias is False  # the model in hand is untouched


# --- vector files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", DECODERS)
def test_vector_round_trip_and_a_foreign_base_refused(decoders, family, tmp_path):
    loaded, model, _, plan, spec = build(decoders[family], "slash", "output")
    perturb(model, seed=5, head=False)
    perturb(model, seed=6, head=True)
    encoder = Encoder(loaded.tokenizer, MAX_LENGTH, model)
    texts = sentences(6)
    vector_file.save_vector(tmp_path / "vector", model, metadata_for(model, plan, decoders[family], spec))
    restored = vector_file.restore(tmp_path / "vector.safetensors")
    assert torch.allclose(logits_of(restored.model, restored.encoder, texts), logits_of(model, encoder, texts),
                          atol=1e-6)
    other = build_tiny_model(family, tmp_path / "other", seed=1)
    with pytest.raises(ArtifactError, match="trained on another base model"):
        vector_file.restore(tmp_path / "vector.safetensors", model_override=str(other))


# --- bad input -----------------------------------------------------------------------------------------------------


def test_a_gguf_file_or_folder_given_as_a_model_is_refused_with_the_way_out(tmp_path):
    gguf = tmp_path / "model.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="not a readable GGUF file.*bundled:SmolLM2-135M-Instruct"):
        load_backbone(ModelSpec(str(gguf)))
    with pytest.raises(ModelError, match="no config.json. It holds a GGUF file: give that file itself"):
        load_backbone(ModelSpec(str(tmp_path)))


def test_a_decoder_folder_without_its_tokenizer_is_refused(decoders, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((decoders["gpt2"] / name).read_bytes())
    with pytest.raises(ModelError, match="tokenizer"):
        load_backbone(ModelSpec(str(bare)))
