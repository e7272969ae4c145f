"""The gateway: the only way a container reaches the model (and, if allowed, anything else).

It listens on a unix socket in the data dir; that directory is mounted into every container,
where the runner forwards a loopback port to it. Codex authenticates with a per-session
placeholder; the gateway checks it, swaps in the real key and streams the upstream response back
as it arrives (no buffering, so streamed tokens keep flowing). An unknown placeholder gets 401.
The real key is never logged and never written anywhere a container can read.

What is forwarded: only the provider's own API calls, an exact ``(method, path)`` from a
frozenset (``CODEX_ROUTES``: ``POST /v1/responses``, the only call a real ``codex app-server``
0.138 turn makes). The path is ``/v1/…`` on the gateway and ``{upstream}/…`` upstream, sent
exactly as vetted (no re-normalisation). The request body is streamed through, never buffered;
it must carry a ``Content-Length`` (Codex always does; 411 otherwise) of at most
``MAX_REQUEST_BODY`` (413 otherwise; Codex resends the whole thread every turn, so this is large).

What is refused with 403 and a JSON error, before the upstream is contacted: any other method or
path (``/v1/files``, ``/v1/organization/…``, ``GET /v1/responses``, ``/healthz``), any query
string, and on the raw request target (before any decoding) dot segments (``.``/``..``),
percent-encoded dots, slashes or backslashes (``%2e``, ``%2f``, ``%5c``), backslashes, empty
segments (``//``) and absolute-form targets. Each refusal is logged once, with the group.

A ``chatgpt``-auth grant (``groups config G --auth chatgpt``) is forwarded by
``nanohost.auth.upstream`` instead: to the ChatGPT backend, with the host's ChatGPT access token
and account id, refreshed once on a 401 (a body of at most 8 MiB is kept in memory for that one
retry, a larger one is streamed), at most 4 requests of a grant at once (16 more wait, then 429);
``POST /v1/oauth/token`` (Codex's own refresh, pointed here) answers with the placeholder and
never reaches the issuer. No upstream session keeps cookies (``DummyCookieJar``), and no
``Set-Cookie`` is forwarded back on any route.

Egress (off by default): a group with an allow-list of host patterns gets an HTTPS proxy on a
second socket. Only ``CONNECT host:port`` to an allowed host is tunnelled; the client proves its
session with the same placeholder (``Proxy-Authorization: Basic nh:<placeholder>``). The name is
resolved once; if any address it resolves to (or an IP-literal target) is loopback, private,
link-local, multicast, reserved, unspecified, carrier-grade NAT, an IPv6 form embedding such an
IPv4 address, or one of this host's own addresses, the answer is 403 and nothing is connected.
Otherwise the tunnel connects to the vetted address itself, never to the name again (no DNS
rebinding between the check and the connect). The address policy, resolver and connector are
constructor arguments so tests can tunnel to a loopback echo server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import fnmatch
import ipaddress
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, web
from multidict import CIMultiDict
from yarl import URL

from nanohost.auth import upstream as chatgpt_upstream
from nanohost.auth.upstream import ChatGPTUpstream

log = logging.getLogger(__name__)

PLACEHOLDER_PREFIX = "nh-ph-"
CONTAINER_SOCKET_DIR = "/run/nanohost"
SOCKET_NAME = "gateway.sock"
EGRESS_SOCKET_NAME = "egress.sock"
MAX_HEAD = 8192
API_PREFIX = "/v1"
MAX_REQUEST_BODY = 64 * 1024 * 1024
EGRESS_CONNECT_TIMEOUT = 30.0

Route = tuple[str, str]
"""``(METHOD, path)`` as the container sends it to the gateway, e.g. ``("POST", "/v1/responses")``."""

CODEX_ROUTES: frozenset[Route] = frozenset({("POST", "/v1/responses")})
"""Every call a real ``codex app-server`` 0.138 turn makes (observed: start, text turn, tool-call
turn, MCP tools, resume after a restart); nothing else is forwarded for Codex."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

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
        "expect",
    }
)
_NOT_FORWARDED_BACK = _HOP_BY_HOP | {"set-cookie", "set-cookie2"}
"""Response headers never passed to a container: hop-by-hop ones, and the upstream's cookies."""
_ACCOUNT_HEADERS = frozenset(
    {"openai-organization", "openai-project", "cookie", "x-api-key", "api-key", "chatgpt-account-id"}
)
"""Request headers that choose whose account or credential the real key is used as: the host
decides those, never the container, so they are dropped before forwarding."""
_ENCODED_SEPARATORS = ("%2e", "%2f", "%5c")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# IPv4-compatible (deprecated) and local-use NAT64: no public destination is ever written so.
_IPV6_REFUSED = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def path_refusal(method: str, raw_target: str, allowed: frozenset[Route]) -> str | None:
    """Why a request may not be forwarded, or None. ``raw_target`` is the request line's target,
    undecoded: the checks run on what was sent, not on what a parser made of it."""
    if not raw_target.startswith("/"):
        return "only origin-form targets (/v1/...) are forwarded"
    if "?" in raw_target or "#" in raw_target:
        return "query strings are not forwarded"
    lowered = raw_target.lower()
    if "\\" in raw_target or any(code in lowered for code in _ENCODED_SEPARATORS):
        return "backslashes and percent-encoded dots, slashes or backslashes are refused"
    if "//" in raw_target or any(seg in (".", "..") for seg in raw_target.split("/")):
        return "dot segments and empty segments are refused"
    if (method, raw_target) not in allowed:
        return f"{method} {raw_target} is not an API call this provider makes"
    return None


