"""The steps of a container's wake, read back from its log for ``bench`` cold_start.

The runner logs one line after a wake's first reply (agent_runner/phases.py):
``nanohost-phases {"process": t, "runner": t, ...}`` (wall-clock seconds). The container wrote it,
so it is hostile input: only the last such line of a bounded log tail is read, the line is
bounded, and only short lower-case names with finite times near ``now`` are kept.
"""

from __future__ import annotations

import json
import math
import re
import time

PREFIX = "nanohost-phases "
MAX_LINE = 4096
MAX_MARKS = 32
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
HOST_MARKS = ("wake", "composed", "started")
"""What the host records itself (SessionRuntime.boot_marks): the start of the wake, the moment the
container spec was ready (group config, AGENTS.md, mounts), and the engine's create + start done."""


def parse_phases(log_text: str, *, now: float | None = None, window: float = 86_400.0) -> dict[str, float]:
    """The marks of the last phases line in ``log_text``, validated; {} when there is none."""
    now = time.time() if now is None else now
    for line in reversed(log_text.splitlines()):
        start = line.find(PREFIX)
        if start < 0:
            continue
        body = line[start + len(PREFIX) :]
        if len(body) > MAX_LINE:
            return {}
        try:
            raw = json.loads(body)
        except ValueError:
            return {}
        if not isinstance(raw, dict):
            return {}
        marks: dict[str, float] = {}
        for name, value in list(raw.items())[:MAX_MARKS]:
            if not (isinstance(name, str) and _NAME.match(name)):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value) and abs(value - now) <= window:
                marks[name] = float(value)
        return marks
    return {}
