"""The runner's end of the session doorbell: one connection to the host's socket.

``inbound`` lines from the host set ``rung``; ``ring()`` tells the host "new outbound rows". If
the host restarts, the runner reconnects with backoff; meanwhile a slow poll in the loop keeps
nothing waiting for long. ``away_for()`` says how long the host has not been connected (the
runner stops itself when its host stays away longer than it would have let it idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


class RunnerDoorbell:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rung = asyncio.Event()
        self.interrupt = asyncio.Event()
        """The host asked to interrupt the turn under way (a user's ``/stop``)."""
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._away_since: float | None = time.monotonic()
        """When the connection to the host was lost (or the runner started); None while connected."""

    def away_for(self) -> float:
        """Seconds the host has not been connected; 0 while it is."""
        return 0.0 if self._away_since is None else time.monotonic() - self._away_since

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep_connected())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()

    def ring(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._writer.write(b"outbound\n")

    async def _keep_connected(self) -> None:
        delay = 0.05
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
            except OSError:
                await asyncio.sleep(delay)  # reconnect backoff, not synchronisation
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            self._writer = writer
            self._away_since = None
            self.rung.set()  # re-check the queue: something may have arrived while disconnected
            try:
                while line := await reader.readline():
                    if line.strip() == b"inbound":
                        self.rung.set()
                    elif line.strip() == b"interrupt":
                        self.interrupt.set()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self._writer = None
                self._away_since = time.monotonic()
                writer.close()
