"""A chat platform's message routed one at a time (Router.receive), as Slack and Discord deliver
them: checked and recorded in one Core transaction that reads the chat's binding, group and
config afresh for every message, so an edit made meanwhile by the CLI applies to the next one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update
from typer.testing import CliRunner

from nanohost import router as router_module
from nanohost.app import ORCHESTRATOR, build_app
from nanohost.channels.api import ROUTER
from nanohost.channels.base import InboundMessage
from nanohost.cli import app as cli_app
from nanohost.db import AgentGroup, AgentSession, Message, make_engine, make_session_factory, migrate
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
        team = create_group(db, settings, "team", provider="mock")
        bind_chat(db, "telegram", "-100", team, "shared")
        bind_chat(db, "telegram", "-300", team, "per-chat")
        create_group(db, settings, "other", provider="mock")
    engine.dispose()
    return settings


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    fake = RecordingBackend()
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
        yield client


def elsewhere(settings: Settings, *statements: Any) -> None:
    """Run statements on a connection of their own, as another process would."""
    engine = make_engine(settings.db_url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(statement)
    engine.dispose()


def cli(*args: str) -> None:
    """Run the CLI (its own engine and connections on the same database, as its own process)."""
    result = CliRunner().invoke(cli_app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def recorded(settings: Settings) -> list[tuple[str, str, str]]:
    """(group, text, status) of every inbound message, in order."""
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        rows = db.execute(
            select(AgentGroup.name, Message.text, Message.status)
            .join(AgentGroup, AgentGroup.id == Message.group_id)
            .where(Message.direction == "in")
            .order_by(Message.id)
        )
        found = [(name, text, status) for name, text, status in rows]
    engine.dispose()
    return found


def chat(text: str, msg_id: str, chat_id: str = "-100", **fields: Any) -> InboundMessage:
    return InboundMessage(
        "telegram", chat_id, "alice", text, platform_message_id=f"{chat_id}:{msg_id}", **fields
    )


async def settled(client: Client) -> None:
    for runtime in client.app[ORCHESTRATOR].runtimes.values():
        async with asyncio.timeout(10):
            await runtime.settled()


async def test_binding_and_config_edits_from_the_cli_apply_to_the_next_message(
    client: Client, settings: Settings
) -> None:
    router = client.app[ROUTER]
    await router.receive(chat("one", "1"))
    cli("unbind", "telegram", "-100")
    await router.receive(chat("while unbound", "2"))
    cli("bind", "telegram", "-100", "other")
    cli("groups", "config", "other", "--allow-sender", "@bob")
    await router.receive(chat("alice is not on the list", "3", sender_handle="alice"))
    await router.receive(chat("bob is", "4", sender_handle="bob"))
    cli("groups", "config", "other", "--engage", "trigger", "--trigger", "@andy")
    await router.receive(chat("not addressed", "5", sender_handle="bob"))
    await router.receive(chat("@andy addressed", "6", sender_handle="bob"))
    await settled(client)
    assert recorded(settings) == [
        ("team", "one", "queued"),
        ("other", "bob is", "queued"),
        ("other", "@andy addressed", "queued"),
    ]


async def test_messages_one_at_a_time_keep_their_order_and_each_is_recorded_once(
    client: Client, settings: Settings
) -> None:
    router = client.app[ROUTER]
    for text, msg_id in [("a", "1"), ("b", "2"), ("a again", "1"), ("c", "3"), ("b again", "2")]:
        await router.receive(chat(text, msg_id))
    await settled(client)
    assert recorded(settings) == [("team", "a", "queued"), ("team", "b", "queued"), ("team", "c", "queued")]
    (runtime,) = client.app[ORCHESTRATOR].runtimes.values()
    assert runtime.queues.unconsumed() == [1, 2, 3]


async def test_a_platform_id_recorded_by_a_racing_writer_is_a_duplicate(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The route query saw the id as new, but another writer recorded it before the insert: the
    unique index refuses it, and the message goes the full path, which finds it recorded."""
    router = client.app[ROUTER]
    await router.receive(chat("first copy", "1"))
    let_in = router_module._let_in
    checks: list[bool] = []

    def first_check_misses_it(route: Any, seen: bool, message: InboundMessage) -> bool:
        checks.append(seen)
        return let_in(route, seen and len(checks) > 1, message)

    monkeypatch.setattr(router_module, "_let_in", first_check_misses_it)
    with caplog.at_level(logging.INFO, logger="nanohost.router"):
        await router.receive(chat("second copy", "1"))
    await settled(client)
    assert recorded(settings) == [("team", "first copy", "queued")]
    assert checks == [True, True]  # the run's check, missed; the full path's
    assert "telegram chat -100 message -100:1: already received; ignored" in caplog.text


async def test_a_failed_session_is_set_going_again_by_the_next_message(
    client: Client, settings: Settings
) -> None:
    router = client.app[ROUTER]
    await router.receive(chat("one", "1"))
    await settled(client)
    elsewhere(settings, update(AgentSession).values(status="failed", crash_count=3, failure_notified=True))
    await router.receive(chat("two", "2"))
    await settled(client)
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        (session,) = db.scalars(select(AgentSession))
        # revived (idle; the wake it then gets may have it running already), its crashes forgotten
        assert session.status != "failed"
        assert (session.crash_count, session.failure_notified) == (0, False)
    engine.dispose()
    assert recorded(settings) == [("team", "one", "queued"), ("team", "two", "queued")]


async def test_a_per_chat_chat_gets_its_own_session_with_its_first_message(
    client: Client, settings: Settings
) -> None:
    router = client.app[ROUTER]
    await router.receive(chat("shared", "1"))
    await router.receive(chat("mine", "1", chat_id="-300"))
    await router.receive(chat("mine too", "2", chat_id="-300"))
    await settled(client)
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        sessions = {s.chat_key: s for s in db.scalars(select(AgentSession))}
        assert set(sessions) == {None, "telegram:-300"}
        own = sessions["telegram:-300"]
        # made by a Core insert: the column defaults the ORM would give it are there
        assert (own.group_id, own.crash_count, own.gateway_egress) == (sessions[None].group_id, 0, [])
        assert own.created_at is not None
        query = select(Message.text, Message.session_id).where(Message.direction == "in")
        by_text = {text: session_id for text, session_id in db.execute(query)}
        assert by_text == {"shared": sessions[None].id, "mine": own.id, "mine too": own.id}
    engine.dispose()
