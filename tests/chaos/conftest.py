"""Chaos tests: faults injected into a real host (the container engine away, two installations on
one engine, a full disk). The engine is shared with other tests, so it is never stopped: a wrapper
takes it away (``tests/fakes/container_engine.EngineAway``)."""

from __future__ import annotations

import asyncio

from tests.fakes.container_engine import EngineAway


async def more_pings(away: EngineAway, count: int) -> None:
    """Wait (bounded) until the host has pinged the engine ``count`` more times."""
    target = away.pings + count
    async with asyncio.timeout(30):
        while away.pings < target:
            away.pinged.clear()
            await away.pinged.wait()
