"""Every pooling on every tiny encoder family exports a merged model that a stock library runs: the transformers
classifier (cls), a sentence-transformers folder (mean, cls) and ONNX (every pooling), each compared with the
unmerged model within 1e-4.

The folders are loaded in clean subprocesses that never import jrft_desktop: one with torch (sentence-transformers,
transformers' AutoModel, and optimum when it is installed), one with onnxruntime and tokenizers only (torch is
blocked there), as a user of the exported folder would load them."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from clean_process import run_clean
from test_methods_matrix import LABELS, MAX_LENGTH, build, metadata_for, perturb, sentences, spec_for
from tiny_models import FAMILIES

from jrft_desktop.core.export import merged as merged_form
from jrft_desktop.core.errors import ArtifactError
from jrft_desktop.core.export.forms import FORMS, choose, fitting
from jrft_desktop.core.tasks.classify import Encoder

POOLINGS = ("mean", "cls", "mask")
AUTO_FORM = {"cls": "transformers", "mean": "sentence-transformers", "mask": "onnx"}
FITTING = {"cls": ["transformers", "sentence-transformers", "onnx"], "mean": ["sentence-transformers", "onnx"],
           "mask": ["onnx"]}
TOLERANCE = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")

TORCH_LOADER = textwrap.dedent("""
    import importlib.util, json, sys
    sys.modules["jrft_desktop"] = None  # the folders must need nothing from this app
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer, AutoModelForSequenceClassification
    job = json.load(sys.stdin)
    torch.set_num_threads(1)
    texts = job["sentences"]
    optimum = importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.onnxruntime")
    out = {"optimum": bool(optimum)}
    for key, folder in job["folders"].items():
        form = key.rsplit("/", 1)[1]
        if form == "sentence-transformers":
            model = SentenceTransformer(folder, device="cpu")
            tokens = model.encode(texts[:1], output_value="token_embeddings")[0]
            encoder, info = AutoModel.from_pretrained(folder, output_loading_info=True)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            with torch.no_grad():
                hidden = encoder.eval()(**tokenizer(texts[:1], return_tensors="pt")).last_hidden_state[0]
            out[key] = {"logits": model.encode(texts, batch_size=4).tolist(), "modules": [type(m).__name__ for m in model],
                        "encoder": type(encoder).__name__, "missing": sorted(info["missing_keys"]),
                        "unexpected": sorted(info["unexpected_keys"]),
                        "encoder_difference": float((hidden - torch.as_tensor(tokens)).abs().max())}
        elif form == "transformers":
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
            with torch.no_grad():
                batch = tokenizer(texts, padding=True, truncation=True, max_length=job["max_length"], return_tensors="pt")
                out[key] = {"logits": model(**batch).logits.tolist()}
        elif optimum:
            from optimum.onnxruntime import ORTModelForSequenceClassification
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = ORTModelForSequenceClassification.from_pretrained(folder)
            batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            out[key] = {"logits": model(**batch).logits.tolist()}
    out["jrft_desktop_imported"] = sys.modules.get("jrft_desktop") is not None  # blocked above
    print(json.dumps(out))
