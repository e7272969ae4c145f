"""The host without a container engine, and the sweeper dropping runtimes with nothing to do.

The engine is taken away with a fake (``EngineAway``); tests/chaos has the same with the real
engine behind the switch, answered by a real agent container.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from nanohost.app import ORCHESTRATOR, build_app
from nanohost.containers.backend import ContainerState
from nanohost.db import AgentGroup, AgentSession, Message, make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.groups import create_group
from nanohost.settings import Settings, load_settings
from tests.fakes.container_engine import EngineAway, RecordingBackend

AUTH = {"Authorization": "Bearer t"}


def with_groups(settings: Settings, *names: str) -> None:
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        for name in names:
            create_group(db, settings, name, provider="mock")
    engine.dispose()


async def more_pings(away: EngineAway, count: int) -> None:
    """Wait (bounded) until the host has pinged the engine ``count`` more times."""
    target = away.pings + count
    async with asyncio.timeout(10):
        while away.pings < target:
            away.pinged.clear()
            await away.pinged.wait()


def session_row(settings: Settings, session_id: int) -> AgentSession:
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        session = db.get(AgentSession, session_id)
        assert session is not None
        db.expunge(session)
    engine.dispose()
    return session


def message_status(settings: Settings, message_id: int) -> str:
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        message = db.get(Message, message_id)
        assert message is not None
        status = message.status
    engine.dispose()
    return status


async def test_the_host_serves_while_the_engine_is_away_and_wakes_the_session_when_it_is_back(
    host_env: Path,
) -> None:
    settings = load_settings(api_token="t", sweep_interval=0.05)
    with_groups(settings, "team")
    inner = RecordingBackend()
    away = EngineAway(inner, down=True)
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: away))) as client:
        health = await client.get("/healthz")
        body = await health.json()
        assert health.status == 503
        assert (body["ok"], body["database"], body["containers"]) == (
            False,
            "ok",
            "container engine not reachable",
        )
        response = await client.post("/api/groups/team/messages", json={"text": "hello"}, headers=AUTH)
        assert response.status == 201, await response.text()
        message_id = (await response.json())["id"]
        await more_pings(away, 3)  # several sweeps while away: nothing is started, nothing is a crash
        orchestrator = client.app[ORCHESTRATOR]
        (runtime,) = orchestrator.runtimes.values()
        assert inner.specs == [] and runtime.waking
        session = session_row(settings, runtime.session_id)
        assert (session.crash_count, session.status) == (0, "idle")
        assert message_status(settings, message_id) == "queued"

        away.down = False
        async with asyncio.timeout(10):
            await inner.started.wait()
        (spec,) = inner.specs
        assert spec.labels["nanohost.group"] == "team"
        assert runtime.container_id == f"fake-{spec.name}"
        assert session_row(settings, runtime.session_id).crash_count == 0
        health = await client.get("/healthz")
        assert health.status == 200 and (await health.json())["containers"] == "ok"


async def test_the_engine_going_away_later_makes_starts_wait_instead_of_failing(host_env: Path) -> None:
    settings = load_settings(api_token="t", sweep_interval=0.05)
    with_groups(settings, "team")
    inner = RecordingBackend()
    away = EngineAway(inner, down=False)
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: away))) as client:
        orchestrator = client.app[ORCHESTRATOR]
        away.down = True  # gone between two sweeps: the first start fails, then waits
        response = await client.post("/api/groups/team/messages", json={"text": "hello"}, headers=AUTH)
        assert response.status == 201
        await more_pings(away, 3)
        (runtime,) = orchestrator.runtimes.values()
        assert not orchestrator.engine.reachable and runtime.waking and inner.specs == []
        assert session_row(settings, runtime.session_id).crash_count == 0
        away.down = False
        async with asyncio.timeout(10):
            await inner.started.wait()
        assert orchestrator.engine.reachable and len(inner.specs) == 1


async def test_a_failed_start_removes_the_gateway_socket_and_releases_the_data_dir(host_env: Path) -> None:
    settings = load_settings(api_token="t")

    class Broken(RecordingBackend):
        async def list_managed(self) -> list[ContainerState]:
            raise RuntimeError("the engine answered nonsense")

    app = build_app(settings, backend_factory=Broken)
    server = TestServer(app)
    try:
        await server.start_server()
    except RuntimeError as exc:
        assert "nonsense" in str(exc)
    else:
        raise AssertionError("the host started with an adoption that failed")
    finally:
        await server.close()
    gateway_dir = settings.data_dir / "gateway"
    assert sorted(p.name for p in gateway_dir.iterdir() if p.is_socket()) == []
    again = TestServer(build_app(settings, backend_factory=RecordingBackend))  # the lock was released
    await again.start_server()
    await again.close()


async def test_the_sweeper_drops_runtimes_with_nothing_to_do(host_env: Path) -> None:
    settings = load_settings(api_token="t", idle_timeout=60, sweep_interval=3600)
    with_groups(settings, "busy", "idle", "waiting", "recent")
    fake = RecordingBackend()
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:
        orchestrator = client.app[ORCHESTRATOR]
        response = await client.post("/api/groups/busy/messages", json={"text": "work"}, headers=AUTH)
        assert response.status == 201
        async with asyncio.timeout(10):
            await fake.started.wait()
        ids: dict[str, int] = {}
        with transaction(orchestrator.ctx.db) as db:
            groups = {group.name: group for group in db.scalars(select(AgentGroup))}
            for name, group in groups.items():
                ids[name] = orchestrator.session_for(group, None, db)
            waiting = Message(
                group_id=groups["waiting"].id,
                session_id=ids["waiting"],
                direction="in",
                channel="api",
                chat_id="waiting",
                text="not yet queued",
                status="pending",
            )
            db.add(waiting)
        for name in ("idle", "waiting", "recent"):
            await orchestrator.runtime(ids[name])
        runtimes = {name: orchestrator.runtimes[ids[name]] for name in ids}
        for name, runtime in runtimes.items():
            if name != "recent":
                runtime.last_activity = time.monotonic() - 3600
        idle_socket = runtimes["idle"].dir / "doorbell.sock"
        assert idle_socket.exists()

        await orchestrator.sweep()

        assert ids["idle"] not in orchestrator.runtimes  # no container, nothing waiting, idle: dropped
        assert not idle_socket.exists()  # and closed (its doorbell gone)
        for kept in ("busy", "waiting", "recent"):  # a container; a message waiting; active lately
            assert orchestrator.runtimes[ids[kept]] is runtimes[kept], kept

        # a message for the dropped one makes a new runtime, which starts its container
        fake.started.clear()
        response = await client.post("/api/groups/idle/messages", json={"text": "back"}, headers=AUTH)
        assert response.status == 201
        async with asyncio.timeout(10):
            await fake.started.wait()
        assert orchestrator.runtimes[ids["idle"]] is not runtimes["idle"]
        assert orchestrator.runtimes[ids["idle"]].container_id is not None
