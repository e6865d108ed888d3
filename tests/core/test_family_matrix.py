"""The family conformance matrix: a tiny random model of every registered family (tests/tiny_models.py, built
offline), every task it serves (classify and tag; generate for decoders) and every method.

For each family: the trainable parameter counts of every method (PEFT's targets found under the family's names),
a few training steps that lower the loss, a vector saved and restored with the same outputs and refused on another
base model, every foldable merge (SLaSh at each position that folds, the head, BitFit where biases exist, LoRA,
VeRA, full) equal to the run in the family's stock transformers class loaded in a clean process that never imports
jrft_desktop (logits within 1e-4, and the merged causal LM's greedy answers equal to the run's), the positions that
cannot fold refused by the stock forms before anything is written and held exactly by ONNX, and ONNX for each task
that exports to it. Adding a family is its registry entry (core/families.py) plus passing this file."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch
from clean_process import clean_script, run_clean
from test_methods_matrix import sentences
from tiny_models import FAMILY_CONFIGS, build_family_model

from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import Decoding, MethodSpec, ModelSpec
from jrft_desktop.core.errors import ArtifactError, ModelError
from jrft_desktop.core.export import merged as merged_form
from jrft_desktop.core.export import onnx as onnx_form
from jrft_desktop.core.export import vector as vector_file
from jrft_desktop.core.families import FAMILIES, features
from jrft_desktop.core.methods.options import POSITIONS
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.tasks.classify import Examples
from jrft_desktop.core.tasks.generate import Conversations, generate_ids
from jrft_desktop.core.tasks.tag import TagExamples
from jrft_desktop.core.train.step import Optimization, first_batches

pytestmark = pytest.mark.usefixtures("one_thread", "no_fsync")

D, RANK, PROMPTS, MAX_LENGTH, NEW_TOKENS = 24, 2, 2, 48, 6
SIZES = {"slash": {"d": D}, "jr-warp": {"d": D}, "lora": {"rank": RANK}, "vera": {"rank": RANK},
         "warp": {"prompt_tokens": PROMPTS}}
METHODS = ("slash", "jr-warp", "head", "bitfit", "lora", "vera", "warp", "full")
LABELS = ("negative", "positive")
TAGS = ("short", "long")
TYPES = tuple(FAMILIES)
TASKS = [(family, task) for family in TYPES
         for task in ("classify", "tag", *(("generate",) if FAMILIES[family].causal else ()))]
TASK_IDS = [f"{family}-{task}" for family, task in TASKS]
STOCK_CLASS = {"classify": "AutoModelForSequenceClassification", "tag": "AutoModelForTokenClassification",
               "generate": "AutoModelForCausalLM"}


@pytest.fixture(scope="module")
def no_fsync():
    """Hundreds of small exports: their atomic writes skip fsync here (a quarter of the time; what a crash leaves
    behind is tests/test_crash_safety.py's subject, not this file's)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("os.fsync", lambda fd: None)
        yield


@pytest.fixture(scope="session")
def family_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family-models")
    return {family: build_family_model(family, root / family) for family in TYPES}


_LOADED: dict = {}


def loaded_backbone(folder: Path, task: str):
    """The tiny model loaded once per (model, task) and copied for every build (loading is the slow part)."""
    key = (str(folder), task)
    if key not in _LOADED:
        _LOADED[key] = load_backbone(ModelSpec(str(folder)), get_task(task))
    return copy.deepcopy(_LOADED[key])


def build(folder: Path, task: str, method: str, position: str | None = None, pooling: str = "auto"):
    loaded = loaded_backbone(folder, task)
    spec = MethodSpec(name=method, **SIZES.get(method, {}), **({"position": position} if position else {}))
    num_labels = {"classify": len(LABELS), "tag": len(TAGS), "generate": 1}[task]
    model, method_object, plan = build_model(ModelSpec(pooling=pooling), spec, get_task(task), num_labels,
                                             loaded=loaded)
    model.eval()
    return loaded, model, method_object, plan, spec


def examples(task: str, count: int = 8):
    """A few labelled examples of the task, from the bundled SST-2 sample: sentiment classes, each word tagged by
    its length, or the sentiment word as the answer to the sentence."""
    texts = sentences(count)
    classes = [index % 2 for index in range(count)]
    if task == "classify":
        return Examples(tuple(texts), None, tuple(classes))
    if task == "tag":
        plain = TagExamples.from_texts(texts)
        return TagExamples(plain.texts, plain.spans, tuple(tuple(int(end - start > 4) for start, end in spans)
                                                            for spans in plain.spans))
    return Conversations.of([(("user", text), ("assistant", LABELS[label])) for text, label in zip(texts, classes)],
                            labelled=True)


