"""Delivery sends stored replies through a channel adapter: split, ordered, retried, recorded.

The adapter here is a recording implementation of the ``ChannelAdapter`` port (the platforms'
own adapters are tested against their fake servers in test_<platform>.py); the database, the
bus and delivery are the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from nanohost.bus import MessageBus
from nanohost.channels.base import (
    ChannelAdapter,
    ChannelSink,
    ChatTarget,
    PermanentError,
    TransientError,
)
from nanohost.db import make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.db.models import AgentSession, Message
from nanohost.delivery import Delivery
from nanohost.groups import create_group
from nanohost.settings import load_settings


class RecordingChannel(ChannelAdapter):
    """Records calls; ``failures`` is a list of errors to raise, one per call, before succeeding."""

    name = "telegram"
    text_limit = 100
    caption_limit = 50
    typing_interval = 0.05

    def __init__(self) -> None:
        self.calls: list[tuple[str, ChatTarget, str]] = []
        self.failures: list[Exception] = []
        self.changed = asyncio.Condition()

    async def start(self, sink: ChannelSink) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def _record(self, kind: str, target: ChatTarget, value: str) -> str:
        async with self.changed:
            self.calls.append((kind, target, value))
            self.changed.notify_all()
        if self.failures:
            raise self.failures.pop(0)
        return str(len(self.calls))

    async def send_text(self, target: ChatTarget, text: str) -> str | None:
        return await self._record("text", target, text)

    async def send_file(self, target: ChatTarget, path: Path, caption: str) -> str | None:
        return await self._record("file", target, f"{path.name}|{caption}")

    async def typing(self, target: ChatTarget) -> None:
        await self._record("typing", target, "")

    async def wait_for(self, check: Callable[[list[tuple[str, ChatTarget, str]]], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: check(self.calls)), 10)


@dataclass
class World:
    db: sessionmaker[Session]
    bus: MessageBus
    channel: RecordingChannel
    delivery: Delivery
    group_id: int
    session_id: int
    outbox: Path

    def add(self, direction: str, text: str, **fields: Any) -> int:
        with transaction(self.db) as db:
            row = Message(
                group_id=self.group_id,
                session_id=self.session_id,
                direction=direction,
                channel=fields.pop("channel", "telegram"),
                chat_id=fields.pop("chat_id", "-100"),
                sender="agent" if direction == "out" else "alice",
                text=text,
                status=fields.pop("status", "pending"),
                **fields,
            )
            db.add(row)
            db.flush()
            message_id = row.id
        self.bus.publish(self.group_id, {"type": "message", "id": message_id})
        return message_id

    def row(self, message_id: int) -> tuple[str, str | None]:
        with transaction(self.db) as db:
            row = db.get(Message, message_id)
            assert row is not None
            return row.status, row.error

    async def wait_status(self, message_id: int, status: str) -> None:
        """Wait for the row's status, re-reading it on each bus event (delivery announces each mark)."""
        queue = self.bus.subscribe(self.group_id)
        try:
            async with asyncio.timeout(10):
                while self.row(message_id)[0] != status:
                    await queue.get()
        finally:
            self.bus.unsubscribe(self.group_id, queue)


@pytest.fixture
async def world(host_env: Path) -> AsyncIterator[World]:
    settings = load_settings()
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    db = make_session_factory(engine)
    with transaction(db) as session:
        group = create_group(session, settings, "team")
        agent_session = AgentSession(group_id=group.id)
        session.add(agent_session)
        session.flush()
        ids = group.id, agent_session.id
    bus = MessageBus()
    channel = RecordingChannel()
    outbox = settings.data_dir / "outbox"
    (outbox / "1").mkdir(parents=True)
    delivery = Delivery(
        db, bus, {"telegram": channel}, outbox, backoff_base=0.01, backoff_max=0.05, max_attempts=3
    )
    await delivery.start()
    yield World(db, bus, channel, delivery, *ids, outbox=outbox)
    await delivery.close()
    engine.dispose()


def _texts(calls: list[tuple[str, ChatTarget, str]]) -> list[str]:
    return [value for kind, _, value in calls if kind == "text"]


async def test_a_long_reply_is_split_in_order_and_marked_delivered(world: World) -> None:
    text = " ".join(f"word{i}" for i in range(100))
    message_id = world.add("out", text)
    await world.channel.wait_for(lambda calls: " ".join(_texts(calls)) == text)
    assert all(len(piece) <= world.channel.text_limit for piece in _texts(world.channel.calls))
    assert len(_texts(world.channel.calls)) > 1
    await world.wait_status(message_id, "delivered")


async def test_replies_to_one_chat_keep_their_order(world: World) -> None:
    ids = [world.add("out", f"reply {i}") for i in range(5)]
    await world.channel.wait_for(lambda calls: len(_texts(calls)) == 5)
    assert _texts(world.channel.calls) == [f"reply {i}" for i in range(5)]
    await world.wait_status(ids[-1], "delivered")


async def test_a_file_goes_with_its_caption_or_after_its_text(world: World, tmp_path: Path) -> None:
    picture = world.outbox / "1" / "chart.png"
    picture.write_bytes(b"png")
    attachment = [{"path": str(picture), "name": picture.name}]
    world.add("out", "short caption", attachments=attachment)
    await world.channel.wait_for(lambda calls: len(calls) == 1)
    assert world.channel.calls[0][0] == "file" and world.channel.calls[0][2] == "chart.png|short caption"
    long_text = "a long explanation " * 5
    world.add("out", long_text, attachments=attachment)
    await world.channel.wait_for(lambda calls: len(calls) == 3)
    assert [kind for kind, _, _ in world.channel.calls[1:]] == ["text", "file"]
    assert world.channel.calls[2][2] == "chart.png|"


