"""Container backends for tests: one without an engine that records what it is asked, and a
wrapper that makes any backend's engine go away and come back.

``EngineAway`` is how the chaos tests take the engine away without stopping a Docker engine that
other tests share: while ``down``, ``ping`` says no and every other call raises the
``ConnectionError`` the docker SDK raises when its socket does not answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nanohost.containers.backend import ContainerBackend, ContainerSpec, ContainerState


@dataclass
class RecordingBackend:
    """Containers that 'run' without an engine: starts are recorded (``specs``), nothing answers."""

    listed: list[ContainerState] = field(default_factory=list)
    specs: list[ContainerSpec] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, spec: ContainerSpec) -> str:
        self.specs.append(spec)
        container_id = f"fake-{spec.name}"
        self.running.add(container_id)
        self.started.set()
        return container_id

    async def stop(self, container_id: str, grace: float = 10) -> None:
        self.stopped.append(container_id)
        self.running.discard(container_id)

    async def kill(self, container_id: str) -> None:
        await self.stop(container_id)

    async def inspect(self, container_id: str) -> ContainerState | None:
        return ContainerState(container_id, container_id, running=container_id in self.running)

    async def list_managed(self) -> list[ContainerState]:
        return list(self.listed)

    async def logs(self, container_id: str, tail: int = 50) -> str:
        return ""

    async def ping(self) -> bool:
        return True

    async def layer_bytes(self, container_id: str) -> int | None:
        return None

    async def tend(self) -> None:
        pass


class EngineAway:
    """``inner`` behind a switch: ``down = True`` and the engine is gone, ``False`` and it is back."""

    def __init__(self, inner: ContainerBackend, *, down: bool = True) -> None:
        self.inner = inner
        self.down = down
        self.pings = 0
        self.pinged = asyncio.Event()
        """Set at every ping (a test waits on it instead of sleeping)."""

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("Error while fetching server API version: no such file or directory")

    async def run(self, spec: ContainerSpec) -> str:
        self._check()
        return await self.inner.run(spec)

    async def stop(self, container_id: str, grace: float = 10) -> None:
        self._check()
        await self.inner.stop(container_id, grace)

    async def kill(self, container_id: str) -> None:
        self._check()
        await self.inner.kill(container_id)

    async def inspect(self, container_id: str) -> ContainerState | None:
        self._check()
        return await self.inner.inspect(container_id)

    async def list_managed(self) -> list[ContainerState]:
        self._check()
        return await self.inner.list_managed()

    async def logs(self, container_id: str, tail: int = 50) -> str:
        self._check()
        return await self.inner.logs(container_id, tail)

    async def ping(self) -> bool:
        self.pings += 1
        self.pinged.set()
        return not self.down and await self.inner.ping()

    async def layer_bytes(self, container_id: str) -> int | None:
        self._check()
        return await self.inner.layer_bytes(container_id)

    async def tend(self) -> None:
        self._check()
        await self.inner.tend()
