"""The real default model (all-MiniLM-L6-v2) on real SST-2: SLaSh learns, and its merge is exact."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from jrft_desktop.core.config import TrainingSpec, DataSpec, MethodSpec, ModelSpec, RunConfig
from jrft_desktop.core.tasks.classify import load_examples
from jrft_desktop.core.export.merged import export_merged
from jrft_desktop.core.export.vector import restore
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks.classify import Encoder
from jrft_desktop.core.paths import sample_data_dir
from jrft_desktop.core.inference import evaluate
from jrft_desktop.core.train.loop import Trainer
from jrft_desktop.core.build import build_model

SAMPLE = sample_data_dir()


@pytest.mark.slow
def test_slash_on_default_model_reaches_75_percent_on_sst2_dev(tmp_path, shared_data):
    """150 steps of SLaSh (d = 1024, 1,794 parameters) on a 4,000-sentence SST-2 slice, scored on GLUE dev."""
    config = RunConfig(
        data=DataSpec(train=str(SAMPLE / "sst2_train.tsv"), validation=str(shared_data / "sst2" / "test.tsv"),
                      max_length=64),
        method=MethodSpec(name="slash", d=1024, position="output"),
        training=TrainingSpec(max_steps=150, batch_size=32, eval_every=75),
    )
    result = Trainer(config, tmp_path / "run").run()
    assert result.status == "completed"
    assert result.metrics["trainable_params"] == 1024 + 384 * 2 + 2
    assert result.metrics["validation_examples"] == 872
    assert result.metrics["accuracy"] >= 0.75, result.metrics

    # The exported vector reproduces the score on the real file, and is tiny.
    vector = tmp_path / "run" / "vector.safetensors"
    assert vector.stat().st_size <= 16 * 1024
    restored = restore(vector, base_dtype=result.metrics["base_dtype"])  # the base the run was held in
    examples = load_examples(str(shared_data / "sst2" / "test.tsv"), "sentence", None, "label", ("0", "1"))
    rows, _ = restored.encoder.encode(examples.texts)
    scores = evaluate(restored.model, restored.encoder, rows, np.asarray(examples.labels), "classification",
                      torch.device("cpu"), precision=result.metrics["precision"])  # as the run evaluated
    assert scores["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-9)


def test_slash_merge_of_default_model_is_exact_for_stock_transformers(tmp_path):
    loaded = load_backbone(ModelSpec())
    torch.manual_seed(0)
    model, method, _ = build_model(ModelSpec(pooling="cls"), MethodSpec(name="slash", d=1024, position="attention"),
                                   None, 2, loaded=loaded)
    with torch.no_grad():
        model.projected.z.normal_(0, 0.5)
    model.eval()
    texts = [line.split("\t")[0] for line in (SAMPLE / "sst2_dev.tsv").read_text().splitlines()[1:33]]
    encoder = Encoder(loaded.tokenizer, 64, model)
    rows, _ = encoder.encode(texts)
    with torch.no_grad():
        expected = model(**encoder.collate(rows)).numpy()
    metadata = {"label_names": ["negative", "positive"], "method": "slash", "base_model": {}, "max_length": 64}
    export_merged(model, method, loaded.tokenizer, metadata, tmp_path / "merged")
    script = textwrap.dedent(f"""
        import json, sys, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / 'merged')!r}).eval()
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path / 'merged')!r})
        texts = json.loads(sys.stdin.read())
        with torch.no_grad():
            logits = model(**tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
        assert "jrft_desktop" not in sys.modules
        print(json.dumps({{"logits": logits.tolist(), "labels": model.config.id2label}}))
    """)
    import json

    output = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), capture_output=True, text=True,
                            check=True)
    reply = json.loads(output.stdout)
    assert np.abs(np.asarray(reply["logits"]) - expected).max() < 1e-4
    assert reply["labels"] == {"0": "negative", "1": "positive"}
