"""What a run is made of, as frozen dataclasses.

Each field's `metadata["help"]` is the one explanation of that setting: the CLI shows it as `--help` text and
the desktop app as a tooltip. A numeric field's metadata also holds its valid range (`_help(..., minimum=...)`,
see ranges.py), which ends its help and which every dataclass here checks when it is made (`__post_init__`).
Configs round-trip through JSON (`to_dict` / `from_dict`)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from . import methods, ranges  # the registry (no torch)
from .methods.spec import MethodSpec  # re-exported: a run's method settings
from .errors import DataError, PrivacyError, UserError
from .ranges import SEED_MAX, between

PRECISIONS = ("auto", "fp32", "bf16")  # TrainingSpec.precision (see precision.py)
BASE_DTYPES = ("auto", "fp32", "bf16")  # TrainingSpec.base_dtype: what the frozen weights are held in (precision.py)
BASE_QUANTIZATIONS = ("none", "int8", "int4")  # TrainingSpec.base_quantization (quantization.py)

DEFAULT_MODEL = "bundled:all-MiniLM-L6-v2"
BUNDLED_DECODER = "bundled:SmolLM2-135M-Instruct"  # a small chat decoder that ships with the app too
BUNDLED_GEMMA = "bundled:gemma-3-270m"  # Google's Gemma 3 270M base decoder (Gemma Terms of Use), also bundled
POOLINGS = ("auto", "mean", "cls", "mask", "last")
ACCOUNTANTS = ("prv", "rdp")
DEFAULT_DELTA = 1e-5
# A run given neither epochs nor steps trains until it converges (train/batching.py): it stops after DEFAULT_PATIENCE
# evaluations without a better one (about ten a run: three epochs at the default ceiling of ten), and at the latest at
# its ceiling, TrainingSpec.max_epochs or MIN_CEILING_STEPS steps where that is more, so that a file of a few dozen
# rows still gets enough steps to learn.
DEFAULT_PATIENCE = 3
MIN_CEILING_STEPS = 200


def _help(text: str, **extra: Any) -> dict[str, Any]:
    """A field's metadata: its help, and for a numeric setting its valid range (the keys of `ranges.between`)."""
    return {"help": text, **{key: value for key, value in extra.items() if key not in ranges.KEYS},
            **between(**{key: value for key, value in extra.items() if key in ranges.KEYS})}


@dataclass(frozen=True)
class ModelSpec:
    name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata=_help(
            "The pretrained model: 'bundled:all-MiniLM-L6-v2' (ships with the app, works offline), "
            "a local folder saved with save_pretrained, or a Hugging Face Hub id (needs the internet once)."
        ),
    )
    pooling: str = field(
        default="auto",
        metadata=_help(
            "Which hidden state the head reads: 'mean' of the tokens, 'cls' (an encoder's first token through its "
            "pooler), 'last' (a decoder's last token, the one that has seen the whole text), 'mask' (an appended "
            "mask token, as in the paper) or 'auto' (mean for sentence-embedding models, last for decoders, cls "
            "otherwise).",
            choices=POOLINGS,
        ),
    )
    trust_remote_code: bool = field(
        default=False,
        metadata=_help("Run Python code that ships with a Hub model. Only for models you trust."),
    )


