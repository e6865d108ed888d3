"""The tag task (token classification, NER): reading CoNLL / JSON / Parquet / `datasets` token data, guessing the
task, sub-word alignment, entity metrics against seqeval, every method on every family (training, vector files,
merged stock models checked in a clean subprocess with `AutoModelForTokenClassification` and the
token-classification pipeline), predictions with character offsets, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from clean_process import clean_script, run_clean
from tiny_models import DECODERS, FAMILIES, build_tiny_model

from jrft_desktop.cli import main
from jrft_desktop.core.export import merged as merged_form, vector as vector_file
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, RunConfig, TrainingSpec
from jrft_desktop.core.data import read_table
from jrft_desktop.core.errors import DataError
from jrft_desktop.core.inference import Predictor, predict_logits
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks import get_task, task_for
from jrft_desktop.core.tasks.tag import IGNORED, TagExamples, first_tokens, load_tag_data, tag_metrics
from jrft_desktop.core.train.loop import Trainer
from jrft_desktop.core.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

TAG = get_task("tag")
NAMES = ("O", "B-location", "I-location", "B-person", "I-person")
CONLL = """-DOCSTART- -X- -X- O

Alice\tB-person
lives\tO
in\tO
New\tB-location
York\tI-location
.\tO
\t
Bob   NNP  B-NP  B-person
smiles  VBZ  B-VP  O

  \t
Paris\tB-location
\t
"""
MAX_LENGTH = 32


def conll_lines(path: Path, sentences: int) -> str:
    """The first `sentences` sentences of a CoNLL file."""
    out, seen = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        out.append(line)
        if not line.strip():
            seen += 1
            if seen == sentences:
                break
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """The tiny encoders, and tiny decoders built here."""
    root = tmp_path_factory.mktemp("tiny-decoders")
    return {**tiny_models, **{family: build_tiny_model(family, root / family) for family in DECODERS}}


@pytest.fixture(scope="module")
def wnut(shared_data, tmp_path_factory) -> dict[str, Path]:
    """A real slice of WNUT-17: 400 training and 120 validation sentences."""
    root = tmp_path_factory.mktemp("wnut")
    folder = shared_data / "wnut17"
    files = {"train": root / "train.conll", "validation": root / "validation.conll"}
    files["train"].write_text(conll_lines(folder / "train.conll", 400), encoding="utf-8")
    files["validation"].write_text(conll_lines(folder / "validation.conll", 120), encoding="utf-8")
    return files


# --- reading ----------------------------------------------------------------------------------------------------
def test_conll_reader(tmp_path):
    path = tmp_path / "small.conll"
    path.write_text(CONLL, encoding="utf-8")
    frame = read_table(str(path))
    assert frame["tokens"].tolist() == [["Alice", "lives", "in", "New", "York", "."], ["Bob", "smiles"], ["Paris"]]
    assert frame["tags"].tolist() == [["B-person", "O", "O", "B-location", "I-location", "O"], ["B-person", "O"],
                                      ["B-location"]]
    (tmp_path / "tokens.conll").write_text("Alice\nlives\n\nBob\n", encoding="utf-8")
    assert list(read_table(str(tmp_path / "tokens.conll")).columns) == ["tokens"]  # tokens alone: to predict
    assert read_table(str(path), limit=2)["tokens"].tolist()[-1] == ["Bob", "smiles"]


def test_the_real_wnut17_files(shared_data):
    """The sentence counts of the data's README and the tag counts of `cut -f2 train.conll | sort | uniq -c`."""
    folder = shared_data / "wnut17"
    data = load_tag_data(DataSpec(train=str(folder / "train.conll"), validation=str(folder / "test.conll")), 0)
    assert (len(data.train), len(data.validation)) == (3394, 1287)
    counts = TAG.data_view.label_distribution(data.train, data.label_names)
    assert counts["O"] == 59570 and counts["B-person"] == 660 and counts["I-creative-work"] == 206
    assert sum(counts.values()) == 66124 - 3394  # every line but the blank ones
    assert data.label_names[0] == "O" and len(data.label_names) == 13
    assert task_for("auto", str(folder / "train.conll")) is TAG
    assert TAG.data_view.describe(data).startswith("Token tagging with 13 tags over 6 entity types")
    assert len(load_tag_data(DataSpec(train=str(folder / "validation.conll")), 0).train) == 908  # 1,009 less 10%
    assert any("297 token(s) of test.conll carry several tags" in note for note in data.notes)


