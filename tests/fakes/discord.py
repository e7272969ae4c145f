"""A fake Discord on 127.0.0.1: REST v10 + the Gateway websocket, on the real wire protocol.

REST: ``GET /api/v10/users/@me`` and ``/gateway/bot`` (``Authorization: Bot <token>`` checked,
401 otherwise), ``POST /channels/{id}/messages`` (JSON, or multipart ``payload_json`` +
``files[0]``), ``POST /channels/{id}/typing`` (204), with Discord's rate limit headers; attachment
downloads from ``/cdn/attachments/...``. Gateway at ``/gateway`` (and READY's
``resume_gateway_url`` at ``/gateway-resume``): op 10 Hello, op 2 Identify → READY, op 1 → op 11,
op 6 Resume → replay of the dispatches after ``seq`` then RESUMED, op 9 for an unknown session.

Everything the bot does is recorded (REST calls with JSON/multipart fields and uploaded bytes,
identifies, resumes, heartbeats, connections and the close codes the bot sent). Tests control it:
inject messages (guild/DM, mention, reply to the bot, attachments), drop the socket (optionally
refusing reconnects until ``release()``), stop ACKing heartbeats on the live connection, send op 7
/ op 9 / op 1 / a close code, and script the next REST answer (429, 403 50001, bucket exhausted).
Tests wait on ``wait_until`` and friends (a condition, bounded by a timeout), never on sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiohttp import BodyPartReader, WSMsgType, web
from aiohttp.test_utils import TestServer

TOKEN = "fake-discord-bot-token"
BOT_ID = "999000"
BOT_USER = {"id": BOT_ID, "username": "nanobot", "global_name": None, "bot": True, "discriminator": "0"}
GUILD_ID = "555000"
T = TypeVar("T")


@dataclass
class Upload:
    field: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass
class Call:
    """One REST request the bot made, and the status the fake answered."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    fields: dict[str, str] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)
    status: int = 200
    at: float = field(default_factory=time.monotonic)

    @property
    def payload(self) -> dict[str, Any]:
        """The message payload: the JSON body, or the multipart ``payload_json``."""
        if isinstance(self.json, dict):
            return self.json
        return dict(json.loads(self.fields["payload_json"])) if "payload_json" in self.fields else {}


@dataclass
class Sent:
    """A message the fake created for the bot."""

    id: str
    channel_id: str
    content: str
    payload: dict[str, Any]
    upload: Upload | None = None


@dataclass
class Scripted:
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Connection:
    """One gateway websocket the bot opened."""

    ws: web.WebSocketResponse
    path: str
    request: web.Request
    ack: bool = True
    closed_with: int | None = None
    identified: bool = False


@dataclass
class Delivered:
    seq: int
    t: str
    d: Any
    replayed: bool


