"""Both sides of the session queues stay cheap and small however long the conversation runs.

The runner finds new inbound rows by id (no payload of an old row is read again), and each side
prunes what the other is done with: the host the inbound rows the runner acknowledged, the
runner the outbound rows the host imported and the acks of rows the host pruned.
"""

from __future__ import annotations

import gc
import sqlite3
import time
import tracemalloc
from pathlib import Path

from agent_runner.queues import RunnerQueues

from nanohost.transport import SessionQueues


def answer_all(runner: RunnerQueues) -> list[int]:
    """What the runner does with every waiting row: one reply and one ack each."""
    rows = runner.unconsumed(limit=10_000)
    for row in rows:
        runner.commit_turn(
            [("message", {"text": f"re {row.id}", "in_reply_to": [row.id]})], [(row.id, "done", None)]
        )
    return [row.id for row in rows]


def test_idle_polls_read_no_payload_of_an_old_row(tmp_path: Path) -> None:
    host = SessionQueues(tmp_path)
    for i in range(1, 301):
        host.append(i, f"message {i} " + "x" * 200, "alice", [])
    runner = RunnerQueues(tmp_path)
    assert answer_all(runner) == list(range(1, 301))
    assert runner._in is not None
    statements: list[str] = []
    runner._in.set_trace_callback(statements.append)
    for _ in range(20):  # what the fallback poll and the doorbell do while the group is idle
        assert runner.unconsumed() == []
        assert runner.unconsumed(look_back=True) == []
    payload_reads = [s for s in statements if "payload" in s]
    assert payload_reads and all("WHERE id > " in s for s in payload_reads), payload_reads
    host.append(301, "new", "alice", [])
    assert [r.id for r in runner.unconsumed()] == [301]
    runner.close()
    host.close()


def test_a_row_queued_below_the_cursor_is_still_taken(tmp_path: Path) -> None:
    host = SessionQueues(tmp_path)
    for i in (1, 2, 10):
        host.append(i, f"m{i}", "alice", [])
    runner = RunnerQueues(tmp_path)
    assert answer_all(runner) == [1, 2, 10]
    host.append(5, "late", "alice", [])  # recorded earlier, queued later (a re-queue after a failure)
    assert [r.id for r in runner.unconsumed(look_back=True)] == [5]
    host.append(7, "later", "alice", [])  # found by the periodic look back too, without a ring
    runner._looked_back = time.monotonic() - 3600
    assert [r.id for r in runner.unconsumed()] == [5, 7]
    runner.close()
    host.close()


def test_a_new_runner_reads_the_backlog_once_and_skips_what_was_answered(tmp_path: Path) -> None:
    host = SessionQueues(tmp_path)
    for i in range(1, 6):
        host.append(i, f"m{i}", "alice", [])
    first = RunnerQueues(tmp_path)
    first.unconsumed()
    first.commit_turn([], [(1, "done", None), (2, "done", None), (4, "failed", "x")])
    first.close()
    second = RunnerQueues(tmp_path)
    assert [r.id for r in second.unconsumed()] == [3, 5]
    assert [r.id for r in second.unconsumed(exclude=[3])] == [5]
    second.close()
    host.close()


def test_the_host_prunes_acknowledged_rows_after_the_grace_keeping_a_tail(tmp_path: Path) -> None:
    host = SessionQueues(tmp_path)
    for i in range(1, 251):
        host.append(i, f"m{i}", "alice", [])
    runner = RunnerQueues(tmp_path)
    runner.unconsumed()
    runner.commit_turn([], [(i, "done", None) for i in range(1, 201)])
    assert host.prune(keep=100, grace=3600, force=True) == 0  # acks too fresh to prune
    assert host.prune(keep=100, grace=0, force=True) == 150
    left = [int(r[0]) for r in host._inbound.execute("SELECT id FROM inbound ORDER BY id")]
    assert left == list(range(151, 251))  # the newest 100, answered or not
    assert host.unconsumed() == list(range(201, 251))  # unanswered rows are never pruned
    assert host.prune(grace=0) == 0  # at most once per prune_every
    runner.close()
    host.close()


