"""Group commit of inbound appends: one transaction for what arrives together; errors reach the
waiting sender, or the runtime's handler when nobody waits."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any, cast

import pytest

from nanohost.group_commit import GroupCommit, Item
from nanohost.transport import SessionQueues


class Queues:
    def __init__(self, error: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.error = error

    def append_many(self, items: list[Item]) -> None:
        if self.error is not None:
            raise self.error
        self.batches.append([item[0] for item in items])


def item(n: int) -> Item:
    return (n, f"text {n}", "alice", [])


async def test_what_arrives_together_is_one_transaction_then_marked_once() -> None:
    queues, marked = Queues(), []
    commit = GroupCommit(cast(Any, queues), marked.append, lambda ids, exc: None)
    for n in range(1, 31):
        await commit.add(item(n), wait=False)
    await commit.settled()
    assert queues.batches == [list(range(1, 31))]
    assert marked == queues.batches


async def test_a_waiting_sender_is_written_at_once() -> None:
    queues, marked = Queues(), []
    commit = GroupCommit(cast(Any, queues), marked.append, lambda ids, exc: None)
    await commit.add(item(5))
    assert queues.batches == [[5]] and marked == [[5]]


async def test_a_waiting_sender_gets_the_write_error() -> None:
    error = OSError(errno.ENOSPC, "No space left on device")
    commit = GroupCommit(cast(Any, Queues(error)), lambda ids: None, lambda ids, exc: None)
    with pytest.raises(OSError, match="No space"):
        await commit.add(item(1))


async def test_an_unwaited_failure_goes_to_the_handler() -> None:
    error = OSError(errno.ENOSPC, "No space left on device")
    failed: list[tuple[list[int], BaseException]] = []
    done = asyncio.Event()

    def handler(ids: list[int], exc: BaseException) -> None:
        failed.append((ids, exc))
        done.set()

    commit = GroupCommit(cast(Any, Queues(error)), lambda ids: None, handler)
    await commit.add(item(7), wait=False)
    async with asyncio.timeout(10):
        await done.wait()
    assert failed == [([7], error)]


def test_append_many_is_idempotent_by_message_id(tmp_path: Path) -> None:
    queues = SessionQueues(tmp_path)
    try:
        queues.append_many([item(1), item(2)])
        queues.append_many([item(2), item(3)])
        assert queues.unconsumed() == [1, 2, 3]
    finally:
        queues.close()


async def test_settled_returns_once_unwaited_rows_are_written() -> None:
    queues = Queues()
    commit = GroupCommit(cast(Any, queues), lambda ids: None, lambda ids, exc: None)
    for n in range(5):
        await commit.add(item(n), wait=False)
    assert queues.batches == []  # nothing written yet: the writer has not run
    await commit.settled()
    assert sorted(n for batch in queues.batches for n in batch) == [0, 1, 2, 3, 4]


async def test_routed_messages_are_queued_once_and_a_held_back_session_keeps_them_pending(
    host_env: Path,
) -> None:
    """The router records a message as queued in its own transaction; when the session is held
    back (slots.py, rule 3) the message goes back to pending and stays out of the queue."""
    from aiohttp.test_utils import TestClient, TestServer
    from sqlalchemy import select

    from nanohost.app import ORCHESTRATOR, build_app
    from nanohost.db import Message, make_engine, make_session_factory, migrate
    from nanohost.db.engine import transaction
    from nanohost.groups import create_group
    from nanohost.settings import load_settings
    from tests.fakes.container_engine import RecordingBackend

    settings = load_settings(api_token="t", sweep_interval=3600)
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        create_group(db, settings, "team", provider="mock")
    fake = RecordingBackend()
    auth = {"Authorization": "Bearer t"}

    def statuses() -> list[str]:
        with make_session_factory(engine)() as db:
            return [m.status for m in db.scalars(select(Message).where(Message.direction == "in"))]

    try:
        async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
            first = await client.post("/api/groups/team/messages", json={"text": "one"}, headers=auth)
            assert first.status == 201
            assert statuses() == ["queued"]
            (runtime,) = client.app[ORCHESTRATOR].runtimes.values()
            async with asyncio.timeout(10):
                await fake.started.wait()
            assert runtime.container_id is not None
            runtime._held_back = True  # its slot's quantum is over while other wakes wait
            second = await client.post("/api/groups/team/messages", json={"text": "two"}, headers=auth)
            assert second.status == 201
            assert statuses() == ["queued", "pending"]
            assert runtime.queues.unconsumed() == [(await first.json())["id"]]
    finally:
        engine.dispose()
