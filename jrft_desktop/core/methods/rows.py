"""Shifts per row: many vectors of a shift method on one base model in one batch.

A SLaSh vector's effect is a constant shift per layer at one site (`family.shift_sites`), so rows of one batch can
each add their own vector's shifts to the same forward pass: `Method.row_shifts` gives a vector's table once (when a
server loads it), and `RowMix` adds every row's table to its row. Adding a shift at a site is written once here, for
a method that shifts every row alike (slash.py) and for the mix."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from .base import Adaptation

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..families import ShiftSite
    from ..models import JrftModel

# (hidden states the shift is added to) -> the shift, broadcast over them; None: nothing to add this pass
ShiftFor = Callable[["torch.Tensor"], "torch.Tensor | None"]  # in any precision: `projection.add_shift` casts it


def add_at_site(layer: nn.Module, site: ShiftSite, shift_for: ShiftFor):
    """Add `shift_for(hidden)` where `site` says inside `layer` (its module's output, or its first input); returns
    the hook's handle."""
    from ..projection import add_shift

    module = layer.get_submodule(site.module)
    if site.adds_to == "input":
        def add_to_input(module, args):
            shift = shift_for(args[0])
            return None if shift is None else (add_shift(args[0], site.spread(shift, args[0].shape[-1])), *args[1:])

        return module.register_forward_pre_hook(add_to_input)

    def add_to_output(module, args, output):
        shift = shift_for(output)
        return None if shift is None else add_shift(output, site.spread(shift, output.shape[-1]))

    return module.register_forward_hook(add_to_output)


@dataclass(frozen=True)
class RowShifts:
    """One vector's shift in every layer at one site (`site`: a key of `family.shift_sites`), computed once; no site
    and no layers: the vector adds nothing to the base model (a linear probe's rows run on it as they are)."""

    site: str | None = None
    layers: tuple[torch.Tensor, ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(layer.numel() * layer.element_size() for layer in self.layers)

    def to(self, device) -> RowShifts:
        return RowShifts(self.site, tuple(layer.to(device) for layer in self.layers))


class RowMix(Adaptation):
    """Row i of each forward pass adds `rows[i]`'s shifts: a hook per layer at every site of the family, and the
    tables of the rows about to run (`use`). A row whose vector shifts nothing, or shifts at another site, adds
    zeros there, which leave its values exactly as they were."""

    def __init__(self, model: JrftModel):
        self._tables: dict[str, list[torch.Tensor]] = {}
        hooks = [add_at_site(layer, site, partial(self._shift, position, index))
                 for position, site in model.family.shift_sites.items()
                 for index, layer in enumerate(model.layers())]
        super().__init__(hooks=hooks)

    def use(self, rows: Sequence[RowShifts]) -> None:
        """The rows of the next forward pass, in batch order: per site and layer a [rows, 1, width] table."""
        import torch

        tables = {}
        for position in {row.site for row in rows if row.site is not None}:
            at_site = [row for row in rows if row.site == position]
            tables[position] = [
                torch.stack([row.layers[index] if row.site == position else at_site[0].layers[index].new_zeros(
                    at_site[0].layers[index].shape) for row in rows]).unsqueeze(1)
                for index in range(len(at_site[0].layers))]
        self._tables = tables

    def _shift(self, position: str, index: int, hidden: torch.Tensor) -> torch.Tensor | None:
        table = self._tables.get(position)
        return None if table is None else table[index].to(hidden.dtype)
