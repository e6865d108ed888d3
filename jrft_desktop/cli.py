"""The `jrft` command: train, evaluate, predict, export and apply over the same core as the desktop app.

Every user error ends with exit status 2 and one line on stderr; `--debug` shows the traceback instead."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import typing
import warnings
from dataclasses import fields, replace
from pathlib import Path

from .core import methods
from .core.config import (Decoding, TrainingSpec, DataSpec, MethodSpec, ModelSpec, Privacy, RunConfig, field_choices,
                          field_help, method_option_fields, optional_type)
from .core.methods.options import option_flag
from .core.errors import UserError
from .core.export.forms import AUTO as AUTO_FORM, FORM_CHOICES
from .core.formatting import format_duration

USER_ERROR_STATUS = 2
MERGED_KEY = "merged_model"  # where `jrft export` and `jrft apply` report the merged folder


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        self.exit(USER_ERROR_STATUS, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# (flag, dataclass, field): the CLI contract's names mapped onto the config; help comes from the dataclasses. The
# methods' options follow --budget (train_flags()): their flags are declared with them, in their methods' modules.
TRAIN_FLAGS = [
    ("--task", DataSpec, "task"),
    ("--data", DataSpec, "train"), ("--validation", DataSpec, "validation"),
    ("--text-column", DataSpec, "text_column"), ("--text-pair-column", DataSpec, "text_pair_column"),
    ("--label-column", DataSpec, "label_column"), ("--validation-fraction", DataSpec, "validation_fraction"),
    ("--max-length", DataSpec, "max_length"), ("--max-train-rows", DataSpec, "max_train_rows"),
    ("--max-validation-rows", DataSpec, "max_validation_rows"),
    ("--fill", DataSpec, "fill"), ("--train-on-prompts", DataSpec, "train_on_prompts"),
    ("--model", ModelSpec, "name_or_path"), ("--pooling", ModelSpec, "pooling"),
    ("--trust-remote-code", ModelSpec, "trust_remote_code"),
    ("--method", MethodSpec, "name"), ("--budget", MethodSpec, "budget"),
    ("--epochs", TrainingSpec, "epochs"), ("--max-steps", TrainingSpec, "max_steps"),
    ("--max-epochs", TrainingSpec, "max_epochs"),
    ("--batch-size", TrainingSpec, "batch_size"), ("--gradient-accumulation", TrainingSpec, "gradient_accumulation"),
    ("--lr", TrainingSpec, "lr"), ("--weight-decay", TrainingSpec, "weight_decay"),
    ("--schedule", TrainingSpec, "schedule"), ("--warmup-ratio", TrainingSpec, "warmup_ratio"),
    ("--eval-every", TrainingSpec, "eval_every"), ("--checkpoint-every", TrainingSpec, "checkpoint_every"),
    ("--early-stopping", TrainingSpec, "early_stopping_patience"), ("--metric", TrainingSpec, "metric"),
    ("--device", TrainingSpec, "device"), ("--seed", TrainingSpec, "seed"), ("--dropout", TrainingSpec, "dropout"),
    ("--gradient-checkpointing", TrainingSpec, "gradient_checkpointing"),
    ("--precision", TrainingSpec, "precision"), ("--base-dtype", TrainingSpec, "base_dtype"),
    ("--base-quantization", TrainingSpec, "base_quantization"), ("--group-by-length", TrainingSpec, "group_by_length"),
    ("--epsilon", Privacy, "epsilon"), ("--delta", Privacy, "delta"), ("--max-grad-norm", Privacy, "max_grad_norm"),
    ("--noise-multiplier", Privacy, "noise_multiplier"), ("--accountant", Privacy, "accountant"),
    ("--privacy-unit", DataSpec, "privacy_unit"), ("--max-rows-per-unit", Privacy, "max_rows_per_unit"),
    ("--audit-canaries", Privacy, "audit_canaries"),
]
SECTIONS = {ModelSpec: "model", DataSpec: "data", MethodSpec: "method", TrainingSpec: "training", Privacy: "privacy"}


def _dest(cls, name: str) -> str:
    return f"{SECTIONS[cls]}__{name}"


def _flag_options(cls, name: str) -> dict:
    """argparse options for one config field: its type, choices and help from the dataclass."""
    kind = optional_type(cls, name)
    options = {"dest": _dest(cls, name), "help": field_help(cls, name), "default": None}
    if kind is bool:  # a setting that is on by default, or automatic (None), also gets its --no- flag
        default_off = next(f.default for f in fields(cls) if f.name == name) is False
        options["action"] = "store_true" if default_off else argparse.BooleanOptionalAction
    elif typing.get_origin(kind) is tuple:  # repeated: --fill name=Ada --fill author=Lab
        options.update(action="append", type=str, metavar="NAME=VALUE")
    else:
        options["type"] = kind
        options["metavar"] = name.upper()
        if field_choices(cls, name):
            options["choices"] = field_choices(cls, name)
    return options


def train_flags() -> list[tuple[tuple[str, ...], type, str]]:
    """(flags, dataclass, field) of `jrft train`: TRAIN_FLAGS, with every registered method's options after --budget
    (each option's flag and aliases from its declaration)."""
    rows = []
    for flag, cls, name in TRAIN_FLAGS:
        rows.append(((flag,), cls, name))
        if (cls, name) == (MethodSpec, "budget"):
            rows += [((option_flag(f), *f.metadata.get("aliases", ())), MethodSpec, f.name)
                     for f in method_option_fields()]
    return rows


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    size, length = parser.add_mutually_exclusive_group(), parser.add_mutually_exclusive_group()
    sizes = {"budget", *(f.name for f in method_option_fields() if f.metadata.get("size"))}  # one or the other
    for flags, cls, name in train_flags():
        if cls is MethodSpec and name in sizes:
            group = size
        else:
            group = length if flags[0] in ("--epochs", "--max-steps") else parser
        group.add_argument(*flags, **_flag_options(cls, name))


def config_from_args(args: argparse.Namespace) -> RunConfig:
    base = RunConfig.from_json(Path(args.config).read_text(encoding="utf-8")) if args.config else RunConfig()
    parts = {}
    for cls, section in SECTIONS.items():
        current = getattr(base, section)
        given = {f.name: getattr(args, _dest(cls, f.name)) for f in fields(cls)
                 if getattr(args, _dest(cls, f.name), None) is not None}
        if cls is MethodSpec:  # an option flag for a method that does not read it is a mistake: say so
            flags = {f.name: option_flag(f) for f in method_option_fields()}
            methods.refuse_unread(given.get("name", current.name), [name for name in given if name in flags],
                                  flags.get)
        parts[section] = replace(current, **given)
    return RunConfig(**parts)


# --- progress ---------------------------------------------------------------------------------------------
class ProgressPrinter:
    """Trainer events as progress lines on stderr (about 20 lines a run, plus every evaluation)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.every = 1
        self.last_print = 0.0

    def __call__(self, event) -> None:
        from .core import events

        if isinstance(event, events.PreparedEvent):
            plan = event.plan
            size = f", {plan['size_name']} = {plan['size']}" if plan["size_name"] else ""
            self._print(f"{plan['method']}{size}: {plan['trainable_params']:,} trainable parameters "
                        f"({plan['method_params']:,} without the head); {event.train_examples:,} training and "
                        f"{event.validation_examples:,} validation examples; "
                        f"{event.length or f'{event.total_steps} steps'}")
            for note in event.notes:
                self._print(f"note: {note}")
            self.every = max(1, event.total_steps // 20)
        elif isinstance(event, events.StepEvent):
            now = time.monotonic()
            if event.step % self.every == 0 or event.step == event.total_steps or now - self.last_print > 30:
                self.last_print = now
                self._print(f"step {event.step}/{event.total_steps} ({100 * event.step / event.total_steps:.0f}%) "
                            f"loss {event.loss:.4f} lr {event.lr:.2e} {event.examples_per_s:.0f} ex/s "
                            + (f"ε {event.epsilon:.3f} " if event.epsilon is not None else "")
                            + f"ETA {format_duration(event.eta_s)}" + _eta_note(event))
        elif isinstance(event, events.EvalEvent):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in event.metrics.items() if isinstance(v, (int, float)))
            self._print(f"eval at step {event.step}: {shown}{' (best so far)' if event.is_best else ''}")
        elif isinstance(event, events.FinishedEvent) and event.status == "stopped":
            self._print(f"stopped; continue with: jrft train --resume --output {event.run_dir}")
        elif isinstance(event, events.FinishedEvent) and event.metrics.get("eval_time_s") is not None:
            metrics = event.metrics
            self._print(f"{event.status} ({event.reason}): training {format_duration(metrics['train_time_s'])}, "
                        f"evaluation {format_duration(metrics['eval_time_s'])}, in {metrics['precision']}")

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _eta_note(event) -> str:
    """What the ETA of a run that converges means: its ceiling's, and sooner if the curve has flattened."""
    if not event.ceiling:
        return ""
    sooner = (f", {format_duration(event.eta_if_flat_s)} if it does not improve again"
              if event.eta_if_flat_s is not None else "")
    return f" (at the ceiling{sooner})"


# --- commands ---------------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .core.train.loop import Trainer

    if args.resume:
        config = None
    else:
        config = config_from_args(args)
        if not config.data.train:
            raise UserError("jrft train needs --data TRAIN_FILE (or --resume to continue a run).")
    if args.estimate:
        from .core.train.estimate import measure_run

        estimate = measure_run(config if config is not None else _resumed_config(args.output))
        memory = estimate.memory
        print(json.dumps({"peak_memory_bytes": memory.total, "weights_bytes": memory.weights,
                          "activations_bytes": memory.activations, "projections_bytes": memory.projections,
                          "optimizer_bytes": memory.optimizer, "runtime_bytes": memory.runtime,
                          "limit_bytes": memory.limit, "gradient_checkpointing": memory.checkpointing,
                          "step_time_s": estimate.step_s, "summary": estimate.describe()}, indent=2, sort_keys=True))
        return 0
    trainer = Trainer(config, args.output, [ProgressPrinter()], resume=args.resume)
    result = _run_stoppable(trainer)
    if trainer.processes.writer:  # one report for a data-parallel run (torchrun, accelerate launch)
        print(json.dumps({"status": result.status, "run_dir": result.run_dir, "metrics": dict(result.metrics),
                          "files": list(result.files)}, indent=2, sort_keys=True))
    return 0


def _resumed_config(run_dir: str):
    from .core import runs

    return RunConfig.from_json((Path(run_dir) / runs.CONFIG_FILE).read_text(encoding="utf-8"))


def _run_stoppable(trainer):
    """Ctrl-C asks the trainer to checkpoint and stop at the next step; a second Ctrl-C aborts at once."""
    return _until_stopped(trainer.stop_event, trainer.run)


def _until_stopped(stop_event, work):
    """Call `work()`; the first Ctrl-C sets `stop_event` (work ends after its step), a second aborts at once."""
    import signal

    def request_stop(signum, frame):
        if stop_event.is_set():
            raise KeyboardInterrupt
        print("stopping after this step (Ctrl-C again to abort)...", file=sys.stderr, flush=True)
        stop_event.set()

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        return work()
    finally:
        signal.signal(signal.SIGINT, previous)


def _vector_path(run: str) -> Path:
    from .core import runs

    path = Path(run)
    if path.is_dir():
        path = path / f"{runs.VECTOR_NAME}.safetensors"
        if not path.is_file():
            raise UserError(f"{run} holds no finished run (no {path.name}); finish or resume it first.")
    return path


def _restore(args, base_dtype: str = "fp32"):
    from .core.export.vector import restore

    return restore(_vector_path(args.run), getattr(args, "model", None), getattr(args, "trust_remote_code", False),
                   base_dtype)


def _replayed_base(args) -> str:
    """The base dtype `jrft eval` scores a run in: its own where the device computes it (precision.replay_base)."""
    from .core.export.vector import read_vector
    from .core.inference import pick_device
    from .core.train import precision as precisions

    metadata = read_vector(_vector_path(args.run))[1]
    device = pick_device(args.device)
    return precisions.replay_base(metadata.get("base_dtype"), precisions.replay(metadata.get("precision", "fp32"),
                                                                                device))


def cmd_eval(args) -> int:
    from .core.inference import Predictor

    restored = _restore(args, _replayed_base(args))
    examples = restored.model.task.load_examples(args.data, restored.metadata)
    if not examples.labels:
        raise UserError(f"{args.data} has no label column {restored.metadata['columns']['label']!r} to score.")
    scored = Predictor.from_restored(restored, args.device).evaluate(examples)
    print(json.dumps({**scored.metrics, "examples": scored.examples, "truncated": scored.truncated}, indent=2,
                     sort_keys=True))
    return 0


def cmd_predict(args) -> int:
    from .core.inference import Predictor

    restored = _restore(args)
    task = restored.model.task
    if args.data:
        examples = task.load_examples(args.data, restored.metadata, with_labels=False)
    elif args.texts:
        examples = task.examples_from_texts(args.texts)
    else:
        raise UserError("Give texts to label (or prompts to answer), or --data FILE.")
    options = Decoding(**{f.name: getattr(args, f.name) for f in fields(Decoding) if getattr(args, f.name) is not None})
    predictor = Predictor.from_restored(restored, args.device)
    for text, record in zip(examples.texts, predictor.predict(examples, options)):
        print(json.dumps({"text": text, **record}, ensure_ascii=False), flush=True)
    return 0


def _write_merged(restored, targets: dict[str, tuple[str, str]]) -> int:
    """`jrft export` and `jrft apply`: the restored run in each form asked for ({report key: (folder, form)}),
    every form checked before any folder is written; prints the folders, and which form --merged got and who
    loads it."""
    from .core.export.forms import choose

    chosen = {key: (Path(folder), *choose(restored.model, restored.method, name))
              for key, (folder, name) in targets.items()}
    report = {}
    for key, (folder, form, passed_over) in chosen.items():
        report[key] = str(form.write(restored.model, restored.method, restored.tokenizer, restored.metadata, folder))
        if key == MERGED_KEY:
            report.update({"format": form.name, "loads_with": form.loader(restored.model)},
                          **({"passed_over": passed_over} if passed_over else {}))
        else:
            report[f"{key}_loads_with"] = form.loader(restored.model)
    print(json.dumps(report))
    return 0


SEPARATE_FORMS = ("onnx", "gguf")  # `jrft export --onnx OUT_DIR` / `--gguf OUT_DIR`: that form, beside --merged


def cmd_export(args) -> int:
    targets = {MERGED_KEY: (args.merged, args.format)} if args.merged else {}
    targets.update({flag: (getattr(args, flag), flag) for flag in SEPARATE_FORMS if getattr(args, flag)})
    if not targets:
        raise UserError("jrft export needs --merged OUT_DIR (the form that fits the run, or --format), --onnx "
                        "OUT_DIR or --gguf OUT_DIR, or several.")
    folders = {}
    for key, (folder, _form) in targets.items():
        flag = "--merged" if key == MERGED_KEY else f"--{key}"
        same = folders.setdefault(Path(folder).resolve(), flag)
        if same != flag:
            raise UserError(f"{same} and {flag} name the same folder ({folder}); give each export its own.")
    if args.format != AUTO_FORM and not args.merged:
        raise UserError(f"--format chooses the form of --merged OUT_DIR; --onnx always writes ONNX and --gguf GGUF "
                        f"(drop --format {args.format}, or give --merged).")
    return _write_merged(_restore(args), targets)


def cmd_apply(args) -> int:
    from .core.export.vector import restore

    return _write_merged(restore(Path(args.vector), args.model, args.trust_remote_code),
                         {MERGED_KEY: (args.output, args.format)})


def cmd_methods(args) -> int:
    from .core import methods
    from .core.build import build_model
    from .core.models import load_skeleton

    model_spec = ModelSpec(name_or_path=args.model, trust_remote_code=args.trust_remote_code)
    skeleton = load_skeleton(model_spec)
    info = skeleton.info
    print(f"{info.model_id}: {info.family}, {info.layers} layers, hidden {info.hidden_size}, "
          f"{info.parameters:,} parameters, default pooling {info.default_pooling}")
    print(f"{'method':<9} {'size':<16} {'params':>12} {'with head':>12}  mergeable  summary")
    notes = []
    for method in methods.all_methods():
        try:
            model, _, plan = build_model(model_spec, MethodSpec(name=method.name, budget=args.budget), None,
                                         args.num_labels, loaded=skeleton, structure_only=True)
        except UserError as error:  # e.g. BitFit on a model without biases: the others still apply
            print(f"{method.name:<9} {'-':<16} {'-':>12} {'-':>12}  {'-':<9}  does not apply: {error}")
            continue
        size = f"{plan.size_name}={plan.size}" if plan.size_name else "-"
        print(f"{method.name:<9} {size:<16} {plan.method_params:>12,} {plan.trainable_params:>12,}  "
              f"{'yes' if method.foldable and not method.stock_problem(model, plan) else 'no':<9}  {method.summary}")
        notes += [plan.note] if plan.note else []
    for note in notes:
        print(f"note: {note}")
    return 0


def cmd_demo(args) -> int:
    from .core import paths, runs
    from .core.export.vector import restore
    from .core.inference import Predictor
    from .core.train.loop import Trainer

    sample = paths.sample_data_dir()
    output = Path(args.output) if args.output else paths.new_run_dir("demo")
    config = RunConfig(
        data=DataSpec(train=str(sample / "sst2_train.tsv"), validation=str(sample / "sst2_dev.tsv"), max_length=64),
        method=MethodSpec(name="slash", d=1024, position="output"),
        training=TrainingSpec(max_steps=args.steps, batch_size=32, eval_every=max(1, args.steps // 2)),
    )
    print(f"Demo: SLaSh (d = 1024) on the bundled SST-2 sample with {config.model.name_or_path}, "
          f"{args.steps} steps, into {output}", file=sys.stderr)
    result = _run_stoppable(Trainer(config, output, [ProgressPrinter()]))
    if result.status != "completed":
        return 130
    metrics = result.metrics
    print(f"\naccuracy on the GLUE SST-2 dev set ({metrics['validation_examples']} sentences): "
          f"{metrics['accuracy']:.3f}")
    print(f"trainable parameters: {metrics['trainable_params']:,} ({metrics['trainable_params_without_head']:,} "
          f"in z), median step {metrics['step_time_s']:.3f} s, peak memory {metrics['peak_memory_mb']:.0f} MB")
    # the exported file, reloaded as a user would
    predictor = Predictor.from_restored(restore(output / f"{runs.VECTOR_NAME}.safetensors"), "cpu")
    examples = predictor.model.task.examples_from_texts(["a gorgeous , witty and moving film",
                                                         "a tedious mess that never finds its footing"])
    positive = predictor.label_names[1]
    print("predictions from the exported vector (label 1 = positive):")
    for text, record in zip(examples.texts, predictor.predict(examples)):
        print(f"  {text!r}: P(positive) = {record['probabilities'][positive]:.2f}")
    print("files:")
    for name in sorted(Path(output).iterdir()):
        if name.is_file():
            print(f"  {name}  ({name.stat().st_size:,} bytes)")
    print(f"next: jrft predict {output} \"your sentence\"   |   jrft eval {output} --data FILE")
    return 0


def cmd_serve(args) -> int:
    import os

    from .serve import API_KEY_VARIABLE
    from .serve.server import ServeSettings, serve

    serve(ServeSettings(sources=tuple(args.runs), model=args.model, host=args.host, port=args.port,
                        api_key=args.api_key or os.environ.get(API_KEY_VARIABLE) or None, device=args.device,
                        max_batch=args.max_batch, window_ms=args.batch_window_ms, max_tokens=args.max_tokens,
                        threads=args.threads, trust_remote_code=args.trust_remote_code))
    return 0


def cmd_audit(args) -> int:
    import threading

    from .core.audit.leakage import audit_run

    started, shown = time.monotonic(), {"message": "", "at": 0.0}

    def progress(event) -> None:  # a line when the audit moves on to another part, and every 10 s within one
        now = time.monotonic()
        if event.message != shown["message"] or now - shown["at"] > 10:
            shown.update(message=event.message, at=now)
            print(f"[{format_duration(now - started)}] {event.message}: {event.done:,} of {event.total:,} examples",
                  file=sys.stderr, flush=True)

    stop = threading.Event()
    audit = _until_stopped(stop, lambda: audit_run(args.run, args.device, progress, stop))
    print(f"\n{audit['reading']}\n", file=sys.stderr)
    print(json.dumps(audit, indent=2, sort_keys=True))
    return 0


BENCH_FLAGS = ("--data", "--validation", "--text-column", "--text-pair-column", "--label-column", "--max-length",
               "--max-train-rows", "--max-validation-rows", "--model", "--pooling", "--trust-remote-code",
               "--batch-size", "--metric", "--device")


def cmd_bench(args) -> int:
    import threading

    from .core import bench

    def given(cls) -> dict:
        return {f.name: getattr(args, _dest(cls, f.name)) for f in fields(cls)
                if getattr(args, _dest(cls, f.name), None) is not None}

    data_fields = given(DataSpec)
    if "train" not in data_fields:  # the bundled SST-2 sample, scored on the GLUE dev set
        sample = bench.sample_data()
        data_fields = {"validation": sample.validation, "max_length": sample.max_length, **data_fields,
                       "train": sample.train}
    if args.quick:
        data_fields.setdefault("max_train_rows", 1000)  # a slice: a quick bench sees 480 examples
        data_fields.setdefault("max_validation_rows", 500)  # scored on 500: evaluation took a third of a run
    model, data = replace(ModelSpec(), **given(ModelSpec)), replace(DataSpec(), **data_fields)
    cases = bench.pick_cases(args.methods, args.budget, args.quick)
    training = given(TrainingSpec)
    chosen = {key: value for key, value in (
        ("steps", args.steps), ("seeds", tuple(args.seeds) if args.seeds else None),
        ("curve", tuple(args.curve) if args.curve is not None else None), ("timing_rounds", args.rounds),
        ("latency_rounds", args.rounds),
        *training.items()) if value is not None}
    if args.no_memory:
        chosen["measure_memory"] = False
    settings = bench.quick_settings(model, data, cases, **chosen) if args.quick else \
        bench.BenchSettings(model=model, data=data, cases=cases, **chosen)
    output = Path(args.output) if args.output else bench.default_output()
    started = time.monotonic()

    def progress(event) -> None:
        print(f"[{event.done}/{event.total} {format_duration(time.monotonic() - started)}] {event.message}",
              file=sys.stderr, flush=True)

    stop = threading.Event()
    result = _until_stopped(stop, lambda: bench.run_bench(settings, output, progress, stop))
    print(bench.markdown(result), end="")
    print(f"wrote {', '.join(Path(name).name for name in result.files)} in {output}", file=sys.stderr)
    return 0


def _add_format_flag(command) -> None:
    command.add_argument("--format", choices=FORM_CHOICES, default=AUTO_FORM,
                         help="The merged model's form: transformers (the stock classifier; pooling cls), "
                              "sentence-transformers (mean, cls), onnx (every pooling), gguf / gguf-f16 (a generate "
                              "run of a Llama-form decoder, for llama.cpp); auto: the first that fits.")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="jrft", description="Finetune transformers with a few thousand parameters (SLaSh, "
                                              "JR-WARP and baselines).")
    parser.add_argument("--version", action="version", version=f"jrft {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks instead of one-line errors.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add_commands in (_add_train, _add_eval_and_predict, _add_audit, _add_export_and_apply, _add_methods,
                         _add_bench, _add_demo):
        add_commands(commands)
    return parser


def _add_train(commands) -> None:
    """`jrft train`: every setting of a run as a flag."""
    train = commands.add_parser("train", help="Train a method on a dataset and export its vector file.")
    _add_config_flags(train)
    train.add_argument("--config", help="Start from a saved run configuration (JSON); flags override it.")
    train.add_argument("--resume", action="store_true", help="Continue the run in --output from its checkpoint.")
    train.add_argument("--output", required=True, metavar="RUN_DIR", help="Folder for the run's files.")
    train.add_argument("--estimate", action="store_true",
                       help="Only print what the run would take: its estimated peak memory and the time of a step, "
                            "measured on a few real steps (nothing is written; a run that would not fit is refused).")
    train.set_defaults(handler=cmd_train)


def _add_eval_and_predict(commands) -> None:
    """`jrft eval` and `jrft predict`: a trained run on a file or on texts."""
    for name, handler, text in (("eval", cmd_eval, "Score a trained run on a labelled file (JSON metrics)."),
                                ("predict", cmd_predict, "Label texts with a trained run.")):
        command = commands.add_parser(name, help=text)
        command.add_argument("run", metavar="RUN_DIR", help="A run folder or a vector .safetensors file.")
        if name == "predict":
            command.add_argument("texts", nargs="*", metavar="TEXT",
                                 help="Texts to label (classify, tag), or prompts to answer (generate).")
            command.add_argument("--data", help="Label (or answer) every row of this file instead; a generate run "
                                                "ignores the file's answers.")
            for option in fields(Decoding):
                command.add_argument(f"--{option.name.replace('_', '-')}", dest=option.name, default=None,
                                     type=optional_type(Decoding, option.name),
                                     help=f"(generate runs) {field_help(Decoding, option.name)}")
        else:
            command.add_argument("--data", required=True, help="Labelled file with the run's columns.")
        command.add_argument("--model", help="Path of the base model, if it moved since training.")
        command.add_argument("--device", default="auto", help=field_help(TrainingSpec, "device"))
        command.set_defaults(handler=handler)


def _add_audit(commands) -> None:
    """`jrft audit`: what a trained run gives away about its training data."""
    audit = commands.add_parser(
        "audit", help="Measure what a finished run's model gives away about its training data, without retraining: "
                      "a membership attack's AUC and true-positive rate at 1%% false positives (training against as "
                      "many held-out examples), and for a run trained with --audit-canaries the one-run lower bound "
                      "on ε (95%% confidence) and its canaries' exposure. Writes audit.json and the privacy report "
                      "in the run folder.")
    audit.add_argument("run", metavar="RUN_DIR", help="A finished run folder.")
    audit.add_argument("--device", default="auto", help=field_help(TrainingSpec, "device"))
    audit.set_defaults(handler=cmd_audit)


def _add_export_and_apply(commands) -> None:
    """`jrft export` (a run's merged forms) and `jrft apply` (a vector file onto its base)."""
    export = commands.add_parser("export", help="Write a merged model (the method folded into the weights) that a "
                                 "stock library loads: transformers, sentence-transformers, ONNX or GGUF.")
    export.add_argument("run", metavar="RUN_DIR", help="A run folder or a vector .safetensors file.")
    export.add_argument("--merged", metavar="OUT_DIR", help="Folder for the merged model, in the form --format "
                                                            "names (by default the first that fits the run).")
    export.add_argument("--onnx", metavar="OUT_DIR", help="Folder for an ONNX export (model.onnx, tokenizer.json, "
                                                          "config.json): every pooling, run by onnxruntime.")
    export.add_argument("--gguf", metavar="OUT_DIR", help="Folder for a GGUF export (model.gguf, f32; --merged "
                        "OUT_DIR --format gguf-f16 for f16) of a generate run of a Llama-form decoder, for llama.cpp "
                        "and Ollama.")
    _add_format_flag(export)
    export.add_argument("--model", help="Path of the base model, if it moved since training.")
    export.set_defaults(handler=cmd_export)

    apply = commands.add_parser("apply", help="Apply a vector file to its base model and save the merged model.")
    apply.add_argument("vector", metavar="VECTOR_FILE")
    apply.add_argument("--model", help="The base model (default: the one recorded in the vector).")
    apply.add_argument("--trust-remote-code", action="store_true", help=field_help(ModelSpec, "trust_remote_code"))
    apply.add_argument("--output", required=True, metavar="OUT_DIR")
    _add_format_flag(apply)
    apply.set_defaults(handler=cmd_apply)


def _add_methods(commands) -> None:
    """`jrft methods`: the methods' parameter counts on a model."""
    listing = commands.add_parser("methods", help="List the methods with their parameter counts for a model.")
    listing.add_argument("--model", default=ModelSpec().name_or_path, help=field_help(ModelSpec, "name_or_path"))
    listing.add_argument("--budget", type=int, help=field_help(MethodSpec, "budget"))
    listing.add_argument("--num-labels", type=int, default=2, help="Classes of the task (sizes the head).")
    listing.add_argument("--trust-remote-code", action="store_true", help=field_help(ModelSpec, "trust_remote_code"))
    listing.set_defaults(handler=cmd_methods)


def _add_bench(commands) -> None:
    """`jrft bench`: methods side by side on the same data."""
    bench_command = commands.add_parser(
        "bench", help="Compare methods side by side on the same data: metric, parameters, step time, memory, "
                      "FLOP/s, inference latency, file size; writes results.json, results.md and PNG plots.")
    flags = {flag: (cls, name) for flag, cls, name in TRAIN_FLAGS}
    for flag in BENCH_FLAGS:
        bench_command.add_argument(flag, **_flag_options(*flags[flag]))
    bench_command.add_argument("--quick", action="store_true",
                               help="A smoke-sized bench (1,000 training and 500 validation rows, 30 steps, one seed, "
                                    "the main methods, one extra curve point): under 3 minutes on a 2-core CPU.")
    cases = [method.bench_cases(5000) for method in methods.all_methods()]
    labels = " ".join(label for found in cases for label, _ in found)
    quick = " ".join(found[0][0] for found in cases if found)
    bench_command.add_argument("--methods", nargs="+", metavar="LABEL",
                               help=f"Cases to compare: {labels} (default: all; with --quick: {quick}).")
    bench_command.add_argument("--budget", type=int, default=5000,
                               help="Trainable parameters (without the head) for the sized methods (default 5000).")
    bench_command.add_argument("--steps", type=int, help="Training steps per run (default 400; --quick 30).")
    bench_command.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                               help="Seeds per case (default 0 1 2; --quick 0).")
    bench_command.add_argument("--curve", type=int, nargs="*", metavar="D",
                               help="Values of d for the SLaSh budget curve (default 64 256 1024 4096; --quick "
                                    "64; none: no curve). A compared SLaSh case at the curve's position joins it.")
    bench_command.add_argument("--rounds", type=int, help="Interleaved rounds timing the training steps (default "
                                                          "8; --quick 3) and the inference (default 5; --quick 2).")
    bench_command.add_argument("--no-memory", action="store_true",
                               help="Skip the peak-memory measurement (a fresh process per method).")
    bench_command.add_argument("--output", metavar="DIR",
                               help="Results folder (default: a new one under the app's data folder, benchmarks/); "
                                    "rerunning into it reuses the finished runs.")
    bench_command.set_defaults(handler=cmd_bench)


def _add_demo(commands) -> None:
    """`jrft demo`: the headless demo on the bundled data."""
    _add_serve_command(commands)

    demo = commands.add_parser("demo", help="Train SLaSh on the bundled SST-2 sample and show the results.")
    demo.add_argument("--steps", type=int, default=200)
    demo.add_argument("--output", metavar="RUN_DIR", help="Folder for the run (default: a new one in the runs folder).")
    demo.set_defaults(handler=cmd_demo)


def _add_serve_command(commands) -> None:
    serve = commands.add_parser(
        "serve", help="Serve runs over an OpenAI-compatible HTTP API: every request names its vector, and requests "
                      "for any vectors of one base model share batches.")
    serve.add_argument("runs", nargs="*", metavar="RUN_OR_VECTOR",
                       help="Run folders or vector files of one base model, each served under its run folder's name "
                            "(or NAME=PATH).")
    serve.add_argument("--model", help="The base model (default: the one the vectors were trained on); alone, the "
                                       "bare base model is served.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="The address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 shares it with "
                            "your network, with a warning).")
    serve.add_argument("--port", type=int, default=8000, help="The port (default 8000; 0: a free one).")
    serve.add_argument("--api-key", help="Require 'Authorization: Bearer KEY' on every route but /health (default: "
                                         "the JRFT_API_KEY environment variable; none: no key).")
    serve.add_argument("--device", default="auto", help=field_help(TrainingSpec, "device"))
    serve.add_argument("--max-batch", type=int, default=32,
                       help="The most requests (answers being generated, or texts read) in one batch (default 32).")
    serve.add_argument("--batch-window-ms", type=float, default=5.0,
                       help="How long an idle server waits for requests sent together to batch them (default 5).")
    serve.add_argument("--max-tokens", type=int, default=512,
                       help="An answer's length when a request names no max_tokens (default 512, within the "
                            "model's context).")
    serve.add_argument("--threads", type=int,
                       help="CPU threads for the model (default: every core). On a machine busy with other work, "
                            "fewer threads can answer faster.")
    serve.add_argument("--trust-remote-code", action="store_true", help=field_help(ModelSpec, "trust_remote_code"))
    serve.set_defaults(handler=cmd_serve)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous_format = warnings.formatwarning
    if not args.debug:  # e.g. "warning: Running code shipped with ..." rather than a source location and a code line
        warnings.formatwarning = _one_line_warning
    try:
        return args.handler(args)
    except UserError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_STATUS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not a user error: say so, keep it to one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"internal error: {type(error).__name__}: {error} (run with --debug for details)", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    sys.exit(main())
