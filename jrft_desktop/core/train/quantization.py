"""An 8-bit frozen base (`TrainingSpec.base_quantization`, issue 29): the base's linear layers held as int8 weights
with a scale per output row (torchao's weight-only int8, `Int8WeightOnlyConfig`), computed on the fly. Only frozen
linear layers are quantised: the output layer (a language model's head, often tied to the embeddings), the
embeddings, norms and whatever trains (z, a head, LoRA's factors) keep their dtype, so the SLaSh shift is trained
against the quantised base exactly as it computes. A merged model is still written from the full-precision base
plus the folded shift (`jrft export` restores the base unquantised).

What was tried on a CPU (torch 2.13, no CUDA): torchao 0.18's `Int8WeightOnlyConfig` works, forward and the
backward pass to the inputs, under bf16 autocast too; its `Int4WeightOnlyConfig` needs the `mslk` kernels package
(an ImportError: "Requires mslk >= 1.0.0"), so int4 is left to a CUDA GPU (with torchao or bitsandbytes installed).
torchao is optional: `pip install torchao`."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

SCHEMES = ("none", "int8", "int4")


def quantize_base(model, scheme: str, device: torch.device) -> str | None:
    """Quantise `model`'s frozen linear layers in place (a `models.JrftModel`, its method applied); the note that
    says so, None for 'none'. A scheme this device or installation cannot run is a UserError that says why."""
    if scheme not in SCHEMES:
        raise UserError(f"The base quantization must be one of {', '.join(SCHEMES)} (got {scheme!r}).")
    if scheme == "none":
        return None
    if scheme == "int4" and device.type != "cuda":
        raise UserError("--base-quantization int4 needs a CUDA GPU (torchao's int4 weight-only kernels need the "
                        "'mslk' package, which has no CPU build here); use int8 or none on this device.")
    try:
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise UserError(f"--base-quantization {scheme} needs torchao: pip install torchao") from None
    head = getattr(model, "head", None)

    def frozen_linear(module: nn.Module, _name: str) -> bool:
        return (isinstance(module, nn.Linear) and module is not head and not module.weight.requires_grad
                and module.weight.dim() == 2)

    counted = sum(1 for name, module in model.base().named_modules() if frozen_linear(module, name))
    if not counted:
        return None
    config = Int8WeightOnlyConfig() if scheme == "int8" else Int4WeightOnlyConfig()
    try:
        quantize_(model.base(), config, filter_fn=frozen_linear)
    except (ImportError, RuntimeError, NotImplementedError) as error:
        raise UserError(f"torchao could not quantise this model to {scheme} here: {str(error).splitlines()[0]}") \
            from None
    return (f"the frozen base's {counted} linear layers are held in {scheme} (torchao weight-only; the output layer, "
            "embeddings and norms as before); merged models are written from the full-precision base")