def is_own_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is assigned to one of this host's interfaces (binding to it succeeds).
    Fails closed: if the kernel lets us bind to any address (ip_nonlocal_bind), every address
    counts as our own and egress is refused."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return False  # no such address family here: nothing of ours to reach through it
    with sock:
        try:
            sock.bind((str(ip), 0))
        except OSError as exc:
            return exc.errno != errno.EADDRNOTAVAIL
        return True


def _public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _public(ip.ipv4_mapped)
        if ip in _NAT64:  # the well-known prefix reaches the IPv4 address in the last 32 bits
            return _public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not _public(ip.sixtofour):
            return False
        if ip.teredo is not None or any(ip in net for net in _IPV6_REFUSED) or ip.is_site_local:
            return False
    elif ip in _CGNAT:
        return False
    return ip.is_global and not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def public_address(ip: IPAddress) -> bool:
    """The default egress policy: a globally routable unicast address that is not this host's."""
    return _public(ip) and not is_own_address(ip)


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to for TCP (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]))
        if address not in addresses:
            addresses.append(address)
    return addresses


async def open_tcp(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


def _split_target(target: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` of a CONNECT line, or None."""
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        return None
    port = int(port_text)
    if not 0 < port < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host, port) if host else None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _json_error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


@dataclass(frozen=True)
class Grant:
    """Who a placeholder belongs to."""

    group: str
    session_id: int
    egress: tuple[str, ...] = field(default=())
    auth: str = "api-key"
    """``api-key`` (the real key, to ``upstream``) or ``chatgpt`` (the host's ChatGPT sign-in,
    to the ChatGPT backend: ``nanohost.auth.upstream``)."""
    routes: frozenset[Route] | None = None
    """The model API calls its provider makes (``providers.registry``); None: the gateway's own."""

    def may_reach(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in self.egress)


class Gateway:
    """Placeholder registry plus the forwarding server.

    ``routes`` is the provider's allowed ``(method, path)`` set (Codex's by default).
    ``egress_address_ok`` decides which resolved addresses the egress proxy may connect to
    (public only by default); ``egress_resolve`` and ``egress_connect`` are the resolver and the
    TCP connector, injectable so tests never touch a real network.
    """

    def __init__(
        self,
        socket_dir: Path,
        upstream: str,
        api_key: str | None,
        *,
        routes: frozenset[Route] = CODEX_ROUTES,
        egress_address_ok: AddressPolicy = public_address,
        egress_resolve: Resolver = resolve_host,
        egress_connect: Connector = open_tcp,
        chatgpt: ChatGPTUpstream | None = None,
    ) -> None:
        if not all(path.startswith(API_PREFIX + "/") for _, path in routes):
            raise ValueError(f"gateway routes must be under {API_PREFIX}/: {sorted(routes)}")
        self.socket_dir = socket_dir
        self.upstream = upstream.rstrip("/")
        self.routes = routes
        self._api_key = api_key
        self._address_ok = egress_address_ok
        self._resolve = egress_resolve
        self._connect = egress_connect
        self._grants: dict[str, Grant] = {}
        self.chatgpt = chatgpt
        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None
        self._egress: asyncio.AbstractServer | None = None

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / SOCKET_NAME

    @property
    def egress_socket_path(self) -> Path:
        return self.socket_dir / EGRESS_SOCKET_NAME

    def grant(
        self,
        group: str,
        session_id: int,
        egress: list[str] | None = None,
        *,
        auth: str = "api-key",
        routes: frozenset[Route] | None = None,
    ) -> str:
        """A fresh placeholder for a session's container (not a secret: it only works here).
        ``routes``: the calls its provider may make (default: the gateway's ``routes``)."""
        placeholder = PLACEHOLDER_PREFIX + secrets.token_urlsafe(24)
        self._grants[placeholder] = Grant(group, session_id, tuple(egress or ()), auth, routes)
        return placeholder

    def restore(
        self,
        placeholder: str,
        group: str,
        session_id: int,
        egress: list[str] | None = None,
        *,
        auth: str = "api-key",
        routes: frozenset[Route] | None = None,
    ) -> None:
        """Re-register a placeholder an adopted container already holds (after a host restart)."""
        self._grants[placeholder] = Grant(group, session_id, tuple(egress or ()), auth, routes)

    def revoke(self, placeholder: str) -> None:
        self._grants.pop(placeholder, None)

    def app(self) -> web.Application:
        # The body is streamed (request.content), so client_max_size only guards accidental reads.
        app = web.Application(client_max_size=MAX_REQUEST_BODY)
        app.router.add_route("*", "/{tail:.*}", self._forward)  # everything comes here to be vetted
        return app

    async def start(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        # no cookie jar: a cookie an upstream sets while serving one group is never sent for another
        self._client = ClientSession(
            timeout=ClientTimeout(total=None, sock_connect=30),
            auto_decompress=False,
            cookie_jar=DummyCookieJar(),
        )
        # a stream in flight must not hold a stopping host for aiohttp's default 60 s: the runner
        # waits for the gateway to come back and Codex retries the request
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
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
        if request.method == "POST" and request.raw_path == chatgpt_upstream.TOKEN_PATH:
            # Codex's own refresh from a chatgpt-mode container: the placeholder back, never upstream
            chatgpt_grants = {p: g.group for p, g in self._grants.items() if g.auth == "chatgpt"}
            return await chatgpt_upstream.dummy_refresh(request, chatgpt_grants)
        grant = self._check(request)
        routes = self.routes if grant.routes is None else grant.routes
        if grant.auth == "chatgpt" and chatgpt_upstream.is_models_call(request.method, request.raw_path):
            refusal = None  # Codex's model list on its ChatGPT path: that exact query, nothing else
        else:
            refusal = path_refusal(request.method, request.raw_path, routes)
        if refusal is not None:
            log.warning(
                "gateway: refused %s %r for group %s: %s",
                request.method,
                request.raw_path[:200],
                grant.group,
                refusal,
            )
            return _json_error(403, f"nanohost gateway: {refusal}", "forbidden")
        if grant.auth != "chatgpt" and self._api_key is None:
            return _json_error(401, "nanohost has no OPENAI_API_KEY configured", "auth")
        length = request.content_length
        if length is None and request.body_exists:
            return _json_error(411, "nanohost gateway: the request body needs a Content-Length", "length")
        if length is not None and length > MAX_REQUEST_BODY:
            log.warning("gateway: refused a %d-byte body for group %s", length, grant.group)
            return _json_error(413, f"nanohost gateway: body over {MAX_REQUEST_BODY} bytes", "too_large")
        assert self._client is not None
        headers = CIMultiDict(
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() not in _ACCOUNT_HEADERS
        )
        if grant.auth == "chatgpt":
            if self.chatgpt is None:
                return _json_error(400, "this host has no ChatGPT route configured", "nanohost_chatgpt")
            path = request.raw_path.removeprefix(API_PREFIX)
            return await self.chatgpt.forward(request, self._client, headers, path, grant.group, grant)
        headers["Authorization"] = f"Bearer {self._api_key}"
        if length is not None:
            headers["Content-Length"] = str(length)  # stream the body as sent, not re-chunked
        # The vetted path, exactly: encoded=True keeps yarl from re-normalising or re-quoting it.
        url = URL(self.upstream + request.raw_path.removeprefix(API_PREFIX), encoded=True)
        data: Any = request.content if length else None
        try:
            upstream = await self._client.request(request.method, url, headers=headers, data=data)
        except Exception as exc:
            log.warning("gateway: upstream %s unreachable for group %s: %s", self.upstream, grant.group, exc)
            return _json_error(502, f"upstream unreachable: {exc}", "upstream")
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _NOT_FORWARDED_BACK:
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
        split = _split_target(target)
        if grant is None:
            refuse("407 Proxy Authentication Required", "unknown nanohost placeholder")
        elif method.upper() != "CONNECT" or split is None:
            refuse("405 Method Not Allowed", "only CONNECT host:port (HTTPS) is proxied")
        elif not grant.may_reach(split[0]):
            log.warning("egress: group %s may not reach %s", grant.group, split[0])
            refuse("403 Forbidden", f"{split[0]} is not on this group's egress allow-list")
        else:
            host, port = split
            addresses, problem = await self._vet(host, port)
            if problem is not None:
                log.warning("egress: group %s refused %s: %s", grant.group, target, problem)
                refuse("403 Forbidden" if addresses else "502 Bad Gateway", problem)
            else:
                upstream = await self._open(addresses, port)
                if isinstance(upstream, str):
                    refuse("502 Bad Gateway", f"cannot reach {target}: {upstream}")
                else:
                    writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    await asyncio.gather(_splice(reader, upstream[1]), _splice(upstream[0], writer))
                    return
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _vet(self, host: str, port: int) -> tuple[list[IPAddress], str | None]:
        """The addresses to connect to, or why not (with a non-empty list: a refused address)."""
        literal = _literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = await self._resolve(host, port)
            except (OSError, ValueError, UnicodeError) as exc:
                return [], f"cannot resolve {host}: {exc}"
            if not addresses:
                return [], f"{host} resolves to no address"
        bad = [str(a) for a in addresses if not self._address_ok(a)]
        if literal is not None and bad:
            return addresses, f"{host} is a non-public address"
        if bad:
            return addresses, f"{host} resolves to a non-public address ({', '.join(bad)})"
        return addresses, None

    async def _open(
        self, addresses: list[IPAddress], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
        """Connect to the first vetted address that answers (by IP: the name is never used again)."""
        errors: list[str] = []
        try:
            async with asyncio.timeout(EGRESS_CONNECT_TIMEOUT):
                for address in addresses:
                    try:
                        return await self._connect(str(address), port)
                    except OSError as exc:
                        errors.append(f"{address}: {exc}")
        except TimeoutError:
            errors.append(f"timed out after {EGRESS_CONNECT_TIMEOUT:.0f} s")
        return "; ".join(errors)

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