def test_json_parquet_and_datasets_token_data(tmp_path):
    rows = [{"words": ["Alice", "lives", "in", "Paris"], "ner": ["B-person", "O", "O", "B-location"]},
            {"words": ["Bob", "left"], "ner": ["B-person", "O"]},
            {"words": ["New", "York"], "ner": ["B-location", "I-location"]}] * 3
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    expected = None
    for name in ("train.jsonl", "train.parquet"):
        data = load_tag_data(DataSpec(train=str(tmp_path / name), validation_fraction=0.3), 0)
        assert (data.tokens_column, data.tags_column) == ("words", "ner")
        assert task_for("auto", str(tmp_path / name)) is TAG
        found = (data.label_names, data.train, data.validation)
        assert expected is None or found == expected
        expected = found
    assert any("Guessed columns: tokens 'words', tags 'ner'" in note for note in data.notes)

    # integer tags named by a sidecar tags.txt, or by a `datasets` ClassLabel feature
    ids = {"O": 0, "B-person": 1, "B-location": 2, "I-location": 3}
    numbered = [{"tokens": row["words"], "ner_tags": [ids[tag] for tag in row["ner"]]} for row in rows]
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / "train.json").write_text(json.dumps(numbered), encoding="utf-8")
    with pytest.raises(DataError, match="integer tags without names"):
        load_tag_data(DataSpec(train=str(tmp_path / "ids" / "train.json")), 0)
    (tmp_path / "ids" / "tags.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    sidecar = load_tag_data(DataSpec(train=str(tmp_path / "ids" / "train.json"), validation_fraction=0.3), 0)
    import datasets

    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=list(ids)))})
    datasets.DatasetDict({"train": datasets.Dataset.from_list(numbered, features=features)}).save_to_disk(
        str(tmp_path / "saved"))
    labelled = load_tag_data(DataSpec(train=str(tmp_path / "saved"), validation_fraction=0.3), 0)
    for loaded in (sidecar, labelled):
        assert (loaded.label_names, loaded.train, loaded.validation) == expected


def test_auto_guesses_the_task_and_old_configs_still_load(tmp_path, sst2_200):
    assert DataSpec().task == "auto"
    assert task_for("auto", str(sst2_200)).name == "classify"
    assert task_for("classify", str(tmp_path / "anything.conll")).name == "classify"  # a chosen task is not guessed
    old = RunConfig().to_dict()
    del old["data"]["task"]
    assert RunConfig.from_dict(old).data.task == "auto"
    old["data"]["task"] = "classify"
    assert RunConfig.from_dict(old).data.task == "classify"


# --- sub-words ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", [*FAMILIES, *DECODERS])
def test_first_sub_token_carries_the_tag(models, family):
    """Against the tokenizer's own word ids for the same text: the first token of each word gets its tag; the other
    sub-tokens, the special tokens and the padding are IGNORED; words past the maximum length are counted."""
    loaded = load_backbone(ModelSpec(str(models[family])))
    model, _, _ = build_model(ModelSpec(), MethodSpec(name="head"), TAG, len(NAMES), loaded=loaded)
    encoder = TAG.make_encoder(loaded.tokenizer, 16, model)
    sentences = [["unbelievably", "moving", "film", "about", "Paris"], ["a", "remarkably", "dull", "mess"],
                 ["word"] * 30]
    tags = [[3, 0, 0, 0, 1], [0, 3, 4, 0], [0] * 30]
    examples = TagExamples.from_words(sentences, tags)
    rows, cut = encoder.encode(examples)
    labels = encoder.collate_labels(rows, examples.labels)
    inputs = encoder.collate(rows)
    assert set(inputs) <= {"input_ids", "attention_mask", "token_type_ids"}
    assert labels.shape == inputs["input_ids"].shape
    for index, text in enumerate(examples.texts[:2]):
        word_ids = loaded.tokenizer(text).word_ids()
        firsts = {word: word_ids.index(word) for word in set(word_ids) if word is not None}
        expected = torch.full((labels.shape[1],), IGNORED)
        for word, position in firsts.items():
            expected[position] = tags[index][word]
        assert torch.equal(labels[index], expected)
        assert (labels[index] != IGNORED).sum() == len(sentences[index])
    assert len(rows[2]["input_ids"]) == 16
    assert cut == 30 - sum(position >= 0 for position in rows[2]["word_starts"]) > 0
    assert "words were cut off" in TAG.truncation_note(cut, 0, 16)


