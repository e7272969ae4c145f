"""Host side of a session's queues (docs/TRANSPORT.md).

The host is the only writer of ``inbound.db`` and only reads ``outbound.db`` (opened read-write
so it can roll back a hot journal a killed container left behind). Inbound row ids are the host's
message ids, so appending is idempotent: a message re-appended after a host crash is not doubled.
The doorbell is a unix socket in the session dir: the host listens, the runner connects, and each
side writes a line the moment it commits, so neither side waits on a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_runner.queues import connect  # one definition of how both sides open the queues

log = logging.getLogger(__name__)

INBOUND_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class OutboundRow:
    id: int
    kind: str
    payload: dict[str, Any]


class SessionQueues:
    """The two SQLite queues of one session directory, seen from the host."""

    def __init__(self, session_dir: Path) -> None:
        self.dir = session_dir
        session_dir.mkdir(parents=True, exist_ok=True)
        self._inbound = connect(session_dir / "inbound.db")
        self._inbound.executescript(INBOUND_SCHEMA)
        self._outbound: sqlite3.Connection | None = None

    def close(self) -> None:
        self._inbound.close()
        if self._outbound is not None:
            self._outbound.close()

    def append(self, message_id: int, text: str, sender: str | None, attachments: list[str]) -> None:
        """Queue a message for the agent (idempotent by message id)."""
        payload = json.dumps({"text": text, "sender": sender or "", "attachments": attachments})
        self._inbound.execute(
            "INSERT OR IGNORE INTO inbound (id, kind, payload, created_at) VALUES (?, 'message', ?, ?)",
            (message_id, payload, time.time()),
        )

    def _out(self) -> sqlite3.Connection | None:
        if self._outbound is None:
            path = self.dir / "outbound.db"
            if not path.exists():
                return None
            self._outbound = connect(path)
        return self._outbound

    def _has_table(self, connection: sqlite3.Connection, name: str) -> bool:
        row = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)
        ).fetchone()
        return row is not None

    def outbound_after(self, cursor: int, limit: int = 500) -> list[OutboundRow]:
        """Outbound rows newer than ``cursor``, oldest first. A malformed payload becomes an error row."""
        connection = self._out()
        if connection is None or not self._has_table(connection, "outbound"):
            return []
        rows = connection.execute(
            "SELECT id, kind, payload FROM outbound WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
        ).fetchall()
        result = []
        for row_id, kind, payload in rows:
            try:
                data = json.loads(payload)
                if not isinstance(data, dict):
                    raise ValueError("payload is not an object")
            except ValueError as exc:
                log.error(
                    "session %s: outbound row %s is malformed (%s); skipped", self.dir.name, row_id, exc
                )
                kind, data = "invalid", {"error": str(exc)}
            result.append(OutboundRow(int(row_id), str(kind), data))
        return result

    def acks(self, ids: list[int]) -> dict[int, tuple[str, str | None]]:
        """The runner's acknowledgements for these inbound ids: id → (status, reason)."""
        connection = self._out()
        if connection is None or not ids or not self._has_table(connection, "acks"):
            return {}
        marks = ",".join("?" * len(ids))
        rows = connection.execute(
            f"SELECT inbound_id, status, reason FROM acks WHERE inbound_id IN ({marks})", ids
        ).fetchall()
        return {int(i): (str(s), r) for i, s, r in rows}

    def unconsumed(self) -> list[int]:
        """Inbound ids the runner has not acknowledged yet."""
        ids = [int(r[0]) for r in self._inbound.execute("SELECT id FROM inbound ORDER BY id").fetchall()]
        if not ids:
            return []
        done = self.acks(ids)
        return [i for i in ids if i not in done]

    def continuation(self) -> str | None:
        """The provider thread id the runner stored, if any."""
        connection = self._out()
        if connection is None or not self._has_table(connection, "state"):
            return None
        row = connection.execute("SELECT value FROM state WHERE key='continuation'").fetchone()
        return str(row[0]) if row else None

    def heartbeat_age(self) -> float | None:
        """Seconds since the runner last touched its heartbeat, or None if it never has."""
        try:
            return max(0.0, time.time() - (self.dir / "heartbeat").stat().st_mtime)
        except FileNotFoundError:
            return None


class Doorbell:
    """The host end of the session's doorbell socket.

    ``ring()`` tells a connected runner "new inbound rows"; ``on_ring`` is called when the runner
    says "new outbound rows", and ``on_hangup`` when its connection drops (often: it died).
    """

    def __init__(
        self, path: Path, on_ring: Callable[[], None], on_hangup: Callable[[], None] | None = None
    ) -> None:
        self.path = path
        self._on_ring = on_ring
        self._on_hangup = on_hangup
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o666)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    def ring(self) -> None:
        for writer in list(self._writers):
            try:
                writer.write(b"inbound\n")
            except (ConnectionError, RuntimeError):
                self._writers.discard(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connected.set()
        try:
            while line := await reader.readline():
                if line.strip() == b"outbound":
                    self._on_ring()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            if not self._writers:  # short-lived ringers (the MCP tool server) come and go
                self.connected.clear()
                if self._on_hangup is not None:
                    self._on_hangup()
