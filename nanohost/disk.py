"""The data dir's disk: how much room is left, and whether an error means there is none.

A full disk must be told apart from a bug: a message that cannot be stored answers 507 with a
plain reason (never a bare 500), ``/healthz`` shows the free bytes and says ``low`` before it is
too late, and everything works again by itself once space is freed (nothing is latched).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

REFUSE_BELOW = 1024**2
"""Bytes free below which a new message is refused before anything is written: SQLite needs room
for its journal, and a message must be stored whole (database row and session queue) or not at all."""

DISK_FULL = (
    "the host's disk is full, so the message was not stored; send it again once the operator has freed space"
)

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL_TEXT = "database or disk is full"


def free_bytes(path: Path) -> int:
    """Bytes this process may still write on ``path``'s file system (root may use the reserve)."""
    stat = os.statvfs(path)
    blocks = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail
    return blocks * stat.f_frsize


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is ENOSPC / EDQUOT or SQLite's SQLITE_FULL."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
                return True
        if _SQLITE_FULL_TEXT in str(current):
            return True
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
        todo += [current.__cause__, current.__context__, orig if isinstance(orig, BaseException) else None]
    return False