def test_first_tokens_by_character_offsets():
    text, spans = "Hello world !", [(0, 5), (6, 11), (12, 13)]
    # [CLS], "hello", "wor", "##ld", "!", [SEP]
    assert first_tokens(text, [(0, 0), (0, 5), (6, 9), (9, 11), (12, 13), (0, 0)], [1, 0, 0, 0, 0, 1],
                        spans) == [1, 2, 4]
    # byte-level BPE: "Ġworld" whose span holds the space before it; a lone "Ġ" (its span the space, or empty)
    assert first_tokens(text, [(0, 5), (5, 11)], [0, 0], spans) == [0, 1, -1]
    assert first_tokens(text, [(0, 5), (5, 6), (6, 11), (11, 12), (12, 13)], [0] * 5, spans) == [0, 1, 3]
    assert first_tokens(text, [(0, 5), (6, 6), (6, 11)], [0, 0, 0], spans) == [0, 1, -1]


# --- metrics --------------------------------------------------------------------------------------------------------
def test_entity_metrics_are_seqevals():
    """Hand-computed: gold has person (Alice), location (New York) and person (Bob); the prediction finds Alice,
    cuts New York short (a wrong entity), and misses Bob (its word was cut off: NaN outputs count as O)."""
    from seqeval.metrics import classification_report, f1_score

    names = NAMES
    gold = [[3, 0, 0, 1, 2], [3, 0]]
    predicted = [[3, 0, 0, 1, 0], [None, 0]]
    outputs = []
    for tags in predicted:
        rows = np.full((len(tags), len(names)), np.nan, dtype=np.float32)
        for word, tag in enumerate(tags):
            if tag is not None:
                rows[word] = -1.0
                rows[word, tag] = 2.0
        outputs.append(rows)
    scores = tag_metrics(gold, outputs, names)
    assert scores["entity_precision"] == pytest.approx(1 / 2)  # Alice right, "New" wrong
    assert scores["entity_recall"] == pytest.approx(1 / 3)
    assert scores["entity_f1"] == pytest.approx(0.4)
    assert scores["token_accuracy"] == pytest.approx(5 / 7)
    assert scores["per_type"] == {"location": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
                                  "person": {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3),
                                             "support": 2}}
    as_text = [[names[t] for t in row] for row in gold], [["B-person", "O", "O", "B-location", "O"], ["O", "O"]]
    assert scores["entity_f1"] == pytest.approx(f1_score(*as_text))
    assert classification_report(*as_text, output_dict=True)["person"]["support"] == 2
    iobes = ("O", "S-person", "B-location", "E-location")
    scored = tag_metrics([[1, 2, 3]], [np.eye(4, dtype=np.float32)[[1, 2, 3]]], iobes)
    assert scored["entity_f1"] == 1.0 and set(scored["per_type"]) == {"person", "location"}


# --- every method on every family -------------------------------------------------------------------------------
CASES = [("slash", "attention"), ("slash", "intermediate"), ("slash", "output"), ("jr-warp", None), ("warp", None),
         ("lora", None), ("vera", None), ("bitfit", None), ("head", None), ("full", None)]
SIZES = {"slash": {"d": 24}, "jr-warp": {"d": 24}, "lora": {"rank": 2}, "vera": {"rank": 2},
         "warp": {"prompt_tokens": 2}}


def spec_for(method: str, position: str | None) -> MethodSpec:
    return MethodSpec(name=method, position=position or "output", **SIZES.get(method, {}))