""")

ONNX_LOADER = textwrap.dedent("""
    import json, sys
    sys.modules["torch"] = None  # onnxruntime and tokenizers alone
    sys.modules["jrft_desktop"] = None
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer
    job = json.load(sys.stdin)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    out = {}
    for key, folder in job["folders"].items():
        tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
        session = onnxruntime.InferenceSession(f"{folder}/model.onnx", options, providers=["CPUExecutionProvider"])
        names = [node.name for node in session.get_inputs()]
        result = {"inputs": {node.name: node.shape for node in session.get_inputs()},
                  "outputs": {node.name: node.shape for node in session.get_outputs()},
                  "id2label": json.load(open(f"{folder}/config.json"))["id2label"]}
        for part, batch in (("single", job["sentences"]), ("pairs", [tuple(pair) for pair in job["pairs"]])):
            encodings = tokenizer.encode_batch(batch)
            feeds = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                     "token_type_ids": [e.type_ids for e in encodings]}
            logits, = session.run(["logits"], {name: np.array(feeds[name], dtype=np.int64) for name in names})
            result[part] = {"logits": logits.tolist(), "input_ids": feeds["input_ids"]}
        out[key] = result
    out["jrft_desktop_imported"] = sys.modules.get("jrft_desktop") is not None  # blocked above, torch too
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def exports(tiny_models, tmp_path_factory):
    """Every form that fits, for every family and pooling (SLaSh with a perturbed z and head), loaded back in the
    two clean subprocesses."""
    root = tmp_path_factory.mktemp("forms")
    texts = sentences(12) + ["a " * 90]  # the last one is truncated
    pairs = [(text, other) for text, other in zip(texts[:6], reversed(texts[:6]))]
    cases, torch_job, onnx_job = {}, {}, {}
    for family in FAMILIES:
        for pooling in POOLINGS:
            loaded, model, method, plan = build(tiny_models[family], "slash", "output", pooling=pooling)
            pooler = getattr(model.base(), "pooler", None)
            if pooler is not None:  # a freshly initialised pooler (std 0.02) would flatten every difference
                with torch.no_grad():
                    pooler.dense.weight.mul_(25.0)
            perturb(model, seed=1, head=True)
            perturb(model, seed=2, head=False)
            encoder = Encoder(loaded.tokenizer, MAX_LENGTH, model)
            with torch.no_grad():
                single_rows, _ = encoder.encode(texts)
                pair_rows, _ = encoder.encode([a for a, _ in pairs], [b for _, b in pairs])
                case = {"single": model(**encoder.collate(single_rows)), "pairs": model(**encoder.collate(pair_rows)),
                        "ids": {"single": encoder.collate(single_rows)["input_ids"].tolist(),
                                "pairs": encoder.collate(pair_rows)["input_ids"].tolist()},
                        "fitting": [form.name for form in fitting(model, method)],
                        "auto": choose(model, method)[0].name, "folders": {}}
            metadata = metadata_for(model, plan, tiny_models[family], spec_for("slash", "output"))
            for name in case["fitting"]:
                key = f"{family}/{pooling}/{name}"
                folder = FORMS[name].write(model, method, loaded.tokenizer, metadata, root / key.replace("/", "-"))
                case["folders"][name] = folder
                torch_job[key] = str(folder)  # an ONNX folder there for optimum, when it is installed
                if name == "onnx":
                    onnx_job[key] = str(folder)
            cases[(family, pooling)] = case
    common = {"sentences": texts, "pairs": pairs, "max_length": MAX_LENGTH}
    by_torch = run_clean(TORCH_LOADER, {**common, "folders": torch_job}, root)
    optimum = by_torch.pop("optimum")
    loaded = {**{f"optimum:{key}": value for key, value in by_torch.items() if key.endswith("/onnx")},
              **{key: value for key, value in by_torch.items() if not key.endswith("/onnx")},
              **run_clean(ONNX_LOADER, {**common, "folders": onnx_job}, root)}
    return cases, loaded, optimum


