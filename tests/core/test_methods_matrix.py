"""Every method on every tiny model family: parameter counts, budgets, exact merging into stock models, vector
files and their integrity checks, and the three poolings.

The merged models are reloaded in a separate Python process that never imports jrft_desktop, with nothing but
`transformers.AutoModelForSequenceClassification` / `AutoTokenizer`, exactly as a user of the exported folder
would load them."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from clean_process import clean_script, run_clean
from safetensors.torch import load_file, safe_open, save_file
from tiny_models import FAMILIES, HIDDEN, LAYERS, build_tiny_model

from jrft_desktop.core.export import merged as merged_form, vector as vector_file
from jrft_desktop.core.config import MethodSpec, ModelSpec
from jrft_desktop.core.errors import ArtifactError
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks.classify import Encoder
from jrft_desktop.core.paths import sample_data_dir
from jrft_desktop.core.build import build_model

D, RANK, PROMPTS = 24, 4, 3
LABELS = ("negative", "positive")
MAX_LENGTH = 64
CASES = [("slash", "attention"), ("slash", "intermediate"), ("slash", "output"), ("jr-warp", None),
         ("head", None), ("bitfit", None), ("lora", None), ("vera", None), ("warp", None), ("full", None)]
CASE_IDS = [f"{method}-{position}" if position else method for method, position in CASES]
FOLDABLE = [case for case in CASES if case[0] not in ("jr-warp", "warp")]
FOLDABLE_IDS = [f"{m}-{p}" if p else m for m, p in FOLDABLE]
# Query / value projections per family, named independently of the app's FamilyLayout.
QV = {"bert": ("query", "value"), "roberta": ("query", "value"), "distilbert": ("q_lin", "v_lin")}
STOCK_CLASS = {"bert": "BertForSequenceClassification", "roberta": "RobertaForSequenceClassification",
               "distilbert": "DistilBertForSequenceClassification"}


pytestmark = pytest.mark.usefixtures("one_thread")


def spec_for(method: str, position: str | None, **overrides) -> MethodSpec:
    sizes = {"slash": {"d": D}, "jr-warp": {"d": D}, "lora": {"rank": RANK}, "vera": {"rank": RANK},
             "warp": {"prompt_tokens": PROMPTS}}
    values = {"name": method, "position": position or "output", **sizes.get(method, {}), **overrides}
    return MethodSpec(**values)


def build(folder: Path, method: str, position: str | None, pooling: str = "cls", **overrides):
    loaded = load_backbone(ModelSpec(str(folder)))
    model, method_obj, plan = build_model(ModelSpec(pooling=pooling), spec_for(method, position, **overrides), None,
                                          len(LABELS), loaded=loaded)
    model.eval()
    return loaded, model, method_obj, plan


def sentences(count: int = 20) -> list[str]:
    lines = (sample_data_dir() / "sst2_dev.tsv").read_text(encoding="utf-8").splitlines()[1:count + 1]
    return [line.split("\t")[0] for line in lines]


def logits_of(model, encoder: Encoder, texts: list[str]) -> torch.Tensor:
    rows, _ = encoder.encode(texts)
    with torch.no_grad():
        return model(**encoder.collate(rows))


def metadata_for(model, plan, folder: Path, spec: MethodSpec) -> dict:
    return vector_file.vector_metadata(
        model=model, plan=plan, method_spec=spec, model_spec=ModelSpec(str(folder), pooling=model.pooling),
        max_length=MAX_LENGTH, problem="classification", label_names=LABELS,
        columns={"text": "sentence", "text_pair": None, "label": "label"}, seed=0, metrics={"accuracy": 0.5},
    )


def perturb(model, seed: int, head: bool) -> None:
    """Seeded noise on the trainable parameters: the head only, or everything else (large enough to matter)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad or name.startswith("head.") != head:
                continue
            # VeRA's scaling vectors multiply each other (b starts at zero): they need a bold push to matter
            scale = 1.0 if name == "projected.z" or "vera_lambda_" in name else 0.3 if head or "lora_" in name else 0.1
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