def batch_of(model, loaded, task: str):
    encoder = get_task(task).make_encoder(loaded.tokenizer, MAX_LENGTH, model)
    return first_batches(get_task(task), encoder, examples(task), 8, 1, torch.device("cpu"))[0]


def outputs_of(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs)


def perturb(model, seed: int) -> None:
    """Seeded noise on every trainable tensor, so that the method matters in the comparisons (the head of a decoder's
    language model is frozen and stays as it is)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                scale = 1.0 if name == "projected.z" or "vera_lambda_" in name else 0.3 if "lora_" in name else 0.1
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def metadata_for(model, plan, folder: Path, spec: MethodSpec) -> dict:
    task = model.task.name
    problem, names, columns = {
        "classify": ("classification", LABELS, {"text": "sentence", "text_pair": None, "label": "label"}),
        "tag": ("tagging", TAGS, {"text": "tokens", "text_pair": None, "label": "tags"}),
        "generate": ("generation", None, {"text": "instruction", "layout": "alpaca"})}[task]
    return vector_file.vector_metadata(
        model=model, plan=plan, method_spec=plan.resolved(spec), model_spec=ModelSpec(str(folder)),
        max_length=MAX_LENGTH, problem=problem, label_names=names, columns=columns, seed=0, metrics={})


@functools.cache
def structure(family: str) -> tuple[tuple[str, ...], bool]:
    """(the SLaSh positions whose merge folds into the family's stock class, whether the model has biases), read
    from the tiny model's structure on the meta device, so that the test ids are known when pytest collects them."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(family, **{**FAMILY_CONFIGS[family][1], "vocab_size": 600, "pad_token_id": 0})
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    layer = FAMILIES[family].layer_modules(model)[0]
    return (tuple(position for position in POSITIONS if not FAMILIES[family].fold_problem(layer, position, config)),
            any(name.endswith("bias") for name, _ in model.named_parameters()))


def folds(family: str, task: str, method: str, position: str | None) -> bool:
    """Whether the case merges into a stock class: a method that folds and trains something here, at a position
    whose bias the stock class can hold, for a task the family has a stock class for."""
    if method in ("warp", "jr-warp") or FAMILIES[family].stock_problem(task):
        return False
    if method == "bitfit" and not structure(family)[1] or method == "head" and not get_task(task).trains_head:
        return False  # nothing to train: a model without biases, a language model's frozen head
    return method != "slash" or position in structure(family)[0]


# --- the registry and its tiny models -------------------------------------------------------------------------------


def test_every_registered_family_has_a_tiny_model_and_a_default_position_that_folds(family_models):
    assert set(FAMILY_CONFIGS) == set(FAMILIES)
    for family, folder in family_models.items():
        for task in ("classify", "generate") if FAMILIES[family].causal else ("classify",):
            _, _, _, plan, _ = build(folder, task, "slash")  # the position left at 'auto'
            model = loaded_backbone(folder, task).model
            foldable = [position for position in POSITIONS if not FAMILIES[family].fold_problem(
                FAMILIES[family].layer_modules(model)[0], position, model.config)]
            assert plan.position in foldable or not foldable, (family, task, plan.position, foldable)
            # said before training where a position does not fold (the Method page and `jrft methods` show it)
            assert bool(plan.note) == (len(foldable) < len(POSITIONS)), (family, plan.note)


# --- counts --------------------------------------------------------------------------------------------------------


def expected_params(family: str, method: str, backbone) -> int:
    targets = [module for name, module in backbone.named_modules()
               if name.rsplit(".", 1)[-1] in FAMILIES[family].lora_targets and hasattr(module, "weight")]
    hidden = backbone.get_input_embeddings().weight.shape[1]
    return {"slash": D, "jr-warp": D, "head": 0, "warp": PROMPTS * hidden,
            "bitfit": sum(p.numel() for name, p in backbone.named_parameters() if name.endswith("bias")),
            "lora": RANK * sum(sum(features(m)) for m in targets),
            "vera": sum(features(m)[1] + RANK for m in targets),
            "full": sum(p.numel() for p in backbone.parameters())}[method]


@pytest.mark.parametrize("family", TYPES)
def test_trainable_parameter_counts(family_models, family):
    folder = family_models[family]
    backbone = loaded_backbone(folder, "classify").model
    layers = len(FAMILIES[family].layer_modules(backbone))
    targets = [name for name, _ in backbone.named_modules() if name.rsplit(".", 1)[-1] in FAMILIES[family].lora_targets]
    assert len(targets) == layers * len(FAMILIES[family].lora_targets)  # PEFT's targets exist under these names
    for method in METHODS:
        if method == "bitfit" and not structure(family)[1]:
            with pytest.raises(ModelError, match="has none; choose slash"):
                build(folder, "classify", method)
            continue
        _, model, _, plan, _ = build(folder, "classify", method)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert plan.method_params == expected_params(family, method, backbone), method
        assert plan.trainable_params == trainable == plan.method_params + plan.head_params, method


# --- training, vectors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "task"), TASKS, ids=TASK_IDS)
def test_a_few_steps_lower_the_loss(family_models, family, task):
    """SLaSh at the family's default position on every task; every other method on classification (read from the
    mean of the tokens: a tiny random encoder's first token barely differs between texts)."""
    cases = [("slash", None)] + ([(method, None) for method in METHODS[1:]] if task == "classify" else [])
    pooling = "mean" if task == "classify" and not FAMILIES[family].causal else "auto"
    for method, position in cases:
        if method == "bitfit" and not structure(family)[1]:
            continue
        torch.manual_seed(0)  # the head's first values, whatever ran before
        loaded, model, _, _, _ = build(family_models[family], task, method, position, pooling)
        inputs, labels = batch_of(model, loaded, task)
        lr = 1e-3 if method == "full" else 3e-3
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        step = Optimization.create(model, optimizer, get_task(task).loss_function(
            {"classify": "classification", "tag": "tagging", "generate": "generation"}[task]),
            torch.device("cpu"), full_precision=True)
        losses = [step.step(inputs, labels) for _ in range(10)]
        assert losses[-1] < losses[0], f"{method}: {losses}"


@pytest.mark.parametrize(("family", "task"), [case for case in TASKS if case[1] != "tag"],
                         ids=[case for case in TASK_IDS if not case.endswith("-tag")])
def test_vector_round_trip_and_a_foreign_base_refused(family_models, tmp_path, family, task):
    loaded, model, _, plan, spec = build(family_models[family], task, "slash")
    perturb(model, seed=5)
    inputs, _ = batch_of(model, loaded, task)
    vector_file.save_vector(tmp_path / "vector", model, metadata_for(model, plan, family_models[family], spec))
    restored = vector_file.restore(tmp_path / "vector.safetensors")
    assert restored.metadata["method_spec"]["position"] == plan.position  # 'auto' recorded as it was resolved
    assert torch.allclose(outputs_of(restored.model, inputs), outputs_of(model, inputs), atol=1e-6)
    other = build_family_model(family, tmp_path / "other", seed=1)
    with pytest.raises(ArtifactError, match="trained on another base model"):
        vector_file.restore(tmp_path / "vector.safetensors", model_override=str(other))


# --- merges into the stock classes ---------------------------------------------------------------------------------

LOADER = clean_script("import transformers", """
    for key, item in job["models"].items():
        auto = getattr(transformers, item["auto_class"])
        model, info = auto.from_pretrained(item["folder"], output_loading_info=True)
        model.eval()
        inputs = {name: torch.tensor(value) for name, value in item["inputs"].items()}
        with torch.no_grad():
            logits = model(**inputs).logits
        answers = []
        if item["prompts"]:
            model.generation_config.eos_token_id = None  # every token greedily, as the run's generate_ids is asked
            for ids in item["prompts"]:
                ids = torch.tensor([ids])
                generated = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                           max_new_tokens=job["new_tokens"], pad_token_id=0)
                answers.append(generated[0, ids.shape[1]:].tolist())
        ids = None
        if item["texts"]:
            tokenizer = transformers.AutoTokenizer.from_pretrained(item["folder"])
            ids = tokenizer(item["texts"], truncation=True, max_length=job["max_length"])["input_ids"]
        out[key] = {"logits": logits.tolist(), "class": type(model).__name__, "answers": answers, "ids": ids,
                    "missing": list(info["missing_keys"]), "unexpected": list(info["unexpected_keys"]),
                    "mismatched": [str(m) for m in info["mismatched_keys"]]}
""")


def _merge_case(root: Path, folder: Path, family: str, task: str, method: str, position: str | None):
    """One merged export and what the clean process needs to check it, or the refusal the case must meet."""
    loaded, model, method_object, plan, spec = build(folder, task, method, position)
    inputs, _ = batch_of(model, loaded, task)
    reference = outputs_of(model, inputs)
    perturb(model, seed=2)
    run = outputs_of(model, inputs)
    out = root / f"{family}-{task}-{method}-{position}"
    merged_form.export_merged(model, method_object, loaded.tokenizer, metadata_for(model, plan, folder, spec), out)
    item = {"folder": str(out), "auto_class": STOCK_CLASS[task], "inputs": {k: v.tolist() for k, v in inputs.items()},
            "prompts": [], "texts": []}
    result = {"run": run, "reference": reference, "answers": []}
    if task == "generate":
        encoder = get_task(task).make_encoder(loaded.tokenizer, MAX_LENGTH, model)
        item["prompts"] = [encoder.prompt_ids((("user", text),)) for text in sentences(2)]
        greedy = Decoding(max_new_tokens=NEW_TOKENS, repetition_penalty=1.0)
        result["answers"] = [generate_ids(model, ids, frozenset(), greedy, torch.device("cpu"))
                             for ids in item["prompts"]]
    elif task == "classify":
        item["texts"] = sentences(8)
        result["ids"] = [row[:length] for row, length in zip(inputs["input_ids"].tolist(),
                                                              inputs["attention_mask"].sum(1).tolist())]
    return result, item


@pytest.fixture(scope="module")
def merged_models(family_models, tmp_path_factory):
    """Every foldable case of every family and task merged, then all loaded in one clean process."""
    root = tmp_path_factory.mktemp("family-merges")
    results, job = {}, {"models": {}, "new_tokens": NEW_TOKENS, "max_length": MAX_LENGTH}
    for key in MERGES:
        family, task, case = key.split("/")
        method, position = case.rsplit("-", 1)
        results[key], job["models"][key] = _merge_case(root, family_models[family], family, task, method,
                                                       None if position == "None" else position)
    for key, value in run_clean(LOADER, job, root, timeout=900).items():
        results[key]["stock"] = value
    return results


# Every method on classification; on tagging and generation each SLaSh position and the methods whose merge differs
# there (the head on every token; LoRA and full finetuning, whose merge holds the language model's layers): how a
# method folds into the layers does not depend on the task, the head written after it does.
OTHER_TASKS_METHODS = {"tag": ("slash", "head", "lora"), "generate": ("slash", "lora", "full")}
MERGES = [f"{family}/{task}/{method}-{position}" for family, task in TASKS
          for method, position in [("slash", p) for p in POSITIONS] + [(m, None) for m in METHODS[1:]]
          if folds(family, task, method, position) and method in OTHER_TASKS_METHODS.get(task, METHODS)]


@pytest.mark.parametrize("key", MERGES)
def test_a_merge_is_the_run_in_the_stock_class(merged_models, key):
    result = merged_models[key]
    stock = result["stock"]
    assert stock["missing"] == stock["unexpected"] == stock["mismatched"] == []  # no tensor dropped or made up
    merged, run = torch.tensor(stock["logits"]), result["run"]
    assert merged.shape == run.shape
    difference = (merged - run).abs().max().item()
    assert difference < 1e-4, f"the stock {stock['class']} differs from the run by {difference:.2e}"
    if "/head-" not in key:  # the perturbed method must matter, or the comparison proves nothing
        assert (run - result["reference"]).abs().max().item() > 1e-3
    assert stock["answers"] == result["answers"]
    if stock["ids"] is not None:  # the stock tokenizer gives the run's tokens
        assert stock["ids"] == result["ids"]


@pytest.mark.parametrize(("family", "task"), [case for case in TASKS if case[1] != "generate"],
                         ids=[case for case in TASK_IDS if not case.endswith("-generate")])
def test_what_cannot_fold_is_refused_before_writing_and_onnx_holds_it(family_models, tmp_path, family, task):
    """Each SLaSh position that does not fold into a stock class (and a task without a stock class) is refused by
    the transformers form, before anything is written; ONNX holds the run exactly (its own check compares the
    graph with the run). Where everything folds, ONNX of the default position."""
    folder = family_models[family]
    refused = [position for position in POSITIONS if not folds(family, task, "slash", position)]
    for position in refused:
        loaded, model, method_object, plan, spec = build(folder, task, "slash", position)
        assert "does not fold" in plan.note or FAMILIES[family].stock_problem(task)  # said before training
        with pytest.raises(ArtifactError, match="ONNX"):
            merged_form.export_merged(model, method_object, loaded.tokenizer,
                                      metadata_for(model, plan, folder, spec), tmp_path / "merged")
        assert not (tmp_path / "merged").exists()
    loaded, model, method_object, plan, spec = build(folder, task, "slash", (refused or [None])[0])
    perturb(model, seed=3)
    out = onnx_form.export_onnx(model, method_object, loaded.tokenizer, metadata_for(model, plan, folder, spec),
                                tmp_path / "onnx")
    assert json.loads((out / "jrft_manifest.json").read_text(encoding="utf-8"))["format"] == "onnx"
