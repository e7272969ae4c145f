"""The built-in web chat: one page (``nanohost/web/``) and its endpoints, behind one password.

``GET /`` is the chat for a logged-in browser, the login page otherwise, and a page saying to run
``nanohost setup`` while no password exists. Everything under ``/web/`` except login answers 401
without a valid session cookie (``web_auth``). The conversation endpoints are the HTTP API's
(``api.messages_response`` and friends) under ``/web``, limited to groups with a ``web`` binding:

- ``GET /web/groups`` → ``{"groups": [names], "max_attachment_bytes": N}``
- ``GET /web/groups/{group}/messages?after=&wait=``, websocket ``/web/groups/{group}/stream?after=``,
  ``GET /web/groups/{group}/files/{message_id}/{index}``: as in the API
- ``POST /web/groups/{group}/messages``: JSON ``{"text"}``, or multipart ``text`` + optional
  ``file`` (saved under the group folder's ``inbox/``, at most ``max_attachment_bytes``)

Guessing is limited: a wrong password answers 401 only after ``LOGIN_DELAY``, one password check
runs at a time, and a client IP with ``MAX_FAILURES`` wrong passwords in ``FAILURE_WINDOW``
seconds gets 429 without a check until the window has passed (``LoginLimiter``). Behind a reverse
proxy listed in ``NANOHOST_TRUSTED_PROXIES`` the client IP is the one the proxy forwards
(``forwarded``); the cookie is ``Secure`` whenever the browser used HTTPS, directly or as such a
proxy says.

CSRF: the cookie is ``SameSite=Strict``, and on top of that every state-changing call must carry
``X-Nanohost: 1`` or a JSON body (neither can be sent cross-site without a CORS preflight, which
this host never grants), and a websocket handshake from another origin is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, web
from sqlalchemy import select

from nanohost.channels import api
from nanohost.channels.base import InboundMessage
from nanohost.channels.forwarded import came_over_https, client_address
from nanohost.channels.inbox import save_for_group
from nanohost.channels.state import ChannelStore
from nanohost.channels.web_auth import (
    CHANNEL,
    COOKIE,
    PASSWORD_KEY,
    SESSION_SECONDS,
    WebAuth,
    check_password,
)
from nanohost.db.engine import reading, transaction
from nanohost.db.models import AgentGroup, ChatBinding
from nanohost.router import MAX_TEXT, session_key
from nanohost.settings import Settings
from nanohost.snapshots import Busy

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
SENDER = "web"
FILE_ONLY_TEXT = "(sent a file)"
LOGIN_DELAY = 0.5
"""Seconds a wrong password waits before its 401: guessing stays slow even from a script."""
MAX_FAILURES = 5
FAILURE_WINDOW = 600.0
"""After ``MAX_FAILURES`` wrong passwords within ``FAILURE_WINDOW`` seconds, one client IP gets 429
(without a password check) until the oldest of them is older than the window."""
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NO_PASSWORD = "the web chat has no password yet: run `nanohost setup` on the host"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_key(address: str | None) -> str:
    """Whom failed logins are counted against: the IPv4 address, or the IPv6 /64 (one host
    usually holds a whole /64, so counting single addresses would be no limit at all)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LoginLimiter:
    """Limits password guessing: one password check at a time for the whole host (each is a 16 MiB
    scrypt on a worker thread, so parallel guesses cannot crowd out other ``to_thread`` work), and
    per client IP at most ``max_failures`` wrong passwords within ``window`` seconds.

    ``clock`` is injectable so that tests can move time instead of waiting for it.
    """

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.checking = asyncio.Semaphore(1)
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        """The client's failures still inside the window (older ones are forgotten)."""
        failures = self._failures.get(client, deque())
        cutoff = self.clock() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            self._failures.pop(client, None)
        return failures

    def locked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        failures = self._recent(client)
        if len(failures) < self.max_failures:
            return 0.0
        return max(failures[-self.max_failures] + self.window - self.clock(), 0.0)

    def failed(self, client: str) -> None:
        if len(self._failures) > 10_000:  # many clients: forget those with nothing recent
            for stale in [
                c for c, times in self._failures.items() if times[-1] <= self.clock() - self.window
            ]:
                del self._failures[stale]
        failures = self._recent(client)
        failures.append(self.clock())
        self._failures[client] = failures

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


LOGIN_LIMITER = web.AppKey("login_limiter", LoginLimiter)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _auth(request: web.Request) -> WebAuth:
    return WebAuth(ChannelStore(request.app[api.ROUTER].orchestrator.ctx.db, CHANNEL))