@pytest.mark.parametrize(("method", "position"), CASES, ids=[f"{m}-{p}" if p else m for m, p in CASES])
@pytest.mark.parametrize("family", [*FAMILIES, *DECODERS])
def test_every_method_trains_a_tagger(models, wnut, tmp_path, family, method, position):
    """A short run on real WNUT sentences: the loss falls, the best checkpoint is chosen by entity F1, and the
    vector file gives the trained model's outputs back."""
    if (family, method) == ("llama", "bitfit"):
        pytest.skip("Llama has no bias terms for BitFit")
    config = RunConfig(model=ModelSpec(str(models[family])),
                       data=DataSpec(train=str(wnut["train"]), validation=str(wnut["validation"]),
                                     max_length=MAX_LENGTH, max_validation_rows=40),
                       method=spec_for(method, position),
                       training=TrainingSpec(max_steps=8, batch_size=16, eval_every=4, device="cpu",
                                             lr=0.05 if method in ("slash", "jr-warp", "head", "warp") else 5e-3))
    events: list = []
    finished = Trainer(config, tmp_path / "run", [events.append]).run()
    metrics = finished.metrics
    assert metrics["metric"] == "entity_f1" and 0.0 <= metrics["entity_f1"] <= 1.0
    assert metrics["token_accuracy"] > 0.5 and isinstance(metrics["per_type"], dict)
    losses = [entry["loss"] for entry in json.loads((tmp_path / "run" / "history.json").read_text()) if "loss" in entry]
    assert min(losses[-3:]) < losses[0]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert set(saved["per_type"]) <= {"person", "location", "group", "corporation", "product", "creative-work"}
    vector = json.loads((tmp_path / "run" / "vector.json").read_text(encoding="utf-8"))
    assert vector["task_name"] == "tag" and vector["task"] == "tagging" and vector["label_names"][0] == "O"
    assert "per_type" not in vector["metrics"] and vector["metrics"]["entity_f1"] == metrics["entity_f1"]
    notes = next(event.notes for event in events if hasattr(event, "notes"))
    assert any("left context" in note for note in notes) == (family in DECODERS)

    # on the base as the run held it (a bf16 base on a CPU with bf16): the same weights, so the same scores
    restored = vector_file.restore(tmp_path / "run" / "vector.safetensors", base_dtype=vector["base_dtype"])
    validation = TAG.load_data(config.data, config.training.seed).validation  # the run's seeded 40 sentences
    scored = Predictor.from_restored(restored, "cpu").evaluate(validation)
    assert scored.metrics["entity_f1"] == pytest.approx(metrics["entity_f1"], abs=1e-9)
    assert scored.metrics["loss"] == pytest.approx(metrics["loss"], rel=1e-4)


# --- merged stock models and the token-classification pipeline --------------------------------------------------
LOADER = clean_script("from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline", """
    for key, item in job["models"].items():
        tokenizer = AutoTokenizer.from_pretrained(item["merged"])
        model = AutoModelForTokenClassification.from_pretrained(item["merged"]).eval()
        logits = []
        for text in item["texts"]:
            with torch.no_grad():
                logits.append(model(**tokenizer(text, return_tensors="pt")).logits[0].tolist())
        tagger = pipeline("token-classification", model=model, tokenizer=tokenizer, device="cpu")
        found = {strategy: [[{k: (float(v) if k == "score" else v) for k, v in e.items() if k != "word"}
                             for e in tagger(text, aggregation_strategy=strategy)] for text in item["texts"]]
                 for strategy in ("simple", "first")}
        out[key] = {"logits": logits, "class": type(model).__name__, "entities": found,
                    "id2label": {str(k): v for k, v in model.config.id2label.items()}}
""")
FOLDABLE = [case for case in CASES if case[0] not in ("jr-warp", "warp")]
WORDS = ("the", "film", "is", "a", "good", "movie", "and", "it", "of", "bad", "story", "with", "one", "best",
         "funny", "life", "love", "fun", "work", "time", "more", "great", "all", "this", "so", "not", "you")


def single_token_sentences(tokenizer, count: int = 6) -> list[str]:
    """Sentences of words that are each one token for this tokenizer (at the start and after a space), so the
    pipeline's per-token view and the word view of `jrft predict` see the same decisions."""
    words = [w for w in WORDS if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1
             and len(tokenizer(f"a {w}", add_special_tokens=False)["input_ids"]) == 2]
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=7)) for _ in range(count)]


