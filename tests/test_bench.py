"""`jrft bench --quick` end to end on a tiny model: the files, the tables' columns, the measurements per method, and
reusing the finished runs. Nothing here asserts a speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tiny_models import HIDDEN, LAYERS

from jrft_desktop.cli import main
from jrft_desktop.core import bench
from jrft_desktop.core.paths import sample_data_dir

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = 100
METHODS = ("slash-output", "head", "lora", "vera", "warp", "full")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sst2_slices(tmp_path_factory) -> tuple[Path, Path]:
    """200 training and 100 validation sentences of the bundled SST-2 sample (real data, labels 0/1)."""
    folder = tmp_path_factory.mktemp("bench-data")
    slices = []
    for name, rows in (("sst2_train.tsv", 200), ("sst2_dev.tsv", 100)):
        lines = (sample_data_dir() / name).read_text(encoding="utf-8").splitlines()
        target = folder / name
        target.write_text("\n".join(lines[:rows + 1]) + "\n", encoding="utf-8")
        slices.append(target)
    return slices[0], slices[1]


def bench_args(model: Path, data: tuple[Path, Path], output: Path, *extra: str, methods=METHODS,
               curve=("16", "48")) -> list[str]:
    return ["bench", "--quick", "--model", str(model), "--pooling", "cls", "--data", str(data[0]),
            "--validation", str(data[1]), "--max-length", "32", "--budget", str(BUDGET), "--steps", "4",
            "--curve", *curve, "--rounds", "1", "--methods", *methods, "--output", str(output), *extra]


def table_header(markdown: str, first_column: str, second_column: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {first_column} | {second_column} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def quick_bench(tiny_models, sst2_slices, tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "results"
    status = main(bench_args(tiny_models["bert"], sst2_slices, output))
    assert status == 0
    return output


def test_quick_bench_writes_every_file(quick_bench):
    names = {path.name for path in quick_bench.iterdir()}
    assert {bench.RESULTS_JSON, bench.RESULTS_MD, bench.CURVE_PNG, bench.SPEED_PNG, bench.SETTINGS_FILE,
            bench.RUNS_DIR} <= names
    for image in (bench.CURVE_PNG, bench.SPEED_PNG):
        data = (quick_bench / image).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    runs = sorted(path.name for path in (quick_bench / bench.RUNS_DIR).iterdir())
    curve_runs = ["slash-output-d16-seed0", "slash-output-d48-seed0"]
    assert runs == sorted([f"{label}-seed0" for label in METHODS] + curve_runs)
    for run in runs:
        assert (quick_bench / bench.RUNS_DIR / run / "vector.safetensors").is_file()


def test_quick_bench_tables_have_every_column(quick_bench):
    markdown = (quick_bench / bench.RESULTS_MD).read_text(encoding="utf-8")
    accuracy = table_header(markdown, "method", "size")
    assert accuracy == [column.format(metric="accuracy") for column in bench.ACCURACY_COLUMNS]
    assert table_header(markdown, "method", "step s") == list(bench.SPEED_COLUMNS)
    assert table_header(markdown, "d", "trainable (with head)") == ["d", "trainable (with head)", "accuracy"]
    for label in METHODS:  # one row per method in both tables
        assert sum(line.startswith(f"| {label} |") for line in markdown.splitlines()) == 2
    full_speed_row = [line for line in markdown.splitlines() if line.startswith("| full |")][1]
    assert full_speed_row.count("1.00×") >= 5  # step (wall, CPU), peak and training memory, vector: against itself
    assert "![budget curve](budget_curve.png)" in markdown


def test_quick_bench_measures_every_method(quick_bench, tiny_models):
    results = json.loads((quick_bench / bench.RESULTS_JSON).read_text(encoding="utf-8"))
    assert results["format"] == bench.BENCH_FORMAT and results["metric"] == "accuracy"
    assert results["matmul_peak_flops"] > 0 and results["train_examples"] == 200
    assert results["validation_examples"] == 100
    cases = {case["label"]: case for case in results["cases"]}
    assert list(cases) == list(METHODS)
    expected_params = {"slash-output": BUDGET, "head": 0, "warp": round(BUDGET / HIDDEN) * HIDDEN,
                       "lora": LAYERS * 2 * HIDDEN, "vera": 2 * LAYERS * (HIDDEN + 1)}  # lora: rank 1, query only
    for label, case in cases.items():
        if label in expected_params:
            assert case["method_params"] == expected_params[label], label
        assert case["trainable_params"] == case["method_params"] + 2 * HIDDEN + 2
        assert len(case["scores"]) == 1 and 0 <= case["scores"][0] <= 1
        assert case["step_time_s"] > 0 and case["step_cpu_s"] > 0 and case["flops_per_step"] > 0
        assert case["peak_memory_mb"] > 0 and case["training_memory_mb"] >= 0
        assert 0 < case["peak_fraction"] < 10
        vector = quick_bench / bench.RUNS_DIR / f"{label}-seed0" / "vector.safetensors"
        assert case["vector_bytes"] == vector.stat().st_size
        assert case["latency_ratio"] > 0
        assert (case["merged_latency_ratio"] is None) == (label == "warp")
    # The score is the run's own validation accuracy.
    run_metrics = json.loads((quick_bench / bench.RUNS_DIR / "vera-seed0" / "metrics.json").read_text())
    assert cases["vera"]["scores"] == [run_metrics["accuracy"]]
    # Full finetuning trains every weight: the most FLOPs per step and the biggest file, ratio 1 to itself.
    assert cases["full"]["flops_per_step"] == max(case["flops_per_step"] for case in cases.values())
    assert cases["full"]["ratios_to_full"]["vector_bytes"] == 1.0
    assert len(load_file(str(quick_bench / bench.RUNS_DIR / "slash-output-seed0" / "vector.safetensors"))) == 3
    # the curve's own runs, and the compared SLaSh case at the same position as one more point
    assert [point["d"] for point in results["curve"]] == [16, 48, BUDGET]
    assert [point["trainable_params"] for point in results["curve"]] == [16 + 66, 48 + 66, BUDGET + 66]
    assert results["curve"][-1]["scores"] == cases["slash-output"]["scores"]
    lora_note = next(note for note in results["notes"] if note.startswith("lora:"))
    assert "smallest lora" in lora_note and "only the query projections" in lora_note


def test_rerun_reuses_the_finished_runs(quick_bench, tiny_models, sst2_slices, capsys):
    before = {path: path.stat().st_mtime_ns for path in (quick_bench / bench.RUNS_DIR).glob("*/vector.safetensors")}
    capsys.readouterr()
    assert main(bench_args(tiny_models["bert"], sst2_slices, quick_bench, "--no-memory")) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert sum("reused the finished run" in line for line in progress) == len(before) == len(METHODS) + 2
    done, total = progress[-1][1:].split()[0].split("/")
    assert done == total and "results in" in progress[-1]  # the count of steps adds up
    assert {path: path.stat().st_mtime_ns for path in before} == before  # not trained again
    assert captured.out.startswith("# Methods side by side")
    results = json.loads((quick_bench / bench.RESULTS_JSON).read_text(encoding="utf-8"))
    assert all(case["peak_memory_mb"] is None for case in results["cases"])


@pytest.mark.parametrize(("choice", "message"), [
    ({"methods": ("slash", "lorra")}, "Unknown bench method 'slash'"),
    ({"curve": ("0",)}, "positive whole number"),
])
def test_bench_bad_input_is_one_line(tiny_models, sst2_slices, tmp_path, capsys, choice, message):
    assert main(bench_args(tiny_models["bert"], sst2_slices, tmp_path / "out", **choice)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


def test_bench_refuses_a_folder_holding_other_files(tiny_models, sst2_slices, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(bench_args(tiny_models["bert"], sst2_slices, tmp_path)) == 2
    assert "already holds other files" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