def logged_in(request: web.Request) -> bool:
    """Whether the request carries a valid web chat session."""
    return _auth(request).check_cookie(request.cookies.get(COOKIE))


def _settings(request: web.Request) -> Settings:
    return request.app[api.ROUTER].orchestrator.ctx.settings


def _csrf_safe(request: web.Request) -> bool:
    return request.headers.get("X-Nanohost") == "1" or request.content_type == "application/json"


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def guarded(handler: Handler, *, changes_state: bool = False) -> Handler:
    """``handler`` only for a browser with a valid session (401), and, for ``changes_state``, only
    for a request a cross-site page could not have made (403)."""

    async def check(request: web.Request) -> web.StreamResponse:
        auth = _auth(request)
        if not auth.check_cookie(request.cookies.get(COOKIE)):
            return _error(401, "log in first" if auth.has_password() else NO_PASSWORD)
        if changes_state and not _csrf_safe(request):
            return _error(403, "missing the X-Nanohost: 1 header (cross-site requests are refused)")
        if not _same_origin(request):
            return _error(403, "cross-origin requests are refused")
        return await handler(request)

    return check


# --- page and login ---------------------------------------------------------------------


async def page(request: web.Request) -> web.Response:
    """The chat, the login form, or the "run setup" notice: never the chat without a session."""
    auth = _auth(request)
    if auth.check_cookie(request.cookies.get(COOKIE)):
        name, status = "chat.html", 200
    elif auth.has_password():
        name, status = "login.html", 200
    else:
        name, status = "setup.html", 503
    html = await asyncio.to_thread((WEB_DIR / name).read_text)
    return web.Response(text=html, status=status, content_type="text/html", headers=PAGE_HEADERS)


def _locked_out(seconds: float) -> web.Response:
    minutes = max(math.ceil(seconds / 60), 1)
    return web.json_response(
        {"error": f"too many failed logins; try again in {minutes} minute{'s' if minutes != 1 else ''}"},
        status=429,
        headers={"Retry-After": str(math.ceil(seconds))},
    )


async def login(request: web.Request) -> web.Response:
    """``POST /web/login`` with JSON or form ``password`` → a session cookie; wrong → 401, slowly;
    too many wrong from one IP → 429 without looking at the password (``LoginLimiter``)."""
    auth = _auth(request)
    stored = auth.store.get(PASSWORD_KEY)
    if not stored:
        return _error(503, NO_PASSWORD)
    limiter = request.app[LOGIN_LIMITER]
    proxies = _settings(request).trusted_proxies
    client = client_key(client_address(request, proxies))
    if wait := limiter.locked_for(client):
        return _locked_out(wait)
    is_json = request.content_type == "application/json"
    try:
        body = await request.json() if is_json else dict(await request.post())
    except ValueError:
        return _error(400, 'body must be JSON {"password": "..."} or a form')
    password = body.get("password") if isinstance(body, dict) else None
    ok = isinstance(password, str) and 0 < len(password) <= 1024
    async with limiter.checking:  # one scrypt at a time; parallel guesses queue here
        if wait := limiter.locked_for(client):  # the ones queued behind the fifth failure
            return _locked_out(wait)
        ok = ok and await asyncio.to_thread(check_password, stored, str(password))
        if ok:
            limiter.succeeded(client)
        else:
            limiter.failed(client)
            if limiter.locked_for(client):
                log.warning("web chat: %s locked out after %d wrong passwords", client, limiter.max_failures)
    if not ok:
        await asyncio.sleep(LOGIN_DELAY)
        log.info("web chat: wrong password from %s", client)
        return _error(401, "wrong password")
    response = (
        web.json_response({"ok": True}) if is_json else web.Response(status=303, headers={"Location": "/"})
    )
    response.set_cookie(
        COOKIE,
        auth.issue_cookie(),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=came_over_https(request, proxies),
    )
    return response


async def logout(request: web.Request) -> web.Response:
    if not _csrf_safe(request):
        return _error(403, "missing the X-Nanohost: 1 header (cross-site requests are refused)")
    response = web.json_response({"ok": True})
    secure = came_over_https(request, _settings(request).trusted_proxies)
    response.del_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="Strict")
    return response


# --- conversation -----------------------------------------------------------------------


def web_group(request: web.Request) -> AgentGroup:
    """The group in the URL when it has a web binding; 404 otherwise."""
    return api.find_group(request, CHANNEL)


