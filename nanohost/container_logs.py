"""Every container's output is kept: ``<data dir>/logs/session-<id>.log``, rotated.

The engine keeps a container's output only until the container is removed (the next start of
that session removes it), so when a container stops or dies the host appends its output here,
under a line saying how it ended (exit code, reason). ``nanohost logs GROUP`` shows these, then
follows a running container live. Files rotate at ``MAX_BYTES``, ``KEEP`` old ones kept.
"""

from __future__ import annotations

import time
from pathlib import Path

MAX_BYTES = 1024 * 1024
KEEP = 3
ENDING = "=== container "


def log_path(data_dir: Path, session_id: int) -> Path:
    return data_dir / "logs" / f"session-{session_id}.log"


def keep(data_dir: Path, session_id: int, container_id: str, output: str, ending: str) -> None:
    """Append one container's output and how it ended (rotating first when the file is full)."""
    path = log_path(data_dir, session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > MAX_BYTES:
        for n in range(KEEP - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{n + 1}"))
        path.replace(path.with_name(f"{path.name}.1"))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    with path.open("a", encoding="utf-8") as handle:
        if output and not output.endswith("\n"):
            output += "\n"
        handle.write(output[-MAX_BYTES:])
        handle.write(f"{ENDING}{container_id[:12]} {ending} at {stamp} UTC ===\n")


def kept(data_dir: Path, session_id: int) -> str:
    """Everything kept for a session, oldest first."""
    path = log_path(data_dir, session_id)
    parts = [path.with_name(f"{path.name}.{n}") for n in range(KEEP, 0, -1)] + [path]
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in parts if p.exists())


def last_ending(text: str) -> str | None:
    """The last "how it ended" line in kept output, if any."""
    lines = [line for line in text.splitlines() if line.startswith(ENDING)]
    return lines[-1].strip("= ") if lines else None
