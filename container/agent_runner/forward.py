"""A loopback port inside the container that pipes to the host gateway's unix socket.

The container has no network; Codex's model provider points at 127.0.0.1:<port> and each
connection is spliced to the gateway, both directions streamed as bytes arrive.

The gateway lives in the host process, so it is away while the host restarts (an upgrade, a
crash, ``kill -9``). A connection that finds it away is held, not refused: the forwarder keeps
trying the socket with a short backoff and splices as soon as the host is back, so Codex only
sees a slow response, and the turn goes on. The wait is bounded per outage (``wait``, measured
from when the gateway was first found away, so retries do not stack their waits); after it a
connection is answered ``502`` with a plain message, and the runner's own retries take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

log = logging.getLogger(__name__)

GATEWAY_WAIT = 90.0
"""Seconds a connection waits for the gateway to come back (a host restart) before a 502."""
RETRY_FIRST = 0.05
RETRY_MAX = 0.5


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


class LoopbackForward:
    """Listen on 127.0.0.1 (ephemeral port) and splice each connection to ``socket_path``."""

    def __init__(self, socket_path: str, wait: float = GATEWAY_WAIT) -> None:
        self.socket_path = socket_path
        self.wait = wait
        self.port = 0
        self._server: asyncio.Server | None = None
        self._away_since: float | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.holding = asyncio.Event()
        """Set while some connection waits for the gateway to come back."""

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and end every connection now (held ones included): the runner is leaving."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The gateway, waiting for it while the host is away (up to ``wait`` per outage)."""
        delay = RETRY_FIRST
        while True:
            try:
                connection = await asyncio.open_unix_connection(self.socket_path)
            except OSError:
                now = time.monotonic()
                if self._away_since is None:
                    self._away_since = now
                    log.warning(
                        "the host's gateway is away; holding model requests for up to %.0f s", self.wait
                    )
                left = self._away_since + self.wait - now
                if left <= 0:
                    raise
                self.holding.set()
                await asyncio.sleep(min(delay, left))  # reconnect backoff while the host restarts
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.holding.clear()
            if self._away_since is not None:
                log.info("the host's gateway is back after %.1f s", time.monotonic() - self._away_since)
                self._away_since = None
            return connection

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, up_writer = await self._connect()
            except OSError as exc:
                reason = exc.strerror or "no connection"
                message = (
                    f"nanohost gateway unreachable: the host has been away for {self.wait:.0f} s ({reason})"
                )
                body = json.dumps({"error": {"message": message, "type": "gateway"}}).encode()
                client_writer.write(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                with contextlib.suppress(Exception):
                    await client_writer.drain()
                    client_writer.write_eof()  # then read what the client sent: closing on unread
                    async with asyncio.timeout(2):  # bytes would reset the connection, answer and all
                        while await client_reader.read(65536):
                            pass
                return
            await asyncio.gather(_pipe(client_reader, up_writer), _pipe(up_reader, client_writer))
        except asyncio.CancelledError:
            pass  # stop(): the runner is leaving
        finally:
            self._handlers.discard(task)
            if up_writer is not None:
                up_writer.close()
            client_writer.close()
