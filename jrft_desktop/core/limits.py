"""What this machine can hold: requests that cannot fit in its memory become one clear `UserError` before anything
is allocated, instead of an out-of-memory kill minutes later (or the machine swapping to a halt)."""

from __future__ import annotations

from .errors import UserError
from .formatting import format_bytes


def memory_limit() -> int:
    """Bytes one run may plan to use: half of this machine's memory (the rest is the model, the OS and the app)."""
    import psutil

    return psutil.virtual_memory().total // 2


def require_memory(needed: int, what: str, advice: str) -> None:
    """Refuse `what` when it needs more bytes than `memory_limit`."""
    limit = memory_limit()
    if needed > limit:
        raise UserError(f"{what} would take about {format_bytes(needed)} of memory, over this machine's limit of "
                        f"{format_bytes(limit)} (half its memory); {advice}.")