@dataclass(frozen=True)
class DataSpec:
    task: str = field(
        default="auto",
        metadata=_help("What the model learns: 'classify' (a class or a number for each text or text pair), 'tag' "
                       "(a BIO or IOBES tag for each word: named entities), 'generate' (answers to instructions, chats "
                       "or plain text: a decoder's language modelling), or 'auto' (guessed from the data: instruction, "
                       "chat or text-only data is 'generate', a CoNLL file or columns of token and tag lists 'tag', "
                       "anything else 'classify')."),
    )
    train: str = field(
        default="",
        metadata=_help("Training data: a CSV, TSV, JSON, JSONL or Parquet file, a folder, or a `datasets` name."),
    )
    validation: str | None = field(
        default=None,
        metadata=_help("Validation data in the same format. Without it a seeded, stratified split is held out."),
    )
    text_column: str | None = field(
        default=None, metadata=_help("Column with the text, or for 'tag' the token lists, or for 'generate' plain-text "
                     "documents (guessed when empty; instruction and chat columns are found by their names).")
    )
    text_pair_column: str | None = field(
        default=None, metadata=_help("Optional second text column for sentence-pair tasks (e.g. entailment).")
    )
    label_column: str | None = field(
        default=None,
        metadata=_help("Column with the label (guessed when empty). Strings or integers are classes; "
                       "fractional numbers make it a regression task. For 'tag': the tag lists."),
    )
    validation_fraction: float = field(
        default=0.1, metadata=_help("Share of the training rows held out for validation when no file is given.",
                                    minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True)
    )
    max_length: int = field(
        default=128, metadata=_help("Longest input in tokens; longer texts are truncated (and counted).",
                                    minimum=8)
    )
    max_train_rows: int | None = field(
        default=None,
        metadata=_help("Use at most this many training rows (a seeded random sample). Without a validation file the "
                       "split is carved from the same sample: 12000 rows at a 0.1 fraction read 13334.", minimum=1),
    )
    max_validation_rows: int | None = field(
        default=None,
        metadata=_help("Score on at most this many validation rows (a seeded random sample): faster evaluation "
                       "on a big validation set.", minimum=1),
    )
    fill: tuple[str, ...] = field(
        default=(),
        metadata=_help("Values for placeholders such as {{name}} in generation data, as name=value (repeat for each "
                       "placeholder)."),
    )
    train_on_prompts: bool = field(
        default=False,
        metadata=_help("Generation: let the loss count every token, the prompts too, not only the answers."),
    )
    privacy_unit: str | None = field(
        default=None,
        metadata=_help("Column naming whom each training row belongs to (a user id, an author, a conversation). "
                       "Private training then samples and clips per value of it, so ε bounds what all of one "
                       "person's rows can change, and the accountant counts people, not rows. Empty: each row is its "
                       "own unit."),
    )

    def __post_init__(self):
        object.__setattr__(self, "fill", tuple(self.fill))  # a JSON list
        ranges.check(self, DataError)


def method_option_fields() -> tuple[dataclasses.Field, ...]:
    """MethodSpec's option fields (all but the name and the budget); `metadata["size"]` marks the methods' sizes."""
    return methods.option_fields()


def method_presets() -> tuple:
    """Every method's presets (`methods.Preset`: label, method, values; `.spec()` the MethodSpec it sets), for the
    app."""
    return methods.presets()