def perturb(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                scale = 1.0 if name.startswith("head.") or name == "projected.z" or "vera_lambda" in name else 0.1
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


@pytest.fixture(scope="module")
def merged_taggers(models, tmp_path_factory):
    """Every foldable method on every family, exported as a stock token classifier and reloaded, with the pipeline,
    in one clean subprocess that never imports jrft_desktop."""
    root = tmp_path_factory.mktemp("merged-taggers")
    results, job = {}, {"models": {}}
    for family in (*FAMILIES, *DECODERS):
        for method, position in FOLDABLE:
            key = f"{family}/{method}-{position}"
            if (family, method) == ("llama", "bitfit"):
                continue
            loaded = load_backbone(ModelSpec(str(models[family])))
            model, method_obj, plan = build_model(ModelSpec(), spec_for(method, position), TAG, len(NAMES),
                                                  loaded=loaded)
            perturb(model, seed=len(results))
            model.eval()
            encoder = TAG.make_encoder(loaded.tokenizer, MAX_LENGTH, model)
            texts = single_token_sentences(loaded.tokenizer) + ["Alice flew from Paris to New York, then home."]
            examples = TAG.examples_from_texts(texts)
            rows, _ = encoder.encode(examples)
            with torch.no_grad():
                logits = [model(**encoder.collate([row]))[0] for row in rows]
            predictor = Predictor(model, encoder, {"label_names": list(NAMES), "task": "tagging"}, "cpu")
            metadata = vector_file.vector_metadata(
                model=model, plan=plan, method_spec=spec_for(method, position), model_spec=ModelSpec(str(
                    models[family])), max_length=MAX_LENGTH, problem="tagging", label_names=NAMES,
                columns={"text": "tokens", "text_pair": None, "label": "tags"}, seed=0,
                metrics={})
            out = root / key.replace("/", "-")
            merged_form.export_merged(model, method_obj, loaded.tokenizer, metadata, out)
            results[key] = {"logits": logits, "records": predictor.predict(examples), "texts": texts}
            job["models"][key] = {"merged": str(out), "texts": texts}
    for key, value in run_clean(LOADER, job, root).items():
        results[key]["stock"] = value
    return results


def trimmed(text: str, entity: dict) -> tuple[int, int]:
    """A pipeline entity's offsets without the space before it (GPT-2's byte-level offsets count it in)."""
    start, end = entity["start"], entity["end"]
    return start + len(text[start:end]) - len(text[start:end].lstrip()), end


@pytest.mark.parametrize(("method", "position"), FOLDABLE, ids=[f"{m}-{p}" if p else m for m, p in FOLDABLE])
@pytest.mark.parametrize("family", [*FAMILIES, *DECODERS])
def test_merged_tagger_equals_unmerged_and_the_pipeline_finds_the_same_entities(merged_taggers, family, method,
                                                                                 position):
    if (family, method) == ("llama", "bitfit"):
        pytest.skip("Llama has no bias terms for BitFit")
    result = merged_taggers[f"{family}/{method}-{position}"]
    stock = result["stock"]
    assert stock["class"].endswith("ForTokenClassification")
    assert stock["id2label"] == {str(i): name for i, name in enumerate(NAMES)}
    for ours, theirs in zip(result["logits"], stock["logits"]):
        difference = (ours - torch.tensor(theirs)).abs().max().item()
        assert difference < 1e-4, f"merged and unmerged logits differ by {difference:.2e}"
    for index, record in enumerate(result["records"]):
        text = result["texts"][index]
        ours = [(e["type"], e["start"], e["end"]) for e in record["entities"]]
        assert all(text[e["start"]:e["end"]] == e["text"] for e in record["entities"])
        if index < len(result["records"]) - 1:  # one token per word: the per-token ("simple") view agrees
            theirs = [(e["entity_group"], *trimmed(text, e)) for e in stock["entities"]["simple"][index]]
            assert ours == theirs
            scores = [e["score"] for e in stock["entities"]["simple"][index]]
            assert [e["score"] for e in record["entities"]] == pytest.approx(scores, abs=1e-4)
        elif family in ("bert", "distilbert"):  # WordPiece words are the pipeline's words: "first" agrees
            theirs = [(e["entity_group"], *trimmed(text, e)) for e in stock["entities"]["first"][index]]
            assert ours == theirs


def test_the_merged_comparisons_saw_entities(merged_taggers):
    """The perturbed heads tag words as entities, so the comparisons above compare entities, not empty lists."""
    found = [sum(len(record["entities"]) for record in result["records"]) for result in merged_taggers.values()]
    assert sum(count > 0 for count in found) >= 0.8 * len(found) and sum(found) > 100


# --- predictions and the command line ---------------------------------------------------------------------------
def test_predictions_have_exact_offsets():
    text = "  Alice  met Bob in New York."
    examples = TagExamples.from_texts([text])
    assert examples.words(0) == ["Alice", "met", "Bob", "in", "New", "York", "."]
    outputs = np.full((7, len(NAMES)), -5.0, dtype=np.float32)
    for word, tag in enumerate([3, 0, 3, 0, 1, 2, 0]):
        outputs[word, tag] = 5.0
    record, = TAG.prediction_records([outputs], NAMES, examples)
    assert [(e["text"], e["type"], e["start"], e["end"]) for e in record["entities"]] == [
        ("Alice", "person", 2, 7), ("Bob", "person", 13, 16), ("New York", "location", 20, 28)]
    assert record["entities"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert record["tags"] == ["B-person", "O", "B-person", "O", "B-location", "I-location", "O"]


def test_cli_train_predict_eval_and_export(tiny_models, wnut, tmp_path, capfd):
    run = tmp_path / "run"
    argv = ["train", "--data", str(wnut["train"]), "--validation", str(wnut["validation"]), "--model",
            str(tiny_models["bert"]), "--max-steps", "4", "--batch-size", "16", "--max-length", str(MAX_LENGTH),
            "--d", "24", "--output", str(run)]
    assert main(argv) == 0
    capfd.readouterr()
    assert main(["predict", str(run), "Alice met Bob in New York .", "  spaced   out  "]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, ["Alice met Bob in New York .", "  spaced   out  "]):
        record = json.loads(line)
        assert record["text"] == text and len(record["tags"]) == len(record["words"])
        assert all(text[e["start"]:e["end"]] == e["text"] and 0 <= e["score"] <= 1 for e in record["entities"])
    assert main(["predict", str(run), "--data", str(wnut["validation"])]) == 0
    assert len(capfd.readouterr().out.splitlines()) == 120
    assert main(["eval", str(run), "--data", str(wnut["validation"])]) == 0
    scores = json.loads(capfd.readouterr().out)
    assert {"entity_f1", "entity_precision", "entity_recall", "token_accuracy", "per_type"} <= set(scores)
    assert scores["examples"] == 120
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert scores["entity_f1"] == pytest.approx(metrics["entity_f1"])  # the same validation file
    assert main(["export", str(run), "--merged", str(tmp_path / "merged")]) == 0
    config = json.loads((tmp_path / "merged" / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["BertForTokenClassification"] and config["id2label"]["0"] == "O"


def test_predict_logits_keep_the_input_order(tiny_models):
    loaded = load_backbone(ModelSpec(str(tiny_models["roberta"])))
    model, _, _ = build_model(ModelSpec(), MethodSpec(name="slash", d=8), TAG, len(NAMES), loaded=loaded)
    perturb(model, 3)
    encoder = TAG.make_encoder(loaded.tokenizer, MAX_LENGTH, model)
    examples = TagExamples.from_texts(["a long sentence about the film and its story", "short", "a film"])
    rows, _ = encoder.encode(examples)
    together = predict_logits(model, encoder, rows, torch.device("cpu"), batch_size=2)
    alone = [predict_logits(model, encoder, [row], torch.device("cpu"))[0] for row in rows]
    assert [output.shape for output in together] == [(9, len(NAMES)), (1, len(NAMES)), (2, len(NAMES))]
    for first, second in zip(together, alone):
        assert np.allclose(first, second, atol=1e-5)


# --- private training ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [MethodSpec(name="slash", d=24), MethodSpec(name="slash", d=24, position="attention"),
                                  MethodSpec(name="lora", rank=2), MethodSpec(name="head")],
                         ids=["slash-output", "slash-attention", "lora", "head"])
def test_per_sentence_gradients_equal_a_loop_over_sentences(models, spec):
    """A sentence is the privacy unit: each sentence's own gradient (summed over its tagged words), by the general
    route (torch.func) and SLaSh's own (its probes, generalised to a head on every token), equals one backward pass
    on that sentence alone, unpadded."""
    from jrft_desktop.core.train.privacy import per_example_gradients

    torch.manual_seed(0)
    loaded = load_backbone(ModelSpec(str(models["bert"])))
    model, method, _ = build_model(ModelSpec(), spec, TAG, len(NAMES), loaded=loaded)
    perturb(model, 5)
    model.eval()
    encoder = TAG.make_encoder(loaded.tokenizer, MAX_LENGTH, model)
    examples = TagExamples.from_words([["Alice", "unbelievably", "met", "Bob"], ["in", "Paris"], ["a", "b", "c"]],
                                      [[3, 0, 0, 3], [0, 1], [0, 0, 0]])
    rows, _ = encoder.encode(examples)
    inputs, labels = encoder.collate(rows), encoder.collate_labels(rows, examples.labels)
    loss_fn = TAG.loss_function("tagging")
    routes = {"torch.func": per_example_gradients(model, inputs, labels, loss_fn)}
    own = method.per_example_gradients(model, inputs, labels, loss_fn)
    assert (own is not None) == (spec.name == "slash")
    if own is not None:
        routes["method"] = own
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    for index, row in enumerate(rows):
        model.zero_grad()
        loss = loss_fn(model(**encoder.collate([row])), encoder.collate_labels([row], [examples.labels[index]]))
        loss.backward()
        for route, (grads, losses) in routes.items():
            assert losses[index] == pytest.approx(loss.item(), rel=1e-5), route
            for name, parameter in trainable.items():
                scale = parameter.grad.abs().max().item() + 1e-8
                assert torch.allclose(grads[name][index], parameter.grad, atol=2e-5 * scale + 1e-7), (route, name)


@pytest.mark.parametrize("method", ["slash", "lora"])
def test_private_tagging_reports_epsilon(models, wnut, tmp_path, method):
    from jrft_desktop.core.config import Privacy
    from jrft_desktop.core.privacy_report import REPORT_NAME

    config = RunConfig(model=ModelSpec(str(models["bert"])),
                       data=DataSpec(train=str(wnut["train"]), validation=str(wnut["validation"]),
                                     max_length=MAX_LENGTH, max_validation_rows=40),
                       method=MethodSpec(name=method, **SIZES[method]) if method in SIZES else MethodSpec(name=method),
                       training=TrainingSpec(max_steps=6, batch_size=16, eval_every=3, device="cpu", lr=0.05),
                       privacy=Privacy(epsilon=3.0, accountant="rdp"))
    events: list = []
    finished = Trainer(config, tmp_path / "run", [events.append]).run()
    privacy = finished.metrics["privacy"]
    assert privacy["train_examples"] == 400 and privacy["steps"] == 6  # sentences are the privacy unit
    assert 0 < privacy["epsilon_spent"] <= 3.0 + privacy["epsilon_error"]
    spent = [event.epsilon for event in events if getattr(event, "epsilon", None) is not None]
    assert len(spent) == 6 and spent == sorted(spent)
    assert (tmp_path / "run" / REPORT_NAME).is_file() and "entity_f1" in finished.metrics
    vector = json.loads((tmp_path / "run" / "vector.json").read_text(encoding="utf-8"))
    assert vector["privacy"]["epsilon_spent"] == privacy["epsilon_spent"]


@pytest.mark.parametrize(("content", "name", "message"), [
    ("Alice\tB-person\nleft\tO\nBob\n", "mixed.conll",
     "Line 3 of mixed.conll has a token but no tag ('Bob'), unlike the lines before it"),
    ("Alice NNP\nleft VBD\n", "train.conll", "Tag(s) 'NNP', 'VBD' in train.conll are not BIO or IOBES tags"),
    ("Alice\tO\nleft\tO\n\nBob\tO\n", "train.conll", "Every tag in train.conll is O; there is no entity to learn."),
    ('{"tokens": ["Alice", " "], "tags": ["B-person", "O"]}\n', "blank.jsonl",
     "Row 1 of blank.jsonl has an empty token (token 2)"),
    ('{"tokens": ["Alice"], "ner_tags": [7]}\n', "ids.jsonl", "Column 'ner_tags' holds integer tags without names"),
])
def test_more_bad_token_data(tmp_path, content, name, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as raised:
        load_tag_data(DataSpec(train=str(tmp_path / name)), 0)
    assert message in str(raised.value) and "\n" not in str(raised.value)
