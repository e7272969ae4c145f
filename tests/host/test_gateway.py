"""The credential gateway over a real unix socket, against a fake upstream on 127.0.0.1.

Path-vetting tests speak raw HTTP/1.1 over the socket (aiohttp's client would normalise dot
segments before they left the test). Egress tests never reach an address other than 127.0.0.1:
refusals are asserted to happen before the (injected, recording) connector is called.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import ClientSession, UnixConnector, web
from aiohttp.test_utils import TestServer

from nanohost import gateway as gateway_module
from nanohost.gateway import (
    CODEX_ROUTES,
    MAX_REQUEST_BODY,
    Gateway,
    Grant,
    IPAddress,
    is_own_address,
    path_refusal,
    public_address,
)

REAL_KEY = "sk-real-key-never-in-containers"
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


@dataclass(frozen=True)
class Seen:
    method: str
    raw_path: str
    auth: str
    length: int
    sha256: str
    header_names: frozenset[str] = frozenset()


class Upstream:
    """Records every request on any path. ``POST /v1/responses`` streams SSE in two parts, the
    second released by the test; anything else would get a 200, so a leak cannot pass as a 403."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.release = asyncio.Event()
        self.first_chunk_sent = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.raw_path,
                request.headers.get("Authorization", ""),
                len(raw),
                hashlib.sha256(raw).hexdigest(),
                frozenset(k.lower() for k in request.headers),
            )
        )
        if (request.method, request.path) != ("POST", "/v1/responses"):
            return web.json_response({"leaked": request.raw_path})
        body = json.loads(raw)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"type":"response.created"}\n\n')
        self.first_chunk_sent.set()
        await self.release.wait()
        await response.write(f'data: {{"echo":"{str(body["input"])[:20]}"}}\n\n'.encode())
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    fake = Upstream()
    app = web.Application(client_max_size=2 * MAX_REQUEST_BODY)
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("/v1"))
    await server.close()


