"""The runner's side of the session queues (docs/TRANSPORT.md).

The runner only reads ``inbound.db`` and is the writer of ``outbound.db``. A turn's outbound rows
and the acks of the inbound rows it answered go in one transaction: after a crash there is never
a reply without its ack, nor an ack without its reply.

Reading stays cheap however long the history: at start the runner reads the ids of the inbound
rows and the payloads of the unacknowledged ones, once; after that it asks only for rows past
the highest id it has seen (an index lookup), and keeps the rows it has read but not yet
answered in memory. A row that arrives out of id order (the host queues an older message late)
is found by comparing ids only, never payloads: when a doorbell ring finds nothing past the
cursor, and every ``LOOK_BACK_EVERY`` seconds.

State stays bounded: the runner prunes the outbound rows the host has imported (the host writes
its import cursor into ``inbound.db``'s ``host_state``) and the acks of inbound rows the host has
pruned, keeping the newest ``KEEP_ROWS`` of each for debugging. New queue files use SQLite's
incremental auto-vacuum, so a file that once grew can shrink again; otherwise freed pages are
reused and the file stops growing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
OUTBOUND_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbound (
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS acks (
  inbound_id INTEGER PRIMARY KEY, status TEXT NOT NULL, reason TEXT, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
KEEP_ROWS = 100
"""Rows of each queue table kept after they are done with, for debugging."""
PRUNE_EVERY = 5.0
"""Seconds between two prunes of the runner's tables (each is one short transaction)."""
LOOK_BACK_EVERY = 30.0
"""Seconds between two looks for inbound rows that arrived below the cursor."""
READ_BATCH = 500
PRUNE_BATCH = 5000
"""Ids one prune spans at most, so each prune stays one short transaction."""
VACUUM_FREE_PAGES = 256
"""Free pages (of a file with incremental auto-vacuum) that make a prune give them back."""
IMPORTED_KEY = "outbound_imported"
"""``host_state`` key: the id of the last outbound row the host has imported and committed."""


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


def create_tables(connection: sqlite3.Connection, schema: str) -> None:
    """Create a queue's tables; a brand-new file gets incremental auto-vacuum first (it can only
    be chosen before the first table exists)."""
    if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
    connection.executescript(schema)


def give_back_free_pages(connection: sqlite3.Connection) -> None:
    """After a prune: hand a large free list back to the file system (incremental auto-vacuum
    files only; other files reuse their free pages and simply stop growing)."""
    if connection.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return
    if connection.execute("PRAGMA freelist_count").fetchone()[0] >= VACUUM_FREE_PAGES:
        # executescript: it steps the pragma to the end (execute() would free a single page)
        connection.executescript("PRAGMA incremental_vacuum;")


