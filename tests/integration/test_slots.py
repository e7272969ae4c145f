"""A full container cap with real containers: idle containers make room for waiting wakes at
once, in arrival order, and a container in the middle of a turn is never stopped for another group.

The idle timeout is an hour, so without eviction the groups after the first would wait an hour:
the bounded waits below would fail instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nanohost.db import AgentGroup, AgentSession, make_engine, make_session_factory
from tests.integration.conftest import add_group, make_settings
from tests.support.host import containers_of

pytestmark = pytest.mark.docker

GROUPS = [f"fan{i}" for i in range(6)]


async def progress_from(queue: asyncio.Queue[dict[str, Any]], count: int, timeout: float = 60) -> set[int]:
    """Group ids of the first ``count`` groups whose agent reports progress (a turn under way)."""
    seen: set[int] = set()
    async with asyncio.timeout(timeout):
        while len(seen) < count:
            event = await queue.get()
            if event.get("type") == "progress":
                seen.add(int(event["group_id"]))
    return seen


def sessions_by_group(settings: Any) -> dict[str, AgentSession]:
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        rows = db.query(AgentSession, AgentGroup.name).join(AgentGroup)
        found = {name: session for session, name in rows}
    engine.dispose()
    return found


async def test_a_full_cap_stops_idle_containers_for_waiting_wakes_never_one_mid_turn(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path, max_containers="2", idle_timeout="3600", slot_quantum="3600")
    for group in ("slow1", "slow2", *GROUPS):
        add_group(settings, group)
    host = await start_host(settings)
    slots = host.orchestrator.ctx.slots
    events = host.orchestrator.ctx.bus.subscribe_all()

    # both slots held by containers in the middle of a turn ([slow] holds it open until a follow-up)
    await host.send("slow1", "[slow] job one")
    await host.send("slow2", "[slow] job two")
    await progress_from(events, 2)
    runtimes = {r.folder: r for r in host.orchestrator.runtimes.values()}
    slow2_container = runtimes["slow2"].container_id
    assert slow2_container is not None

    sent = {group: await host.send(group, f"hi {group}") for group in GROUPS}  # in this order
    await slots.rebalance()
    await slots.settled()
    health = await host.client.get("/healthz")
    assert health.status == 200  # merely queued is healthy
    queue = (await health.json())["wake_queue"]
    assert (queue["in_use"], queue["waiting"], queue["evicted_idle"]) == (2, 6, 0)  # busy: never stopped

    # slow1's turn ends: from then on its container is idle, and the queue moves through its slot
    await host.send("slow1", "and finish one")
    replies = await asyncio.gather(*(host.replies_after(g, sent[g], wait=120) for g in GROUPS))
    assert [[r["text"] for r in got] for got in replies] == [[f"echo: hi {g}"] for g in GROUPS]
    answered = [got[0]["id"] for got in replies]
    assert answered == sorted(answered)  # first come, first served

    # slow2 kept its container and its turn all along
    assert runtimes["slow2"].container_id == slow2_container
    assert docker_client.containers.get(slow2_container).status == "running"
    finish = await host.send("slow2", "and finish two")
    (reply,) = await host.replies_after("slow2", finish)
    assert reply["text"] == "echo: [slow] job two | and finish two"

    await slots.settled()
    health = await (await host.client.get("/healthz")).json()
    assert health["wake_queue"]["waiting"] == 0
    assert health["wake_queue"]["evicted_idle"] == 6  # slow1 and fan0..fan4, each once; fan5 keeps its slot
    rows = sessions_by_group(settings)
    for group in ("slow1", *GROUPS[:-1]):  # stopped cleanly: not a crash, exit code 0
        assert (rows[group].status, rows[group].crash_count, rows[group].last_error) == ("stopped", 0, None)
        (container,) = containers_of(docker_client, settings, group, all=True)
        assert container.attrs["State"]["ExitCode"] == 0
    host.orchestrator.ctx.bus.unsubscribe_all(events)
