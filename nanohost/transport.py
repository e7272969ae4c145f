"""Host side of a session's queues (docs/TRANSPORT.md).

The host is the only writer of ``inbound.db`` and only reads ``outbound.db`` (opened read-write
so it can roll back a hot journal a killed container left behind). Inbound row ids are the host's
message ids, so appending is idempotent: a message re-appended after a host crash is not doubled.
The doorbell is a unix socket in the session dir: the host listens, the runner connects, and each
side writes a line the moment it commits, so neither side waits on a poll.

Both files stay small however long the conversation: after each import the host records how far
it has imported (``mark_imported``, into ``inbound.db``'s ``host_state``, where the runner reads
it and prunes the outbound rows up to there) and prunes the inbound rows the runner has
acknowledged (``prune``); each side keeps the newest ``KEEP_ROWS`` rows for debugging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_runner.queues import (  # one definition of how both sides open the queues
    IMPORTED_KEY,
    KEEP_ROWS,
    connect,
    create_tables,
    give_back_free_pages,
)

from nanohost.boundary import (
    MAX_IMPORT_BYTES,
    MAX_IMPORT_ROWS,
    MAX_ROW_BYTES,
    Ack,
    BadRow,
    Row,
    parse_ack,
    parse_continuation,
    parse_row,
)

log = logging.getLogger(__name__)

INBOUND_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS host_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
PRUNE_GRACE = 10.0
"""An acknowledged inbound row is pruned only once its ack is this old: every import in between
has applied it to the host database, so the host never queues that message again."""
PRUNE_EVERY = 5.0
"""Seconds between two prunes of ``inbound.db`` (a prune is one short write transaction)."""
PRUNE_BATCH = 5000
"""Rows one prune deletes at most (a queue from before pruning shrinks over a few prunes)."""
BLOB_RECYCLE = 2000
"""Python's sqlite3 (3.11) keeps a weak reference to every blob handle a connection ever opened,
until the connection closes (~90 bytes each, measured): the outbound connection is reopened
after this many, or the host's memory would grow with every reply."""


@dataclass(frozen=True)
class OutboundRow:
    """One row of the container's queue, checked: its model, or why it was refused."""

    id: int
    row: Row | BadRow

    @property
    def kind(self) -> str:
        return "invalid" if isinstance(self.row, BadRow) else self.row.kind

    @property
    def payload(self) -> dict[str, Any]:
        """The fields the row carried (for logs and tests)."""
        if isinstance(self.row, BadRow):
            return {"error": self.row.reason}
        return self.row.model_dump(exclude={"kind"}, exclude_unset=True)


class QueueUnreadable(Exception):
    """The container's queue file cannot be read as a queue (corrupt, not SQLite, wrong shape):
    the session is quarantined. A busy or locked file is not this; it is retried."""


_TRANSIENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}


