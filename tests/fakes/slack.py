"""A fake Slack on 127.0.0.1: the Web API methods the adapter uses and a Socket Mode websocket.

It speaks Slack's real wire protocol: ``POST /api/<method>`` with ``Authorization: Bearer``,
JSON (``application/json``) or form bodies as each method accepts them, answers ``{"ok": ...}``
with HTTP 200 (``invalid_auth``, ``channel_not_found``, ``ratelimited`` ...) or HTTP 429 with a
``Retry-After`` header. ``apps.connections.open`` (app-level token only) hands out a single-use
``ws://`` URL on this server; the websocket sends ``hello`` and then Socket Mode envelopes, and
records every ``{"envelope_id"}`` ack and how long it took. Files go up through
``files.getUploadURLExternal`` → ``POST`` to the upload URL (multipart ``file`` field or a raw
body) → ``files.completeUploadExternal``; private files come down only with the bot token (any
other caller gets the HTML login page, as on Slack).

Tests drive it with ``message``/``mention``/``add_file`` (event builders), ``inject`` (send an
envelope), ``disconnect``/``drop`` (connection trouble), ``fail_next`` (429 or an error code for
the next call of a method), ``refuse_next_link`` (the next websocket handshake fails) and wait
with ``wait_for``/``wait_connections``/``wait_acked``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
BOT_USER = "U0BOT"
BOT_ID = "B0BOT"
TEAM = "T0TEAM"
USER = "U0USER1"

BOT_METHODS = {"auth.test", "chat.postMessage", "files.getUploadURLExternal", "files.completeUploadExternal"}
JSON_METHODS = {"auth.test", "chat.postMessage", "files.completeUploadExternal", "apps.connections.open"}
"""Methods Slack accepts JSON bodies for; ``files.getUploadURLExternal`` takes form params only."""


@dataclass
class Call:
    """One Web API call the bot made."""

    method: str
    token: str | None
    params: dict[str, Any]
    content_type: str


@dataclass
class Upload:
    """A file shared with ``files.completeUploadExternal`` (bytes from the upload URL)."""

    file_id: str
    filename: str
    title: str | None
    data: bytes
    channel_id: str | None
    initial_comment: str | None
    thread_ts: str | None
    upload_content_type: str


@dataclass
class Failure:
    """What the next call of a method answers instead of succeeding."""

    status: int = 200
    error: str | None = None
    retry_after: int | None = None


@dataclass
class _Reserved:
    filename: str
    length: int
    data: bytes | None = None
    content_type: str = ""


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    number: int
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class FakeSlack:
    """The fake. ``url`` is the Web API base (``http://127.0.0.1:<port>/api``)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.uploads: list[Upload] = []
        self.posted: list[dict[str, Any]] = []
        """Every message ``chat.postMessage`` accepted, as the fake stored it (with its ``ts``)."""
        self.sent_envelopes: dict[str, float] = {}
        self.acks: dict[str, float] = {}
        """envelope id → seconds from sending the envelope to receiving its ack."""
        self.connections = 0
        self.downloads: list[tuple[str, str | None]] = []
        """(file id, bearer token) of every private file download attempt."""
        self._failures: dict[str, deque[Failure]] = defaultdict(deque)
        self._tickets: set[str] = set()
        self._reserved: dict[str, _Reserved] = {}
        self._served: dict[str, tuple[str, bytes]] = {}
        self._socket: _Socket | None = None
        self._refused_links: deque[int] = deque()
        self._sockets: list[_Socket] = []
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._clock = itertools.count(100)
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/link/", self._link)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        self._server = TestServer(app, host="127.0.0.1")

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return str(self._server.make_url("/api"))

    async def start(self) -> None:
        await self._server.start_server()

    async def close(self) -> None:
        for socket in self._sockets:
            await socket.ws.close()
        await self._server.close()

    # --- test controls: events ------------------------------------------------------------

    def ts(self) -> str:
        """A fresh, increasing Slack timestamp (``seconds.micro``)."""
        return f"1700000000.{next(self._clock):06d}"

    def message(
        self,
        text: str,
        *,
        channel: str = "C0123",
        user: str = USER,
        ts: str | None = None,
        thread_ts: str | None = None,
        parent_user_id: str | None = None,
        channel_type: str = "channel",
        files: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A ``message`` event as Slack sends it (``files`` makes it a ``file_share``)."""
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": ts or self.ts(),
            "team": TEAM,
            "channel_type": channel_type,
            "client_msg_id": str(uuid.uuid4()),
        }
        event["event_ts"] = event["ts"]
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = parent_user_id or user
        if files is not None:
            event["subtype"] = "file_share"
            event["files"] = files
        event.update(extra)
        return event

    def mention(
        self, text: str, *, channel: str = "C0123", ts: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """An ``app_mention`` event (Slack sends it alongside the ``message`` event, same ts)."""
        event = self.message(text, channel=channel, ts=ts, **extra)
        event["type"] = "app_mention"
        for key in ("channel_type", "client_msg_id"):
            event.pop(key, None)
        return event

    def add_file(self, name: str, data: bytes, *, mimetype: str = "text/plain") -> dict[str, Any]:
        """Serve ``data`` as a private file and return its ``files[]`` entry for a message event."""
        file_id = f"F{next(self._ids):08d}"
        self._served[file_id] = (name, data)
        base = str(self._server.make_url(f"/files-pri/{file_id}"))
        return {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": "text",
            "size": len(data),
            "mode": "hosted",
            "url_private": f"{base}/{name}",
            "url_private_download": f"{base}/{name}?download=1",
        }

    async def inject(self, event: dict[str, Any], *, timeout: float = 10.0) -> str:
        """Send an ``events_api`` envelope carrying ``event`` on the live socket; returns its id."""
        payload = {
            "token": "verification-token",
            "team_id": TEAM,
            "api_app_id": "A0APP",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{next(self._ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
            "is_ext_shared_channel": False,
        }
        envelope = {"type": "events_api", "accepts_response_payload": False, "payload": payload}
        return await self.send_envelope(envelope, timeout=timeout)

    async def send_envelope(self, envelope: dict[str, Any], *, timeout: float = 10.0) -> str:
        """Send any envelope (``slash_commands``, ``interactive``...), adding an envelope id."""
        envelope_id = str(uuid.uuid4())
        socket = await self._live(timeout)
        self.sent_envelopes[envelope_id] = time.monotonic()  # before sending: the ack may be quick
        await socket.ws.send_str(json.dumps({"envelope_id": envelope_id, "retry_attempt": 0, **envelope}))
        return envelope_id

    async def send_raw(self, text: str, timeout: float = 10.0) -> None:
        """Send a raw text frame (malformed-payload tests) on the live socket."""
        socket = await self._live(timeout)
        await socket.ws.send_str(text)

    async def disconnect(self, reason: str = "refresh_requested", *, timeout: float = 10.0) -> None:
        """Ask the client to reconnect, as Slack does before it closes a connection."""
        socket = await self._live(timeout)
        await socket.ws.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})

    async def drop(self, *, timeout: float = 10.0) -> None:
        """Close the live websocket without warning (a network drop)."""
        socket = await self._live(timeout)
        self._socket = None
        await socket.ws.close(code=1011)

    # --- test controls: failures ----------------------------------------------------------

    def fail_next(
        self, method: str, *, status: int = 200, error: str | None = None, retry_after: int | None = None
    ) -> None:
        """The next call of ``method`` answers HTTP ``status`` (429: with Retry-After) or ``ok: false``."""
        self._failures[method].append(Failure(status=status, error=error, retry_after=retry_after))

    def refuse_next_link(self, status: int = 503) -> None:
        """The next Socket Mode websocket handshake answers HTTP ``status`` instead of upgrading."""
        self._refused_links.append(status)

    # --- test controls: waiting -----------------------------------------------------------

    async def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """The calls of ``method`` once at least ``count`` have arrived."""
        await self._wait(lambda: len(self.calls_of(method)) >= count, timeout)
        return self.calls_of(method)

    async def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` websocket connections have been greeted with ``hello``."""
        await self._wait(lambda: self.connections >= count, timeout)

    async def wait_acked(self, envelope_id: str, timeout: float = 10.0) -> float:
        """Seconds the ack took, once it arrived."""
        await self._wait(lambda: envelope_id in self.acks, timeout)
        return self.acks[envelope_id]

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def posts(self, channel: str | None = None) -> list[dict[str, Any]]:
        """``chat.postMessage`` params, optionally only for one channel."""
        return [
            c.params
            for c in self.calls_of("chat.postMessage")
            if channel is None or c.params.get("channel") == channel
        ]

    def unacked(self) -> list[str]:
        return [e for e in self.sent_envelopes if e not in self.acks]

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _live(self, timeout: float) -> _Socket:
        await self._wait(lambda: self._socket is not None and not self._socket.ws.closed, timeout)
        assert self._socket is not None
        return self._socket

    # --- the Web API ----------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        token = _bearer(request)
        params = await self._params(request, method)
        self.calls.append(Call(method, token, params, request.content_type))
        await self._notify()
        failure = self._failures[method].popleft() if self._failures[method] else None
        if failure is not None and failure.status != 200:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=failure.status, headers=headers
            )
        if failure is not None:
            return _error(failure.error or "internal_error")
        wanted = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token is None:
            return _error("not_authed")
        if token != wanted:
            # a real token of the other kind is the wrong type; anything else is not a token at all
            return _error("not_allowed_token_type" if token in (BOT_TOKEN, APP_TOKEN) else "invalid_auth")
        handler = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }.get(method)
        if handler is None:
            return _error("unknown_method")
        return await handler(params)

    async def _params(self, request: web.Request, method: str) -> dict[str, Any]:
        """The call's arguments as Slack reads them (JSON only for methods that accept JSON)."""
        if request.content_type == "application/json":
            if method not in JSON_METHODS:
                return {}  # Slack ignores JSON bodies here, so required arguments are "missing"
            body = await request.json()
            return dict(body) if isinstance(body, dict) else {}
        return dict(await request.post())

    async def _auth_test(self, params: dict[str, Any]) -> web.Response:
        return _ok(
            url="https://fake.slack.com/",
            team="Fake Team",
            user="nanohost",
            team_id=TEAM,
            user_id=BOT_USER,
            bot_id=BOT_ID,
            is_enterprise_install=False,
        )

    async def _connections_open(self, params: dict[str, Any]) -> web.Response:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        url = self._server.make_url(f"/link/?ticket={ticket}&app_id=A0APP")
        return _ok(url=str(url).replace("http://", "ws://", 1))

    async def _post_message(self, params: dict[str, Any]) -> web.Response:
        channel, text = params.get("channel"), params.get("text")
        if not channel:
            return _error("channel_not_found")
        if not text:
            return _error("no_text")
        if len(str(text)) > 40_000:
            return _error("msg_too_long")
        ts = self.ts()
        message = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "text": text, "ts": ts}
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        self.posted.append({"channel": channel, **message})
        return _ok(channel=channel, ts=ts, message=message)

    async def _get_upload_url(self, params: dict[str, Any]) -> web.Response:
        filename, length = params.get("filename"), params.get("length")
        if not filename or not str(length or "").isdigit():
            return _error("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self._reserved[file_id] = _Reserved(str(filename), int(str(length)))
        upload_url = str(self._server.make_url(f"/upload/v1/{file_id}"))
        return _ok(upload_url=upload_url, file_id=file_id)

    async def _complete_upload(self, params: dict[str, Any]) -> web.Response:
        files = params.get("files")
        if isinstance(files, str):  # form encoding: a JSON string
            files = json.loads(files)
        if not isinstance(files, list) or not files:
            return _error("invalid_arguments")
        for entry in files:
            reserved = self._reserved.get(str(entry.get("id")))
            if reserved is None or reserved.data is None:
                return _error("file_not_found")
            self.uploads.append(
                Upload(
                    file_id=str(entry["id"]),
                    filename=reserved.filename,
                    title=entry.get("title"),
                    data=reserved.data,
                    channel_id=params.get("channel_id"),
                    initial_comment=params.get("initial_comment"),
                    thread_ts=params.get("thread_ts"),
                    upload_content_type=reserved.content_type,
                )
            )
        await self._notify()
        return _ok(files=[{"id": e["id"], "title": e.get("title")} for e in files])

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL: a multipart ``file`` field or the raw bytes, of the reserved length."""
        reserved = self._reserved.get(request.match_info["file_id"])
        if reserved is None:
            return web.Response(status=404, text="not found")
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            field_value = form.get("file")
            if not isinstance(field_value, web.FileField):
                return web.Response(status=400, text="no file field")
            data = field_value.file.read()
        else:
            data = await request.read()
        if len(data) != reserved.length:
            return web.Response(status=400, text=f"length mismatch: {len(data)} != {reserved.length}")
        reserved.data, reserved.content_type = data, request.content_type
        return web.Response(text=f"OK - {len(data)}")

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """A private file: the bytes for the bot token, Slack's HTML login page for anyone else."""
        file_id = request.match_info["file_id"]
        token = _bearer(request)
        self.downloads.append((file_id, token))
        await self._notify()
        if token != BOT_TOKEN:
            return web.Response(text="<html><body>Sign in to Slack</body></html>", content_type="text/html")
        served = self._served.get(file_id)
        if served is None:
            return web.Response(status=404, text="file not found")
        return web.Response(body=served[1], content_type="application/octet-stream")

    # --- the Socket Mode websocket --------------------------------------------------------

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            raise web.HTTPUnauthorized(text="invalid ticket")
        self._tickets.discard(ticket)  # tickets are single-use, as on Slack
        if self._refused_links:
            return web.Response(status=self._refused_links.popleft(), text="link refused")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        socket = _Socket(ws, self.connections)
        self._socket = socket
        self._sockets.append(socket)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                "connection_info": {"app_id": "A0APP"},
            }
        )
        await self._notify()
        async for frame in ws:
            await self._on_frame(frame.data if isinstance(frame.data, str) else "")
        if self._socket is socket:
            self._socket = None
        await self._notify()
        return ws

    async def _on_frame(self, data: str) -> None:
        """Record acks (``{"envelope_id": ...}``) with how long after sending they came."""
        try:
            frame = json.loads(data)
        except ValueError:
            return
        envelope_id = frame.get("envelope_id") if isinstance(frame, dict) else None
        if isinstance(envelope_id, str) and envelope_id in self.sent_envelopes:
            self.acks.setdefault(envelope_id, time.monotonic() - self.sent_envelopes[envelope_id])
            await self._notify()


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    return header.removeprefix("Bearer ").strip() or None


def _ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def _error(code: str) -> web.Response:
    return web.json_response({"ok": False, "error": code})


@asynccontextmanager
async def running() -> AsyncIterator[FakeSlack]:
    """A started fake, closed afterwards."""
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
