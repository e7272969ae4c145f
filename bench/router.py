"""Router throughput: inbound chat messages a second routed into session queues, no container.

``Router.receive`` does everything a chat platform's message goes through (binding, allow-list,
engage mode, de-duplication, record, queue into the session's inbound.db, doorbell, wake) on a
container backend that starts nothing (tests/fakes/container_engine.RecordingBackend), so the
figure is the host's own. Messages go to 10 bound chats (10 groups), one after another as one
channel's receive loop sends them, 50 at a time as several channels at once would, and in
batches of 100 through ``Router.receive_many`` as Telegram's poll hands them over. Every message
must end up recorded as queued.

A plain message's ``receive`` never yields to the event loop, so one after another the session
queues' group commits (inbound.db, in a worker thread) wait until the loop is free. A further
figure (no target) routes one at a time yielding between messages, as a platform's requests
arrive, and counts until every message is in its session's queue: that includes the inbound.db
commits (one per session per batch, each with its fsyncs).

Run: python -m bench router [--burst 5000]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Result, add_groups, check, host, settings_for
from nanohost.channels.api import ROUTER
from nanohost.channels.base import InboundMessage
from nanohost.db import make_engine, make_session_factory
from nanohost.db.engine import transaction
from nanohost.groups import bind_chat, get_group
from nanohost.settings import Settings

TARGET = 2000.0
CHATS = 10
CONCURRENCY = 50
BATCH = 100


def bind_all(settings: Settings, groups: list[str]) -> None:
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        for i, group in enumerate(groups):
            bind_chat(db, "telegram", str(-1000 - i), get_group(db, group), "shared")
    engine.dispose()


def count_queued(settings: Settings) -> int:
    """Inbound messages recorded and queued (none may be lost on the way)."""
    from sqlalchemy import func, select

    from nanohost.db.models import Message

    engine = make_engine(settings.db_url)
    try:
        with make_session_factory(engine)() as db:
            query = select(func.count()).where(Message.direction == "in", Message.status == "queued")
            return int(db.scalar(query) or 0)
    finally:
        engine.dispose()


def message(i: int, tag: str) -> InboundMessage:
    chat = str(-1000 - i % CHATS)
    return InboundMessage("telegram", chat, "alice", f"{tag} {i}", platform_message_id=f"{chat}:{tag}{i}")


async def settled(router: Any) -> None:
    for runtime in router.orchestrator.runtimes.values():
        await runtime.settled()


async def rates(settings: Settings, burst: int) -> tuple[float, float, float, float]:
    from tests.fakes.container_engine import RecordingBackend

    async with host(settings, backend_factory=RecordingBackend) as (_base, app):
        router = app[ROUTER]
        for i in range(CHATS):  # the first message of each chat creates its session and runtime
            await router.receive(message(i, "warm"))
        started = time.perf_counter()
        for i in range(burst):
            await router.receive(message(i, "seq"))
        sequential = burst / (time.perf_counter() - started)
        await settled(router)  # its queue writes are not the next figure's
        pending = [message(i, "par") for i in range(burst)]
        started = time.perf_counter()

        async def lane(lane_no: int) -> None:
            for item in pending[lane_no::CONCURRENCY]:
                await router.receive(item)

        await asyncio.gather(*(lane(n) for n in range(CONCURRENCY)))
        concurrent = burst / (time.perf_counter() - started)
        await settled(router)
        batches = [message(i, "batch") for i in range(burst)]
        started = time.perf_counter()
        for first in range(0, burst, BATCH):  # as a platform's poll hands them over
            await router.receive_many(batches[first : first + BATCH])
        batched = burst / (time.perf_counter() - started)
        await settled(router)
        started = time.perf_counter()
        for i in range(burst):
            await router.receive(message(i, "yield"))
            await asyncio.sleep(0)  # as between two requests of a platform
        await settled(router)
        queued = burst / (time.perf_counter() - started)
        recorded = await asyncio.to_thread(count_queued, settings)
    expected = CHATS + 4 * burst
    if recorded != expected:
        raise AssertionError(f"{recorded} messages recorded as queued, {expected} routed")
    return sequential, concurrent, batched, queued


async def run(opts: Any) -> Result:
    burst = int(getattr(opts, "burst", 5000))
    result = Result("router")
    with tempfile.TemporaryDirectory(prefix="nanohost-bench-") as tmp:
        settings = settings_for(Path(tmp))
        groups = [f"chat{i}" for i in range(CHATS)]
        add_groups(settings, groups, "mock")
        bind_all(settings, groups)
        sequential, concurrent, batched, queued = await rates(settings, burst)
    result.figures = {
        "burst": burst,
        "sequential_per_s": sequential,
        "concurrent_per_s": concurrent,
        "batched_per_s": batched,
        "batch": BATCH,
        "queued_yielding_per_s": queued,
    }
    result.row(
        f"Router.receive, one after another ({burst} messages, {CHATS} chats)",
        f"{sequential:,.0f} msg/s",
        f"≥ {TARGET:,.0f}/s",
        check(-sequential, -TARGET),
    )
    result.row(
        f"Router.receive, {CONCURRENCY} at a time",
        f"{concurrent:,.0f} msg/s",
        f"≥ {TARGET:,.0f}/s",
        check(-concurrent, -TARGET),
    )
    result.row(
        f"Router.receive_many, batches of {BATCH} (a Telegram poll's worth)",
        f"{batched:,.0f} msg/s",
        f"≥ {TARGET:,.0f}/s",
        check(-batched, -TARGET),
    )
    result.row(
        "Router.receive one at a time, yielding between messages: until all are in their queues",
        f"{queued:,.0f} msg/s",
    )
    return result