@dataclass(frozen=True)
class TrainingSpec:
    """How to train: schedule, batch, stopping rules, device and seed."""

    epochs: float | None = field(default=None, metadata=_help(
        "Train exactly this many passes over the training data. Without it or a step count a run trains until its "
        "validation metric stops improving (see the early stopping patience and the epoch ceiling) and keeps its "
        "best checkpoint.", minimum=0, exclusive_minimum=True))
    max_steps: int | None = field(default=None, metadata=_help(
        "Train exactly this many optimizer steps (instead of until the validation metric stops improving).",
        minimum=1))
    max_epochs: float = field(default=10.0, metadata=_help(
        "The ceiling of a run that trains until it converges (neither epochs nor steps given): at most this many "
        f"passes over the training data, or {MIN_CEILING_STEPS} steps where that is more (a small file still gets "
        "enough steps). "
        "The learning rate decays over the ceiling; its ETA is the ceiling's.", minimum=0, exclusive_minimum=True))
    batch_size: int = field(default=32, metadata=_help("Examples per optimizer step (before accumulation); lowered "
                                                       "to the training examples where there are fewer.", minimum=1))
    gradient_accumulation: int = field(
        default=1, metadata=_help("Batches whose gradients are summed into one optimizer step.", minimum=1)
    )
    lr: float | None = field(
        default=None,
        metadata=_help("Learning rate. Empty picks the default measured for the method on this task and model "
                       "family (docs/benchmarks.md): a few-thousand-parameter method wants 1e-2 to 1e-1, full "
                       "finetuning 5e-5.", minimum=0, exclusive_minimum=True,
                       called="The learning rate", advice="leave it unset for the method's default"),
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay.", minimum=0))
    schedule: str = field(
        default="linear",
        metadata=_help("'linear': warmup then linear decay to zero; 'constant': warmup then flat.",
                       choices=("linear", "constant")),
    )
    warmup_ratio: float = field(default=0.06, metadata=_help("Share of the steps spent warming up the rate.",
                                                             minimum=0, maximum=1))
    eval_every: int | None = field(
        default=None,
        metadata=_help("Evaluate on the validation set every N steps (default: 10 times a run, less often when the "
                       "validation set is large, so that evaluating stays under a tenth of the training time, but at "
                       "least 4 times).",
                       minimum=1),
    )
    checkpoint_every: int | None = field(
        default=None, metadata=_help("Save a resumable checkpoint every N steps (default: at every evaluation).",
                                     minimum=1)
    )
    early_stopping_patience: int | None = field(
        default=None, metadata=_help("Stop after this many evaluations without improvement (a better metric, or the "
                                     "same metric at a lower validation loss). Empty: "
                                     f"{DEFAULT_PATIENCE} for a run that trains until it converges, off for one "
                                     "given epochs or steps.", minimum=1)
    )
    metric: str = field(
        default="auto",
        metadata=_help("Validation metric that picks the best checkpoint: accuracy, macro_f1, matthews, "
                       "pearson, spearman (classify), entity_f1, entity_precision, entity_recall, token_accuracy "
                       "(tag); 'auto' = accuracy (classification; matthews where one class holds over two thirds of "
                       "the training rows), pearson (regression) or entity_f1 (tag)."),
    )
    device: str = field(default="auto", metadata=_help("'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda:0', ..."))
    seed: int = field(default=0, metadata=_help("Seed for the data order, the split and the initialisation.",
                                                minimum=0, maximum=SEED_MAX))
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata=_help("Recompute each layer's activations in the backward pass instead of keeping them: much less "
                       "memory for long inputs or big models, about a fifth to a quarter more time per step. Left "
                       "automatic, it is on where only it makes the run fit, or where the activations would take more "
                       "memory than the frozen model (past 1 GB), with a note saying so."),
    )
    dropout: bool = field(
        default=False,
        metadata=_help("Keep the model's dropout on while training (off by default: small methods train "
                       "better and reproducibly without it)."),
    )
    precision: str = field(
        default="auto",
        metadata=_help("What the model computes in: 'bf16' (bf16 autocast; the trainable tensors and the optimizer "
                       "state stay fp32), 'fp32', or 'auto' (bf16 on a CPU with AVX512-BF16 or AMX and on a GPU that "
                       "has it, fp32 elsewhere: never an emulated, slower bf16). Evaluation uses the same. bf16 on a "
                       "device without it is refused.", choices=PRECISIONS),
    )
    base_dtype: str = field(
        default="auto",
        metadata=_help("What the frozen base model's weights are held in: 'bf16' (half the memory; everything that "
                       "trains, and the optimizer state, stays fp32; needs the bf16 precision), 'fp32', or 'auto' "
                       "(bf16 where the run computes in bf16 and its method trains no base weights, fp32 otherwise). "
                       "Recorded with the run; `jrft eval` replays it.", choices=BASE_DTYPES),
    )
    base_quantization: str = field(
        default="none",
        metadata=_help("Hold the frozen base's linear layers in 8-bit or 4-bit integers (weight-only, for a CUDA GPU "
                       "with bitsandbytes): 'none', 'int8' or 'int4'. A merged model is still written from the "
                       "full-precision base plus the folded shift.", choices=BASE_QUANTIZATIONS),
    )
    group_by_length: bool = field(
        default=True,
        metadata=_help("Batch examples of similar length together (a shuffled order of shuffled groups, like the "
                       "Hugging Face Trainer's group_by_length), so less padding is computed."),
    )

    def __post_init__(self):
        ranges.check(self)


@dataclass(frozen=True)
class Privacy:
    """Differentially private training (DP-SGD through Opacus); on when epsilon or noise_multiplier is set."""

    epsilon: float | None = field(
        default=None,
        metadata=_help("Privacy budget ε for the whole run (smaller is more private; 1 to 8 is common). Setting "
                       "it trains with DP-SGD, the noise calibrated so the planned steps spend at most this ε.",
                       minimum=0, exclusive_minimum=True, called="ε",
                       advice="smaller is more private, 1 to 8 is common"),
    )
    delta: float | None = field(
        default=None,
        metadata=_help("Privacy parameter δ, the chance the ε guarantee fails; it must be below 1/N for N training "
                       f"examples. Empty picks min({DEFAULT_DELTA:g}, 1/(10 N)), recorded with the run.",
                       minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True, called="δ",
                       advice=f"leave it unset for min({DEFAULT_DELTA:g}, 1/(10 N)) with N training examples"),
    )
    max_grad_norm: float = field(
        default=1.0,
        metadata=_help("Clipping norm C: every example's gradient is scaled down to at most this length before "
                       "the noise is added.", minimum=0, exclusive_minimum=True, called="The clipping norm C",
                       advice="1.0 is a good start"),
    )
    noise_multiplier: float | None = field(
        default=None,
        metadata=_help("Noise standard deviation σ as a multiple of C. Empty: calibrated from ε. Given with ε: "
                       "checked to stay within ε; given alone: the ε it spends is only reported.",
                       minimum=0, exclusive_minimum=True, called="The noise multiplier σ",
                       advice="leave it unset to calibrate it from ε"),
    )
    accountant: str = field(
        default="prv",
        metadata=_help("How ε is computed: 'prv' (privacy random variables: tight, as in the paper) or 'rdp' "
                       "(Rényi DP: a looser, classic bound).", choices=ACCOUNTANTS),
    )
    max_rows_per_unit: int = field(
        default=8,
        metadata=_help("With a privacy unit column: a sampled unit that has more rows trains on this many of them, "
                       "drawn at random each time, so that one prolific person cannot dominate a step; at most the "
                       "batch size (a unit's rows are clipped together in one batch).", minimum=1),
    )
    audit_canaries: int = field(
        default=0,
        metadata=_help("Train with this many generated canaries (random labels on real words, or random secrets in a "
                       "fixed template), each included with probability ½ from the run's seed, so that `jrft audit` "
                       "can bound ε from below in this one run. They never reach the exported files, and the reported "
                       "metrics are on your validation data alone. 0: none.", minimum=0),
    )

    def __post_init__(self):
        ranges.check(self, PrivacyError)

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None


