"""A runner loop in-process, wired to the real host side of the transport (queues + doorbell)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_runner.config import Paths
from agent_runner.doorbell import RunnerDoorbell
from agent_runner.main import Runner
from agent_runner.mock import MockProvider
from agent_runner.provider import Provider
from agent_runner.queues import RunnerQueues

from nanohost.transport import Doorbell, SessionQueues


@dataclass
class Harness:
    paths: Paths
    host: SessionQueues
    bell: Doorbell
    outbound_rung: asyncio.Event
    runner_queues: RunnerQueues
    next_id: int = 1

    def send(self, text: str, *, raw: str | None = None, kind: str = "message") -> int:
        message_id = self.next_id
        self.next_id += 1
        if raw is not None or kind != "message":
            self.host._inbound.execute(
                "INSERT INTO inbound (id, kind, payload, created_at) VALUES (?, ?, ?, 0)",
                (message_id, kind, raw if raw is not None else json.dumps({"text": text})),
            )
        else:
            self.host.append(message_id, text, "alice", [])
        self.bell.ring()
        return message_id

    def replies(self) -> list[dict[str, object]]:
        return [row.payload for row in self.host.outbound_after(0) if row.kind == "message"]

    async def until(self, predicate: object, limit: float = 5.0) -> None:
        """Wait (on the outbound doorbell, not on sleeps) until predicate() is true."""
        assert callable(predicate)
        async with asyncio.timeout(limit):
            while not predicate():
                self.outbound_rung.clear()
                if predicate():
                    return
                await self.outbound_rung.wait()


def make_paths(tmp_path: Path) -> Paths:
    paths = Paths(
        session=tmp_path / "session", workspace=tmp_path / "workspace", codex_home=tmp_path / "codex"
    )
    for path in (paths.session, paths.workspace, paths.codex_home):
        path.mkdir(parents=True, exist_ok=True)
    return paths


@pytest.fixture
def provider() -> Provider:
    return MockProvider()


@pytest.fixture
def runner_options() -> dict[str, Any]:
    """Keyword arguments for the Runner (a test module overrides this fixture to change them)."""
    return {}


@pytest.fixture
async def harness(
    tmp_path: Path, provider: Provider, runner_options: dict[str, Any]
) -> AsyncIterator[Harness]:
    paths = make_paths(tmp_path)
    host = SessionQueues(paths.session)
    rung = asyncio.Event()
    bell = Doorbell(paths.session / "doorbell.sock", rung.set)
    await bell.start()
    queues = RunnerQueues(paths.session)
    runner_bell = RunnerDoorbell(paths.session / "doorbell.sock")
    runner_bell.start()
    await asyncio.wait_for(bell.connected.wait(), 5)
    stopping = asyncio.Event()
    await provider.start()
    runner = Runner(paths, provider, queues, runner_bell, **runner_options)
    task = asyncio.get_running_loop().create_task(runner.run(stopping))
    yield Harness(paths, host, bell, rung, queues)
    stopping.set()
    await asyncio.wait_for(task, 10)
    await provider.close()
    await runner_bell.stop()
    await bell.stop()
    queues.close()
    host.close()