async def groups(request: web.Request) -> web.Response:
    with transaction(request.app[api.ROUTER].orchestrator.ctx.db) as db:
        names = db.scalars(
            select(AgentGroup.name)
            .join(ChatBinding)
            .where(ChatBinding.channel == CHANNEL)
            .distinct()
            .order_by(AgentGroup.name)
        ).all()
    return web.json_response(
        {"groups": list(names), "max_attachment_bytes": _settings(request).max_attachment_bytes}
    )


async def get_messages(request: web.Request) -> web.Response:
    return await api.messages_response(request, web_group(request), "/web")


async def stream(request: web.Request) -> web.WebSocketResponse:
    return await api.stream_response(request, web_group(request), "/web")


async def get_file(request: web.Request) -> web.StreamResponse:
    return await api.file_response(request, web_group(request))


def _too_large(limit: int) -> web.Response:
    return _error(413, f"the file is larger than the {limit / 1024**2:g} MiB limit; nothing was sent")


async def _read_part(part: BodyPartReader, limit: int) -> bytes | None:
    """The part's bytes, or None as soon as it passes ``limit`` (never holding more than that)."""
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def web_chat(request: web.Request) -> tuple[AgentGroup, str, str | None]:
    """The group in the URL (404 without a web binding, as ``web_group``), its first web binding's
    chat id, and the session key when that binding asks for per-chat sessions: one query, since
    every posted message needs all three."""
    name = request.match_info["group"]
    with reading(request.app[api.ROUTER].orchestrator.ctx.db) as db:
        found = db.execute(
            select(AgentGroup, ChatBinding)
            .join(ChatBinding)
            .where(AgentGroup.name == name, ChatBinding.channel == CHANNEL)
            .order_by(ChatBinding.id)
            .limit(1)
        ).first()
        if found is None:
            raise api.not_found(f"no group named {name!r} with a {CHANNEL} binding")
        group, binding = found
        return group, binding.chat_id, session_key(binding)


async def post_message(request: web.Request) -> web.Response:
    """Record a message (and its file) from the web user for the group, as the API does."""
    group, chat_id, key = web_chat(request)
    limit = _settings(request).max_attachment_bytes
    text: object = None
    upload: tuple[str, bytes] | None = None
    if request.content_type == "multipart/form-data":
        slack = 4 * MAX_TEXT + 64 * 1024  # the text part and multipart framing
        if request.content_length is not None and request.content_length > limit + slack:
            return _too_large(limit)
        async for part in await request.multipart():
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "text":
                raw = await _read_part(part, 4 * MAX_TEXT)
                if raw is None:
                    return _error(413, f'"text" is longer than {MAX_TEXT} characters')
                text = raw.decode("utf-8", errors="replace")
            elif part.name == "file" and part.filename:
                data = await _read_part(part, limit)
                if data is None:
                    return _too_large(limit)
                upload = (part.filename, data)
    else:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'body must be JSON {"text": "..."} or multipart with "text" and "file"')
        text = body.get("text") if isinstance(body, dict) else None
    if upload is not None and (not isinstance(text, str) or not text.strip()):
        text = FILE_ONLY_TEXT
    if (refused := api.text_error(text)) is not None:
        return refused
    attachments: list[str] = []
    if upload is not None:
        try:
            saved = await asyncio.to_thread(save_for_group, _settings(request), group.folder, *upload)
            attachments.append(saved)
        except Busy:
            return _error(503, "a snapshot of this group is being restored; send the file again in a moment")
    inbound = InboundMessage(CHANNEL, chat_id, SENDER, str(text), attachments=attachments)
    return await api.record(request, inbound, group, key)


def add_routes(app: web.Application) -> None:
    """Register the web chat's page, assets and endpoints."""
    app[LOGIN_LIMITER] = LoginLimiter()
    app.router.add_get("/", page)
    app.router.add_static("/assets", WEB_DIR)
    app.router.add_post("/web/login", login)
    app.router.add_post("/web/logout", logout)
    app.router.add_get("/web/groups", guarded(groups))
    app.router.add_get("/web/groups/{group}/messages", guarded(get_messages))
    app.router.add_post("/web/groups/{group}/messages", guarded(post_message, changes_state=True))
    app.router.add_get("/web/groups/{group}/stream", guarded(stream))
    app.router.add_get("/web/groups/{group}/files/{message_id}/{index}", guarded(get_file))