@contextlib.contextmanager
def _reading(session_dir: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF in _TRANSIENT:
            raise
        raise QueueUnreadable(f"outbound.db of session {session_dir.name} is unreadable: {exc}") from exc


class SessionQueues:
    """The two SQLite queues of one session directory, seen from the host.

    The directory is host-owned and read-only to the container (``session_dir``), so the paths
    opened here cannot be swapped for links; ``outbound.db``'s bytes are the agent's, so
    everything read from it is checked (``boundary``) and read as bytes, a bounded amount at a
    time. The outbound connection is used from the import worker thread and the event loop,
    one at a time (a lock each).
    """

    def __init__(self, session_dir: Path) -> None:
        self.dir = session_dir
        session_dir.mkdir(parents=True, exist_ok=True)
        self._inbound = connect(session_dir / "inbound.db", threads=True)
        create_tables(self._inbound, INBOUND_SCHEMA)
        self._in_lock = threading.Lock()
        self._imported: int | None = None
        self._pruned_at = 0.0
        self.prune_every = PRUNE_EVERY
        self._outbound: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._blobs = 0
        """Blob handles opened on the outbound connection since it was opened."""

    def close(self) -> None:
        with self._in_lock:
            self._inbound.close()
        with self._lock:
            if self._outbound is not None:
                self._outbound.close()
                self._outbound = None

    def append(self, message_id: int, text: str, sender: str | None, attachments: list[str]) -> None:
        """Queue a message for the agent (idempotent by message id)."""
        payload = json.dumps({"text": text, "sender": sender or "", "attachments": attachments})
        with self._in_lock:
            self._inbound.execute(
                "INSERT OR IGNORE INTO inbound (id, kind, payload, created_at) VALUES (?, 'message', ?, ?)",
                (message_id, payload, time.time()),
            )

    def append_many(self, items: list[tuple[int, str, str | None, list[str]]]) -> None:
        """Queue several messages in one transaction (nanohost.group_commit)."""
        rows = [
            (message_id, json.dumps({"text": text, "sender": sender or "", "attachments": attachments}))
            for message_id, text, sender, attachments in items
        ]
        now = time.time()
        with self._in_lock:
            self._inbound.execute("BEGIN IMMEDIATE")
            try:
                self._inbound.executemany(
                    "INSERT OR IGNORE INTO inbound (id, kind, payload, created_at)"
                    " VALUES (?, 'message', ?, ?)",
                    [(message_id, payload, now) for message_id, payload in rows],
                )
                self._inbound.execute("COMMIT")
            except BaseException:
                if self._inbound.in_transaction:
                    self._inbound.execute("ROLLBACK")
                raise

    def _out(self) -> sqlite3.Connection | None:
        if self._outbound is None:
            path = self.dir / "outbound.db"
            if not path.exists() or path.stat().st_size == 0:
                return None
            connection = connect(path, journal="PERSIST", threads=True)
            connection.text_factory = bytes  # invalid UTF-8 is a bad row, not an error on fetch
            connection.execute("PRAGMA trusted_schema=OFF")
            connection.execute("PRAGMA query_only=ON")
            self._outbound = connection
        return self._outbound

    @staticmethod
    def _has_table(connection: sqlite3.Connection, name: str) -> bool:
        row = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)
        ).fetchone()
        return row is not None

    def outbound_after(
        self, cursor: int, rows: int = MAX_IMPORT_ROWS, budget: int = MAX_IMPORT_BYTES
    ) -> list[OutboundRow]:
        """Outbound rows newer than ``cursor``, oldest first, at most ``rows`` of them and about
        ``budget`` payload bytes (always at least one row). A payload over ``MAX_ROW_BYTES`` is
        never loaded; any row that is not what the runner writes comes back as a ``BadRow``."""
        with self._lock, _reading(self.dir):
            connection = self._out()
            if connection is None or not self._has_table(connection, "outbound"):
                return []
            found = connection.execute(
                "SELECT id, typeof(kind), typeof(payload) FROM outbound WHERE id > ? ORDER BY id LIMIT ?",
                (cursor, rows),
            ).fetchall()
            result: list[OutboundRow] = []
            spent = 0
            for row_id, kind_type, payload_type in found:
                if not isinstance(row_id, int) or row_id <= cursor:
                    raise QueueUnreadable(f"outbound.db of session {self.dir.name} has a row id {row_id!r}")
                kind = self._column(connection, "kind", row_id, kind_type.decode(), 64)[1]
                size, payload = self._column(
                    connection, "payload", row_id, payload_type.decode(), MAX_ROW_BYTES
                )
                parsed: Row | BadRow = (
                    parse_row(kind, payload, size)
                    if payload_type in (b"text", b"blob")
                    else BadRow(f"payload is {payload_type.decode()}, not text")
                )
                if isinstance(parsed, BadRow):
                    log.error("session %s: outbound row %s refused: %s", self.dir.name, row_id, parsed.reason)
                result.append(OutboundRow(row_id, parsed))
                spent += len(payload or b"")
                if spent >= budget:
                    break
            self._blobs += 2 * len(result)
            if self._blobs >= BLOB_RECYCLE:  # see BLOB_RECYCLE
                connection.close()
                self._outbound, self._blobs = None, 0
            return result

    @staticmethod
    def _column(
        connection: sqlite3.Connection, column: str, row_id: int, kind: str, limit: int
    ) -> tuple[int, bytes | None]:
        """(size, bytes) of one text or blob cell, read through SQLite's blob handle so a value
        larger than ``limit`` is never loaded (bytes None then); other types are (0, None)."""
        if kind not in ("text", "blob"):
            return 0, None
        with connection.blobopen("outbound", column, row_id, readonly=True) as cell:
            size = len(cell)
            return size, (cell.read(limit + 1)[:limit] if column == "kind" or size <= limit else None)

    def acks(self, ids: list[int]) -> dict[int, Ack]:
        """The runner's acknowledgements for these inbound ids (only well-formed ones)."""
        with self._lock, _reading(self.dir):
            connection = self._out()
            if connection is None or not ids or not self._has_table(connection, "acks"):
                return {}
            found: dict[int, Ack] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT inbound_id, status, substr(reason, 1, 4000) FROM acks WHERE inbound_id IN ({marks})"  # noqa: E501
                for row in connection.execute(query, chunk):
                    ack = parse_ack(*row)
                    if ack is not None:
                        found[ack.inbound_id] = ack
            return found

    def unconsumed(self) -> list[int]:
        """Inbound ids the runner has not acknowledged yet."""
        with self._in_lock:
            ids = [int(r[0]) for r in self._inbound.execute("SELECT id FROM inbound ORDER BY id").fetchall()]
        if not ids:
            return []
        done = self.acks(ids)
        return [i for i in ids if i not in done]

    def continuation(self) -> str | None:
        """The provider thread id the runner stored, if any (and if it looks like one)."""
        with self._lock, _reading(self.dir):
            connection = self._out()
            if connection is None or not self._has_table(connection, "state"):
                return None
            row = connection.execute(
                "SELECT substr(value, 1, 256) FROM state WHERE key='continuation'"
            ).fetchone()
            return parse_continuation(row[0]) if row else None

    def mark_imported(self, cursor: int) -> None:
        """Record that outbound rows up to ``cursor`` are imported and committed on the host: the
        runner may prune them. Call it after the import's transaction has committed."""
        if cursor == self._imported:
            return
        try:
            with self._in_lock:
                self._inbound.execute(
                    "INSERT OR REPLACE INTO host_state (key, value) VALUES (?, ?)",
                    (IMPORTED_KEY, str(cursor)),
                )
        except sqlite3.OperationalError as exc:  # advisory: the runner prunes a little later
            log.info("session %s: could not record the import cursor: %s", self.dir.name, exc)
            return
        self._imported = cursor

    def prune(self, *, keep: int = KEEP_ROWS, grace: float = PRUNE_GRACE, force: bool = False) -> int:
        """Delete the inbound rows the runner acknowledged at least ``grace`` seconds ago, keeping
        the newest ``keep`` rows; the number deleted. Call it after an import has committed.
        At most once per ``prune_every`` seconds unless ``force``; rows never acknowledged stay,
        and a busy queue only postpones the prune to the next call."""
        now = time.monotonic()
        if not force and now - self._pruned_at < self.prune_every:
            return 0
        self._pruned_at = now
        try:
            with self._in_lock:  # the oldest rows beyond the kept tail, a bounded batch of them
                candidates = [
                    int(r[0])
                    for r in self._inbound.execute(
                        "SELECT id FROM inbound WHERE id <= "
                        "(SELECT id FROM inbound ORDER BY id DESC LIMIT 1 OFFSET ?) ORDER BY id LIMIT ?",
                        (keep, PRUNE_BATCH),
                    )
                ]
            if not candidates:
                return 0
            done = self._acked_before(candidates, time.time() - grace)
            if not done:
                return 0
            with self._in_lock, self._inbound:
                self._inbound.execute("BEGIN IMMEDIATE")
                deleted = 0
                for start in range(0, len(done), 500):
                    chunk = done[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    deleted += self._inbound.execute(
                        f"DELETE FROM inbound WHERE id IN ({marks})", chunk
                    ).rowcount
            with self._in_lock:
                give_back_free_pages(self._inbound)
            return deleted
        except (sqlite3.OperationalError, QueueUnreadable) as exc:
            log.info("session %s: pruning inbound.db postponed: %s", self.dir.name, exc)
            return 0

    def _acked_before(self, ids: list[int], before: float) -> list[int]:
        """Those of ``ids`` the runner acknowledged before the time ``before``."""
        with self._lock, _reading(self.dir):
            connection = self._out()
            if connection is None or not self._has_table(connection, "acks"):
                return []
            found: list[int] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT inbound_id FROM acks WHERE inbound_id IN ({marks}) AND at < ?"
                found.extend(
                    r[0] for r in connection.execute(query, [*chunk, before]) if isinstance(r[0], int)
                )
            return sorted(found)

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
        self._say(b"inbound\n")

    def interrupt(self) -> None:
        """Tell the runner to interrupt its turn (``/stop``): the turn ends, its messages are
        answered as stopped, the thread is kept."""
        self._say(b"interrupt\n")

    def _say(self, line: bytes) -> None:
        for writer in list(self._writers):
            try:
                writer.write(line)
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
