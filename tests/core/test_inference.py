"""core.inference's Predictor on a tiny trained run: its labels and probabilities are the softmax of the model's
logits, answers come back in input order whatever the batching, and its scores are the run's metrics; and
the classify task's `prediction_records`, the one place its logits become prediction records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jrft_desktop.core import metrics, runs
from jrft_desktop.core.export import vector as vector_file
from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, RunConfig, TrainingSpec
from jrft_desktop.core.tasks.classify import Examples, load_examples
from jrft_desktop.core.inference import Predictor, predict_logits
from jrft_desktop.core.tasks import get_task
from jrft_desktop.core.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = (
    "a gorgeous , witty and moving film",
    "bad",
    "a tedious mess that never finds its footing , and the longest sentence of the lot by some way",
    "fine",
    "it is what it is",
)
CPU = torch.device("cpu")
prediction_records = get_task("classify").prediction_records


def examples(texts, pairs=None) -> Examples:
    return Examples(tuple(texts), tuple(pairs) if pairs is not None else None, ())


@pytest.fixture(scope="module")
def restored(tiny_models, sst2_200, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    config = RunConfig(model=ModelSpec(str(tiny_models["bert"])), data=DataSpec(train=str(sst2_200), max_length=32),
                       method=MethodSpec(name="slash", d=32),
                       training=TrainingSpec(max_steps=6, batch_size=8, eval_every=6, lr=0.05, device="cpu"))
    assert Trainer(config, run_dir).run().status == "completed"
    return vector_file.restore(run_dir / runs.VECTOR_FILE)


def logits_of(restored, texts, pairs=None) -> np.ndarray:
    rows, _ = restored.encoder.encode(texts, pairs)
    return predict_logits(restored.model, restored.encoder, rows, CPU)


def test_labels_and_probabilities_are_the_softmax_of_the_logits(restored):
    predictor = Predictor.from_restored(restored, "cpu")
    assert predictor.label_names == ("0", "1") and predictor.device == CPU
    records = predictor.predict(examples(TEXTS))
    probabilities = metrics.softmax(logits_of(restored, TEXTS))
    assert len(records) == len(TEXTS)
    for record, expected in zip(records, probabilities):
        assert set(record) == {"label", "probabilities"}
        assert list(record["probabilities"]) == ["0", "1"]  # every label, in the run's order
        assert [record["probabilities"][name] for name in ("0", "1")] == pytest.approx(expected, abs=1e-6)
        assert record["label"] == ("0", "1")[int(expected.argmax())]
        assert math.isclose(sum(record["probabilities"].values()), 1.0, abs_tol=1e-5)


def test_answers_keep_the_input_order_across_batches(restored):
    """Batches of 2, sorted by length inside the predictor: each answer is still that text's own."""
    predictor = Predictor.from_restored(restored, CPU, batch_size=2)
    one_by_one = np.concatenate([logits_of(restored, [text]) for text in TEXTS])
    assert predictor.logits(examples(TEXTS)) == pytest.approx(one_by_one, abs=1e-5)
    records = predictor.predict(examples(TEXTS))
    assert predictor.predict(examples(TEXTS[::-1])) == records[::-1]
    assert [record["label"] for record in records] == [("0", "1")[int(row.argmax())] for row in one_by_one]


def test_text_pairs_and_a_model_given_directly(restored):
    predictor = Predictor(restored.model, restored.encoder, restored.metadata, device=CPU)
    pairs = ("and the second part", "x", "y", "z", "w")
    assert predictor.logits(examples(TEXTS, pairs)) == pytest.approx(logits_of(restored, TEXTS, pairs), abs=1e-6)
    expected = prediction_records(logits_of(restored, TEXTS, pairs), ("0", "1"))
    assert predictor.predict(examples(TEXTS, pairs)) == expected


def test_evaluate_scores_the_run_metrics(restored, sst2_200):
    columns = restored.metadata["columns"]
    labelled = load_examples(str(sst2_200), columns["text"], columns["text_pair"], columns["label"],
                             tuple(restored.metadata["label_names"]))
    scored = Predictor.from_restored(restored, "cpu").evaluate(labelled)
    expected = metrics.compute("classification", np.asarray(labelled.labels), logits_of(restored, labelled.texts))
    assert scored.examples == len(labelled.texts) == 200 and scored.truncated >= 0
    assert set(scored.metrics) >= {"accuracy", "macro_f1", "matthews"}
    for name in ("accuracy", "macro_f1", "matthews"):
        assert scored.metrics[name] == pytest.approx(expected[name])


def test_prediction_records_for_classes():
    logits = np.array([[0.0, math.log(3.0)], [math.log(4.0), 0.0]], dtype=np.float32)
    assert prediction_records(logits, ["neg", "pos"]) == [
        {"label": "pos", "probabilities": {"neg": 0.25, "pos": 0.75}},
        {"label": "neg", "probabilities": {"neg": 0.8, "pos": 0.2}},
    ]
    assert prediction_records(np.zeros((0, 2), dtype=np.float32), ["neg", "pos"]) == []


def test_prediction_records_for_regression():
    assert prediction_records(np.array([[0.5], [-1.25]], dtype=np.float32), None) == [{"value": 0.5},
                                                                                       {"value": -1.25}]
    assert prediction_records(np.zeros((0, 1), dtype=np.float32), None) == []
