"""The registry of methods, by name (as PEFT registers its tuners). Everything outside the methods package asks it;
nothing else branches on a method's name. A method module registers itself when imported; the package's imports
give the order users see (the first is the default method)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..errors import UserError
from ..registry import lookup
from .options import DECLARED

if TYPE_CHECKING:
    from .base import Method, Preset

_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method. Its options must be fields of MethodSpec, declared once in options.py (the same default and
    metadata); a numeric option declares its valid range; a sized method has exactly one size option."""
    hints = typing.get_type_hints(method.options)
    for option in dataclasses.fields(method.options):
        where = f"Method {method.name!r}: option {option.name!r}"
        if "help" not in option.metadata or option.default is dataclasses.MISSING:
            raise TypeError(f"{where} needs a default and metadata=option(help, ...).")
        numeric = hints[option.name] in (int, float, int | None, float | None)
        if numeric and not {"minimum", "maximum"} & set(option.metadata):
            raise TypeError(f"{where} is a number: declare its valid range, option(..., minimum=..., maximum=...).")
        declared = DECLARED.get(option.name)
        if declared is None:
            raise TypeError(f"{where} is not a MethodSpec field: declare it in methods/options.py (DECLARED) and add "
                            "it to MethodSpec in methods/spec.py, so that it is typed.")
        if (declared.default, dict(declared.metadata)) != (option.default, dict(option.metadata)):
            raise TypeError(f"{where} differs from its declaration in methods/options.py; use that declaration.")
    sizes = [option.name for option in dataclasses.fields(method.options) if option.metadata.get("size")]
    if len(sizes) > 1 or bool(sizes) != (method.default_size is not None):
        raise TypeError(f"Method {method.name!r} needs one size option (option(..., size=True)) and a default_size, "
                        f"or neither (it has {', '.join(sizes) or 'no size'}).")
    _REGISTRY[method.name] = method
    return method


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
