"""When each step of this wake happened (wall-clock seconds), for ``bench`` cold_start's breakdown.

``mark(name)`` keeps the first time of each step; ``flush()`` logs them once, after the wake's
first reply, as one line on stderr (the container log): ``nanohost-phases {"name": time, ...}``.
The host reads that line as hostile input (bounded, validated: nanohost/boot_phases.py); nothing
depends on it but figures.
"""

from __future__ import annotations

import json
import os
import sys
import time

MARKS: dict[str, float] = {}
_flushed = False


def _process_start() -> float | None:
    """Wall-clock time this process was started (from /proc: the interpreter's own start-up)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            up = float(uptime.read().split()[0])
        return time.time() - (up - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def mark(name: str) -> None:
    MARKS.setdefault(name, time.time())


def start() -> None:
    """The runner's first line: when the process started and when Python reached the runner."""
    if (begun := _process_start()) is not None:
        MARKS.setdefault("process", begun)
    mark("runner")


PREFIX = "nanohost-phases "


def flush() -> None:
    """Log the marks once per wake (later calls do nothing)."""
    global _flushed
    if _flushed:
        return
    _flushed = True
    sys.stderr.write(PREFIX + json.dumps({k: round(v, 4) for k, v in MARKS.items()}) + "\n")
    sys.stderr.flush()