@dataclass(frozen=True)
class RunConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    method: MethodSpec = field(default_factory=MethodSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    privacy: Privacy = field(default_factory=Privacy)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        if isinstance(data, dict) and "budget" in data and "training" not in data:
            data = {("training" if key == "budget" else key): value for key, value in data.items()}  # older run folders
        return _build(cls, data, "config")

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"The run configuration is not valid JSON: {error}") from None
        return cls.from_dict(data)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a JSON object")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{where} has unknown setting(s): {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        nested = isinstance(kind, type) and dataclasses.is_dataclass(kind)
        values[name] = _build(kind, value, f"{where}.{name}") if nested else value
    return cls(**values)


def field_help(cls: type, name: str) -> str:
    """The help text of one setting (for the CLI and the GUI tooltips), ending with its valid range if numeric."""
    text = next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)
    return " ".join(filter(None, (text, ranges.describe(cls, name))))


def field_bounds(cls: type, name: str, step: float = 1, ceiling: float | None = None) -> tuple[float, float]:
    """The lowest and highest value of a setting that a number box with this `step` offers (`ceiling` caps it)."""
    return ranges.bounds(cls, name, step, ceiling)


def setting_problem(cls: type, name: str, value: Any) -> str | None:
    """Why `value` is not valid for the setting (one sentence), None when it is: for a box that is being typed."""
    return ranges.problem(cls, name, value)


def field_choices(cls: type, name: str) -> tuple[str, ...] | None:
    return next(f.metadata.get("choices") for f in dataclasses.fields(cls) if f.name == name)


def optional_type(cls: type, name: str) -> type:
    """The plain type of a field (`int | None` -> int), for parsing text into it."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


REPETITION_WINDOW = 64  # the answer's last tokens that the repetition penalty counts (llama.cpp's repeat_last_n)


@dataclass(frozen=True)
class Decoding:
    """How a generate run's model answers (`jrft predict`, the app's chat box)."""

    max_new_tokens: int = field(default=128, metadata=_help("The longest answer, in tokens.", minimum=1))
    temperature: float = field(
        default=0.0, metadata=_help("0 answers greedily (the likeliest token each time, the same answer every time); "
                                    "higher values sample more varied answers.", minimum=0.0))
    top_p: float = field(
        default=1.0, metadata=_help("Sample only from the likeliest tokens whose probabilities add up to this share "
                                    "(1: from all); used when the temperature is above 0.", minimum=0.0,
                                    exclusive_minimum=True, maximum=1.0))
    repetition_penalty: float = field(
        default=1.1, metadata=_help(
            f"Make the tokens of the last {REPETITION_WINDOW} of the answer less likely, as llama.cpp and Ollama do "
            "by default (a positive logit divided by it, a negative one multiplied): a small model answering "
            "greedily otherwise tends to loop ('Monday, Tuesday, Monday, ...'). 1 turns it off: pure greedy decoding "
            "at temperature 0.",
            minimum=1.0, maximum=10.0))
    seed: int = field(default=0, metadata=_help("Seed of the sampling (answers repeat for the same seed).", minimum=0))

    def __post_init__(self):
        ranges.check(self)

    @property
    def greedy(self) -> bool:
        """The likeliest token every time, nothing else changing the model's own probabilities."""
        return self.temperature == 0 and self.repetition_penalty == 1
