"""Host side of the session queues: real SQLite files and a real unix-socket doorbell."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from nanohost.transport import Doorbell, SessionQueues


def runner_side(session_dir: Path) -> sqlite3.Connection:
    """What the container writes (schema from docs/TRANSPORT.md)."""
    db = sqlite3.connect(session_dir / "outbound.db", isolation_level=None)
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS outbound (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,
                                             payload TEXT NOT NULL,
                                             created_at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS acks (inbound_id INTEGER PRIMARY KEY, status TEXT NOT NULL, reason TEXT,
                                         at REAL NOT NULL);
        CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """
    )
    return db


def test_append_is_idempotent_and_unconsumed_follows_acks(tmp_path: Path) -> None:
    queues = SessionQueues(tmp_path)
    queues.append(7, "hello", "alice", ["inbox/a.txt"])
    queues.append(7, "hello again", "alice", [])  # a re-append after a crash must not double it
    queues.append(9, "second", None, [])
    rows = sqlite3.connect(tmp_path / "inbound.db").execute("SELECT id, payload FROM inbound").fetchall()
    assert [(i, json.loads(p)["text"]) for i, p in rows] == [(7, "hello"), (9, "second")]
    assert json.loads(rows[0][1]) == {"text": "hello", "sender": "alice", "attachments": ["inbox/a.txt"]}
    assert queues.unconsumed() == [7, 9]
    runner = runner_side(tmp_path)
    runner.execute("INSERT INTO acks VALUES (7, 'done', NULL, 0)")
    assert queues.unconsumed() == [9]
    assert {i: (a.status, a.reason) for i, a in queues.acks([7, 9]).items()} == {7: ("done", None)}
    queues.close()


def test_outbound_rows_after_a_cursor_and_malformed_payloads(tmp_path: Path) -> None:
    queues = SessionQueues(tmp_path)
    assert queues.outbound_after(0) == []  # before the runner ever started
    assert queues.continuation() is None
    runner = runner_side(tmp_path)
    runner.execute("INSERT INTO outbound VALUES (1, 'message', ?, 0)", (json.dumps({"text": "hi"}),))
    runner.execute("INSERT INTO outbound VALUES (2, 'message', 'not json', 0)")
    runner.execute("INSERT INTO outbound VALUES (3, 'status', ?, 0)", (json.dumps({"state": "idle"}),))
    runner.execute("INSERT INTO state VALUES ('continuation', 'thread-1')")
    rows = queues.outbound_after(0)
    assert [(r.id, r.kind) for r in rows] == [(1, "message"), (2, "invalid"), (3, "status")]
    assert rows[0].payload == {"text": "hi"}
    assert [r.id for r in queues.outbound_after(2)] == [3]
    assert queues.continuation() == "thread-1"
    queues.close()


async def test_doorbell_both_ways(tmp_path: Path) -> None:
    rung = asyncio.Event()
    hung_up = asyncio.Event()
    bell = Doorbell(tmp_path / "doorbell.sock", rung.set, hung_up.set)
    await bell.start()
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "doorbell.sock"))
    await asyncio.wait_for(bell.connected.wait(), 5)
    bell.ring()
    assert await asyncio.wait_for(reader.readline(), 5) == b"inbound\n"
    writer.write(b"outbound\n")
    await writer.drain()
    await asyncio.wait_for(rung.wait(), 5)
    writer.close()
    await asyncio.wait_for(hung_up.wait(), 5)
    assert not bell.connected.is_set()
    await bell.stop()
    assert not (tmp_path / "doorbell.sock").exists()
