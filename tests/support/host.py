"""Real Docker engine, the real agent image (built once per run), the real host app.

Fixtures here are made visible to every test folder by tests/conftest.py.

Tests here skip loudly, with the reason, only when no Docker engine can be reached or started.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from nanohost.app import ORCHESTRATOR, build_app
from nanohost.containers.backend import LABEL_INSTALLATION
from nanohost.db import make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.db.models import Message
from nanohost.groups import create_group
from nanohost.installation import installation_id as read_installation_id
from nanohost.settings import PROJECT_ROOT, Settings, load_settings

TEST_IMAGE_NAME = "nanohost-test-agent"
API_TOKEN = "integration-token"


def _engine_client() -> Any:
    import docker

    try:
        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception as first:
        if os.getuid() != 0:
            pytest.skip(f"NO DOCKER ENGINE reachable and not root to start one: {first}")
        result = subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts/start-dockerd.sh")], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"NO DOCKER ENGINE: could not start dockerd: {result.stderr.strip()}")
        client = docker.from_env(timeout=10)
        client.ping()
        return client


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = _engine_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def agent_image(docker_client: Any) -> str:
    """Build the agent image once per test run (the layer cache makes reruns quick)."""
    from docker.errors import ImageNotFound

    from nanohost.containers.image import build_image

    try:
        docker_client.images.get("debian:bookworm-slim")
    except ImageNotFound:
        result = subprocess.run(
            ["bash", str(PROJECT_ROOT / "scripts/bootstrap-base-image.sh")], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.fail(f"could not build the base image: {result.stdout}{result.stderr}")
    settings = Settings(image_name=TEST_IMAGE_NAME)
    tag = settings.image_tag  # the tag the test hosts run (make_settings)
    build_image(
        tag=tag, codex_version=settings.codex_version, ca_file=settings.image_ca_file, client=docker_client
    )
    return tag


@dataclass
class Host:
    client: TestClient[web.Request, web.Application]
    settings: Settings
    app: Any

    @property
    def orchestrator(self) -> Any:
        return self.app[ORCHESTRATOR]

    async def send(self, group: str, text: str, sender: str = "alice") -> int:
        response = await self.client.post(
            f"/api/groups/{group}/messages", json={"text": text, "sender": sender}, headers=AUTH
        )
        assert response.status == 201, await response.text()
        return int((await response.json())["id"])

    async def replies_after(self, group: str, after: int, wait: float = 60) -> list[dict[str, Any]]:
        """Long-poll until an outbound message newer than ``after`` arrives (or ``wait`` ends)."""
        cursor = after
        outs: list[dict[str, Any]] = []
        import time

        deadline = time.monotonic() + wait
        while not outs and (left := deadline - time.monotonic()) > 0:
            response = await self.client.get(
                f"/api/groups/{group}/messages?after={cursor}&wait={min(left, 60):.1f}", headers=AUTH
            )
            assert response.status == 200
            messages = (await response.json())["messages"]
            if messages:
                cursor = messages[-1]["id"]
            outs = [m for m in messages if m["direction"] == "out"]
        return outs


    def outbound_rows(self) -> list[Message]:
        """Every outbound message row, oldest first (detached from the database session)."""
        with transaction(self.orchestrator.ctx.db) as db:
            rows = list(db.scalars(select(Message).where(Message.direction == "out").order_by(Message.id)))
            db.expunge_all()
            return rows

    async def wait_outbound(self, check: Callable[[list[Message]], bool], timeout: float = 30.0) -> None:
        """Wait until ``check(outbound rows)`` holds, re-checking on every bus event (delivery
        publishes one per row it marks), bounded by ``timeout``."""
        bus = self.orchestrator.ctx.bus
        queue = bus.subscribe_all()
        try:
            async with asyncio.timeout(timeout):
                while not check(self.outbound_rows()):
                    await queue.get()
        finally:
            bus.unsubscribe_all(queue)


AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def make_settings(root: Path, **env: Any) -> Settings:
    values = {
        "data_dir": root / "data",
        "groups_dir": root / "groups",
        "image_name": TEST_IMAGE_NAME,
        "api_token": API_TOKEN,
        "sweep_interval": 0.5,
        **env,
    }
    return load_settings(**values)


def add_group(settings: Settings, name: str, provider: str = "mock", **config: Any) -> None:
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        group = create_group(db, settings, name, provider=provider)
        for key, value in config.items():
            setattr(group.config, key, value)
    engine.dispose()


def installation_id(settings: Settings) -> str:
    """The installation id of the host on ``settings``' data dir (its database made if missing)."""
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    try:
        with transaction(make_session_factory(engine)) as db:
            return read_installation_id(db)
    finally:
        engine.dispose()


def bind(settings: Settings, channel: str, chat_id: str, group: str, session_mode: str = "shared") -> None:
    """Bind a platform chat to a group, as `nanohost bind` does."""
    from nanohost.groups import bind_chat, get_group

    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        bind_chat(db, channel, chat_id, get_group(db, group), session_mode)
    engine.dispose()


def containers_of(
    docker_client: Any, settings: Settings, group: str | None = None, *, all: bool = False
) -> Any:
    """The agent containers of the installation on ``settings``' data dir (of one group, when
    given): a test looks at its own, never at another installation's on the same engine. (Its
    spare network namespaces, nanohost/containers/netns.py, carry no group label.)"""
    labels = [f"{LABEL_INSTALLATION}={installation_id(settings)}"]
    labels.append("nanohost.group" if group is None else f"nanohost.group={group}")
    return docker_client.containers.list(all=all, filters={"label": labels})


def remove_containers(docker_client: Any, installation: str) -> None:
    """Remove the containers of one installation, and only those: the engine may be shared with
    a serving host or with other test runs."""
    label = f"{LABEL_INSTALLATION}={installation}"
    for container in docker_client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)


@pytest.fixture
async def start_host(docker_client: Any, agent_image: str) -> AsyncIterator[Any]:
    """Start (and at the end stop) host apps; the containers of their installations (each test's
    data dir has its own id) are removed afterwards, never another installation's.

    ``start(settings, backend_factory=...)`` runs the host on another backend (a fault-injecting
    wrapper of the real one, say)."""
    clients: list[TestClient[web.Request, web.Application]] = []
    installations: set[str] = set()

    async def start(settings: Settings, backend_factory: Any = None) -> Host:
        installations.add(installation_id(settings))
        app = build_app(settings, backend_factory=backend_factory)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return Host(client, settings, app)

    yield start
    for client in clients:
        await client.close()
    for installation in installations:
        remove_containers(docker_client, installation)
