"""The credential gateway over a real unix socket, against a fake upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, UnixConnector, web
from aiohttp.test_utils import TestServer

from nanohost.gateway import Gateway

REAL_KEY = "sk-real-key-never-in-containers"


class Upstream:
    """A Responses-API-shaped upstream that streams SSE in two parts, released by the test."""

    def __init__(self) -> None:
        self.seen_auth: list[str] = []
        self.release = asyncio.Event()
        self.first_chunk_sent = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen_auth.append(request.headers.get("Authorization", ""))
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"type":"response.created"}\n\n')
        self.first_chunk_sent.set()
        await self.release.wait()
        await response.write(f'data: {{"echo":"{body["input"]}"}}\n\n'.encode())
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    fake = Upstream()
    app = web.Application()
    app.router.add_post("/v1/responses", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("/v1"))
    await server.close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: tuple[Upstream, str]) -> AsyncIterator[Gateway]:
    gw = Gateway(tmp_path / "gw", upstream[1], REAL_KEY)
    await gw.start()
    yield gw
    await gw.stop()


async def test_placeholder_is_swapped_for_the_key_and_the_stream_is_not_buffered(
    gateway: Gateway, upstream: tuple[Upstream, str]
) -> None:
    fake, _ = upstream
    placeholder = gateway.grant("team", 1)
    async with ClientSession(connector=UnixConnector(path=str(gateway.socket_path))) as client:
        async with client.post(
            "http://gateway/v1/responses",
            json={"input": "hi"},
            headers={"Authorization": f"Bearer {placeholder}"},
        ) as response:
            assert response.status == 200
            first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
            assert b"response.created" in first  # arrived while upstream still holds the rest
            fake.release.set()
            rest = await asyncio.wait_for(response.content.read(), 5)
    assert b'"echo":"hi"' in rest
    assert fake.seen_auth == [f"Bearer {REAL_KEY}"]


@pytest.mark.parametrize("auth", ["", "Bearer nh-ph-unknown", f"Bearer {REAL_KEY}", "Basic abc"])
async def test_unknown_placeholders_get_401(
    gateway: Gateway, upstream: tuple[Upstream, str], auth: str
) -> None:
    headers = {"Authorization": auth} if auth else {}
    async with ClientSession(connector=UnixConnector(path=str(gateway.socket_path))) as client:
        async with client.post(
            "http://gateway/v1/responses", json={"input": "x"}, headers=headers
        ) as response:
            assert response.status == 401
            assert REAL_KEY not in await response.text()
    assert upstream[0].seen_auth == []


async def test_revoked_placeholder_stops_working(gateway: Gateway) -> None:
    placeholder = gateway.grant("team", 1)
    gateway.revoke(placeholder)
    async with ClientSession(connector=UnixConnector(path=str(gateway.socket_path))) as client:
        async with client.post(
            "http://gateway/v1/responses", json={}, headers={"Authorization": f"Bearer {placeholder}"}
        ) as response:
            assert response.status == 401


async def test_unreachable_upstream_is_a_502(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "gw2", "http://127.0.0.1:9/v1", REAL_KEY)
    await gw.start()
    try:
        placeholder = gw.grant("team", 1)
        async with ClientSession(connector=UnixConnector(path=str(gw.socket_path))) as client:
            async with client.post(
                "http://gateway/v1/responses", json={}, headers={"Authorization": f"Bearer {placeholder}"}
            ) as response:
                assert response.status == 502
                assert "upstream unreachable" in await response.text()
    finally:
        await gw.stop()


async def _echo_server() -> tuple[asyncio.AbstractServer, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _connect(
    gateway: Gateway, target: str, placeholder: str | None, method: str = "CONNECT"
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    import base64

    reader, writer = await asyncio.open_unix_connection(str(gateway.egress_socket_path))
    auth = ""
    if placeholder is not None:
        auth = (
            "Proxy-Authorization: Basic " + base64.b64encode(f"nh:{placeholder}".encode()).decode() + "\r\n"
        )
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    return status, reader, writer


async def test_egress_tunnels_only_to_allowed_hosts(gateway: Gateway) -> None:
    server, port = await _echo_server()
    try:
        allowed = gateway.grant("team", 1, egress=["127.0.0.1", "*.example.org"])
        status, reader, writer = await _connect(gateway, f"127.0.0.1:{port}", allowed)
        assert status.startswith(b"HTTP/1.1 200")
        assert await reader.readline() == b"\r\n"  # end of the proxy's answer
        writer.write(b"ping through the tunnel\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"ping through the tunnel\n"
        writer.close()

        closed = gateway.grant("other", 2)  # no allow-list: model API only
        status, _, writer = await _connect(gateway, f"127.0.0.1:{port}", closed)
        assert status.startswith(b"HTTP/1.1 403")
        writer.close()
        status, _, writer = await _connect(gateway, f"127.0.0.1:{port}", None)
        assert status.startswith(b"HTTP/1.1 407")
        writer.close()
        status, _, writer = await _connect(gateway, f"http://127.0.0.1:{port}/", allowed, method="GET")
        assert status.startswith(b"HTTP/1.1 405")
        writer.close()
        gateway.revoke(allowed)
        status, _, writer = await _connect(gateway, f"127.0.0.1:{port}", allowed)
        assert status.startswith(b"HTTP/1.1 407")
        writer.close()
    finally:
        server.close()


def test_egress_patterns() -> None:
    from nanohost.gateway import Grant

    grant = Grant("g", 1, ("api.github.com", "*.pypi.org"))
    assert (
        grant.may_reach("api.github.com")
        and grant.may_reach("files.pypi.org")
        and grant.may_reach("API.GitHub.com.")
    )
    assert not grant.may_reach("github.com") and not grant.may_reach("pypi.org.evil.com")
