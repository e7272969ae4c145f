"""The gateway: the only way a container reaches the model (and, if allowed, anything else).

It listens on a unix socket in the data dir; that directory is mounted into every container,
where the runner forwards a loopback port to it. Codex authenticates with a per-session
placeholder; the gateway checks it, swaps in the real key and streams the upstream response back
as it arrives (no buffering, so streamed tokens keep flowing). An unknown placeholder gets 401.
The real key is never logged and never written anywhere a container can read.

Egress (off by default): a group with an allow-list of host patterns gets an HTTPS proxy on a
second socket. Only ``CONNECT host:port`` to an allowed host is tunnelled; the client proves its
session with the same placeholder (``Proxy-Authorization: Basic nh:<placeholder>``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, web
from multidict import CIMultiDict

log = logging.getLogger(__name__)

PLACEHOLDER_PREFIX = "nh-ph-"
CONTAINER_SOCKET_DIR = "/run/nanohost"
SOCKET_NAME = "gateway.sock"
EGRESS_SOCKET_NAME = "egress.sock"
MAX_HEAD = 8192
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
    }
)


@dataclass(frozen=True)
class Grant:
    """Who a placeholder belongs to."""

    group: str
    session_id: int
    egress: tuple[str, ...] = field(default=())

    def may_reach(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in self.egress)


class Gateway:
    """Placeholder registry plus the forwarding server."""

    def __init__(self, socket_dir: Path, upstream: str, api_key: str | None) -> None:
        self.socket_dir = socket_dir
        self.upstream = upstream.rstrip("/")
        self._api_key = api_key
        self._grants: dict[str, Grant] = {}
        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None
        self._egress: asyncio.AbstractServer | None = None

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / SOCKET_NAME

    @property
    def egress_socket_path(self) -> Path:
        return self.socket_dir / EGRESS_SOCKET_NAME

    def grant(self, group: str, session_id: int, egress: list[str] | None = None) -> str:
        """A fresh placeholder for a session's container (not a secret: it only works here)."""
        placeholder = PLACEHOLDER_PREFIX + secrets.token_urlsafe(24)
        self._grants[placeholder] = Grant(group, session_id, tuple(egress or ()))
        return placeholder

    def restore(self, placeholder: str, group: str, session_id: int, egress: list[str] | None = None) -> None:
        """Re-register a placeholder an adopted container already holds (after a host restart)."""
        self._grants[placeholder] = Grant(group, session_id, tuple(egress or ()))

    def revoke(self, placeholder: str) -> None:
        self._grants.pop(placeholder, None)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v1/{tail:.*}", self._forward)
        return app

    async def start(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self._client = ClientSession(
            timeout=ClientTimeout(total=None, sock_connect=30), auto_decompress=False
        )
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.socket_path)).start()
        self.socket_path.chmod(0o666)  # the container user (uid 1000) must be able to connect
        self.egress_socket_path.unlink(missing_ok=True)
        self._egress = await asyncio.start_unix_server(self._tunnel, path=str(self.egress_socket_path))
        self.egress_socket_path.chmod(0o666)
        log.info("gateway listening on %s, forwarding to %s", self.socket_path, self.upstream)

    async def stop(self) -> None:
        if self._egress is not None:
            self._egress.close()
        self.egress_socket_path.unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()
        self.socket_path.unlink(missing_ok=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        grant = self._check(request)
        if self._api_key is None:
            return web.json_response(
                {"error": {"message": "nanohost has no OPENAI_API_KEY configured", "type": "auth"}},
                status=401,
            )
        assert self._client is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
        headers["Authorization"] = f"Bearer {self._api_key}"
        url = f"{self.upstream}/{request.match_info['tail']}"
        if request.query_string:
            url = f"{url}?{request.query_string}"
        body = await request.read()
        try:
            upstream = await self._client.request(request.method, url, headers=headers, data=body)
        except Exception as exc:
            log.warning("gateway: upstream %s unreachable for group %s: %s", self.upstream, grant.group, exc)
            return web.json_response({"error": {"message": f"upstream unreachable: {exc}"}}, status=502)
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    response.headers.add(key, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        return response

    def _check(self, request: web.Request) -> Grant:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        grant = self._grants.get(token) if scheme.lower() == "bearer" else None
        if grant is None:
            raise web.HTTPUnauthorized(
                text='{"error":{"message":"unknown nanohost placeholder","type":"auth"}}',
                content_type="application/json",
            )
        return grant

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One proxied connection: CONNECT to an allowed host, then bytes both ways."""

        def refuse(status: str, reason: str) -> None:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: {len(reason)}\r\nConnection: close\r\n\r\n"
                f"{reason}".encode()
            )

        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head[:MAX_HEAD].decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.partition(" ")[0]
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        grant = self._proxy_grant(headers.get("proxy-authorization", ""))
        host, _, port_text = target.rpartition(":")
        if grant is None:
            refuse("407 Proxy Authentication Required", "unknown nanohost placeholder")
        elif method.upper() != "CONNECT" or not port_text.isdigit():
            refuse("405 Method Not Allowed", "only CONNECT host:port (HTTPS) is proxied")
        elif not grant.may_reach(host):
            log.warning("egress: group %s may not reach %s", grant.group, host)
            refuse("403 Forbidden", f"{host} is not on this group's egress allow-list")
        else:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port_text)), 30
                )
            except (OSError, TimeoutError) as exc:
                refuse("502 Bad Gateway", f"cannot reach {target}: {exc}")
            else:
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await asyncio.gather(_splice(reader, up_writer), _splice(up_reader, writer))
                return
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _proxy_grant(self, header: str) -> Grant | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            _, _, placeholder = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return self._grants.get(placeholder)


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
