"""A full disk: a message is refused with 507 and a reason, stored whole or not at all, /healthz
says so, and the host recovers by itself once space is freed. Faults are injected here; a real
full file system (a small tmpfs) is in tests/chaos."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from nanohost import app as host_app
from nanohost.app import ORCHESTRATOR, build_app
from nanohost.channels.state import ChannelStore
from nanohost.channels.web_auth import CHANNEL, WebAuth
from nanohost.db import Message, make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.groups import bind_chat, create_group
from nanohost.router import Router
from nanohost.settings import Settings, load_settings
from nanohost.transport import SessionQueues
from tests.fakes.container_engine import RecordingBackend

AUTH = {"Authorization": "Bearer t"}
Client = TestClient[web.Request, web.Application]
PASSWORD = "correct horse battery"


def stored(settings: Settings) -> list[tuple[str, str]]:
    """Every inbound message row: (text, status)."""
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        rows = [(m.text, m.status) for m in db.scalars(select(Message).where(Message.direction == "in"))]
    engine.dispose()
    return rows


@pytest.fixture
def settings(host_env: Path) -> Settings:
    settings = load_settings(api_token="t", sweep_interval=3600)
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        group = create_group(db, settings, "team", provider="mock")
        bind_chat(db, "web", "team", group, "shared")
    WebAuth(ChannelStore(make_session_factory(engine), CHANNEL)).set_password(PASSWORD)
    engine.dispose()
    return settings


@pytest.fixture
async def fake() -> RecordingBackend:
    return RecordingBackend()


@pytest.fixture
async def client(settings: Settings, fake: RecordingBackend) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
        yield client


def disk_full_in_database(*args: Any) -> Any:
    raise OperationalError("INSERT INTO messages", {}, sqlite3.OperationalError("database or disk is full"))


async def post(client: Client, text: str) -> Any:
    return await client.post("/api/groups/team/messages", json={"text": text}, headers=AUTH)


async def test_a_full_database_answers_507_stores_nothing_and_recovers(
    client: Client, settings: Settings, fake: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def full(*args: Any) -> Any:
        calls.append(1)
        disk_full_in_database()

    monkeypatch.setattr(Router, "_insert", full)
    response = await post(client, "hello")
    assert response.status == 507
    assert "disk is full" in (await response.json())["error"]
    assert calls == [1]  # not retried: waiting frees no space
    assert stored(settings) == []
    monkeypatch.undo()  # space freed

    response = await post(client, "hello again")
    assert response.status == 201
    async with asyncio.timeout(10):
        await fake.started.wait()
    assert stored(settings) == [("hello again", "queued")]


@pytest.mark.parametrize(
    "error",
    [sqlite3.OperationalError("database or disk is full"), OSError(errno.ENOSPC, "No space left on device")],
)
async def test_a_full_disk_under_the_session_queue_answers_507_and_the_message_is_not_answered_later(
    client: Client,
    settings: Settings,
    fake: RecordingBackend,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    def full(*args: Any) -> None:
        raise error

    monkeypatch.setattr(SessionQueues, "append", full)
    monkeypatch.setattr(SessionQueues, "append_many", full)  # the router's group commit
    response = await post(client, "lost?")
    assert response.status == 507
    assert "disk is full" in (await response.json())["error"]
    assert stored(settings) == [("lost?", "refused")]  # taken back: never answered beside its resend
    monkeypatch.undo()

    response = await post(client, "lost? (again)")
    assert response.status == 201
    message_id = (await response.json())["id"]
    async with asyncio.timeout(10):
        await fake.started.wait()
    (runtime,) = client.app[ORCHESTRATOR].runtimes.values()
    assert runtime.queues.unconsumed() == [message_id]
    await client.app[ORCHESTRATOR].resume_waiting()  # as at a restart: the refused one stays out
    assert runtime.queues.unconsumed() == [message_id]


async def test_the_web_chat_send_answers_507_too(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await client.post("/web/login", json={"password": PASSWORD})).status == 200
    monkeypatch.setattr(Router, "_insert", disk_full_in_database)
    response = await client.post("/web/groups/team/messages", json={"text": "hi"})
    assert response.status == 507
    assert "disk is full" in (await response.json())["error"]
    assert stored(settings) == []


async def test_a_nearly_full_disk_refuses_before_writing_and_healthz_reports_it(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = {"bytes": 1000}
    monkeypatch.setattr(host_app, "free_bytes", lambda path: free["bytes"])
    response = await post(client, "hello")
    assert response.status == 507
    assert stored(settings) == []
    health = await client.get("/healthz")
    body = await health.json()
    assert health.status == 503 and body["disk_free_bytes"] == 1000
    assert body["disk"].startswith("full:")

    logged_out = await client.post("/web/groups/team/messages", json={"text": "hi"})
    assert logged_out.status == 401  # who is not logged in learns nothing about the disk
    assert (await client.post("/web/login", json={"password": PASSWORD})).status == 200
    sent = await client.post("/web/groups/team/messages", json={"text": "hi"}, headers={"X-Nanohost": "1"})
    assert sent.status == 507

    free["bytes"] = 50 * 1024**2  # below the 100 MiB default: low, still taking messages
    health = await client.get("/healthz")
    body = await health.json()
    assert health.status == 503 and body["disk"].startswith("low: 50.0 MiB free")
    assert (await post(client, "hello")).status == 201

    free["bytes"] = 10 * 1024**3
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["disk"] == "ok"


async def test_the_low_threshold_is_a_setting(host_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(disk_low_bytes=10 * 1024**2)
    monkeypatch.setattr(host_app, "free_bytes", lambda path: 50 * 1024**2)
    async with TestClient(TestServer(build_app(settings, backend_factory=RecordingBackend))) as client:
        health = await client.get("/healthz")
        assert health.status == 200 and (await health.json())["disk"] == "ok"


async def test_a_chat_message_that_cannot_be_queued_for_a_full_disk_is_taken_back(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat platform's message is routed without waiting for the queue write (group commit);
    a full disk found by that write still takes the message back, as the API path does."""
    from nanohost.channels.api import ROUTER
    from nanohost.channels.base import InboundMessage

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SessionQueues, "append_many", full)
    router = client.app[ROUTER]
    await router.receive(InboundMessage("web", "team", "alice", "lost?", platform_message_id="w1"))
    (runtime,) = client.app[ORCHESTRATOR].runtimes.values()
    async with asyncio.timeout(10):
        await runtime.settled()  # the group commit's write, still under way after receive
    assert stored(settings) == [("lost?", "refused")]
