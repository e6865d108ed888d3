"""Fixed random projections W_l (d x width_l) regenerated from a seed, never stored.

Each layer's matrix comes from its own CPU generator seeded by a hash of (seed, layer), so any one W_l can be
rebuilt alone (on-the-fly mode) and the values do not depend on the device. `fingerprint` hashes every value;
a golden-value test pins it, so a change in torch's random number generation is caught before it silently
changes what a saved vector means."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import ArtifactError

GENERATOR = "torch.randn(cpu generator, float32) / sqrt(d), per-layer seed sha256('jrft-projection:{seed}:{layer}')"


@dataclass(frozen=True)
class ProjectionSpec:
    seed: int
    d: int
    widths: tuple[int, ...]  # output width of each layer's projection
    generator: str = GENERATOR

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict) -> ProjectionSpec:
        return cls(seed=int(data["seed"]), d=int(data["d"]), widths=tuple(int(w) for w in data["widths"]),
                   generator=str(data["generator"]))


def layer_seed(seed: int, layer: int) -> int:
    digest = hashlib.sha256(f"jrft-projection:{seed}:{layer}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generate(spec: ProjectionSpec, layer: int) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(layer_seed(spec.seed, layer))
    values = torch.randn(spec.d, spec.widths[layer], generator=generator, dtype=torch.float32)
    return values / math.sqrt(spec.d)


def fingerprint(spec: ProjectionSpec) -> str:
    digest = hashlib.sha256()
    for layer in range(len(spec.widths)):
        digest.update(generate(spec, layer).numpy().astype("<f4").tobytes())
    return digest.hexdigest()


def check_spec(spec: ProjectionSpec, expected_fingerprint: str) -> None:
    if spec.generator != GENERATOR:
        raise ArtifactError(
            f"The vector was made with another projection generator ({spec.generator!r}); this version of the "
            "app cannot regenerate its projections."
        )
    actual = fingerprint(spec)
    if actual != expected_fingerprint:
        raise ArtifactError(
            "The regenerated projections do not match the vector's fingerprint (the random number generator "
            "of this torch version differs from the one that trained it, or the metadata was edited)."
        )


class ProjectionCache:
    """Projections regenerated once per spec while many vectors are read (a server loading a thousand vectors of one
    seed draws each W_l once, not a thousand times), each spec checked once against the fingerprint its vectors
    recorded. Drop it when the vectors are read: it holds every W_l of the specs it has seen."""

    def __init__(self) -> None:
        self._checked: dict[ProjectionSpec, str] = {}
        self._weights: dict[ProjectionSpec, list[torch.Tensor]] = {}

    def check(self, spec: ProjectionSpec, expected_fingerprint: str) -> None:
        """`check_spec`, once per spec and fingerprint."""
        if self._checked.get(spec) != expected_fingerprint:
            check_spec(spec, expected_fingerprint)
            self._checked[spec] = expected_fingerprint

    def weights(self, spec: ProjectionSpec) -> list[torch.Tensor]:
        """Every W_l of a spec checked before (`check`): the spec a vector's method settings give must be the one its
        metadata recorded and the fingerprint vouches for."""
        if spec not in self._checked:
            raise ArtifactError("The vector's projection spec does not match its method settings (edited metadata).")
        if spec not in self._weights:
            self._weights[spec] = [generate(spec, layer) for layer in range(len(spec.widths))]
        return self._weights[spec]


class _OnTheFlyShift(torch.autograd.Function):
    """z @ W_l with W_l rebuilt in forward and again in backward, so no projection stays in memory.

    Written in the `setup_context` form with a generated vmap rule so that torch.func can transform it: private
    training takes exact per-example gradients of z with vmap(grad(...))."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: torch.Tensor, spec: ProjectionSpec, layer: int) -> torch.Tensor:
        return z @ generate(spec, layer).to(device=z.device, dtype=z.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, ctx.spec, ctx.layer = inputs

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        weights = generate(ctx.spec, ctx.layer).to(device=grad_output.device, dtype=grad_output.dtype)
        return grad_output @ weights.T, None, None


class ProjectedVector(nn.Module):
    """The trainable vector z and the per-layer shifts z @ W_l it induces."""

    def __init__(self, spec: ProjectionSpec, on_the_fly: bool = False):
        super().__init__()
        self.spec = spec
        self.on_the_fly = on_the_fly
        self.z = nn.Parameter(torch.zeros(spec.d))
        if not on_the_fly:
            for layer in range(len(spec.widths)):
                self.register_buffer(f"w_{layer}", generate(spec, layer), persistent=False)
        # Private training's fast route (methods/slash.py): per layer, a zero tensor [B, 1, width] added to the
        # shift, whose gradient is every example's own gradient of the shift.
        self.probes: list[torch.Tensor] | None = None
        # On the fly, the shifts last computed without gradients, for the z they came from: evaluation and
        # generation run many forward passes on one z, and regenerating every W_l for each (each generated token)
        # would cost more than the step itself.
        self._inference_shifts: dict[int, tuple[tuple[int, int], torch.Tensor]] = {}

    def weight(self, layer: int) -> torch.Tensor:
        """W_l (d x width_l)."""
        if self.on_the_fly:
            return generate(self.spec, layer).to(device=self.z.device, dtype=self.z.dtype)
        return getattr(self, f"w_{layer}")

    def shift(self, layer: int) -> torch.Tensor:
        """z @ W_l in z's precision (fp32) even under autocast: a bf16 product would round the shift, and in the
        backward pass z's gradient (`add_shift` keeps the rest of that gradient in fp32 too)."""
        with torch.autocast(self.z.device.type, enabled=False):
            if not self.on_the_fly:
                shift = self.z @ self.weight(layer)
            elif torch.is_grad_enabled():
                shift = _OnTheFlyShift.apply(self.z, self.spec, layer)
            else:
                shift = self._inference_shift(layer)
        return shift if self.probes is None else shift + self.probes[layer]

    def _inference_shift(self, layer: int) -> torch.Tensor:
        """z @ W_l without gradients, regenerated only when z has changed (an optimizer step or a load writes z in
        place, which moves its version counter) since this layer's shift was last made."""
        state = (self.z.data_ptr(), self.z._version)
        kept = self._inference_shifts.get(layer)
        if kept is None or kept[0] != state:
            kept = (state, self.z @ self.weight(layer))
            self._inference_shifts[layer] = kept
        return kept[1]


class _AddShift(torch.autograd.Function):
    """hidden + shift in the hidden states' precision, the shift's gradient summed over the batch and the tokens in
    fp32. Autograd would sum a bf16 gradient in bf16 and round it: two processes, each summing its part of a batch,
    then reached another z than one process (2e-2 after 6 steps, tests/core/test_distributed.py)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        ctx.shape = shift.shape
        return hidden + shift.to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, grad.to(torch.float32).sum_to_size(ctx.shape) if ctx.needs_input_grad[1] else None


def add_shift(hidden: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """hidden + shift (broadcast): in fp32 hidden states plainly (torch.func can transform it: private training),
    in lower-precision ones with the shift's gradient summed in fp32 (`_AddShift`)."""
    if hidden.dtype == shift.dtype:
        return hidden + shift
    return _AddShift.apply(hidden, shift)
