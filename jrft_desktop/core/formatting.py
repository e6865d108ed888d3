"""Durations and sizes as people read them: one wording for the CLI, the desktop app, the bench and the errors."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """'3m 07s', or '1h 05m' from an hour on (negative durations read as 0)."""
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def format_bytes(count: float) -> str:
    """'812 bytes', '9.4 KB', '1,234.5 MB' (powers of 1024)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
