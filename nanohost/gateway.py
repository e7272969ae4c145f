"""The credential gateway: the only way a container reaches the model, and the only holder of the key.

It listens on a unix socket in the data dir; that directory is mounted into every container,
where the runner forwards a loopback port to it. Codex authenticates with a per-session
placeholder; the gateway checks it, swaps in the real key and streams the upstream response back
as it arrives (no buffering, so streamed tokens keep flowing). An unknown placeholder gets 401.
The real key is never logged and never written anywhere a container can read.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, web
from multidict import CIMultiDict

log = logging.getLogger(__name__)

PLACEHOLDER_PREFIX = "nh-ph-"
CONTAINER_SOCKET_DIR = "/run/nanohost"
SOCKET_NAME = "gateway.sock"
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


class Gateway:
    """Placeholder registry plus the forwarding server."""

    def __init__(self, socket_dir: Path, upstream: str, api_key: str | None) -> None:
        self.socket_dir = socket_dir
        self.upstream = upstream.rstrip("/")
        self._api_key = api_key
        self._grants: dict[str, Grant] = {}
        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / SOCKET_NAME

    def grant(self, group: str, session_id: int) -> str:
        """A fresh placeholder for a session's container (not a secret: it only works here)."""
        placeholder = PLACEHOLDER_PREFIX + secrets.token_urlsafe(24)
        self._grants[placeholder] = Grant(group, session_id)
        return placeholder

    def restore(self, placeholder: str, group: str, session_id: int) -> None:
        """Re-register a placeholder an adopted container already holds (after a host restart)."""
        self._grants[placeholder] = Grant(group, session_id)

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
        log.info("gateway listening on %s, forwarding to %s", self.socket_path, self.upstream)

    async def stop(self) -> None:
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
