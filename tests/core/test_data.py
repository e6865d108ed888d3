"""Reading, column guessing, label mapping and splitting of labelled text data, on the shared real datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jrft_desktop.core.config import DataSpec
from jrft_desktop.core.data import read_table
from jrft_desktop.core.errors import DataError
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.tasks.classify import (CLASSIFICATION, REGRESSION, Examples, encode_labels, guess_columns,
                                              label_distribution, load_examples, load_task_data)

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"the shared datasets folder {SHARED_DATA} is not beside the project"
)
SST2_TRAIN = SHARED_DATA / "sst2" / "train.tsv"
SST2_TEST = SHARED_DATA / "sst2" / "test.tsv"


# --- the real files -----------------------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize(
    ("relative", "rows"),
    [("sst2/train.tsv", 60_614), ("rte/train.tsv", 2_127), ("agnews/train.tsv", 10_001), ("cola/train.tsv", 7_250)],
)
def test_row_counts_of_the_shared_files(relative, rows):
    assert len(read_table(str(SHARED_DATA / relative))) == rows


@needs_shared
def test_sst2_train_reads_fast():
    started = time.perf_counter()
    frame = read_table(str(SST2_TRAIN))
    assert time.perf_counter() - started < 2.0
    assert list(frame.columns) == ["sentence", "label"]


@needs_shared
def test_quoted_fields_are_unquoted():
    frame = read_table(str(SHARED_DATA / "cola" / "train.tsv"))
    assert 'Susan whispered "Shut up".' in set(frame["sentence"])


@needs_shared
@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("sst2/train.tsv", ("sentence", None, "label")),
        ("rte/train.tsv", ("sentence1", "sentence2", "label")),
        ("agnews/train.tsv", ("text", None, "label")),
        ("cola/train.tsv", ("sentence", None, "label")),
    ],
)
def test_guessed_columns(relative, expected):
    assert guess_columns(read_table(str(SHARED_DATA / relative), limit=50)) == expected


@needs_shared
def test_sst2_task_with_a_stratified_split():
    data = load_task_data(DataSpec(train=str(SST2_TRAIN)), seed=0)
    assert (data.problem, data.label_names, data.num_labels) == (CLASSIFICATION, ("0", "1"), 2)
    assert (data.text_column, data.text_pair_column, data.label_column) == ("sentence", None, "label")
    assert len(data.train) + len(data.validation) == 60_614
    assert abs(len(data.validation) - 6_061) <= 2
    assert data.validation_source == "seeded stratified 10% split of train (seed 0)"
    assert any("Guessed columns" in note and "'sentence'" in note for note in data.notes)
    positive_share = 33_828 / 60_614
    for part in (data.train, data.validation):
        counts = label_distribution(part, data.label_names)
        assert abs(counts["1"] / len(part) - positive_share) < 0.01


@needs_shared
def test_split_is_deterministic_per_seed_and_differs_across_seeds():
    spec = DataSpec(train=str(SHARED_DATA / "agnews" / "train.tsv"), validation_fraction=0.2)
    first, again, other = (load_task_data(spec, seed) for seed in (3, 3, 4))
    assert first.validation == again.validation and first.train == again.train
    assert first.validation.texts != other.validation.texts
    overlap = set(first.validation.texts) & set(other.validation.texts)
    assert len(overlap) < 0.5 * len(first.validation)
    assert first.label_names == ("Business", "Sci/Tech", "Sports", "World")
    totals = {"Business": 2_496, "Sci/Tech": 2_538, "Sports": 2_458, "World": 2_509}
    for name, count in label_distribution(first.validation, first.label_names).items():
        assert abs(count - 0.2 * totals[name]) <= 1


@needs_shared
def test_agnews_folder_uses_test_file_as_validation():
    data = load_task_data(DataSpec(train=str(SHARED_DATA / "agnews")), seed=0)
    assert len(data.train) == 10_001
    assert data.validation_source == f"file {SHARED_DATA / 'agnews' / 'test.tsv'}"
    assert label_distribution(data.validation, data.label_names) == dict.fromkeys(data.label_names, 1_900)
    assert any("found beside the training data" in note for note in data.notes)


@needs_shared
def test_cola_folder_uses_validation_file():
    data = load_task_data(DataSpec(train=str(SHARED_DATA / "cola")), seed=0)
    assert (len(data.train), len(data.validation)) == (7_250, 1_043)
    assert label_distribution(data.train, data.label_names) == {"0": 2_162, "1": 5_088}
    assert data.validation_source.endswith("cola/validation.tsv")


@needs_shared
def test_validation_file_is_mapped_with_the_training_labels():
    spec = DataSpec(train=str(SST2_TRAIN), validation=str(SHARED_DATA / "sst2" / "test.tsv"))
    data = load_task_data(spec, seed=0)
    assert len(data.train) == 60_614
    assert len(data.validation) == 872
    assert label_distribution(data.validation, data.label_names) == {"0": 428, "1": 444}
    assert data.validation.texts[0] == "it 's a charming and often affecting journey ."
    assert data.validation.labels[:2] == (1, 0)
    assert data.validation_source == f"file {SHARED_DATA / 'sst2' / 'test.tsv'}"


@needs_shared
def test_max_train_rows_splits_validation_off_the_rows_it_reads():
    """A file read whole gets the split a streamed one gets: a tenth of the 556 rows read, not of all 60,614."""
    spec = DataSpec(train=str(SST2_TRAIN), max_train_rows=500)
    data = load_task_data(spec, seed=1)
    assert (len(data.train), len(data.validation)) == (500, 56)
    assert "Sampled 556 of the 60,614 rows of train.tsv at random (seed 1): 500 to train on, the rest for the 10% " \
           "validation split." in data.notes
    assert load_task_data(spec, seed=1) == data and load_task_data(spec, seed=2).train != data.train
    given = load_task_data(DataSpec(train=str(SST2_TRAIN), validation=str(SST2_TEST), max_train_rows=500), 1)
    assert (len(given.train), len(given.validation)) == (500, 872)  # a validation file is kept whole


@needs_shared
def test_max_validation_rows_samples_the_validation_file():
    full = load_task_data(DataSpec(train=str(SST2_TRAIN), validation=str(SST2_TEST)), seed=0)
    spec = DataSpec(train=str(SST2_TRAIN), validation=str(SST2_TEST), max_validation_rows=300)
    data = load_task_data(spec, seed=0)
    assert len(data.validation) == 300 and data.train == full.train
    assert any("Sampled 300 of 872 validation rows" in note for note in data.notes)
    pairs = set(zip(full.validation.texts, full.validation.labels))
    assert set(zip(data.validation.texts, data.validation.labels)) <= pairs  # real rows with their own labels
    assert load_task_data(spec, seed=0).validation == data.validation
    assert load_task_data(spec, seed=1).validation != data.validation
    with pytest.raises(DataError, match="max_validation_rows must be at least 1"):
        load_task_data(DataSpec(train=str(SST2_TRAIN), max_validation_rows=0), seed=0)


@needs_shared
def test_shared_rte_pairs_with_their_labels():
    # GLUE RTE as shipped: sentence pairs with string classes, the labelled dev set as its validation file.
    data = load_task_data(DataSpec(train=str(SHARED_DATA / "rte")), seed=0)
    assert (data.text_column, data.text_pair_column, data.label_column) == ("sentence1", "sentence2", "label")
    assert data.problem == CLASSIFICATION and data.label_names == ("entailment", "not_entailment")
    assert (len(data.train), len(data.validation)) == (2_127, 277)
    assert label_distribution(data.train, data.label_names) == {"entailment": 1_078, "not_entailment": 1_049}
    assert label_distribution(data.validation, data.label_names) == {"entailment": 146, "not_entailment": 131}
    assert data.validation.pairs[0] == "Christopher Reeve had an accident."
    first = data.train.texts.index("No Weapons of Mass Destruction Found in Iraq Yet.")
    assert data.train.pairs[first] == "Weapons of Mass Destruction Found in Iraq."
    assert data.label_names[data.train.labels[first]] == "not_entailment"


@needs_shared
def test_sentence_pairs_with_string_classes(tmp_path):
    pairs = read_table(str(SHARED_DATA / "rte" / "train.tsv"), limit=40)
    pairs.to_csv(tmp_path / "rte.tsv", sep="\t", index=False)
    data = load_task_data(DataSpec(train=str(tmp_path / "rte.tsv"), validation_fraction=0.25), seed=0)
    assert (data.text_column, data.text_pair_column) == ("sentence1", "sentence2")
    assert data.label_names == ("entailment", "not_entailment")
    held_out = label_distribution(data.validation, data.label_names)
    assert sum(held_out.values()) == 10 and min(held_out.values()) >= 4  # stratified
    by_first = dict(zip(pairs["sentence1"], zip(pairs["sentence2"], pairs["label"])))
    assert all(by_first[text] == (pair, data.label_names[label])
               for text, pair, label in zip(data.train.texts, data.train.pairs, data.train.labels))


# --- formats and encodings ----------------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("kind", ["json", "json-lines-named-json", "jsonl", "ndjson", "parquet", "csv"])
def test_formats_round_trip(tmp_path, kind):
    original = read_table(str(SHARED_DATA / "agnews" / "train.tsv"), limit=120)
    target = tmp_path / f"slice.{kind.split('-')[-1]}"
    if kind == "json":
        original.to_json(target, orient="records", force_ascii=False)
    elif kind in ("json-lines-named-json", "jsonl", "ndjson"):
        original.to_json(target, orient="records", lines=True, force_ascii=False)
    elif kind == "parquet":
        original.to_parquet(target)
    else:
        original.to_csv(target, index=False)
    frame = read_table(str(target))
    assert frame["text"].tolist() == original["text"].tolist()
    assert frame["label"].tolist() == original["label"].tolist()
    assert len(read_table(str(target), limit=7)) == 7
    data = load_task_data(DataSpec(train=str(target)), seed=0)
    assert data.label_names == ("Business", "Sci/Tech", "Sports", "World")
    assert len(data.train) + len(data.validation) == 120


def test_json_layouts_and_integer_labels(tmp_path):
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps({"text": ["good", "bad", "fine", "awful"], "label": [1, 0, 1, 0]}))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"columns": ["text", "label"], "data": [["good", 1], ["bad", 0]]}))
    assert read_table(str(columns))["label"].tolist() == [1, 0, 1, 0]
    assert read_table(str(split))["text"].tolist() == ["good", "bad"]
    examples = load_examples(str(columns), "text", None, "label", ("0", "1"))
    assert examples.labels == (1, 0, 1, 0)


def test_latin1_file_falls_back_with_a_note(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncafé au lait,1\nnaïve déjà vu,0\nsoupe,1\ncrème,0\n".encode("latin-1"))
    frame = read_table(str(path))
    assert frame["text"].tolist()[:2] == ["café au lait", "naïve déjà vu"]
    assert any("not UTF-8" in note for note in frame.attrs["notes"])
    data = load_task_data(DataSpec(train=str(path), validation_fraction=0.5), seed=0)
    assert any("not UTF-8" in note for note in data.notes)


def test_bom_and_na_texts(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("text,label\nNA,pos\nnull,neg\nNone,pos\n ,neg\nok,\nfine,neg\n", encoding="utf-8-sig")
    data = load_task_data(DataSpec(train=str(path), validation_fraction=0.4), seed=0)
    assert data.text_column == "text"
    assert sorted(data.train.texts + data.validation.texts) == ["NA", "None", "fine", "null"]
    assert "Dropped 1 row(s) of bom.csv with an empty 'label'." in data.notes
    assert "Dropped 1 row(s) of bom.csv with an empty 'text'." in data.notes


def test_regression_is_detected_from_fractional_labels(tmp_path):
    path = tmp_path / "scores.csv"
    rows = [f"sentence number {i},{i / 7:.3f}" for i in range(40)]
    path.write_text("sentence,score\n" + "\n".join(rows) + "\n")
    data = load_task_data(DataSpec(train=str(path), validation_fraction=0.25), seed=0)
    assert (data.problem, data.label_names, data.num_labels, data.label_column) == (REGRESSION, None, 1, "score")
    assert len(data.validation) == 10 and len(data.train) == 30
    assert all(isinstance(value, float) for value in data.train.labels)
    assert data.validation_source == "seeded random 25% split of train (seed 0)"
    assert label_distribution(data.train, data.label_names) == {}
    again = load_examples(str(path), "sentence", None, "score", None)
    assert again.labels[7] == pytest.approx(1.0)


def test_integer_valued_floats_and_strings_are_classes():
    assert encode_labels([1, "0", 2.0, " 2 ", "1.0"], ("0", "1", "2")) == (1, 0, 2, 2, 1)
    assert encode_labels(["World", "Sports"], ("Business", "Sci/Tech", "Sports", "World")) == (3, 2)


def test_integer_classes_sort_numerically(tmp_path):
    path = tmp_path / "stars.jsonl"
    path.write_text("\n".join(json.dumps({"review": f"review {i}", "stars": i % 11}) for i in range(66)) + "\n")
    data = load_task_data(DataSpec(train=str(path), label_column="stars"), seed=0)
    assert data.label_names == tuple(str(stars) for stars in range(11))
    assert data.text_column == "review"
    assert label_distribution(data.validation, data.label_names) == dict.fromkeys(data.label_names, 1)


def test_datasets_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"sentence": [f"line {i}" for i in range(30)], "label": [i % 3 for i in range(30)]}
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "neu", "pos"])})
    train = datasets.Dataset.from_dict(rows, features=features)
    validation = datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [2, 0]}, features=features)
    datasets.DatasetDict({"train": train, "validation": validation}).save_to_disk(str(tmp_path / "dict"))
    train.save_to_disk(str(tmp_path / "single"))

    data = load_task_data(DataSpec(train=str(tmp_path / "dict")), seed=0)
    assert len(data.train) == 30 and data.validation.labels == (2, 0)
    assert data.label_names == ("neg", "neu", "pos")  # the data's own names for the class ids
    classify = get_task("classify")
    named = {"columns": {"text": "sentence", "text_pair": None, "label": "label"}, "label_names": ("pos", "neu", "neg")}
    assert classify.load_examples(str(tmp_path / "single"), named).labels[:3] == (2, 1, 0)  # ids 0, 1, 2 by name
    by_id = {**named, "label_names": ("0", "1", "2")}  # a run that recorded the ids keeps reading ids
    assert classify.load_examples(str(tmp_path / "single"), by_id).labels[:3] == (0, 1, 2)
    assert data.validation_source == f"split 'validation' of datasets folder {tmp_path / 'dict'}"
    assert any("0=neg, 1=neu, 2=pos" in note for note in data.notes)
    single = load_task_data(DataSpec(train=str(tmp_path / "single")), seed=0)
    assert len(single.train) + len(single.validation) == 30
    assert len(read_table(str(tmp_path / "dict"), limit=5)) == 5


def test_load_examples_without_labels(tmp_path):
    path = tmp_path / "predict.csv"
    path.write_text("sentence\nfirst text\n\nNA\nlast one\n")
    examples = load_examples(str(path), "sentence", None, "label", ("0", "1"))
    assert examples == Examples(("first text", "NA", "last one"), None, ())
    assert load_examples(str(path), "sentence", None, None, None).labels == ()


# --- bad input ----------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_missing_file():
    with pytest.raises(DataError, match=r"^No such file: /no/where/train\.csv$"):
        read_table("/no/where/train.csv")


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(DataError, match=r"^empty\.tsv is empty\.$"):
        read_table(write(tmp_path / "empty.tsv", ""))
    header_only = write(tmp_path / "header.csv", "text,label\n")
    assert read_table(header_only).shape == (0, 2)
    with pytest.raises(DataError, match="header.csv has column names but no data rows"):
        load_task_data(DataSpec(train=header_only), seed=0)
    with pytest.raises(DataError, match="holds no data"):
        read_table(write(tmp_path / "empty.json", "[]"))


@needs_shared
def test_misspelt_column_suggests_the_closest():
    spec = DataSpec(train=str(SST2_TRAIN), text_column="sentense")
    with pytest.raises(DataError) as raised:
        load_task_data(spec, seed=0)
    assert str(raised.value) == (
        "Column 'sentense' not found in train.tsv; did you mean 'sentence'? Columns: sentence, label"
    )
    with pytest.raises(DataError, match="Column 'body' not found in train.tsv. Columns: sentence, label"):
        load_examples(str(SST2_TRAIN), "body", None, None, None)


def test_all_blank_labels(tmp_path):
    path = write(tmp_path / "blank.csv", "text,label\nfirst,\nsecond, \n")
    with pytest.raises(DataError, match="'label' of blank.csv is empty in every row"):
        load_task_data(DataSpec(train=path), seed=0)


def test_single_class(tmp_path):
    path = write(tmp_path / "one.csv", "text,label\na,positive\nb,positive\nc,\n")
    with pytest.raises(DataError, match="needs at least two classes; found only 'positive'"):
        load_task_data(DataSpec(train=path), seed=0)


@needs_shared
def test_unseen_validation_labels(tmp_path):
    validation = write(tmp_path / "val.tsv", "sentence\tlabel\ngreat\t1\nmeh\t2\nbad\tneutral\n")
    with pytest.raises(DataError) as raised:
        load_task_data(DataSpec(train=str(SST2_TRAIN), validation=validation), seed=0)
    assert str(raised.value) == ("Label(s) '2', 'neutral' did not occur in the training data; "
                                 "known labels: '0', '1'.")


@needs_shared
def test_tab_file_named_csv_is_read_with_tabs(tmp_path):
    path = tmp_path / "tabs.csv"
    path.write_bytes((SHARED_DATA / "sst2" / "test.tsv").read_bytes())
    frame = read_table(str(path))
    assert frame.shape == (872, 2)
    assert any("tab-separated" in note for note in frame.attrs["notes"])


def test_wrong_delimiter_and_malformed_files(tmp_path):
    single = write(tmp_path / "single.csv", "text label\ngood 1\nbad 0\n")
    with pytest.raises(DataError, match="single column .* delimiter looks wrong"):
        load_task_data(DataSpec(train=single), seed=0)
    ragged = write(tmp_path / "ragged.csv", "text,label\ngood,1\nbad, really bad,0\n")
    with pytest.raises(DataError, match=r"Cannot parse ragged\.csv: Expected 2 fields in line 3, saw 3"):
        read_table(ragged)
    unbalanced = write(tmp_path / "quote.csv", 'text,label\n"good,1\nbad,0\n')
    with pytest.raises(DataError, match="Cannot parse quote.csv: EOF inside string"):
        read_table(unbalanced)
    with pytest.raises(DataError, match=r"broken\.json is not valid JSON: .* line 1"):
        read_table(write(tmp_path / "broken.json", '[{"text": "a", "label": 1},'))
    with pytest.raises(DataError, match=r"Line 2 of broken\.jsonl is not valid JSON"):
        read_table(write(tmp_path / "broken.jsonl", '{"text": "a"}\n{"text": \n'))
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        read_table(write(tmp_path / "sheet.xlsx", "x"))


def test_bad_settings(tmp_path):
    path = write(tmp_path / "ok.csv", "text,label\na,x\nb,y\nc,x\nd,y\n")
    with pytest.raises(DataError, match="validation_fraction"):
        load_task_data(DataSpec(train=path, validation_fraction=1.0), seed=0)
    with pytest.raises(DataError, match="must differ"):
        load_task_data(DataSpec(train=path, text_column="label", label_column="label"), seed=0)
    with pytest.raises(DataError, match="No training data given"):
        load_task_data(DataSpec(), seed=0)


def test_unreachable_hub_dataset_is_one_clear_sentence(tmp_path):
    script = (
        "from jrft_desktop.core.data import read_table\n"
        "from jrft_desktop.core.errors import DataError\n"
        "try:\n    read_table('someone/no-such-dataset:config')\n"
        "except DataError as error:\n    print(error)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert result.stdout.strip() == (
        "No file or folder 'someone/no-such-dataset:config', and dataset 'someone/no-such-dataset:config' is not "
        "in the local Hugging Face cache and the hub cannot be reached; download it once online or give a file."
    ), result.stderr
