"""Linear probe: the pretrained model stays frozen, only the head trains."""

from ..errors import UserError
from .base import Adaptation, Method, Preset, freeze
from .registry import register
from .rows import RowShifts


class HeadOnly(Method):
    name = "head"
    summary = "Linear probe: only the classification head trains; the model is frozen."
    default_lr = 1e-2
    presets = (Preset("Linear head only"),)
    leaves_base_unchanged = True

    def params_for_size(self, size, model, spec):
        if not model.task.trains_head:
            raise UserError(f"The linear probe trains a new head only; a {model.task.name} run reads the model's own "
                            "output layer, which stays frozen, so nothing would train. Choose slash, jr-warp, lora, "
                            "vera, warp or full.")
        return 0

    def apply(self, model, plan, spec):
        freeze(model.backbone)
        return Adaptation()  # nothing added: only the head trains

    def row_shifts(self, model, vectors, projections):
        return [RowShifts() for _ in vectors]  # their rows run on the base model as it is, each read by its own head


register(HeadOnly())
