"""The finetuning methods, each in its own module, registered by name (as PEFT registers its tuners).

Everything outside this package asks the registry; nothing else branches on a method's name."""

from __future__ import annotations

import difflib

from ..errors import UserError
from .base import Method, MethodPlan

_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"Unknown method {name!r}.{hint} Methods: {', '.join(_REGISTRY)}.") from None


def method_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def all_methods() -> tuple[Method, ...]:
    return tuple(_REGISTRY.values())


# Import order is the order users see.
from . import slash, jr_warp, head, bitfit, lora, vera, warp, full  # noqa: E402,F401

__all__ = ["Method", "MethodPlan", "register", "get_method", "method_names", "all_methods", "build"]


def build(loaded, pooling: str, num_labels: int, spec) -> tuple:
    """Wrap a loaded backbone with a head and apply the method: returns (model, method, plan)."""
    from ..models import JrftModel

    method = get_method(spec.name)
    model = JrftModel(loaded, pooling, num_labels)
    plan = method.plan(spec, model)
    method.apply(model, plan, spec)
    return model, method, plan
