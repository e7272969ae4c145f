"""The runner's end of the session doorbell: one connection to the host's socket.

``inbound`` lines from the host set ``rung``; ``ring()`` tells the host "new outbound rows". If
the host restarts, the runner reconnects with backoff; meanwhile a slow poll in the loop keeps
nothing waiting for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class RunnerDoorbell:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rung = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

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
            self.rung.set()  # re-check the queue: something may have arrived while disconnected
            try:
                while line := await reader.readline():
                    if line.strip() == b"inbound":
                        self.rung.set()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self._writer = None
                writer.close()