def _chunks(ids: list[int], size: int = READ_BATCH) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class RunnerQueues:
    """Read inbound, write outbound. One connection each, opened once."""

    def __init__(self, session_dir: Path, *, keep: int = KEEP_ROWS, prune_every: float = PRUNE_EVERY) -> None:
        self.dir = session_dir
        self.keep = keep
        self.prune_every = prune_every
        self._out = connect(session_dir / "outbound.db", journal="PERSIST")
        create_tables(self._out, OUTBOUND_SCHEMA)
        self._in: sqlite3.Connection | None = None
        self._cursor: int | None = None
        """The highest inbound id read; None until the backlog has been read (once)."""
        self._waiting: dict[int, InboundRow] = {}
        """Rows read and not acknowledged yet: the work left, in memory."""
        self._known: set[int] = set()
        """Inbound ids at or below the cursor that are accounted for (read, or acked before)."""
        self._looked_back = time.monotonic()
        self._pruned_at = 0.0

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

    # --- reading ----------------------------------------------------------------------------

    def unconsumed(
        self, exclude: Iterable[int] = (), limit: int = 100, *, look_back: bool = False
    ) -> list[InboundRow]:
        """Inbound rows without an ack, in id order, except ``exclude`` (a system of queues never
        starves on a LIMIT: the limit applies after the selection). ``look_back``: the host rang,
        so if nothing is new past the cursor, look for a row queued out of order."""
        self._refresh(look_back)
        skip = set(exclude)
        return [self._waiting[i] for i in sorted(self._waiting) if i not in skip][:limit]

    def _refresh(self, look_back: bool) -> None:
        inbound = self._inbound()
        if inbound is None:
            return
        try:
            if self._cursor is None:
                self._read_backlog(inbound)
                return
            found = self._read_new(inbound)
            now = time.monotonic()
            if (look_back and not found) or now - self._looked_back >= LOOK_BACK_EVERY:
                self._looked_back = now
                self._read_stragglers(inbound)
        except sqlite3.OperationalError as exc:  # the host has not created the table yet, or is busy
            log.debug("inbound queue not readable yet: %s", exc)

    def _acked(self, ids: list[int]) -> set[int]:
        done: set[int] = set()
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT inbound_id FROM acks WHERE inbound_id IN ({marks})"
            done.update(int(r[0]) for r in self._out.execute(query, chunk))
        return done

    def _load(self, inbound: sqlite3.Connection, ids: list[int]) -> None:
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, kind, payload FROM inbound WHERE id IN ({marks})"
            for i, kind, payload in inbound.execute(query, chunk):
                self._waiting[int(i)] = InboundRow(int(i), str(kind), str(payload))

    def _read_backlog(self, inbound: sqlite3.Connection) -> None:
        """At start, once: every id, and the payloads of the rows not acknowledged yet."""
        ids = [int(r[0]) for r in inbound.execute("SELECT id FROM inbound ORDER BY id")]
        acked = self._acked(ids)
        self._load(inbound, [i for i in ids if i not in acked])
        self._known = set(ids)
        self._cursor = ids[-1] if ids else 0

    def _read_new(self, inbound: sqlite3.Connection) -> bool:
        """Rows past the cursor (an index lookup: nothing else is read)."""
        assert self._cursor is not None
        rows = inbound.execute(
            "SELECT id, kind, payload FROM inbound WHERE id > ? ORDER BY id LIMIT ?",
            (self._cursor, READ_BATCH),
        ).fetchall()
        if not rows:
            return False
        acked = self._acked([int(r[0]) for r in rows])  # answered by an earlier runner (a re-queue)
        for i, kind, payload in rows:
            if int(i) not in acked:
                self._waiting[int(i)] = InboundRow(int(i), str(kind), str(payload))
            self._known.add(int(i))
        self._cursor = int(rows[-1][0])
        return True

    def _read_stragglers(self, inbound: sqlite3.Connection) -> None:
        """Rows below the cursor this runner has not seen (ids only; the host keeps few rows)."""
        assert self._cursor is not None
        present = {
            int(r[0]) for r in inbound.execute("SELECT id FROM inbound WHERE id <= ?", (self._cursor,))
        }
        new = sorted(present - self._known)
        self._known = present  # ids the host pruned are forgotten
        if not new:
            return
        acked = self._acked(new)
        fresh = [i for i in new if i not in acked]
        if fresh:
            log.warning("inbound rows %s were queued below the cursor; taking them now", fresh)
            self._load(inbound, fresh)

    def host_state(self, key: str) -> str | None:
        """A value the host wrote into ``inbound.db``'s ``host_state`` (None if it has none)."""
        inbound = self._inbound()
        if inbound is None:
            return None
        try:
            row = inbound.execute("SELECT value FROM host_state WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a host from before host_state
            return None
        return str(row[0]) if row else None

    # --- writing ----------------------------------------------------------------------------

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
        for inbound_id, _, _ in acks:
            self._waiting.pop(inbound_id, None)
        if acks and time.monotonic() - self._pruned_at >= self.prune_every:
            self.prune()

    def prune(self) -> tuple[int, int]:
        """Delete the outbound rows the host has imported and the acks of inbound rows the host
        has pruned, keeping the newest ``keep`` of each; (rows, acks) deleted. One short
        transaction; a prune that fails (the host holds a lock) is simply tried next time."""
        self._pruned_at = time.monotonic()
        imported = self.host_state(IMPORTED_KEY)
        try:
            imported_id = int(imported) if imported is not None else None
        except ValueError:
            imported_id = None
        lowest: int | None = None
        inbound = self._inbound()
        if inbound is not None:
            try:
                row = inbound.execute("SELECT min(id) FROM inbound").fetchone()
                lowest = int(row[0]) if row and row[0] is not None else None
            except sqlite3.OperationalError:
                return 0, 0
        if lowest is None and self._cursor is not None:  # the host pruned every row it had
            lowest = self._cursor + 1
        try:
            with self._out:
                self._out.execute("BEGIN IMMEDIATE")
                rows = acks = 0
                if imported_id is not None:
                    kth = self._out.execute(
                        "SELECT id FROM outbound ORDER BY id DESC LIMIT 1 OFFSET ?", (self.keep,)
                    ).fetchone()
                    first = self._out.execute("SELECT min(id) FROM outbound").fetchone()[0]
                    if kth is not None:
                        bound = min(int(kth[0]), imported_id, int(first) + PRUNE_BATCH)
                        rows = self._out.execute("DELETE FROM outbound WHERE id <= ?", (bound,)).rowcount
                if lowest is not None:
                    kth = self._out.execute(
                        "SELECT inbound_id FROM acks ORDER BY inbound_id DESC LIMIT 1 OFFSET ?", (self.keep,)
                    ).fetchone()
                    first = self._out.execute("SELECT min(inbound_id) FROM acks").fetchone()[0]
                    if kth is not None:
                        bound = min(int(kth[0]), lowest - 1, int(first) + PRUNE_BATCH)
                        acks = self._out.execute("DELETE FROM acks WHERE inbound_id <= ?", (bound,)).rowcount
            if rows or acks:
                give_back_free_pages(self._out)
        except sqlite3.OperationalError as exc:
            log.info("pruning outbound.db skipped: %s", exc)
            return 0, 0
        return rows, acks

    def get_state(self, key: str) -> str | None:
        row = self._out.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_state(self, key: str, value: str) -> None:
        self._out.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    def outbound(self) -> list[tuple[int, str, dict[str, Any]]]:
        """Everything written so far (for tests and tools)."""
        rows = self._out.execute("SELECT id, kind, payload FROM outbound ORDER BY id").fetchall()
        return [(int(i), str(k), json.loads(p)) for i, k, p in rows]