# --- parameter counts and budgets ----------------------------------------------------------------------------


def expected_method_params(family: str, method: str, backbone) -> int:
    if method in ("slash", "jr-warp"):
        return D
    if method == "head":
        return 0
    if method == "bitfit":
        return sum(p.numel() for name, p in backbone.named_parameters() if name.endswith("bias"))
    if method == "lora":
        linears = [m for name, m in backbone.named_modules()
                   if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in QV[family]]
        assert len(linears) == 2 * LAYERS
        return RANK * sum(m.in_features + m.out_features for m in linears)
    if method == "vera":  # per targeted weight: a scaling vector over its outputs (b) and one over the rank (d)
        linears = [m for name, m in backbone.named_modules()
                   if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in QV[family]]
        return sum(m.out_features + RANK for m in linears)
    if method == "warp":
        return PROMPTS * HIDDEN
    if method == "full":
        return sum(p.numel() for p in backbone.parameters())
    raise AssertionError(method)


@pytest.mark.parametrize(("method", "position"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_trainable_parameter_counts(tiny_models, family, method, position):
    loaded = load_backbone(ModelSpec(str(tiny_models[family])))
    formula = expected_method_params(family, method, loaded.model)  # before the method touches the model
    model, _, plan = build_model(ModelSpec(pooling="cls"), spec_for(method, position), None, len(LABELS), loaded=loaded)
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    real = sum(trainable.values())

    assert plan.head_params == HIDDEN * len(LABELS) + len(LABELS)
    assert plan.method_params == formula
    assert plan.trainable_params == plan.method_params + plan.head_params == real
    # Which tensors train, not only how many.
    method_names = {name for name in trainable if not name.startswith("head.")}
    if method in ("slash", "jr-warp"):
        assert method_names == {"projected.z"}
    elif method == "head":
        assert method_names == set()
    elif method == "bitfit":
        assert all(name.endswith("bias") for name in method_names)
    elif method == "lora":
        assert all("lora_" in name for name in method_names) and len(method_names) == 4 * LAYERS
    elif method == "vera":  # the shared random matrices are frozen buffers, not parameters
        assert all("vera_lambda_" in name for name in method_names) and len(method_names) == 4 * LAYERS
        assert not any("vera_A" in name or "vera_B" in name for name in trainable)
    elif method == "warp":
        assert method_names == {"prompts.embeddings"}
    if method == "slash":
        assert plan.position == position
        assert len(model.adaptation.hooks) == LAYERS


@pytest.mark.parametrize("family", FAMILIES)
def test_budget_resolution(tiny_models, family):
    folder = tiny_models[family]
    budget = 700
    for method in ("slash", "jr-warp"):
        _, model, _, plan = build(folder, method, None, d=None, budget=budget)
        assert (plan.size_name, plan.size, plan.method_params) == ("d", budget, budget)
        assert model.projected.z.numel() == budget

    _, model, _, plan = build(folder, "lora", None, rank=None, budget=budget)
    per_rank = 2 * LAYERS * (HIDDEN + HIDDEN)  # 256: q and v are H x H in every layer
    nearest = min(range(1, 20), key=lambda rank: abs(rank * per_rank - budget))
    assert (plan.size_name, plan.size) == ("rank", nearest) == ("rank", 3)
    assert plan.method_params == nearest * per_rank
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n) == 3 * per_rank
    assert plan.note == ""
    # below rank 1 on query and value, LoRA adapts the query alone at rank 1 (half of per_rank)
    for small_budget, over in ((200, False), (100, True)):
        _, model, _, plan = build(folder, "lora", None, rank=None, budget=small_budget)
        lora_names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
        assert (plan.size, plan.method_params) == (1, per_rank // 2)
        query = model.family.lora_targets[0]
        assert len(lora_names) == 2 * LAYERS and all(f".{query}." in name for name in lora_names)
        assert sum(p.numel() for n, p in model.named_parameters() if n in lora_names) == per_rank // 2
        assert f"only the {query} projections" in plan.note and ("smallest lora" in plan.note) == over

    _, model, _, plan = build(folder, "vera", None, rank=None, budget=budget)
    scaling = 2 * LAYERS * HIDDEN  # the b vectors of q and v in every layer: 128, whatever the rank
    assert (plan.size_name, plan.size) == ("rank", round((budget - scaling) / (2 * LAYERS))) == ("rank", 143)
    assert plan.method_params == scaling + 143 * 2 * LAYERS == 700 and plan.note == ""
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "vera_" in n) == 700
    _, _, _, plan = build(folder, "vera", None, rank=None, budget=50)  # below VeRA's smallest size
    assert plan.size == 1 and plan.method_params == scaling + 2 * LAYERS
    assert "smallest vera" in plan.note and "50" in plan.note

    _, model, _, plan = build(folder, "warp", None, prompt_tokens=None, budget=100)
    assert plan.size == round(100 / HIDDEN) == 3
    assert model.prompts.embeddings.shape == (3, HIDDEN)

    for method in ("head", "bitfit", "full"):
        _, _, _, plan = build(folder, method, None, budget=budget)
        assert plan.size is None
        assert "ignored" in plan.note and str(budget) in plan.note and method in plan.note
    _, _, _, plan = build(folder, "slash", None)  # without a budget there is no note
    assert plan.note == ""


# --- merged = unmerged -----------------------------------------------------------------------------------------

LOADER = clean_script("from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer", """
    for key, item in job["models"].items():
        tokenizer = AutoTokenizer.from_pretrained(item["merged"])
        model, info = AutoModelForSequenceClassification.from_pretrained(item["merged"], output_loading_info=True)
        model.eval()
        encoded = tokenizer(job["sentences"], padding=True, truncation=True, max_length=job["max_length"],
                            return_tensors="pt")
        with torch.no_grad():
            logits = model(**encoded).logits
        stock = AutoModelForSequenceClassification.from_config(
            AutoConfig.from_pretrained(item["base"], num_labels=item["num_labels"]))
        out[key] = {
            "logits": logits.tolist(), "input_ids": encoded["input_ids"].tolist(),
            "id2label": {str(k): v for k, v in model.config.id2label.items()},
            "class": type(model).__name__, "stock_class": type(stock).__name__,
            "params": sum(p.numel() for p in model.parameters()),
            "stock_params": sum(p.numel() for p in stock.parameters()),
            "shapes_match": {n: tuple(t.shape) for n, t in model.state_dict().items()}
                            == {n: tuple(t.shape) for n, t in stock.state_dict().items()},
            "missing": list(info["missing_keys"]), "mismatched": [str(m) for m in info["mismatched_keys"]],
        }
""")


@pytest.fixture(scope="module")
def merged_exports(tiny_models, tmp_path_factory):
    """Export every foldable method on every family, then reload all of them in one clean subprocess."""
    root = tmp_path_factory.mktemp("merged")
    texts = sentences(20)
    results: dict[str, dict] = {}
    job = {"sentences": texts, "max_length": MAX_LENGTH, "models": {}}
    for family in FAMILIES:
        for method, position in FOLDABLE:
            key = f"{family}/{method}-{position}"
            try:
                loaded, model, method_obj, plan = build(tiny_models[family], method, position)
                encoder = Encoder(loaded.tokenizer, MAX_LENGTH, model)
                pooler = getattr(model.base(), "pooler", None)
                if pooler is not None:  # a freshly initialised pooler (std 0.02) would flatten every difference
                    with torch.no_grad():
                        pooler.dense.weight.mul_(25.0)
                perturb(model, seed=1, head=True)
                reference = logits_of(model, encoder, texts)  # the head trained, the method untouched
                perturb(model, seed=2, head=False)
                unmerged = logits_of(model, encoder, texts)
                out = root / key.replace("/", "-")
                metadata = metadata_for(model, plan, tiny_models[family], spec_for(method, position))
                merged_form.export_merged(model, method_obj, loaded.tokenizer, metadata, out)
                rows, _ = encoder.encode(texts)
                results[key] = {"unmerged": unmerged, "reference": reference, "out": out,
                                "ids": encoder.collate(rows)["input_ids"].tolist(),
                                "params_after": {n: p.detach().clone() for n, p in model.named_parameters()}}
                job["models"][key] = {"merged": str(out), "base": str(tiny_models[family]),
                                      "num_labels": len(LABELS)}
            except Exception as error:  # reported by the test of that combination
                results[key] = {"error": error}
    for key, value in run_clean(LOADER, job, root, timeout=600).items():
        results[key]["stock"] = value
    return results


@pytest.mark.parametrize(("method", "position"), FOLDABLE, ids=FOLDABLE_IDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_merged_model_equals_unmerged(merged_exports, family, method, position):
    result = merged_exports[f"{family}/{method}-{position}"]
    if "error" in result:
        raise result["error"]
    stock = result["stock"]
    # Same tokens in both worlds, so the logits are comparable row by row.
    assert stock["input_ids"] == result["ids"]
    merged = torch.tensor(stock["logits"])
    unmerged, reference = result["unmerged"], result["reference"]
    difference = (merged - unmerged).abs().max().item()
    assert difference < 1e-4, f"merged and unmerged logits differ by {difference:.2e}"
    effect = (unmerged - reference).abs().max().item()
    if method != "head":  # the perturbed method must matter (here 200x the tolerance), or the comparison proves nothing
        assert effect > 0.02
    assert unmerged.abs().max().item() > 0.05
    assert stock["id2label"] == {"0": "negative", "1": "positive"}
    # Zero added latency: exactly the stock architecture of that family with two labels.
    assert stock["class"] == stock["stock_class"] == STOCK_CLASS[family]
    assert stock["params"] == stock["stock_params"]
    assert stock["shapes_match"] is True
    assert stock["missing"] == [] and stock["mismatched"] == []
    manifest = json.loads((result["out"] / "jrft_manifest.json").read_text(encoding="utf-8"))
    assert manifest["method"] == method and manifest["label_names"] == list(LABELS)
    assert manifest["pooling"] == "cls"
    print(f"merge {family} {method}-{position}: max |logit difference| {difference:.3e}, method effect {effect:.3f}, "
          f"max |logit| {unmerged.abs().max().item():.2f}")


@pytest.mark.parametrize("family", FAMILIES)
def test_export_leaves_the_trained_model_alone(tiny_models, tmp_path, family):
    """Merging works on a copy: the slash model still has its hooks and its z after the export."""
    loaded, model, method_obj, plan = build(tiny_models[family], "slash", "output")
    perturb(model, seed=3, head=False)
    encoder = Encoder(loaded.tokenizer, MAX_LENGTH, model)
    before = logits_of(model, encoder, sentences(4))
    merged_form.export_merged(model, method_obj, loaded.tokenizer, metadata_for(model, plan, tiny_models[family],
                                                                          spec_for("slash", "output")),
                         tmp_path / "merged")
    assert hasattr(model, "projected") and len(model.adaptation.hooks) == LAYERS
    assert torch.equal(before, logits_of(model, encoder, sentences(4)))


@pytest.mark.parametrize("method", ["jr-warp", "warp"])
@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_methods_cannot_be_merged(tiny_models, tmp_path, family, method):
    loaded, model, method_obj, plan = build(tiny_models[family], method, None)
    metadata = metadata_for(model, plan, tiny_models[family], spec_for(method, None))
    with pytest.raises(ArtifactError, match="cannot be folded"):
        merged_form.export_merged(model, method_obj, loaded.tokenizer, metadata, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("pooling", ["mean", "mask"])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_stock_classifier_needs_cls_pooling(tiny_models, tmp_path, family, pooling):
    """The other poolings go to the other forms (tests/core/test_export_forms.py)."""
    loaded, model, method_obj, plan = build(tiny_models[family], "slash", "output", pooling=pooling)
    metadata = metadata_for(model, plan, tiny_models[family], spec_for("slash", "output"))
    with pytest.raises(ArtifactError, match=r"cannot compute \(it reads the cls token\); export it as"):
        merged_form.export_merged(model, method_obj, loaded.tokenizer, metadata, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


# --- vector files ---------------------------------------------------------------------------------------------


def saved_vector(folder: Path, target: Path, method: str = "slash", position: str | None = "output", seed: int = 5,
                 **overrides):
    loaded, model, method_obj, plan = build(folder, method, position, **overrides)
    perturb(model, seed=seed, head=True)
    perturb(model, seed=seed + 1, head=False)
    spec = spec_for(method, position, **overrides)
    weights, sidecar = vector_file.save_vector(target / "vector", model, metadata_for(model, plan, folder, spec))
    encoder = Encoder(loaded.tokenizer, MAX_LENGTH, model)
    return weights, sidecar, model, encoder


@pytest.mark.parametrize(("method", "position"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_vector_round_trip(tiny_models, tmp_path, family, method, position):
    weights, sidecar, model, encoder = saved_vector(tiny_models[family], tmp_path, method, position)
    texts = sentences(8)
    expected = logits_of(model, encoder, texts)
    restored = vector_file.restore(weights)
    assert restored.metadata["method"] == method
    assert restored.metadata["label_names"] == list(LABELS)
    assert torch.equal(logits_of(restored.model, restored.encoder, texts), expected)
    # Only safetensors and JSON were written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vector.json", "vector.safetensors"]


def test_budgeted_lora_round_trip(tiny_models, tmp_path):
    """A LoRA sized by a budget below rank 1 on query and value comes back with the same (query-only) adapters."""
    weights, _, model, encoder = saved_vector(tiny_models["bert"], tmp_path, "lora", None, rank=None, budget=200)
    restored = vector_file.restore(weights)
    texts = sentences(8)
    adapters = {name: p.numel() for name, p in restored.model.named_parameters() if "lora_" in name}
    assert all(".query." in name for name in adapters) and sum(adapters.values()) == 2 * LAYERS * HIDDEN
    assert torch.equal(logits_of(restored.model, restored.encoder, texts), logits_of(model, encoder, texts))


@pytest.fixture(scope="module")
def other_seed_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models-seed-1")
    return {family: build_tiny_model(family, root / family, seed=1) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_vector_refuses_another_base_model(tiny_models, other_seed_models, tmp_path, family):
    weights, *_ = saved_vector(tiny_models[family], tmp_path)
    with pytest.raises(ArtifactError, match="another base model"):
        vector_file.restore(weights, model_override=str(other_seed_models[family]))
    vector_file.restore(weights, model_override=str(tiny_models[family]))  # the same base under its own name is fine


def test_vector_detects_an_edited_tensor(tiny_models, tmp_path):
    weights, *_ = saved_vector(tiny_models["bert"], tmp_path)
    with safe_open(str(weights), framework="pt") as handle:
        header = handle.metadata()
    tensors = load_file(str(weights))
    tensors["projected.z"][3] += 1e-3
    save_file(tensors, str(weights), metadata=header)
    with pytest.raises(ArtifactError, match="SHA-256"):
        vector_file.restore(weights)


def test_vector_detects_an_edited_sidecar(tiny_models, tmp_path):
    weights, sidecar, *_ = saved_vector(tiny_models["bert"], tmp_path)
    metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    metadata["pooling"] = "mean"
    sidecar.write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(ArtifactError, match="edited"):
        vector_file.restore(weights)
    with pytest.raises(ArtifactError, match="edited"):
        vector_file.read_vector(sidecar)  # naming the .json reads the same pair


def test_vector_refuses_a_pickle_without_unpickling_it(tiny_models, tmp_path, monkeypatch):
    calls = []

    def forbidden(name):
        def fail(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called on an untrusted file")
        return fail

    target = tmp_path / "vector.safetensors"
    torch.save({"projected.z": torch.zeros(D), "head.bias": torch.zeros(2)}, tmp_path / "payload.pt")
    (tmp_path / "payload.pt").rename(target)
    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, forbidden(f"{module.__name__}.{name}"))
    with pytest.raises(ArtifactError, match="not a safetensors"):
        vector_file.restore(target)
    with pytest.raises(ArtifactError):
        vector_file.read_vector(target)
    assert calls == []


def test_vector_refuses_a_plain_safetensors_file(tmp_path):
    target = tmp_path / "other.safetensors"
    save_file({"projected.z": torch.zeros(D)}, str(target))
    with pytest.raises(ArtifactError, match="not a JRFT vector"):
        vector_file.read_vector(target)


# --- pooling ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_pooling_modes(tiny_models, family):
    texts = sentences(6) + ["a " * 80]  # the last one is truncated
    encoded = {}
    for pooling in ("mean", "cls", "mask"):
        loaded, model, _, _ = build(tiny_models[family], "slash", "output", pooling=pooling)
        perturb(model, seed=7, head=False)
        assert model.pooling == pooling
        encoder = Encoder(loaded.tokenizer, 32, model)
        rows, truncated = encoder.encode(texts)
        limit = 31 if pooling == "mask" else 32  # the mask token takes one place
        lengths = [len(ids) for ids in loaded.tokenizer(texts)["input_ids"]]
        assert truncated == sum(length > limit for length in lengths) >= 1
        inputs = encoder.collate(rows)
        with torch.no_grad():
            logits = model(**inputs)
            hidden = model.backbone(**inputs).last_hidden_state  # the method's hooks stay active here
        assert logits.shape == (len(texts), len(LABELS)) and torch.isfinite(logits).all()
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        if pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1)
        elif pooling == "mask":
            positions = [len(row["input_ids"]) - 2 for row in rows]
            pooled = hidden[torch.arange(len(rows)), positions]
        else:
            pooled = model.base().pooler(hidden) if family != "distilbert" else hidden[:, 0]
        assert torch.allclose(logits, model.head(pooled), atol=1e-5)
        encoded[pooling] = [list(row["input_ids"]) for row in rows]
        tokenizer = loaded.tokenizer

    assert encoded["mean"] == encoded["cls"]
    for plain, masked in zip(encoded["cls"], encoded["mask"]):
        assert masked.count(tokenizer.mask_token_id) == 1
        assert plain.count(tokenizer.mask_token_id) == 0
        assert masked[-1] == plain[-1] == tokenizer.sep_token_id
        assert len(masked) <= 32
        if len(plain) < 32:  # not truncated: exactly the plain ids with the mask before the final separator
            assert masked == plain[:-1] + [tokenizer.mask_token_id] + plain[-1:]
        else:  # truncated one token earlier to make room for the mask
            assert len(masked) == 32 and masked[:-2] == plain[:-2] and masked[-2] == tokenizer.mask_token_id


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["slash", "warp"])
def test_a_max_length_beyond_the_positions_is_lowered_to_fit(tiny_models, family, method):
    """A text longer than the model's learned positions (less WARP's prompt tokens) is cut to fit, not a crash."""
    loaded, model, _, _ = build(tiny_models[family], method, "output" if method == "slash" else None)
    config = loaded.model.config
    offset = config.pad_token_id + 1 if family == "roberta" else 0  # RoBERTa's positions start after padding
    prompts = model.prompt_count()
    assert prompts == (PROMPTS if method == "warp" else 0)
    room = config.max_position_embeddings - offset - prompts
    encoder = Encoder(loaded.tokenizer, 10_000, model)
    assert encoder.max_length == room
    rows, truncated = encoder.encode(["a " * 1000, "a fine film"])
    assert truncated == 1 and len(rows[0]["input_ids"]) == room
    with torch.no_grad():
        assert torch.isfinite(model(**encoder.collate(rows))).all()
