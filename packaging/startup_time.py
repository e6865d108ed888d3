"""Seconds from starting a command (`jrft-desktop --timing`) until it reports its window on screen, median of N.

Measured from outside, so a frozen app's unpacking and the interpreter's start count too; the app's own figure
(from its first import) is printed beside it.   python packaging/startup_time.py [--runs N] COMMAND..."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

WINDOW_LINE = re.compile(r"timing: window on screen ([0-9.]+) s")


def time_to_window(command: list[str], timeout_s: float = 120) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="jrft-startup-") as home:  # fresh settings, no user runs
        env = {**os.environ, "JRFT_HOME": home, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
        started = time.perf_counter()
        process = subprocess.Popen([*command, "--timing"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True, env=env)
        try:
            for line in process.stdout:
                found = WINDOW_LINE.search(line)
                if found:
                    return time.perf_counter() - started, float(found.group(1))
                if time.perf_counter() - started > timeout_s:
                    break
            raise SystemExit(f"{command[0]} printed no 'window on screen' line")
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    measured = [time_to_window(args.command) for _ in range(args.runs)]
    outside = statistics.median(m[0] for m in measured)
    inside = statistics.median(m[1] for m in measured)
    print(f"{' '.join(args.command)}: window on screen {outside:.2f} s after launch (median of {args.runs}; "
          f"the app's own figure from its first import: {inside:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
