"""A platform's batch of messages routed at once (Router.receive_many): the rules of ``receive``
for every message, in order; plain ones recorded in one transaction, the rest one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from nanohost.app import ORCHESTRATOR, build_app
from nanohost.channels.api import ROUTER
from nanohost.channels.base import InboundMessage
from nanohost.db import Message, make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.groups import bind_chat, create_group
from nanohost.settings import Settings, load_settings
from tests.fakes.container_engine import RecordingBackend

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def settings(host_env: Path) -> Settings:
    settings = load_settings(api_token="t", sweep_interval=3600)
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        bind_chat(db, "telegram", "-100", create_group(db, settings, "team", provider="mock"), "shared")
        bind_chat(db, "telegram", "-200", create_group(db, settings, "other", provider="mock"), "shared")
    engine.dispose()
    return settings


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    fake = RecordingBackend()
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
        yield client


def inbound(settings: Settings) -> list[tuple[str, str, str]]:
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        rows = [
            (m.chat_id, m.text, m.status)
            for m in db.scalars(select(Message).where(Message.direction == "in").order_by(Message.id))
        ]
    engine.dispose()
    return rows


def chat(chat_id: str, text: str, msg_id: str) -> InboundMessage:
    return InboundMessage("telegram", chat_id, "alice", text, platform_message_id=f"{chat_id}:{msg_id}")


async def test_a_batch_is_routed_in_order_by_the_same_rules(client: Client, settings: Settings) -> None:
    router = client.app[ROUTER]
    await router.receive(chat("-100", "seen before", "1"))
    await router.receive_many(
        [
            chat("-100", "first", "2"),
            chat("-200", "to the other group", "3"),
            chat("-100", "seen before, sent again", "1"),  # a platform id recorded earlier
            chat("-999", "an unbound chat", "4"),
            chat("-100", "   ", "5"),  # not plain: goes through receive, which ignores it
            chat("-100", "second", "6"),
            chat("-100", "second, sent twice in one batch", "6"),
            chat("-100", "third", "7"),
        ]
    )
    for runtime in client.app[ORCHESTRATOR].runtimes.values():
        async with asyncio.timeout(10):
            await runtime.settled()
    assert inbound(settings) == [
        ("-100", "seen before", "queued"),
        ("-100", "first", "queued"),
        ("-200", "to the other group", "queued"),
        ("-100", "second", "queued"),
        ("-100", "third", "queued"),
    ]
    queued = {r.folder: r.queues.unconsumed() for r in client.app[ORCHESTRATOR].runtimes.values()}
    ids = {text: i for i, (_, text, _) in enumerate(inbound(settings), start=1)}
    assert queued == {
        "team": [ids["seen before"], ids["first"], ids["second"], ids["third"]],
        "other": [ids["to the other group"]],
    }


async def test_a_message_with_files_in_a_batch_goes_through_the_full_path(
    client: Client, settings: Settings
) -> None:
    from nanohost.channels.base import IncomingFile

    async def fetch(limit: int) -> bytes:
        return b"numbers"

    with_file = chat("-100", "see attached", "2")
    with_file.files.append(IncomingFile("report.txt", 7, fetch))
    batch = [chat("-100", "before", "1"), with_file, chat("-100", "after", "3")]
    await client.app[ROUTER].receive_many(batch)
    assert [text for _, text, _ in inbound(settings)] == ["before", "see attached", "after"]
    assert (settings.groups_dir / "team" / "inbox" / "report.txt").read_bytes() == b"numbers"
