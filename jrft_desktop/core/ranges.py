"""The valid range of every numeric setting: declared once, in its field's metadata next to its help (`between`),
described in that help (`describe`), offered by the app's number boxes (`bounds`) and checked in one place
(`check`) whenever a config dataclass is made, whether from CLI flags, a `--config` file, a run folder or the app.

A refusal is one line that names the setting, what it must be and what it got. Whole-number settings (typed `int`)
take whole numbers only, the others any finite number; None (a setting left empty) is never checked."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import Any

from .errors import UserError

KEYS = ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum", "called", "advice")
SEED_MAX = 2**32 - 1  # the largest seed numpy's generators take (the seeds' maximum)


def between(minimum: float | None = None, maximum: float | None = None, *, exclusive_minimum: bool = False,
            exclusive_maximum: bool = False, called: str | None = None, advice: str | None = None) -> dict[str, Any]:
    """Field metadata for a numeric setting's range (the bounds included unless marked exclusive); `called` names
    the setting in a refusal (default: its field name), `advice` follows a refusal after a semicolon."""
    declared = {"minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive_minimum,
                "exclusive_maximum": exclusive_maximum, "called": called, "advice": advice}
    return {key: value for key, value in declared.items() if value is not None and value is not False}


@functools.cache
def _numeric_kinds(cls: type) -> dict[str, type]:
    """name -> int or float for each numeric field of a config dataclass (`int | None` -> int; bools are not)."""
    kinds = {}
    for name, hint in typing.get_type_hints(cls).items():
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint)
        if hint in (int, float):
            kinds[name] = hint
    return kinds


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else f"{value:,}" if abs(value) >= 10_000 else str(value)


def phrase(metadata: dict, kind: type) -> str:
    """What a value must be, e.g. 'a positive number', 'at least 1', 'between 0 and 1, both excluded'."""
    low, high = metadata.get("minimum"), metadata.get("maximum")
    low_out, high_out = metadata.get("exclusive_minimum", False), metadata.get("exclusive_maximum", False)
    whole = "whole number" if kind is int else "number"
    if low is None and high is None:
        return f"a {whole}"
    if high is None:
        if low == 0:
            return f"a positive {whole}" if low_out else "at least 0"
        return f"above {_number(low)}" if low_out else f"at least {_number(low)}"
    if low is None:
        return f"below {_number(high)}" if high_out else f"at most {_number(high)}"
    ends = {(False, False): "", (True, True): ", both excluded", (True, False): f", {_number(low)} excluded",
            (False, True): f", {_number(high)} excluded"}[(low_out, high_out)]
    return f"{'a whole number ' if kind is int else ''}between {_number(low)} and {_number(high)}{ends}"


def describe(cls: type, name: str) -> str:
    """The sentence a numeric setting's help ends with ('Must be at least 1.'); '' for any other setting."""
    kind = _numeric_kinds(cls).get(name)
    if kind is None:
        return ""
    metadata = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    return f"Must be {phrase(metadata, kind)}."


def problem(cls: type, name: str, value: Any) -> str | None:
    """Why `value` is not a valid `cls.name`, in one sentence; None when it is (or the setting is not numeric)."""
    kind = _numeric_kinds(cls).get(name)
    if kind is None or value is None:
        return None
    metadata = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    called, advice = metadata.get("called", name), metadata.get("advice")
    must = phrase(metadata, kind)
    wanted = numbers.Integral if kind is int else numbers.Real
    if isinstance(value, bool) or not isinstance(value, wanted):
        must = must if "number" in must else f"a {'whole ' if kind is int else ''}number, {must}"
        shown = value if isinstance(value, numbers.Real) and not isinstance(value, bool) else repr(value)
        return f"{called} must be {must} (got {shown})" + (f"; {advice}." if advice else ".")
    low, high = metadata.get("minimum"), metadata.get("maximum")
    inside = math.isfinite(value) and (
        low is None or (value > low if metadata.get("exclusive_minimum") else value >= low)) and (
        high is None or (value < high if metadata.get("exclusive_maximum") else value <= high))
    if inside:
        return None
    must += ", not infinite" if math.isinf(value) else ""
    return f"{called} must be {must} (got {value})" + (f"; {advice}." if advice else ".")


def check(config: Any, error: type[UserError] = UserError) -> None:
    """Refuse the first numeric field of a config dataclass instance that is out of its range (as `error`)."""
    for name in _numeric_kinds(type(config)):
        found = problem(type(config), name, getattr(config, name))
        if found:
            raise error(found)


def bounds(cls: type, name: str, step: float = 1, ceiling: float | None = None) -> tuple[float, float]:
    """The lowest and highest value a number box with this `step` may offer for `cls.name` (an excluded bound moves
    in by one step; an open top is `ceiling`, which also caps a higher maximum)."""
    metadata = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    low, high = metadata.get("minimum"), metadata.get("maximum")
    low = -math.inf if low is None else low + (step if metadata.get("exclusive_minimum") else 0)
    high = math.inf if high is None else high - (step if metadata.get("exclusive_maximum") else 0)
    if ceiling is not None:
        high = min(high, ceiling)
    return low, high
