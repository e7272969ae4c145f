"""The loopback forwarder holds model requests while the host (and its gateway) restarts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_runner.forward import LoopbackForward

REQUEST = b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


class Gateway:
    """A stand-in for the host gateway's unix socket: answers every request with 200 "ok"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self.requests = 0

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        self.requests += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()


@pytest.fixture
async def forward(tmp_path: Path) -> AsyncIterator[LoopbackForward]:
    listener = LoopbackForward(str(tmp_path / "gateway.sock"))
    await listener.start()
    yield listener
    await listener.stop()


async def ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_a_request_waits_for_the_gateway_to_come_back(tmp_path: Path, forward: LoopbackForward) -> None:
    gateway = Gateway(tmp_path / "gateway.sock")
    pending = asyncio.ensure_future(ask(forward.port))
    await asyncio.sleep(0.3)  # the host is away for a while (this is the fault, not a wait for a result)
    assert not pending.done()  # held, not refused
    await gateway.start()
    answer = await asyncio.wait_for(pending, 10)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
    assert gateway.requests == 1
    await gateway.stop()


async def test_a_gateway_away_too_long_is_a_plain_502(tmp_path: Path) -> None:
    listener = LoopbackForward(str(tmp_path / "gateway.sock"), wait=0.3)
    await listener.start()
    started = time.monotonic()
    answer = await asyncio.wait_for(ask(listener.port), 10)
    assert 0.25 < time.monotonic() - started < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502")
    message = json.loads(body)["error"]["message"]
    assert "gateway unreachable" in message and "gateway.sock" not in message and "/" not in message
    started = time.monotonic()  # the same outage: the next request does not wait it out again
    assert (await asyncio.wait_for(ask(listener.port), 10)).startswith(b"HTTP/1.1 502")
    assert time.monotonic() - started < 0.25
    gateway = Gateway(tmp_path / "gateway.sock")
    await gateway.start()  # back: requests flow again, and the next outage gets its full wait
    assert (await asyncio.wait_for(ask(listener.port), 10)).endswith(b"ok")
    await gateway.stop()
    pending = asyncio.ensure_future(ask(listener.port))
    await asyncio.sleep(0.1)  # within the new outage's wait
    assert not pending.done()
    assert (await asyncio.wait_for(pending, 10)).startswith(b"HTTP/1.1 502")
    await listener.stop()


async def test_stop_ends_held_connections_at_once(tmp_path: Path, forward: LoopbackForward) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", forward.port)
    writer.write(REQUEST)
    await writer.drain()
    await asyncio.wait_for(forward.holding.wait(), 5)
    started = time.monotonic()
    await asyncio.wait_for(forward.stop(), 2)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert time.monotonic() - started < 1
    writer.close()