class FakeDiscord:
    """The fake platform. ``await start()``; ``url`` is the API base (``.../api/v10``)."""

    def __init__(self, token: str = TOKEN, heartbeat_interval_ms: int = 200) -> None:
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.calls: list[Call] = []
        self.sent: list[Sent] = []
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.heartbeats: list[Any] = []
        self.connections: list[Connection] = []
        self.refused_connections = 0
        self.delivered: list[Delivered] = []
        self.files: dict[str, bytes] = {}
        self.session_id: str | None = None
        self.events: list[tuple[int, str, Any]] = []
        self.live: Connection | None = None
        self.identify_close_code: int | None = None
        """Close every identify with this code (4004 token refused, 4014 disallowed intents)."""
        self._holding = False
        self._scripted: dict[str, deque[Scripted]] = defaultdict(deque)
        self._ids = itertools.count(1_000_000_000_000_000_001)
        self._changed = asyncio.Condition()
        self._server: TestServer | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, port: int | None = None) -> None:
        """Serve on 127.0.0.1 (on ``port`` when given, else any free port)."""
        app = web.Application()
        app.router.add_get("/api/v10/users/@me", self._me)
        app.router.add_get("/api/v10/gateway/bot", self._gateway_bot)
        app.router.add_post("/api/v10/channels/{channel_id}/messages", self._create_message)
        app.router.add_post("/api/v10/channels/{channel_id}/typing", self._typing)
        app.router.add_get("/cdn/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway-resume", self._gateway)
        self._server = TestServer(app, host="127.0.0.1", port=port)
        await self._server.start_server()

    async def close(self) -> None:
        for conn in self.connections:
            if not conn.ws.closed:
                await conn.ws.close(code=1001)
        if self._server is not None:
            await self._server.close()

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/api/v10"

    @property
    def ws_origin(self) -> str:
        return self.origin.replace("http://", "ws://")

    # --- waiting ----------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Wait (bounded) until ``predicate()`` is truthy; returns its value."""
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_sent(self, channel_id: str, count: int = 1, timeout: float = 10.0) -> list[Sent]:
        """The first ``count`` messages the bot created in ``channel_id``."""

        def enough() -> list[Sent] | None:
            found = [s for s in self.sent if s.channel_id == channel_id]
            return found if len(found) >= count else None

        result = await self.wait_until(enough, timeout)
        assert result is not None
        return result[:count]

    async def wait_identifies(self, count: int, timeout: float = 10.0) -> None:
        await self.wait_until(lambda: len(self.identifies) >= count and self._live_ready(), timeout)

    async def wait_resumes(self, count: int, timeout: float = 10.0) -> None:
        await self.wait_until(lambda: len(self.resumes) >= count and self._live_ready(), timeout)

    async def wait_heartbeats(self, count: int, timeout: float = 10.0) -> None:
        await self.wait_until(lambda: len(self.heartbeats) >= count, timeout)

    def _live_ready(self) -> bool:
        return self.live is not None and self.live.identified

    # --- test controls: gateway -------------------------------------------------------------

    async def dispatch(self, t: str, d: Any) -> int:
        """Send a dispatch in the current session (held for replay when no one is connected)."""
        assert self.session_id is not None, "no gateway session yet"
        seq = len(self.events) + 1
        self.events.append((seq, t, d))
        if self.live is not None and self.live.identified and not self.live.ws.closed:
            await self._send_dispatch(self.live, seq, t, d, replayed=False)
        return seq

    async def inject_message(
        self,
        channel_id: str,
        content: str,
        *,
        guild: bool = True,
        mention: bool = False,
        reply_to_bot: bool = False,
        attachments: list[tuple[str, bytes]] | None = None,
        author_id: str = "111222",
        username: str = "alice",
        bot_author: bool = False,
    ) -> str:
        """A user's MESSAGE_CREATE; returns its message id."""
        data = self.message_payload(
            channel_id,
            content,
            guild=guild,
            mention=mention,
            reply_to_bot=reply_to_bot,
            attachments=attachments,
            author_id=author_id,
            username=username,
            bot_author=bot_author,
        )
        await self.dispatch("MESSAGE_CREATE", data)
        return str(data["id"])

    def message_payload(
        self,
        channel_id: str,
        content: str,
        *,
        guild: bool = True,
        mention: bool = False,
        reply_to_bot: bool = False,
        attachments: list[tuple[str, bytes]] | None = None,
        author_id: str = "111222",
        username: str = "alice",
        bot_author: bool = False,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE ``d`` as Discord sends it (API v10 message object)."""
        author: dict[str, Any] = {"id": author_id, "username": username, "global_name": None}
        if bot_author:
            author["bot"] = True
        data: dict[str, Any] = {
            "id": self._snowflake(),
            "channel_id": channel_id,
            "type": 0,
            "author": author,
            "content": f"<@{BOT_ID}> {content}" if mention else content,
            "timestamp": "2026-01-01T00:00:00.000000+00:00",
            "tts": False,
            "mention_everyone": False,
            "mentions": [BOT_USER] if mention else [],
            "mention_roles": [],
            "attachments": [self._attachment(channel_id, name, blob) for name, blob in attachments or []],
            "embeds": [],
            "pinned": False,
        }
        if guild:
            data["guild_id"] = GUILD_ID
        if reply_to_bot:
            bot_message = {
                "id": self._snowflake(),
                "channel_id": channel_id,
                "author": BOT_USER,
                "content": "hi",
            }
            data["type"] = 19
            data["message_reference"] = {"message_id": bot_message["id"], "channel_id": channel_id}
            data["referenced_message"] = bot_message
        return data

    async def drop(self, hold: bool = False) -> None:
        """Cut the live socket without a close frame; ``hold`` refuses reconnects until ``release``."""
        self._holding = hold
        conn = self.live
        self.live = None
        if conn is not None and conn.request.transport is not None:
            conn.request.transport.close()
        await self._notify()

    async def release(self) -> None:
        self._holding = False
        await self._notify()

    async def close_gateway(self, code: int) -> None:
        """Close the live socket with a close code (4004, 4009, 4014...)."""
        conn = self.live
        self.live = None
        if conn is not None:
            await conn.ws.close(code=code)

    def stop_acking(self) -> None:
        """The live connection stops ACKing heartbeats (a zombie); later connections ACK again."""
        assert self.live is not None
        self.live.ack = False

    async def send_op(self, op: int, d: Any = None) -> None:
        """Send a raw opcode (1 heartbeat request, 7 reconnect, 9 invalid session) on the live socket."""
        assert self.live is not None
        await self.live.ws.send_json({"op": op, "d": d, "s": None, "t": None})

    async def send_raw(self, text: str) -> None:
        assert self.live is not None
        await self.live.ws.send_str(text)

    # --- test controls: REST ----------------------------------------------------------------

    def script(
        self,
        kind: str,
        status: int,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``kind`` call ("messages", "typing"; "me", "gateway" at start) this way."""
        self._scripted[kind].append(Scripted(status, body, headers or {}))

    def rate_limit_next(self, kind: str = "messages", retry_after: float = 0.25) -> None:
        """Discord's 429: JSON ``retry_after`` in seconds plus the Retry-After header."""
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        headers = {"Retry-After": str(max(1, round(retry_after))), "X-RateLimit-Scope": "user"}
        self.script(kind, 429, body, {**headers, **_limit_headers(kind, 0, retry_after)})

    def missing_access_next(self, kind: str = "messages") -> None:
        self.script(kind, 403, {"message": "Missing Access", "code": 50001})

    def unknown_channel_next(self, kind: str = "messages") -> None:
        self.script(kind, 404, {"message": "Unknown Channel", "code": 10003})

    def exhaust_bucket_next(self, kind: str = "messages", reset_after: float = 0.4) -> None:
        """The next call succeeds but reports ``X-RateLimit-Remaining: 0``."""
        self.script(kind, 200, None, _limit_headers(kind, 0, reset_after))

    def messages(self, channel_id: str) -> list[Sent]:
        return [s for s in self.sent if s.channel_id == channel_id]

    def attempts(self, kind: str = "messages") -> list[Call]:
        return [c for c in self.calls if c.path.endswith("/" + kind) and c.method == "POST"]

    # --- REST handlers ----------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.token}"

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)

    async def _me(self, request: web.Request) -> web.Response:
        call = Call("GET", request.path, dict(request.headers))
        await self._record(call)
        if not self._authorized(request):
            return self._unauthorized()
        failure = self._scripted_failure("me", call)
        if failure is not None:
            return failure
        return web.json_response({**BOT_USER, "avatar": None, "flags": 0, "verified": True})

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        call = Call("GET", request.path, dict(request.headers))
        await self._record(call)
        if not self._authorized(request):
            return self._unauthorized()
        failure = self._scripted_failure("gateway", call)
        if failure is not None:
            return failure
        return web.json_response(
            {
                "url": f"{self.ws_origin}/gateway",
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 14_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    def _scripted_failure(self, kind: str, call: Call) -> web.Response | None:
        """A scripted error answer for a start call ("me", "gateway"), or None to answer normally."""
        scripted = self._scripted[kind].popleft() if self._scripted[kind] else None
        if scripted is None or scripted.status < 400:
            return None
        call.status = scripted.status
        return web.json_response(scripted.body, status=scripted.status, headers=scripted.headers)

    async def _create_message(self, request: web.Request) -> web.Response:
        call = Call("POST", request.path, dict(request.headers))
        if request.content_type == "multipart/form-data":
            await self._read_multipart(request, call)
        else:
            call.json = await request.json()
        return await self._answer(request, call, "messages")

    async def _typing(self, request: web.Request) -> web.Response:
        return await self._answer(request, Call("POST", request.path, dict(request.headers)), "typing")

    async def _answer(self, request: web.Request, call: Call, kind: str) -> web.Response:
        if not self._authorized(request):
            call.status = 401
            await self._record(call)
            return self._unauthorized()
        scripted = self._scripted[kind].popleft() if self._scripted[kind] else None
        headers = _limit_headers(kind, 4, 1.0)
        if scripted is not None:
            headers.update(scripted.headers)
            if scripted.status >= 400:
                call.status = scripted.status
                await self._record(call)
                return web.json_response(scripted.body, status=scripted.status, headers=headers)
        if kind == "typing":
            call.status = 204
            await self._record(call)
            return web.Response(status=204, headers=headers)
        sent = self._sent(request.match_info["channel_id"], call)
        self.sent.append(sent)
        await self._record(call)
        body = {"id": sent.id, "channel_id": sent.channel_id, "content": sent.content, "author": BOT_USER}
        return web.json_response(body, headers=headers)

    def _sent(self, channel_id: str, call: Call) -> Sent:
        payload = call.payload
        upload = call.files[0] if call.files else None
        return Sent(self._snowflake(), channel_id, str(payload.get("content") or ""), payload, upload)

    @staticmethod
    async def _read_multipart(request: web.Request, call: Call) -> None:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            data = await part.read()
            if part.filename is not None:
                kind = part.headers.get("Content-Type", "")
                call.files.append(Upload(part.name, part.filename, kind, bytes(data)))
            else:
                call.fields[part.name] = bytes(data).decode()

    async def _cdn(self, request: web.Request) -> web.Response:
        await self._record(Call("GET", request.path, dict(request.headers)))
        blob = self.files.get(request.path)
        if blob is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=blob, content_type="application/octet-stream")

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        await self._notify()

    def _attachment(self, channel_id: str, name: str, blob: bytes) -> dict[str, Any]:
        attachment_id = self._snowflake()
        path = f"/cdn/attachments/{channel_id}/{attachment_id}/{name}"
        self.files[path] = blob
        return {
            "id": attachment_id,
            "filename": name,
            "size": len(blob),
            "url": f"{self.origin}{path}",
            "proxy_url": f"{self.origin}{path}",
            "content_type": "application/octet-stream",
        }

    def _snowflake(self) -> str:
        return str(next(self._ids))

    # --- the gateway ------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if self._holding:
            self.refused_connections += 1
            await self._notify()
            return web.Response(status=503, text="gateway unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Connection(ws, request.path, request)
        self.connections.append(conn)
        await ws.send_json(
            {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
        )
        await self._notify()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await self._on_frame(conn, json.loads(msg.data))
        conn.closed_with = ws.close_code
        if self.live is conn:
            self.live = None
        await self._notify()
        return ws

    async def _on_frame(self, conn: Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            self.heartbeats.append(data)
            if conn.ack:
                await conn.ws.send_json({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2 and isinstance(data, dict):
            await self._identify(conn, data)
        elif op == 6 and isinstance(data, dict):
            await self._resume(conn, data)
        await self._notify()

    async def _identify(self, conn: Connection, data: dict[str, Any]) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if self.identify_close_code is not None:
            await conn.ws.close(code=self.identify_close_code)
            return
        self.session_id = uuid.uuid4().hex
        self.events = []
        conn.identified = True
        self.live = conn
        ready = {
            "v": 10,
            "user": BOT_USER,
            "guilds": [{"id": GUILD_ID, "unavailable": True}],
            "session_id": self.session_id,
            "resume_gateway_url": f"{self.ws_origin}/gateway-resume",
            "application": {"id": BOT_ID, "flags": 0},
        }
        await self.dispatch("READY", ready)

    async def _resume(self, conn: Connection, data: dict[str, Any]) -> None:
        self.resumes.append(data)
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if self.session_id is None or data.get("session_id") != self.session_id:
            await conn.ws.send_json({"op": 9, "d": False, "s": None, "t": None})
            return
        conn.identified = True
        self.live = conn
        after = data.get("seq") or 0
        for seq, t, d in list(self.events):
            if seq > after:
                await self._send_dispatch(conn, seq, t, d, replayed=True)
        await self.dispatch("RESUMED", None)

    async def _send_dispatch(self, conn: Connection, seq: int, t: str, d: Any, *, replayed: bool) -> None:
        await conn.ws.send_json({"op": 0, "s": seq, "t": t, "d": d})
        self.delivered.append(Delivered(seq, t, d, replayed))


def _limit_headers(kind: str, remaining: int, reset_after: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": f"fake-bucket-{kind}",
    }


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.close()