class RecordingConnector:
    """Stands in for the TCP connect: records what it was asked, and for an allowed case
    connects to the local echo server (127.0.0.1) whatever address it was given."""

    def __init__(self, echo_port: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.echo_port = echo_port

    async def __call__(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.calls.append((host, port))
        if self.echo_port is None:
            raise ConnectionRefusedError("the test connector connects nowhere")
        return await asyncio.open_connection("127.0.0.1", self.echo_port)


@pytest.fixture
def connector() -> RecordingConnector:
    return RecordingConnector()


@pytest.fixture
async def gateway(
    tmp_path: Path, upstream: tuple[Upstream, str], connector: RecordingConnector
) -> AsyncIterator[Gateway]:
    gw = Gateway(tmp_path / "gw", upstream[1], REAL_KEY, egress_connect=connector)  # default policy
    await gw.start()
    yield gw
    await gw.stop()


def _client(gw: Gateway) -> ClientSession:
    return ClientSession(connector=UnixConnector(path=str(gw.socket_path)))


async def _raw_http(gw: Gateway, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request written byte for byte; returns (status, response body)."""
    reader, writer = await asyncio.open_unix_connection(str(gw.socket_path))
    try:
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = answer_head.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "content-length" in fields:  # a refusal: the server may still be draining an unsent body
            answer = await asyncio.wait_for(reader.readexactly(int(fields["content-length"])), 5)
        else:
            answer = await asyncio.wait_for(reader.read(), 5)  # Connection: close, so EOF ends it
    finally:
        writer.close()
    return int(lines[0].split()[1]), answer


def _head(method: str, target: str, placeholder: str, extra: str = "Content-Length: 2\r\n") -> str:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {placeholder}\r\n"
        f"Content-Type: application/json\r\n{extra}Connection: close\r\n\r\n"
    )


async def test_placeholder_is_swapped_for_the_key_and_the_stream_is_not_buffered(
    gateway: Gateway, upstream: tuple[Upstream, str]
) -> None:
    fake, _ = upstream
    placeholder = gateway.grant("team", 1)
    async with _client(gateway) as client:
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
    assert [(s.method, s.raw_path, s.auth) for s in fake.seen] == [
        ("POST", "/v1/responses", f"Bearer {REAL_KEY}")
    ]


async def test_headers_that_pick_the_account_never_reach_the_upstream(
    gateway: Gateway, upstream: tuple[Upstream, str]
) -> None:
    fake, _ = upstream
    fake.release.set()
    placeholder = gateway.grant("team", 1)
    async with _client(gateway) as client:
        async with client.post(
            "http://gateway/v1/responses",
            json={"input": "hi"},
            headers={
                "Authorization": f"Bearer {placeholder}",
                "OpenAI-Organization": "org-someone-else",
                "OpenAI-Project": "proj-someone-else",
                "Cookie": "session=stolen",
                "X-Codex-Turn-Metadata": "{}",
            },
        ) as response:
            assert response.status == 200
            await response.read()
    (seen,) = fake.seen
    assert not seen.header_names & {"openai-organization", "openai-project", "cookie"}
    assert "x-codex-turn-metadata" in seen.header_names  # Codex's own headers still pass


async def test_a_large_body_is_streamed_through_intact(
    gateway: Gateway, upstream: tuple[Upstream, str]
) -> None:
    fake, _ = upstream
    fake.release.set()
    body = json.dumps({"input": "x" * (5 * 1024 * 1024 + 123), "model": "m"}).encode()
    placeholder = gateway.grant("team", 1)
    async with _client(gateway) as client:
        async with client.post(
            "http://gateway/v1/responses",
            data=io.BytesIO(body),  # raw bytes this large would trip a ResourceWarning
            headers={"Authorization": f"Bearer {placeholder}", "Content-Type": "application/json"},
        ) as response:
            assert response.status == 200, await response.text()
            assert b"response.created" in await asyncio.wait_for(response.content.read(), 10)
    (seen,) = fake.seen
    assert seen.length == len(body) and seen.sha256 == hashlib.sha256(body).hexdigest()
    assert seen.auth == f"Bearer {REAL_KEY}"


async def test_a_body_over_the_limit_or_without_a_length_never_reaches_upstream(
    gateway: Gateway, upstream: tuple[Upstream, str]
) -> None:
    placeholder = gateway.grant("team", 1)
    too_big = f"Content-Length: {MAX_REQUEST_BODY + 1}\r\n"
    status, answer = await _raw_http(gateway, _head("POST", "/v1/responses", placeholder, too_big))
    assert status == 413 and json.loads(answer)["error"]["type"] == "too_large"
    chunked = "Transfer-Encoding: chunked\r\n"
    status, answer = await _raw_http(
        gateway, _head("POST", "/v1/responses", placeholder, chunked), b"2\r\n{}\r\n0\r\n\r\n"
    )
    assert status == 411 and json.loads(answer)["error"]["type"] == "length"
    assert upstream[0].seen == []


REFUSED_TARGETS = [
    ("POST", "/v1/files"),
    ("GET", "/v1/organization/api_keys"),
    ("GET", "/v1/responses"),
    ("DELETE", "/v1/responses"),
    ("POST", "/v1/../healthz"),
    ("GET", "/v1/../healthz"),
    ("POST", "/v1/%2e%2e/healthz"),
    ("POST", "/v1/%2E%2E/healthz"),
    ("POST", "/v1/responses/../files"),
    ("POST", "/v1/responses/../../healthz"),
    ("POST", "/v1/./responses"),
    ("POST", "/v1/responses/."),
    ("POST", "/v1/responses%2f..%2ffiles"),
    ("POST", "/v1/responses%5c..%5cfiles"),
    ("POST", "/v1\\..\\healthz"),
    ("POST", "/v1\\responses"),
    ("POST", "/v1//responses"),
    ("POST", "//v1/responses"),
    ("POST", "/v1/responses/"),
    ("POST", "/V1/RESPONSES"),
    ("POST", "/v1/responses?x=1"),
    ("POST", "/healthz"),
    ("POST", "/v1/"),
    ("POST", "http://api.openai.com/v1/responses"),
]


@pytest.mark.parametrize(("method", "target"), REFUSED_TARGETS)
async def test_anything_but_the_providers_own_calls_is_refused_before_upstream(
    gateway: Gateway,
    upstream: tuple[Upstream, str],
    caplog: pytest.LogCaptureFixture,
    method: str,
    target: str,
) -> None:
    placeholder = gateway.grant("team-a", 1)
    with caplog.at_level(logging.WARNING, logger="nanohost.gateway"):
        status, answer = await _raw_http(gateway, _head(method, target, placeholder), b"{}")
    assert status == 403, answer
    assert json.loads(answer)["error"]["type"] == "forbidden"
    assert REAL_KEY.encode() not in answer
    assert upstream[0].seen == []
    refusals = [r for r in caplog.records if r.name == "nanohost.gateway" and r.levelno == logging.WARNING]
    assert len(refusals) == 1 and "team-a" in refusals[0].getMessage()


async def test_a_refused_path_with_an_unknown_placeholder_is_still_401(
    gateway: Gateway, upstream: tuple[Upstream, str]
) -> None:
    status, _ = await _raw_http(gateway, _head("POST", "/v1/files", "nh-ph-unknown"), b"{}")
    assert status == 401
    assert upstream[0].seen == []


def test_path_refusal_is_data_driven() -> None:
    assert CODEX_ROUTES == frozenset({("POST", "/v1/responses")})
    assert path_refusal("POST", "/v1/responses", CODEX_ROUTES) is None
    other = frozenset({("GET", "/v1/models"), ("POST", "/v1/messages")})
    assert path_refusal("GET", "/v1/models", other) is None
    assert path_refusal("POST", "/v1/responses", other) is not None
    assert path_refusal("GET", "/v1/models/../files", other | {("GET", "/v1/models/../files")}) is not None


async def test_another_providers_routes_are_forwarded_and_codexs_are_not(
    tmp_path: Path, upstream: tuple[Upstream, str]
) -> None:
    fake, url = upstream
    gw = Gateway(tmp_path / "gw3", url, REAL_KEY, routes=frozenset({("GET", "/v1/models")}))
    await gw.start()
    try:
        placeholder = gw.grant("team", 1)
        status, answer = await _raw_http(gw, _head("GET", "/v1/models", placeholder, ""))
        assert status == 200 and b'{"leaked": "/v1/models"}' in answer
        status, _ = await _raw_http(gw, _head("POST", "/v1/responses", placeholder), b"{}")
        assert status == 403
    finally:
        await gw.stop()
    assert [(s.method, s.raw_path, s.auth) for s in fake.seen] == [
        ("GET", "/v1/models", f"Bearer {REAL_KEY}")
    ]


@pytest.mark.parametrize("auth", ["", "Bearer nh-ph-unknown", f"Bearer {REAL_KEY}", "Basic abc"])
async def test_unknown_placeholders_get_401(
    gateway: Gateway, upstream: tuple[Upstream, str], auth: str
) -> None:
    headers = {"Authorization": auth} if auth else {}
    async with _client(gateway) as client:
        async with client.post(
            "http://gateway/v1/responses", json={"input": "x"}, headers=headers
        ) as response:
            assert response.status == 401
            assert REAL_KEY not in await response.text()
    assert upstream[0].seen == []


async def test_revoked_placeholder_stops_working(gateway: Gateway, upstream: tuple[Upstream, str]) -> None:
    placeholder = gateway.grant("team", 1)
    gateway.revoke(placeholder)
    async with _client(gateway) as client:
        async with client.post(
            "http://gateway/v1/responses", json={}, headers={"Authorization": f"Bearer {placeholder}"}
        ) as response:
            assert response.status == 401
    assert upstream[0].seen == []


async def test_unreachable_upstream_is_a_502(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "gw2", "http://127.0.0.1:9/v1", REAL_KEY)
    await gw.start()
    try:
        placeholder = gw.grant("team", 1)
        async with _client(gw) as client:
            async with client.post(
                "http://gateway/v1/responses", json={}, headers={"Authorization": f"Bearer {placeholder}"}
            ) as response:
                assert response.status == 502
                assert "upstream unreachable" in await response.text()
    finally:
        await gw.stop()


# --- egress ---------------------------------------------------------------------------------


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


async def _ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    assert await asyncio.wait_for(reader.readline(), 5) == b"\r\n"  # end of the proxy's answer
    writer.write(b"ping through the tunnel\n")
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), 5)


async def test_egress_tunnels_only_to_allowed_hosts(tmp_path: Path) -> None:
    server, port = await _echo_server()
    # The default policy refuses loopback; this gateway's policy allows exactly the echo server's.
    gw = Gateway(tmp_path / "gw-egress", "http://127.0.0.1:9/v1", REAL_KEY, egress_address_ok=LOOPBACK.__eq__)
    await gw.start()
    try:
        allowed = gw.grant("team", 1, egress=["127.0.0.1", "*.example.org"])
        status, reader, writer = await _connect(gw, f"127.0.0.1:{port}", allowed)
        assert status.startswith(b"HTTP/1.1 200")
        assert await _ping(reader, writer) == b"ping through the tunnel\n"
        writer.close()

        closed = gw.grant("other", 2)  # no allow-list: model API only
        status, _, writer = await _connect(gw, f"127.0.0.1:{port}", closed)
        assert status.startswith(b"HTTP/1.1 403")
        writer.close()
        status, _, writer = await _connect(gw, f"127.0.0.1:{port}", None)
        assert status.startswith(b"HTTP/1.1 407")
        writer.close()
        status, _, writer = await _connect(gw, f"http://127.0.0.1:{port}/", allowed, method="GET")
        assert status.startswith(b"HTTP/1.1 405")
        writer.close()
        for bad_port in ("0", "65536", "x"):
            status, _, writer = await _connect(gw, f"127.0.0.1:{bad_port}", allowed)
            assert status.startswith(b"HTTP/1.1 405")
            writer.close()
        gw.revoke(allowed)
        status, _, writer = await _connect(gw, f"127.0.0.1:{port}", allowed)
        assert status.startswith(b"HTTP/1.1 407")
        writer.close()
    finally:
        await gw.stop()
        server.close()


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:8080",
        "localhost:443",
        "10.0.0.1:443",
        "172.16.0.1:443",
        "192.168.1.1:443",
        "169.254.169.254:80",
        "100.64.0.1:443",
        "0.0.0.0:443",
        "224.0.0.1:443",
        "255.255.255.255:443",
        "[::1]:443",
        "[::]:443",
        "[::ffff:127.0.0.1]:443",
        "[::ffff:10.0.0.1]:443",
        "[64:ff9b::a9fe:a9fe]:80",
        "[2002:7f00:1::]:443",
        "[fe80::1]:443",
        "[fd00::1]:443",
    ],
)
async def test_default_policy_refuses_internal_targets_even_with_a_star_allow_list(
    gateway: Gateway, connector: RecordingConnector, target: str
) -> None:
    grant = gateway.grant("team", 1, egress=["*"])
    status, reader, writer = await _connect(gateway, target, grant)
    assert status.startswith(b"HTTP/1.1 403"), status
    assert b"non-public" in await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert connector.calls == []


async def test_a_name_is_refused_if_any_address_is_internal_and_the_vetted_ip_is_what_is_dialled(
    tmp_path: Path,
) -> None:
    server, port = await _echo_server()
    answers = {
        "mixed.example.org": ["8.8.8.8", "10.0.0.1"],
        "rebind.example.org": ["::ffff:169.254.169.254"],
        "api.example.org": ["8.8.8.8"],
    }
    resolved: list[str] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        resolved.append(host)
        if host not in answers:
            raise OSError(f"no such name {host}")
        return [ipaddress.ip_address(a) for a in answers[host]]

    connector = RecordingConnector(echo_port=port)
    gw = Gateway(  # the default address policy: only the resolver and the connector are stand-ins
        tmp_path / "gw-dns",
        "http://127.0.0.1:9/v1",
        REAL_KEY,
        egress_resolve=resolve,
        egress_connect=connector,
    )
    await gw.start()
    try:
        grant = gw.grant("team", 1, egress=["*.example.org"])
        for name in ("mixed.example.org", "rebind.example.org"):
            status, _, writer = await _connect(gw, f"{name}:443", grant)
            assert status.startswith(b"HTTP/1.1 403"), (name, status)
            writer.close()
        assert connector.calls == []

        status, _, writer = await _connect(gw, "nowhere.example.org:443", grant)
        assert status.startswith(b"HTTP/1.1 502")
        writer.close()

        status, reader, writer = await _connect(gw, "api.example.org:443", grant)
        assert status.startswith(b"HTTP/1.1 200")
        assert await _ping(reader, writer) == b"ping through the tunnel\n"
        writer.close()
    finally:
        await gw.stop()
        server.close()
    assert connector.calls == [("8.8.8.8", 443)]  # the vetted address, never the name again
    assert resolved == ["mixed.example.org", "rebind.example.org", "nowhere.example.org", "api.example.org"]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("10.0.0.1", False),
        ("172.31.255.255", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("100.127.255.254", False),
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("192.0.2.1", False),
        ("::1", False),
        ("::", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:192.168.0.1", False),
        ("::ffff:100.64.0.1", False),
        ("::127.0.0.1", False),
        ("64:ff9b::a00:1", False),
        ("64:ff9b:1::808:808", False),
        ("2002:a9fe:a9fe::", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
        ("fe80::1", False),
        ("fec0::1", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
    ],
)
def test_public_address_policy(address: str, public: bool) -> None:
    assert public_address(ipaddress.ip_address(address)) is public


def test_the_hosts_own_addresses_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_own_address(LOOPBACK) and is_own_address(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not is_own_address(ipaddress.ip_address("8.8.8.8"))  # bind() only: nothing is sent
    monkeypatch.setattr(gateway_module, "is_own_address", lambda ip: True)
    assert not public_address(ipaddress.ip_address("8.8.8.8"))


def test_egress_patterns() -> None:
    grant = Grant("g", 1, ("api.github.com", "*.pypi.org"))
    assert (
        grant.may_reach("api.github.com")
        and grant.may_reach("files.pypi.org")
        and grant.may_reach("API.GitHub.com.")
    )
    assert not grant.may_reach("github.com") and not grant.may_reach("pypi.org.evil.com")


async def test_upstream_cookies_reach_neither_the_container_nor_another_group(tmp_path: Path) -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie", ""))
        response = web.json_response({"ok": True})
        response.headers.add("Set-Cookie", "lb=team-a; Path=/; Max-Age=3600")
        response.headers.add("Set-Cookie2", "lb=team-a; Path=/")
        return response

    app = web.Application()
    app.router.add_post("/v1/responses", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    # by name, not 127.0.0.1: a cookie jar keeps no cookie for an IP address
    base = str(server.make_url("/v1")).replace("127.0.0.1", "localhost")
    gw = Gateway(tmp_path / "gw", base, REAL_KEY)
    await gw.start()
    try:
        async with _client(gw) as client:
            for group in ("team-a", "team-b"):
                placeholder = gw.grant(group, 1)
                async with client.post(
                    "http://gateway/v1/responses",
                    json={"input": "hi"},
                    headers={"Authorization": f"Bearer {placeholder}"},
                ) as response:
                    assert response.status == 200
                    assert "Set-Cookie" not in response.headers and "Set-Cookie2" not in response.headers
    finally:
        await gw.stop()
        await server.close()
    assert seen == ["", ""]
