"""Fixtures for the web chat: a host app on a fake container backend, with a known password."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nanohost.app import build_app
from nanohost.channels.state import ChannelStore
from nanohost.channels.web_auth import CHANNEL, WebAuth
from nanohost.containers.backend import ContainerSpec, ContainerState
from nanohost.db import make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.groups import bind_chat, create_group
from nanohost.settings import Settings, load_settings

PASSWORD = "correct horse battery"


class FakeBackend:
    """Containers that 'run' without an engine: messages are recorded and queued, never answered."""

    async def run(self, spec: ContainerSpec) -> str:
        return f"fake-{spec.name}"

    async def stop(self, container_id: str, grace: float = 10) -> None:
        return None

    async def kill(self, container_id: str) -> None:
        return None

    async def inspect(self, container_id: str) -> ContainerState | None:
        return ContainerState(container_id, container_id, running=True)

    async def list_managed(self) -> list[ContainerState]:
        return []

    async def logs(self, container_id: str, tail: int = 50) -> str:
        return ""

    async def ping(self) -> bool:
        return True

    async def layer_bytes(self, container_id: str) -> int | None:
        return None

    async def tend(self) -> None:
        pass


@contextmanager
def web_auth(settings: Settings) -> Iterator[WebAuth]:
    """The web chat's password store, as the CLI and the host use it."""
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    try:
        yield WebAuth(ChannelStore(make_session_factory(engine), CHANNEL))
    finally:
        engine.dispose()


def set_web_password(settings: Settings, password: str) -> None:
    with web_auth(settings) as auth:
        auth.set_password(password)


@pytest.fixture
def web_settings(host_env: Path) -> Settings:
    """Groups `team` (bound on the web) and `other` (no web binding), with the password set."""
    settings = load_settings(max_attachment_bytes=4096)
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        team = create_group(db, settings, "team", provider="mock")
        create_group(db, settings, "other", provider="mock")
        bind_chat(db, "web", "team", team, "shared")
    engine.dispose()
    set_web_password(settings, PASSWORD)
    return settings


StartClient = Callable[[Settings], Any]


@pytest.fixture
async def start_client() -> AsyncIterator[StartClient]:
    """Start host apps on the fake backend; each is closed at the end of the test."""
    clients: list[TestClient] = []

    async def start(settings: Settings) -> TestClient:
        client = TestClient(TestServer(build_app(settings, backend_factory=FakeBackend)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def client(web_settings: Settings, start_client: StartClient) -> TestClient:
    return await start_client(web_settings)  # type: ignore[no-any-return]
