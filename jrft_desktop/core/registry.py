"""Looking a strategy up by name (methods, tasks): one clear message for a name that is not there."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

from .errors import UserError

_T = TypeVar("_T")


def lookup(registry: Mapping[str, _T], name: str, kind: str) -> _T:
    """registry[name]; otherwise a UserError naming the closest name and every registered one."""
    try:
        return registry[name]
    except KeyError:
        close = difflib.get_close_matches(name, registry, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"Unknown {kind} {name!r}.{hint} {kind.capitalize()}s: {', '.join(registry)}.") from None
