"""The container engine goes away (at start, or while containers run) and comes back: the host
keeps serving, records and queues messages, and answers them once it is back; nothing is counted
as a crash, and nothing running is restarted or adopted twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nanohost.containers.backend import DockerBackend
from nanohost.db import AgentSession, make_engine, make_session_factory
from tests.chaos.conftest import more_pings
from tests.fakes.container_engine import EngineAway
from tests.support.host import add_group, containers_of, installation_id, make_settings

pytestmark = [pytest.mark.chaos, pytest.mark.docker]


def crashes(settings: Any) -> list[int]:
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        counts = [s.crash_count for s in db.query(AgentSession).order_by(AgentSession.id)]
    engine.dispose()
    return counts


async def test_messages_sent_while_the_engine_is_away_are_answered_when_it_is_back(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "patient")
    real = DockerBackend(installation=installation_id(settings), data_dir=settings.data_dir)
    away = EngineAway(real, down=True)
    host = await start_host(settings, backend_factory=lambda: away)

    health = await host.client.get("/healthz")
    assert health.status == 503
    assert (await health.json())["containers"] == "container engine not reachable"
    first = await host.send("patient", "are you there?")
    await more_pings(away, 3)
    assert containers_of(docker_client, settings, all=True) == []  # nothing started while away

    away.down = False
    replies = await host.replies_after("patient", first)
    assert [r["text"] for r in replies] == ["echo: are you there?"]
    assert crashes(settings) == [0]
    assert (await host.client.get("/healthz")).status == 200


async def test_the_engine_going_away_while_a_container_runs_disturbs_nothing(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "steady")
    real = DockerBackend(installation=installation_id(settings), data_dir=settings.data_dir)
    away = EngineAway(real, down=False)
    host = await start_host(settings, backend_factory=lambda: away)
    first = await host.send("steady", "one")
    assert [r["text"] for r in await host.replies_after("steady", first)] == ["echo: one"]
    (container,) = containers_of(docker_client, settings, "steady")

    away.down = True
    await more_pings(away, 2)
    assert not host.orchestrator.engine.reachable
    second = await host.send("steady", "two")  # the running container still answers (doorbell)
    assert [r["text"] for r in await host.replies_after("steady", second)] == ["echo: two"]

    away.down = False
    await more_pings(away, 2)
    assert host.orchestrator.engine.reachable
    third = await host.send("steady", "three")
    assert [r["text"] for r in await host.replies_after("steady", third)] == ["echo: three"]
    (still,) = containers_of(docker_client, settings, "steady")
    assert still.id == container.id  # neither restarted nor adopted a second time
    (runtime,) = host.orchestrator.runtimes.values()
    assert runtime.container_id == container.id
    assert host.orchestrator.ctx.slots.stats()["in_use"] == 1
    assert crashes(settings) == [0]