async def test_rate_limited_then_sent_once(world: World) -> None:
    world.channel.failures = [TransientError("429 Too Many Requests", retry_after=0.01)]
    message_id = world.add("out", "hello")
    await world.wait_status(message_id, "delivered")
    assert _texts(world.channel.calls) == ["hello", "hello"]  # one refused attempt, one delivery


async def test_a_permanent_error_is_recorded_once_and_not_retried(world: World) -> None:
    world.channel.failures = [PermanentError("telegram sendMessage: HTTP 403 bot was kicked")]
    message_id = world.add("out", "hello")
    await world.wait_status(message_id, "failed")
    assert _texts(world.channel.calls) == ["hello"]
    status, error = world.row(message_id)
    assert error is not None and "kicked" in error
    with transaction(world.db) as db:
        session = db.get(AgentSession, world.session_id)
        assert session is not None and session.last_error and "kicked" in session.last_error


async def test_transient_errors_give_up_after_the_attempt_limit(world: World) -> None:
    world.channel.failures = [TransientError("HTTP 502")] * 3
    message_id = world.add("out", "hello")
    await world.wait_status(message_id, "failed")
    assert len(_texts(world.channel.calls)) == 3
    assert "gave up after 3 attempts" in (world.row(message_id)[1] or "")


async def test_rows_left_pending_before_a_restart_are_sent(world: World) -> None:
    await world.delivery.close()
    with transaction(world.db) as db:
        db.add(
            Message(
                group_id=world.group_id,
                session_id=world.session_id,
                direction="out",
                channel="telegram",
                chat_id="-100",
                text="left over",
                status="pending",
            )
        )
    fresh = Delivery(world.db, world.bus, {"telegram": world.channel}, world.outbox)
    await fresh.start()
    try:
        await world.channel.wait_for(lambda calls: _texts(calls) == ["left over"])
    finally:
        await fresh.close()


async def test_other_channels_are_left_alone(world: World) -> None:
    world.add("out", "for the web", channel="web", chat_id="team", status="delivered")
    marker = world.add("out", "for telegram")
    await world.wait_status(marker, "delivered")
    assert _texts(world.channel.calls) == ["for telegram"]


async def test_typing_shows_while_a_message_waits_and_stops_when_answered(world: World) -> None:
    inbound = world.add("in", "question", status="queued", platform_message_id="-100:1")
    await world.channel.wait_for(lambda calls: sum(kind == "typing" for kind, _, _ in calls) >= 2)
    with transaction(world.db) as db:
        row = db.get(Message, inbound)
        assert row is not None
        row.status = "answered"
    reply = world.add("out", "answer")
    await world.wait_status(reply, "delivered")
    task = world.delivery._typing.get(("telegram", "-100", None))
    if task is not None:
        await asyncio.wait_for(task, 5)  # the loop ends once nothing waits
    assert ("telegram", "-100", None) not in world.delivery._typing  # and the chat is forgotten
    typed = sum(kind == "typing" for kind, _, _ in world.channel.calls)
    assert typed >= 2


async def test_pieces_and_captions_fit_by_the_platforms_own_measure(world: World, tmp_path: Path) -> None:
    world.channel.measure = lambda text: 2 * len(text)  # type: ignore[method-assign]
    text = " ".join(f"w{i:03d}" for i in range(60))  # 299 characters, 598 by this measure
    world.add("out", text)
    await world.channel.wait_for(lambda calls: " ".join(_texts(calls)) == text)
    assert all(2 * len(piece) <= world.channel.text_limit for piece in _texts(world.channel.calls))
    picture = world.outbox / "1" / "p.png"
    picture.write_bytes(b"png")
    world.add("out", "c" * 30, attachments=[{"path": str(picture), "name": "p.png"}])  # 60 > caption 50
    await world.channel.wait_for(lambda calls: calls[-1][0] == "file")
    assert world.channel.calls[-1][2] == "p.png|" and world.channel.calls[-2][2] == "c" * 30


async def test_only_the_hosts_kept_copies_are_sent(world: World, tmp_path: Path) -> None:
    elsewhere = tmp_path / "groups" / "team" / "old.txt"  # e.g. a row from before copies were kept
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    elsewhere.write_text("could be a link to a host file by now")
    message_id = world.add("out", "old", attachments=[{"path": str(elsewhere), "name": "old.txt"}])
    await world.wait_status(message_id, "failed")
    assert world.row(message_id)[1] == "the file old.txt is no longer there"
    assert not [call for call in world.channel.calls if call[0] == "file"]


async def test_a_sent_reply_whose_mark_fails_is_not_sent_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = world.delivery._mark
    refusals = [RuntimeError("database is locked")]

    def flaky_mark(message_id: int, status: str, error: str | None) -> None:
        if refusals:
            raise refusals.pop()
        mark(message_id, status, error)

    monkeypatch.setattr(world.delivery, "_mark", flaky_mark)
    first = world.add("out", "one")
    await world.channel.wait_for(lambda calls: _texts(calls) == ["one"])
    second = world.add("out", "two")  # the next pass marks "one" first, then sends "two"
    await world.wait_status(second, "delivered")
    assert world.row(first)[0] == "delivered"
    assert _texts(world.channel.calls) == ["one", "two"]
