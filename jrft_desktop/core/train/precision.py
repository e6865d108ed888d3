"""Which number format the model computes in: TrainingSpec.precision resolved on this device.

- 'fp32': no autocast.
- 'bf16': bf16 autocast. On a CPU only where it has native bf16 arithmetic (AVX512-BF16 or AMX-BF16): elsewhere
  oneDNN emulates bf16 with fp32 instructions plus conversions, which is slower than fp32, so it is refused.
- 'auto': bf16 on a CPU with native bf16 and on a CUDA GPU that has it (fp16 with a gradient scaler on an older
  GPU); fp32 anywhere else (MPS, CPUs without native bf16). Auto never takes an emulated path.

Autocast changes only what the matrix products compute in: the trainable tensors, their gradients and the
optimizer state stay fp32."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..config import PRECISIONS
from ..errors import UserError

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.split(":", 1)[-1].split())


@functools.lru_cache(maxsize=1)
def cpu_features() -> tuple[str, ...]:
    """The CPU's bf16-relevant features, as /proc/cpuinfo names them (empty where it cannot be read)."""
    flags = _cpu_flags()
    return tuple(sorted(flag for flag in flags if flag.startswith(("avx512", "amx")) or flag in ("avx2", "fma")))


def native_bf16(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether `device` computes bf16 natively (not emulated). A CPU: an AVX512-BF16 or AMX-BF16 flag (read from
    /proc/cpuinfo, so a CPU elsewhere than Linux counts as without)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    flags = _cpu_flags() if flags is None else flags
    return any(flag in flags for flag in CPU_BF16_FLAGS) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve(requested: str, device: torch.device, flags: frozenset[str] | None = None) -> str:
    """'fp32', 'bf16' or 'fp16' (CUDA without bf16, 'auto' only): what a run on `device` computes in. A 'bf16' that
    the device would emulate is a UserError."""
    if requested not in PRECISIONS:
        raise UserError(f"The precision must be one of {', '.join(PRECISIONS)} (got {requested!r}).")
    if requested == "fp32":
        return "fp32"
    native = native_bf16(device, flags)
    if requested == "bf16" and not native:
        where = "this GPU" if device.type == "cuda" else f"the {device.type} device" if device.type != "cpu" \
            else "this CPU (it has neither AVX512-BF16 nor AMX-BF16, so bf16 would be emulated, slower than fp32)"
        raise UserError(f"bf16 was requested, but {where} has no native bf16 arithmetic; use --precision auto "
                        "(fp32 here) or fp32.")
    if native:
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def replay(recorded: str, device: torch.device) -> str:
    """What to score a trained run in, so that `jrft eval` gives the run's own numbers: the precision it was trained
    in (`recorded`, resolved) where `device` computes that natively, else fp32."""
    if recorded == "bf16" and native_bf16(device) or recorded == "fp16" and device.type == "cuda":
        return recorded
    return "fp32"


def autocast(precision: str, device: torch.device) -> torch.autocast | None:
    """The autocast context of a resolved precision (None: fp32)."""
    if precision not in DTYPES:
        return None
    return torch.autocast(device.type, dtype=DTYPES[precision])


def training_attention(precision: str, device: torch.device, causal: bool) -> str | None:
    """The attention implementation a training step's forward pass should use instead of the model's fused one
    (None: keep it). On a CPU under bf16, PyTorch's fused attention backward is several times slower than in fp32
    (torch 2.13 with AMX: 56 % of a bf16 step on RTE pairs), while eager attention's matrix products run in bf16. In
    the app's trainer an encoder trained 1.5 times faster with it (RTE 20.2 s against 13.4 s for 40 steps, SST-2
    18.9 against 12.7 s for 150); the decoder's causal attention did not (SmolLM2: 30.3 s against 37.5 s), so it
    keeps its own. Evaluation keeps the fused kernel. `benchmarks/attention_kernels.py`."""
    return "eager" if device.type == "cpu" and precision == "bf16" and not causal else None


# --- the frozen base's own precision ------------------------------------------------------------------------------
# Under bf16 autocast every matrix product already rounds the fp32 weights to bf16 on the fly, so a base held in bf16
# computes those products exactly as before at half the memory. What autocast keeps in fp32 stays fp32: the
# embeddings' output is cast up (so the residual stream is fp32, as with fp32 weights), and norms compute in fp32 on
# their bf16-rounded scales. Whatever trains (z, a head, LoRA factors, BitFit's biases) and its optimizer state is
# fp32 (`keep_trainable_fp32`).
BASE_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_base(requested: str, precision: str, method: str = "", device: torch.device | None = None) -> str:
    """'fp32', 'bf16' or 'fp16': what a run's frozen base weights are held in, given its resolved `precision`.
    'auto': the run's half precision (bf16; fp16 on an older CUDA GPU) unless the method trains the base's weights
    (full finetuning), fp32 otherwise. 'bf16' needs a run that computes in bf16 (a UserError otherwise: without
    autocast nothing would turn the fp32 activations and the bf16 weights into one format)."""
    from ..config import BASE_DTYPES
    from ..methods import get_method

    if requested not in BASE_DTYPES:
        raise UserError(f"The base dtype must be one of {', '.join(BASE_DTYPES)} (got {requested!r}).")
    if requested == "fp32":
        return "fp32"
    if requested == "bf16":
        if precision != "bf16":
            raise UserError(f"A bf16 base computes under bf16 autocast, but this run computes in {precision} "
                            "(--precision, or a private run, which computes in fp32); use --base-dtype fp32 or auto.")
        return "bf16"
    if precision == "fp32" or (method and get_method(method).trains_base_weights):
        return "fp32"
    return precision


def replay_base(recorded: str | None, precision: str) -> str:
    """The base dtype to score a trained run with (`jrft eval`): the recorded one where the replayed `precision`
    (see `replay`) computes in it, else fp32."""
    return recorded if recorded in ("bf16", "fp16") and recorded == precision else "fp32"


def keep_trainable_fp32(model: torch.nn.Module) -> None:
    """Every trainable tensor in fp32 (a BitFit bias or anything a method made from a half-precision base layer)."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