def _difference(stock: list, unmerged: torch.Tensor) -> float:
    return (torch.tensor(stock) - unmerged).abs().max().item()


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_pooling_has_forms_and_auto_picks_the_stock_class_first(exports, family, pooling):
    cases, _, _ = exports
    case = cases[(family, pooling)]
    assert case["fitting"] == FITTING[pooling]
    assert case["auto"] == AUTO_FORM[pooling]
    for name, folder in case["folders"].items():
        manifest = json.loads((folder / "jrft_manifest.json").read_text(encoding="utf-8"))
        assert manifest["format"] == name and manifest["pooling"] == pooling
        assert manifest["label_names"] == list(LABELS)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sentence_transformers_folder_gives_the_logits(exports, family, pooling):
    cases, loaded, _ = exports
    case, stock = cases[(family, pooling)], loaded[f"{family}/{pooling}/sentence-transformers"]
    difference = _difference(stock["logits"], case["single"])
    assert difference < TOLERANCE, f"sentence-transformers and unmerged logits differ by {difference:.2e}"
    assert case["single"].abs().max() > 0.05  # the comparison is not between zeros
    with_pooler = pooling == "cls" and family != "distilbert"  # BERT and RoBERTa pool through dense + tanh
    assert stock["modules"] == ["Transformer", "Pooling", *["Dense"] * (2 if with_pooler else 1)]
    # the encoder inside is a plain transformers model of the family, every weight in place
    assert stock["encoder"] == {"bert": "BertModel", "roberta": "RobertaModel", "distilbert": "DistilBertModel"}[family]
    assert stock["missing"] == [] and stock["unexpected"] == [] and stock["encoder_difference"] < 1e-5
    config = json.loads((case["folders"]["sentence-transformers"] / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {"0": "negative", "1": "positive"}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_cls_run_is_still_the_stock_classifier(exports, family):
    cases, loaded, _ = exports
    difference = _difference(loaded[f"{family}/cls/transformers"]["logits"], cases[(family, "cls")]["single"])
    assert difference < TOLERANCE


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_gives_the_logits_without_torch(exports, family, pooling):
    cases, loaded, _ = exports
    case, stock = cases[(family, pooling)], loaded[f"{family}/{pooling}/onnx"]
    wanted = ["input_ids", "attention_mask", *(["token_type_ids"] if family == "bert" else [])]
    assert stock["inputs"] == {name: ["batch", "sequence"] for name in wanted}
    assert stock["outputs"] == {"logits": ["batch", len(LABELS)]}
    assert stock["id2label"] == {"0": "negative", "1": "positive"}
    for part in ("single", "pairs"):
        # tokenizer.json alone gives the run's token ids (for mask pooling, with the mask before the separator)
        assert stock[part]["input_ids"] == case["ids"][part]
        difference = _difference(stock[part]["logits"], case[part])
        assert difference < TOLERANCE, f"{part}: ONNX and unmerged logits differ by {difference:.2e}"


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_optimum_loads_the_onnx_folder(exports, family, pooling):
    cases, loaded, optimum = exports
    if not optimum:
        pytest.skip("optimum (with its onnxruntime part) is not installed")
    difference = _difference(loaded[f"optimum:{family}/{pooling}/onnx"]["logits"], cases[(family, pooling)]["single"])
    assert difference < TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_a_form_that_cannot_hold_the_run_says_why_and_writes_nothing(tiny_models, tmp_path, family):
    loaded, model, method, plan = build(tiny_models[family], "slash", "output", pooling="mask")
    metadata = metadata_for(model, plan, tiny_models[family], spec_for("slash", "output"))
    with pytest.raises(ArtifactError, match="cannot hold a mask-pooled run.*Export it as ONNX"):
        FORMS["sentence-transformers"].write(model, method, loaded.tokenizer, metadata, tmp_path / "st")
    with pytest.raises(ArtifactError, match="cannot compute .*; export it as ONNX"):
        merged_form.export_merged(model, method, loaded.tokenizer, metadata, tmp_path / "merged")
    with pytest.raises(ArtifactError, match="cannot hold a mask-pooled run"):
        choose(model, method, "sentence-transformers")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", ["jr-warp", "warp"])
def test_prompt_methods_have_no_merged_form(tiny_models, tmp_path, method):
    loaded, model, method_obj, plan = build(tiny_models["bert"], method, None, pooling="mean")
    assert fitting(model, method_obj) == []
    with pytest.raises(ArtifactError, match="cannot be folded"):
        choose(model, method_obj)
    metadata = metadata_for(model, plan, tiny_models["bert"], spec_for(method, None))
    for form in FORMS.values():
        with pytest.raises(ArtifactError, match="cannot be folded"):
            form.write(model, method_obj, loaded.tokenizer, metadata, tmp_path / form.name)
    assert list(tmp_path.iterdir()) == []
