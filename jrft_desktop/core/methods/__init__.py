"""The finetuning methods, each in its own module, registered by name (as PEFT registers its tuners).

Everything outside this package asks the registry; nothing else branches on a method's name. Each method declares
its options (a frozen dataclass, as PEFT's per-tuner configs): `config.MethodSpec`'s fields, the `jrft train` flags
and the app's controls are made from them. Its presets (the app) and bench cases (`jrft bench`) are declared with it,
so a new method is its module plus its line in the imports below. Importing this package needs no torch."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable

from ..errors import UserError
from ..registry import lookup
from .base import Method, MethodPlan, Preset

_REGISTRY: dict[str, Method] = {}
_SPEC_OPTIONS: frozenset[str] | None = None  # the options MethodSpec was made with, once config.py made it
RESERVED = ("name", "budget")  # MethodSpec's own fields


def register(method: Method) -> Method:
    """Add a method (its module calls this when imported). An option that several methods read is declared once and
    shared (the same type, default and help). A method bringing an option no other method has must be registered
    before `jrft_desktop.core.config` is imported, since MethodSpec's fields are made then."""
    known = dict(option_fields())
    hints = typing.get_type_hints(method.options)
    for option in dataclasses.fields(method.options):
        where = f"Method {method.name!r}: option {option.name!r}"
        if option.name in RESERVED or "help" not in option.metadata or option.default is dataclasses.MISSING:
            raise TypeError(f"{where} needs a name other than {' or '.join(RESERVED)}, a default and "
                            "metadata=option(help, ...).")
        numeric = hints[option.name] in (int, float, int | None, float | None)
        if numeric and not {"minimum", "maximum"} & set(option.metadata):
            raise TypeError(f"{where} is a number: declare its valid range, option(..., minimum=..., maximum=...).")
        if option.name in known and _declaration(*known[option.name]) != _declaration(option, hints[option.name]):
            raise TypeError(f"{where} differs from the one another method declares; share one declaration.")
    sizes = [option.name for option in dataclasses.fields(method.options) if option.metadata.get("size")]
    if len(sizes) > 1 or bool(sizes) != (method.default_size is not None):
        raise TypeError(f"Method {method.name!r} needs one size option (option(..., size=True)) and a default_size, "
                        f"or neither (it has {', '.join(sizes) or 'no size'}).")
    new = set(method.option_names) - set(known)
    if _SPEC_OPTIONS is not None and not new <= _SPEC_OPTIONS:
        raise TypeError(f"Method {method.name!r} brings option(s) {', '.join(sorted(new - _SPEC_OPTIONS))} after "
                        "MethodSpec was made: register it before jrft_desktop.core.config is imported.")
    _REGISTRY[method.name] = method
    return method


def _declaration(option: dataclasses.Field, kind) -> tuple:
    return kind, option.default, dict(option.metadata)


def option_fields() -> dict[str, tuple[dataclasses.Field, type]]:
    """Every registered method's options, each once, in the order of registration: name -> (field, its type)."""
    found: dict[str, tuple[dataclasses.Field, type]] = {}
    for method in _REGISTRY.values():
        hints = typing.get_type_hints(method.options)
        for option in dataclasses.fields(method.options):
            found.setdefault(option.name, (option, hints[option.name]))
    return found


def spec_option_fields() -> dict[str, tuple[dataclasses.Field, type]]:
    """option_fields(), for config.py to make MethodSpec with; methods registered later may only reuse them."""
    global _SPEC_OPTIONS
    found = option_fields()
    _SPEC_OPTIONS = frozenset(found)
    return found


def refuse_unread(method_name: str, given: Iterable[str], label: Callable[[str], str] = str) -> None:
    """A UserError for the first of the `given` options that the method does not read, in one line naming the
    options it does read (`label` names an option, e.g. by its flag)."""
    method = get_method(method_name)
    unread = [name for name in given if name not in method.option_names]
    if unread:
        reads = ", ".join(map(label, method.option_names))
        raise UserError(f"{label(unread[0])} does not apply to {method.name} "
                        f"({f'its options: {reads}' if reads else 'it has no options'}).")


def presets() -> tuple[Preset, ...]:
    """Every method's presets, in the registry's order, each with its method's name."""
    return tuple(dataclasses.replace(preset, method=m.name) for m in _REGISTRY.values() for preset in m.presets)


def get_method(name: str) -> Method:
    return lookup(_REGISTRY, name, "method")


def reference_method() -> Method:
    """The method every other is compared with (full finetuning)."""
    return next(method for method in _REGISTRY.values() if method.reference)


def base_model_method() -> Method:
    """A method that leaves the base model computing as it was (the linear probe): for the base model's latency."""
    return next(method for method in _REGISTRY.values() if method.leaves_base_unchanged)


def all_methods() -> tuple[Method, ...]:
    return tuple(_REGISTRY.values())


# Import order is the order users see; the first is the default method.
from . import slash, jr_warp, head, bitfit, lora, vera, warp, full  # noqa: E402,F401

__all__ = ["Method", "MethodPlan", "Preset", "all_methods", "base_model_method", "build", "get_method", "option_fields",
           "presets", "reference_method", "refuse_unread", "register"]


def build(loaded, pooling: str, num_labels: int, spec, task=None) -> tuple:
    """Wrap a loaded backbone with the task's head and apply the method: returns (model, method, plan)."""
    from ..models import JrftModel

    method = get_method(spec.name)
    model = JrftModel(loaded, pooling, num_labels, task)
    plan = method.plan(spec, model)
    method.apply(model, plan, spec)
    return model, method, plan
