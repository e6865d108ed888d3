"""What a run will cost before it starts: its peak memory, estimated from the model's structure and the plan, and
its step time, measured on a few real steps. Decoders are where people hit their machine's limits; a run that will
not fit is refused with what to change, before anything big is allocated, and one that fits only with gradient
checkpointing gets it turned on, with a note (`plan_memory`), as does one whose activations would outgrow the frozen
model.

The estimate is of the peak resident memory of the training process (what the OS sees, measured as peak RSS): the
runtime (Python, torch, transformers, the data, and the tokenizer, by its vocabulary), the frozen weights in the
dtype they are held in (under bf16 autocast an fp32 base also keeps a bf16 copy of each weight for the backward pass), the trainable values'
gradient and AdamW moments, the fixed projections, and the activations that the backward pass through the frozen
model keeps: per layer and token, the norms' fp32 inputs (4 bytes for each normalised value: 2 x hidden for most
models, more for Gemma's four norms and the query / key norms) and the attention's query, key, value and output
(8 bytes x hidden under bf16, 16 in fp32), a decoder's gated MLP's gate, up and activated values (6 bytes x MLP width
under bf16, 12 in fp32; an encoder's MLP keeps one of the three), an encoder's eager attention its scores, all times
1.5 for what the backward pass allocates on top while it runs (fitted on SmolLM2 at 32 x 128 and a
Qwen2.5-0.5B-shaped decoder at 8 x 256; benchmarks/memory_estimate.py measures every case against its peak RSS). A
language model's output layer adds one chunk of its loss (tasks/generate.py), not its vocabulary at every
position."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from .. import methods
from ..formatting import format_bytes
from ..limits import memory_limit

FLOAT = 4  # bytes: what trains, its gradient and optimizer state are float32
RUNTIME = 430 * 2 ** 20  # bytes: the process before any weight or tokenizer (Python, torch, transformers, data)
# bytes a fast tokenizer holds per vocabulary entry (Gemma 3's 262,144 entries: 331 MB measured; SmolLM2's 49,152
# entries take 27 MB, so smaller vocabularies are overestimated by a few tens of MB)
TOKENIZER_PER_ENTRY = 1300
# bytes kept per layer and token for the backward pass: per hidden-size value, the attention's query, key, value and
# output; per normalised value (ModelInfo.normed_width), the norm's fp32 input; per MLP-width value (bf16, fp32)
PER_TOKEN_HIDDEN = {"bf16": 8, "fp16": 8, "fp32": 16}
PER_TOKEN_NORMED = 4
PER_TOKEN_MLP = {"bf16": 6, "fp16": 6, "fp32": 12}
BACKWARD_SLACK = 1.5  # the backward pass's own buffers on top of what it keeps (fitted, see above)
# with gradient checkpointing: what is kept per layer and token, in fp32 hidden-size values (the layer's input, 1,
# and what the checkpoints and the backward pass hold besides; fitted on the generate task at 8 x 256: SmolLM2 1.77 GB
# peak RSS, a Qwen2.5-0.5B-shaped decoder 3.49 GB, a 1.5B-shaped one 7.05 GB; each estimate within 10 %)
CHECKPOINT_KEPT = 6
# what checkpointing costs in step time (benchmarks/generate_side_by_side.py, generate at 8 x 256: +25 % on SmolLM2,
# +19 % on a Qwen2.5-0.5B-shaped decoder)
CHECKPOINT_TIME = "about a fifth to a quarter more time a step"
# activations below this are not worth recomputing, however small the model (an encoder's classify run keeps a few
# hundred MB)
ACTIVATIONS_FLOOR = 2 ** 30
# bytes per layer, token and hidden-size value that a method's own trainable matrices keep inside the layers: LoRA's
# and VeRA's down-projections keep their inputs (the query's and the value's, 4 bytes each) for their gradients
METHOD_PER_TOKEN_HIDDEN = {"lora": 8, "vera": 8}
HALF = 2  # bytes of a bf16 / fp16 value


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # bytes
    optimizer: int  # the trainable values' gradients and AdamW moments
    projections: int
    activations: int
    limit: int  # what one run may use on this machine (half its memory)
    runtime: int = 0  # the process itself: Python, torch, transformers, the tokenizer and the data
    checkpointing: bool = False  # the estimate is of a run with gradient checkpointing
    note: str = ""  # why gradient checkpointing was turned on (plan_memory)

    @property
    def total(self) -> int:
        return self.runtime + self.weights + self.optimizer + self.projections + self.activations

    @property
    def fits(self) -> bool:
        return self.total <= self.limit

    def describe(self) -> str:
        parts = ", ".join(f"{name} {format_bytes(value)}" for name, value in (
            ("weights", self.weights), ("activations", self.activations), ("projections", self.projections),
            ("optimizer", self.optimizer), ("runtime", self.runtime)) if value)
        return f"about {format_bytes(self.total)} at its peak ({parts}) of the {format_bytes(self.limit)} a run may use"


def estimate_memory(info, plan, batch_size: int, max_length: int, gradient_checkpointing: bool = False,
                    outputs_per_token: int = 0, precision: str = "fp32", base_dtype: str = "fp32") -> MemoryEstimate:
    """Peak memory of training `plan` on a model described by `info` (models.ModelInfo) at `batch_size` x
    `max_length` tokens, computing in `precision` with the frozen base held in `base_dtype` (both resolved,
    precision.py); `outputs_per_token`, the width of a head that reads every token (`Task.outputs_per_token`: a
    language model's vocabulary, whose loss is computed a chunk of positions at a time)."""
    from ..tasks.generate import CHUNK_VALUES

    computes = precision if precision in PER_TOKEN_HIDDEN else "fp32"
    half_base = base_dtype in ("bf16", "fp16")
    weights = (HALF if half_base else FLOAT) * info.parameters
    if computes != "fp32" and not half_base and plan.method_params:
        weights += HALF * info.parameters  # autocast's bf16 copy of each weight, kept for the backward pass
    optimizer = 3 * FLOAT * plan.trainable_params
    projections = methods.get_method(plan.method).fixed_memory(plan, info)
    tokens = batch_size * max_length
    activations = 0
    if plan.method_params:  # the gradient flows back through every layer
        # a decoder's gated MLP keeps three MLP-wide values (gate, up, activated), an encoder's one (the activation's
        # input)
        mlp = PER_TOKEN_MLP[computes] if info.causal else PER_TOKEN_MLP[computes] // 3
        normed = info.normed_width or 2 * info.hidden_size
        per_token = ((PER_TOKEN_HIDDEN[computes] + METHOD_PER_TOKEN_HIDDEN.get(plan.method, 0)) * info.hidden_size
                     + PER_TOKEN_NORMED * normed + mlp * info.intermediate_size)
        if not info.causal and computes != "fp32":  # eager attention (precision.training_attention) keeps its scores
            per_token += (FLOAT + HALF) * info.attention_heads * max_length
        if gradient_checkpointing:  # each layer's input (and what the checkpoints keep besides), and one layer's
            # activations while it is recomputed
            activations = int(CHECKPOINT_KEPT * FLOAT * tokens * info.hidden_size * info.layers
                              + BACKWARD_SLACK * tokens * per_token)
        else:
            activations = int(BACKWARD_SLACK * tokens * per_token * info.layers)
    if outputs_per_token:  # one chunk of logits (fp32, its half-precision product, the softmax made in place)
        rows = min(tokens, max(1, CHUNK_VALUES // outputs_per_token))
        activations += (FLOAT + HALF + HALF) * rows * outputs_per_token + 2 * FLOAT * tokens * info.hidden_size
        if computes != "fp32" and not half_base:
            activations += HALF * outputs_per_token * info.hidden_size  # the output layer cast once for the loss
    runtime = RUNTIME + TOKENIZER_PER_ENTRY * info.vocab_size
    return MemoryEstimate(weights, optimizer, projections, activations, memory_limit(), runtime,
                          gradient_checkpointing)


def plan_memory(info, plan, batch_size: int, max_length: int, gradient_checkpointing: bool | None = None,
                outputs_per_token: int = 0, precision: str = "fp32", base_dtype: str = "fp32") -> MemoryEstimate:
    """The estimate of the run as asked, or of the run with gradient checkpointing (`checkpointing` set, and a `note`
    that says why: the trainer then turns it on) where the user left it automatic (None) and either only
    checkpointing makes the run fit, or the layers' activations would outgrow the frozen model (`_outgrown`). True
    and False are the user's own choice, kept. A run that does not fit either way is left as asked (`require_fits`
    refuses it)."""
    asked = estimate_memory(info, plan, batch_size, max_length, bool(gradient_checkpointing), outputs_per_token,
                            precision, base_dtype)
    if gradient_checkpointing is not None or not asked.activations:
        return asked
    checkpointed = estimate_memory(info, plan, batch_size, max_length, True, outputs_per_token, precision, base_dtype)
    if not checkpointed.fits:
        return asked
    if not asked.fits:
        why = f"without it this run would take {format_bytes(asked.total)} of the {format_bytes(asked.limit)} allowed"
    elif _outgrown(asked) and checkpointed.total < asked.total:
        why = (f"its activations would take {format_bytes(asked.activations)}, more than the frozen model's "
               f"{format_bytes(asked.weights)} ({format_bytes(asked.total)} in all)")
    else:
        return asked
    return replace(checkpointed, note=(
        f"gradient checkpointing turned on: {why}; with it {format_bytes(checkpointed.total)}, for {CHECKPOINT_TIME} "
        "(each layer's activations are recomputed in the backward pass; --no-gradient-checkpointing keeps them)"))


def _outgrown(estimate: MemoryEstimate) -> bool:
    """A few-thousand-parameter method's point is that the frozen model is the only large thing in memory: past
    ACTIVATIONS_FLOOR, activations bigger than the weights are worth recomputing."""
    return estimate.activations > max(estimate.weights, ACTIVATIONS_FLOOR)


def require_fits(estimate: MemoryEstimate, batch_size: int, plan, gradient_checkpointing: bool | None) -> None:
    """Refuse a run that will not fit, naming what to change."""
    from ..errors import UserError

    if estimate.fits:
        return
    advice = [f"a smaller batch (--batch-size {max(1, batch_size // 2)})"]
    if not gradient_checkpointing and not estimate.checkpointing and estimate.activations:
        advice.append("gradient checkpointing (--gradient-checkpointing)")
    if estimate.projections and not plan.on_the_fly:
        advice.append("on-the-fly projections (--on-the-fly)")
    raise UserError(f"This run would take {estimate.describe()}; try {', or '.join(advice)}, or a shorter "
                    "--max-length.")


@dataclass(frozen=True)
class RunEstimate:
    memory: MemoryEstimate
    step_s: float  # median seconds of an optimizer step, measured
    steps_measured: int

    def describe(self) -> str:
        note = f" ({self.memory.note})" if self.memory.note else ""
        return (f"{self.memory.describe()}{note}; a step takes {self.step_s:.2f} s (median of {self.steps_measured} "
                "measured)")


def measure_run(config, steps: int = 3) -> RunEstimate:
    """The memory estimate and the step time of `config`, measured on its first batches of real data (`steps`
    steps after one that warms up) with a throwaway copy of the model: nothing is written."""
    import statistics

    import torch

    from ..build import build_model
    from ..inference import pick_device
    from ..models import load_backbone
    from ..tasks import task_for
    from . import precision as precisions
    from .step import Optimization, first_batches, sync, train_mode

    training = config.training
    task = task_for(config.data.task, config.data.train)
    data = task.load_data(config.data, training.seed)
    device = pick_device(training.device)
    precision = "fp32" if config.privacy.enabled else precisions.resolve(training.precision, device)
    base_dtype = precisions.resolve_base(training.base_dtype, precision, config.method.name, device)
    loaded = load_backbone(config.model, task, precisions.BASE_TORCH_DTYPES[base_dtype])
    model, _, plan = build_model(config.model, config.method, task, data.num_labels, loaded=loaded)
    precisions.keep_trainable_fp32(model)
    encoder = task.make_encoder(loaded.tokenizer, config.data.max_length, model, config.data)
    memory = plan_memory(model.info, plan, training.batch_size, encoder.max_length, training.gradient_checkpointing,
                         task.outputs_per_token(model), precision, base_dtype)
    require_fits(memory, training.batch_size, plan, training.gradient_checkpointing)
    if memory.checkpointing:
        model.base().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device)
    train_mode(model, False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=training.lr or plan.default_lr or 1e-3)
    optimization = Optimization.create(model, optimizer, task.loss_function(data.problem), device,
                                       precision=precision)
    times = []
    for index, (inputs, labels) in enumerate(first_batches(task, encoder, data.train, training.batch_size,
                                                           steps + 1, device)):
        sync(device)
        tick = time.perf_counter()
        optimization.step(inputs, labels)
        sync(device)
        if index:  # the first step warms up
            times.append(time.perf_counter() - tick)
    return RunEstimate(memory, statistics.median(times), len(times))