def test_the_runner_prunes_imported_rows_and_the_acks_of_pruned_rows(tmp_path: Path) -> None:
    host = SessionQueues(tmp_path)
    for i in range(1, 301):
        host.append(i, f"m{i}", "alice", [])
    runner = RunnerQueues(tmp_path)
    answer_all(runner)
    assert runner.prune() == (0, 0)  # nothing imported yet, and every inbound row is still there
    host.mark_imported(250)
    assert runner.prune() == (200, 0)  # imported, but the newest 100 are kept
    assert [r[0] for r in runner.outbound()] == list(range(201, 301))
    host.prune(keep=100, grace=0, force=True)
    assert runner.prune() == (0, 200)  # acks of the rows the host pruned
    acks = [int(r[0]) for r in runner._out.execute("SELECT inbound_id FROM acks ORDER BY inbound_id")]
    assert acks == list(range(201, 301))
    assert host.acks(list(range(201, 301))).keys() == set(range(201, 301))
    runner.close()
    host.close()


def test_queue_files_stay_under_a_mebibyte_however_many_messages(tmp_path: Path) -> None:
    host = SessionQueues(tmp_path)
    host.prune_every = 0.0
    runner = RunnerQueues(tmp_path, prune_every=0.0)
    for connection in (host._inbound, runner._out):
        connection.execute("PRAGMA synchronous=OFF")  # speed only: sizes do not depend on it
    cursor = 0
    for i in range(1, 6001):  # 2.5 MiB of payloads each way; bench/soak.py runs 20,000 in a container
        host.append(i, f"message number {i}: " + "words " * 60, "alice", [])
        (row,) = runner.unconsumed()
        runner.commit_turn(
            [("message", {"text": f"echo: {row.payload}", "in_reply_to": [row.id]})], [(row.id, "done", None)]
        )
        imported = host.outbound_after(cursor)
        cursor = imported[-1].id
        host.mark_imported(cursor)
        host.prune(grace=0)
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir() if p.suffix in (".db", ".db-journal")}
    assert sizes and all(size < 1024 * 1024 for size in sizes.values()), sizes
    inbound_rows = host._inbound.execute("SELECT count(*) FROM inbound").fetchone()[0]
    outbound_rows = runner._out.execute("SELECT count(*) FROM outbound").fetchone()[0]
    assert inbound_rows <= 101 and outbound_rows <= 101
    runner.close()
    host.close()


def test_new_queue_files_can_shrink_again(tmp_path: Path) -> None:
    host = SessionQueues(tmp_path)
    runner = RunnerQueues(tmp_path)
    for connection in (host._inbound, runner._out):
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        connection.execute("PRAGMA synchronous=OFF")
    for i in range(1, 1501):
        host.append(i, "y" * 4000, "alice", [])
    answer_all(runner)
    grown = (tmp_path / "inbound.db").stat().st_size
    host.prune(keep=100, grace=0, force=True)
    assert (tmp_path / "inbound.db").stat().st_size < grown / 4
    runner.close()
    host.close()


def test_an_older_host_without_host_state_leaves_outbound_rows_alone(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "inbound.db")
    old.executescript(
        "CREATE TABLE inbound (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload TEXT NOT NULL, "
        "created_at REAL NOT NULL); INSERT INTO inbound VALUES (1, 'message', '{\"text\": \"hi\"}', 0);"
    )
    old.close()
    runner = RunnerQueues(tmp_path, keep=0)
    assert answer_all(runner) == [1]
    assert runner.host_state("outbound_imported") is None
    assert runner.prune() == (0, 0)
    assert len(runner.outbound()) == 1
    runner.close()


def test_reading_outbound_rows_does_not_grow_the_hosts_memory(tmp_path: Path) -> None:
    host = SessionQueues(tmp_path)
    runner = RunnerQueues(tmp_path)
    runner.add("progress", {"text": "working"})
    for _ in range(100):
        assert len(host.outbound_after(0)) == 1
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(6000):  # 12,000 blob handles: the host reads every cell through one
            host.outbound_after(0)
        gc.collect()
        grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"{grown} bytes kept"
    runner.close()
    host.close()
