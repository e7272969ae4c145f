"""The runner's side of the session queues (docs/TRANSPORT.md).

The runner only reads ``inbound.db`` and is the writer of ``outbound.db``. A turn's outbound rows
and the acks of the inbound rows it answered go in one transaction: after a crash there is never
a reply without its ack, nor an ack without its reply.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_MS = 5000
OUTBOUND_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbound (
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS acks (
  inbound_id INTEGER PRIMARY KEY, status TEXT NOT NULL, reason TEXT, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class InboundRow:
    id: int
    kind: str
    payload: str


def connect(
    path: Path, *, journal: str = "DELETE", readonly: bool = False, threads: bool = False
) -> sqlite3.Connection:
    """A queue connection. ``outbound.db`` uses the PERSIST journal on both sides: its directory
    is read-only to the container (only the db and its journal file are bound writable), so
    SQLite must never create or delete the journal, only reuse it. ``readonly`` is how the
    runner opens the host's ``inbound.db``. ``threads``: used from more than one thread, one
    at a time (the host imports in a worker thread)."""
    if readonly:
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=not threads,
        )
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return connection
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=not threads
    )
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    connection.execute(f"PRAGMA journal_mode={journal}")
    return connection


class RunnerQueues:
    """Read inbound, write outbound. One connection each, opened once."""

    def __init__(self, session_dir: Path) -> None:
        self.dir = session_dir
        self._out = connect(session_dir / "outbound.db", journal="PERSIST")
        self._out.executescript(OUTBOUND_SCHEMA)
        self._in: sqlite3.Connection | None = None

    def close(self) -> None:
        self._out.close()
        if self._in is not None:
            self._in.close()

    def _inbound(self) -> sqlite3.Connection | None:
        if self._in is None:
            path = self.dir / "inbound.db"
            if not path.exists():
                return None
            self._in = connect(path, readonly=True)
        return self._in

    def unconsumed(self, exclude: Iterable[int] = (), limit: int = 100) -> list[InboundRow]:
        """Inbound rows without an ack, in id order (a system of queues never starves on a LIMIT)."""
        inbound = self._inbound()
        if inbound is None:
            return []
        try:
            rows = inbound.execute("SELECT id, kind, payload FROM inbound ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # the host has not created the table yet
            return []
        skip = set(exclude)
        acked = {r[0] for r in self._out.execute("SELECT inbound_id FROM acks").fetchall()}
        result = [InboundRow(int(i), str(k), str(p)) for i, k, p in rows if i not in acked and i not in skip]
        return result[:limit]

    def add(self, kind: str, payload: dict[str, Any]) -> int:
        cursor = self._out.execute(
            "INSERT INTO outbound (kind, payload, created_at) VALUES (?, ?, ?)",
            (kind, json.dumps(payload), time.time()),
        )
        return int(cursor.lastrowid or 0)

    def commit_turn(
        self, rows: list[tuple[str, dict[str, Any]]], acks: list[tuple[int, str, str | None]]
    ) -> None:
        """Write a turn's outbound rows and its acks atomically."""
        now = time.time()
        with self._out:
            self._out.execute("BEGIN IMMEDIATE")
            for kind, payload in rows:
                self._out.execute(
                    "INSERT INTO outbound (kind, payload, created_at) VALUES (?, ?, ?)",
                    (kind, json.dumps(payload), now),
                )
            for inbound_id, status, reason in acks:
                self._out.execute(
                    "INSERT OR REPLACE INTO acks (inbound_id, status, reason, at) VALUES (?, ?, ?, ?)",
                    (inbound_id, status, reason, now),
                )

    def get_state(self, key: str) -> str | None:
        row = self._out.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_state(self, key: str, value: str) -> None:
        self._out.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    def outbound(self) -> list[tuple[int, str, dict[str, Any]]]:
        """Everything written so far (for tests and tools)."""
        rows = self._out.execute("SELECT id, kind, payload FROM outbound ORDER BY id").fetchall()
        return [(int(i), str(k), json.loads(p)) for i, k, p in rows]
