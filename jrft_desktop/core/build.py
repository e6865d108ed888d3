"""One way to build a model for a run: a model spec, a method spec, a task and its label count become a model with
the task's head and the method applied (the trainer, the cost estimate, the bench, restoring a vector file and the
app all call `build_model`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from . import methods
from .models import JrftModel, LoadedBackbone, load_backbone, load_skeleton

if TYPE_CHECKING:
    from .config import ModelSpec
    from .methods import Method, MethodPlan, MethodSpec
    from .tasks import Task


class BuiltModel(NamedTuple):
    model: JrftModel
    method: Method | None  # None: the base model with the task's head, no method
    plan: MethodPlan | None


def build_model(model: ModelSpec, method: MethodSpec | None, task: Task | None = None, num_labels: int = 1, *,
                loaded: LoadedBackbone | None = None, structure_only: bool = False) -> BuiltModel:
    """The task's head on the base model, and the method planned and applied. `loaded`: a backbone already loaded
    (`models.load_backbone`, whose tokenizer the caller also needs). `structure_only`: plan on the model's structure
    without weights (`models.load_skeleton`) and apply nothing, for what the app and `jrft methods` show before
    anything loads. `method` None gives the base model with the head (the app's base-model chat)."""
    if loaded is None:
        loaded = (load_skeleton if structure_only else load_backbone)(model, task)
    wrapped = JrftModel(loaded, model.pooling, num_labels, task)
    if method is None:
        return BuiltModel(wrapped, None, None)
    chosen = methods.get_method(method.name)
    plan = chosen.plan(method, wrapped)
    if not structure_only:
        wrapped.adapt(chosen.apply(wrapped, plan, method))
    return BuiltModel(wrapped, chosen, plan)
