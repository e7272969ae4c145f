"""The HTTP API channel: a fixed interface that scripts and the web chat build on.

Every call needs ``Authorization: Bearer $NANOHOST_API_TOKEN``.

- ``POST /api/groups/{group}/messages`` ``{"text", "sender"}`` → ``201 {"id"}``
- ``GET /api/groups/{group}/messages?after=<id>&wait=<seconds>`` → ``{"messages": [...]}``,
  long-polling up to ``wait`` seconds (at most 60) for something newer than ``after``
- websocket ``/api/groups/{group}/stream`` (``?after=<id>`` replays newer messages first): the same
  messages pushed as JSON (``{"type": "message", ...}``) plus ``{"type": "progress", "text"}`` events
  and the conversation viewer's ``{"type": "item", "turn", "phase", ...}`` events (``webviewer``)
- ``GET /api/groups/{group}/files/{message_id}/{index}``: a file a message carries: one the agent
  sent, or one a user sent (kept in the group folder's ``inbox/``, served only from there)

An id in the path or in ``?after=`` is read by ``parse_id``: anything but a whole number from 0 to
SQLite's largest id answers 404, as an id that does not exist does.

The web chat (``webchat``) serves the same conversation under ``/web`` with a session cookie
instead of the token, so the work lives in functions taking the group and URL prefix
(``messages_response``, ``stream_response``, ``file_response``, ``record``); the handlers here
only find the group and pass ``/api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from aiohttp import WSCloseCode, WSMsgType, web
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from nanohost.agent_files import kept_copy, open_inside
from nanohost.db.engine import reading, transaction
from nanohost.db.models import AgentGroup, ChatBinding, Message
from nanohost.disk import is_disk_full
from nanohost.router import MAX_TEXT, Duplicate, InboundMessage, NotQueued, Router

ROUTER = web.AppKey("router", Router)
log = logging.getLogger(__name__)
API_TOKEN = web.AppKey("api_token", str)
STREAMS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("streams")
"""The open stream sockets, closed when the host shuts down (else shutdown waits out its timeout)."""
MAX_WAIT = 60.0
MAX_ID = 2**63 - 1
"""The largest row id SQLite stores (signed 64-bit); larger ones would overflow in the query."""
PAGE = 200
CHUNK = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token check for /api/*; with no token configured the API is closed, not open."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    token = request.app.get(API_TOKEN)
    if not token:
        return _error(503, "the API is disabled: set NANOHOST_API_TOKEN")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        return _error(401, "missing or wrong bearer token")
    return await handler(request)


def message_json(message: Message, group: str, prefix: str = "/api") -> dict[str, Any]:
    """A message as the API and the web chat show it; file URLs live under the caller's ``prefix``."""
    files = []
    for i, attachment in enumerate(message.attachments):
        if isinstance(attachment, dict):  # a file the agent sent: {"path", "name"}
            name = str(attachment.get("name", ""))
        elif isinstance(attachment, str):  # a file a user sent: "inbox/x.txt" in the group folder
            name = PurePosixPath(attachment).name
        else:
            continue
        files.append({"name": name, "url": f"{prefix}/groups/{group}/files/{message.id}/{i}"})
    return {
        "id": message.id,
        "direction": message.direction,
        "text": message.text,
        "sender": message.sender,
        "status": message.status,
        "files": files,
        "created_at": message.created_at.isoformat() + "Z",
    }


def find_group(request: web.Request, channel: str | None = None) -> AgentGroup:
    """The group named in the URL, or 404; with ``channel``, only a group bound on that channel
    (the web chat may use only groups with a web binding)."""
    router = request.app[ROUTER]
    name = request.match_info["group"]
    query = select(AgentGroup).where(AgentGroup.name == name)
    if channel is not None:
        query = query.join(ChatBinding).where(ChatBinding.channel == channel)
    with reading(router.orchestrator.ctx.db) as db:
        group = db.scalar(query.limit(1))
    if group is None:
        where = f" with a {channel} binding" if channel else ""
        raise not_found(f"no group named {name!r}{where}")
    return group


def _messages_after(request: web.Request, group: AgentGroup, after: int, prefix: str) -> list[dict[str, Any]]:
    with reading(request.app[ROUTER].orchestrator.ctx.db) as db:
        rows = db.scalars(
            select(Message)
            .where(Message.group_id == group.id, Message.id > after)
            .order_by(Message.id)
            .limit(PAGE)
        ).all()
        return [message_json(m, group.name, prefix) for m in rows]


def text_error(text: object) -> web.Response | None:
    """Why ``text`` cannot be a message (400/413), or None when it can."""
    if not isinstance(text, str) or not text.strip():
        return _error(400, '"text" must be a non-empty string')
    if len(text) > MAX_TEXT:
        return _error(413, f'"text" is longer than {MAX_TEXT} characters')
    return None


async def record(
    request: web.Request, inbound: InboundMessage, group: AgentGroup, chat_key: str | None = None
) -> web.Response:
    """Hand ``inbound`` to the router: ``201 {"id"}``, or 409 for a repeated client id.

    A database that stays locked answers 503 with ``Retry-After`` (nothing was recorded: send it
    again); a message recorded but not yet queued answers 202 with its id (the session's next wake
    queues it, so sending it again would answer it twice)."""
    try:
        message_id = await request.app[ROUTER].to_loaded_group(group, inbound, chat_key=chat_key)
    except Duplicate as exc:
        return _error(409, str(exc))
    except NotQueued as exc:
        return web.json_response(
            {"id": exc.message_id, "queued": False, "detail": f"{exc}; it is answered at the next wake"},
            status=202,
        )
    except OperationalError as exc:
        if is_disk_full(exc):
            raise  # the disk guard answers 507
        log.warning("API message refused: database unavailable (%s)", exc)
        return web.json_response(
            {"error": "the database is busy; nothing was recorded, send the message again"},
            status=503,
            headers={"Retry-After": "2"},
        )
    return web.json_response({"id": message_id}, status=201)


async def post_message(request: web.Request) -> web.Response:
    group = find_group(request)
    try:
        body = await request.json()
    except ValueError:
        return _error(400, 'body must be JSON: {"text": "...", "sender": "..."}')
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    text, sender = body.get("text"), body.get("sender", "api")
    if (refused := text_error(text)) is not None:
        return refused
    if not isinstance(sender, str) or not 0 < len(sender) <= 128:
        return _error(400, '"sender" must be a string of 1-128 characters')
    platform_id = body.get("client_id")
    if platform_id is not None and not isinstance(platform_id, str):
        return _error(400, '"client_id" must be a string')
    return await record(
        request, InboundMessage("api", group.name, sender, str(text), platform_message_id=platform_id), group
    )


def parse_id(raw: str | None) -> int | None:
    """A message id or index from a URL or query: ASCII digits only (no sign, space or ``_``),
    0 to ``MAX_ID``; ``None`` for anything else."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw.lstrip("0")) > len(str(MAX_ID)):
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


def not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=json.dumps({"error": message}), content_type="application/json")


def _after(request: web.Request, default: int) -> int:
    """``?after=<id>``: a message id as ``parse_id`` reads it (else 404, as for an id in the path)."""
    raw = request.query.get("after")
    if raw is None:
        return default
    after = parse_id(raw)
    if after is None:
        raise not_found(f"after must be a message id (0 to {MAX_ID})")
    return after


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be a number"}), content_type="application/json"
        ) from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be between {low:g} and {high:g}"}),
            content_type="application/json",
        )
    return value


async def messages_response(request: web.Request, group: AgentGroup, prefix: str) -> web.Response:
    """``GET …/messages?after=&wait=``: messages newer than ``after``, long-polling up to ``wait`` s."""
    after = _after(request, 0)
    wait = _number(request, "wait", 0, 0, MAX_WAIT)
    bus = request.app[ROUTER].orchestrator.ctx.bus
    queue = bus.subscribe(group.id)  # subscribe before reading, so nothing slips in between
    try:
        messages = _messages_after(request, group, after, prefix)
        deadline = time.monotonic() + wait
        while not messages and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    event = await queue.get()
                if event.get("type") == "closing":  # the host is shutting down: answer now
                    break
                if event.get("type") == "message":
                    messages = _messages_after(request, group, after, prefix)
    finally:
        bus.unsubscribe(group.id, queue)
    return web.json_response({"messages": messages})


async def stream_response(request: web.Request, group: AgentGroup, prefix: str) -> web.WebSocketResponse:
    """Websocket ``…/stream?after=``: replay newer messages, then push messages and progress."""
    after = _after(request, -1)  # without it: no replay, only what comes next
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    bus = request.app[ROUTER].orchestrator.ctx.bus
    queue = bus.subscribe(group.id)
    last = after
    streams = request.app.get(STREAMS, set())
    streams.add(ws)
    try:
        if after >= 0:
            for message in _messages_after(request, group, after, prefix):
                await ws.send_json({"type": "message", **message})
                last = message["id"]
        else:
            with reading(request.app[ROUTER].orchestrator.ctx.db) as db:
                newest = db.scalar(
                    select(Message.id).where(Message.group_id == group.id).order_by(Message.id.desc())
                )
            last = newest or 0
        receiver = asyncio.ensure_future(ws.receive())
        getter = asyncio.ensure_future(queue.get())
        try:
            while not ws.closed:
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    events = [getter.result()]
                    while not queue.empty():  # everything already waiting, taken in one go
                        events.append(queue.get_nowait())
                    getter = asyncio.ensure_future(queue.get())
                    read = False
                    for event in events:
                        if event.get("type") == "message":
                            if read:  # published before that read, so it found this hint's row
                                continue
                            read = True  # one read for every hint taken (a reply comes with its acks')
                            for message in _messages_after(request, group, last, prefix):
                                await ws.send_json({"type": "message", **message})
                                last = message["id"]
                        elif event.get("type") in ("progress", "item", "missed"):  # item: live feed
                            await ws.send_json(event)
                if receiver in done:
                    if receiver.result().type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                        break
                    receiver = asyncio.ensure_future(ws.receive())
        except ConnectionResetError:  # the client went away while an event was being sent
            pass
        finally:  # also when the host shuts down under an open socket: no task is left pending
            receiver.cancel()
            getter.cancel()
    finally:
        streams.discard(ws)
        bus.unsubscribe(group.id, queue)
    return ws


async def close_streams(app: web.Application) -> None:
    """On shutdown, close every open stream (1001 "going away") and answer every long poll: a
    browser reconnects at once to the next host, and shutdown does not wait for either."""
    if ROUTER in app:  # long polls answer at once too
        app[ROUTER].orchestrator.ctx.bus.broadcast({"type": "closing"})
    streams = list(app.get(STREAMS, ()))
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"host shutting down") for ws in streams),
        return_exceptions=True,
    )


async def file_response(request: web.Request, group: AgentGroup) -> web.StreamResponse:
    """``…/files/{message_id}/{index}``: a file a message of ``group`` carries, as a download."""
    message_id, index = parse_id(request.match_info["message_id"]), parse_id(request.match_info["index"])
    if message_id is None or index is None:
        return _error(404, "no such file")
    with transaction(request.app[ROUTER].orchestrator.ctx.db) as db:
        message = db.get(Message, message_id)
        attachments = list(message.attachments) if message and message.group_id == group.id else []
    if not 0 <= index < len(attachments) or not isinstance(attachments[index], (dict, str)):
        return _error(404, "no such file")
    attachment = attachments[index]
    if isinstance(attachment, str):
        folder = request.app[ROUTER].orchestrator.ctx.settings.groups_dir / group.folder
        return await _inbox_file_response(request, folder, attachment)
    outbox = request.app[ROUTER].orchestrator.ctx.settings.data_dir / "outbox"
    path = await asyncio.to_thread(kept_copy, Path(str(attachment.get("path", ""))), outbox)
    if path is None:
        return _error(404, "the file is no longer there")
    name = str(attachment.get("name") or path.name)
    return web.FileResponse(path, headers={"Content-Disposition": _disposition(name)})


def _disposition(name: str) -> str:
    """``Content-Disposition`` for a download named ``name``, quoted so no name can break the header."""
    if name.isascii() and name.isprintable() and not set(name) & set('"\\;%'):
        return f'attachment; filename="{name}"'
    return f"attachment; filename*=UTF-8''{quote(name, safe='')}"


def open_inbox_file(folder: Path, relative: str) -> int | None:
    """An open descriptor of the regular file ``relative`` (``inbox/…``) under the group folder,
    or None when it is missing or lies anywhere but inside the folder's ``inbox/``.

    The agent owns the folder and may plant links (``inbox`` itself, a directory in it, or the
    file), so the name is checked and the file actually opened must really be inside
    ``<real group folder>/inbox`` (``inbox`` itself is deliberately not resolved).
    """
    parts = PurePosixPath(relative).parts
    if len(parts) < 2 or parts[0] != "inbox" or ".." in parts or "\\" in relative:
        return None
    try:
        return open_inside(folder.joinpath(*parts), [folder.resolve() / "inbox"])
    except ValueError:
        return None


async def _inbox_file_response(request: web.Request, folder: Path, relative: str) -> web.StreamResponse:
    fd = await asyncio.to_thread(open_inbox_file, folder, relative)
    if fd is None:
        return _error(404, "the file is no longer there")
    with os.fdopen(fd, "rb") as handle:
        response = web.StreamResponse(
            headers={
                "Content-Disposition": _disposition(PurePosixPath(relative).name),
                "Content-Type": "application/octet-stream",
                "X-Content-Type-Options": "nosniff",
            }
        )
        left = response.content_length = os.fstat(fd).st_size
        await response.prepare(request)
        while left > 0 and (chunk := await asyncio.to_thread(handle.read, min(CHUNK, left))):
            await response.write(chunk)
            left -= len(chunk)
        await response.write_eof()
    return response


async def get_messages(request: web.Request) -> web.Response:
    return await messages_response(request, find_group(request), "/api")


async def stream(request: web.Request) -> web.WebSocketResponse:
    return await stream_response(request, find_group(request), "/api")


async def get_file(request: web.Request) -> web.StreamResponse:
    return await file_response(request, find_group(request))


def add_routes(app: web.Application) -> None:
    app[STREAMS] = set()
    app.on_shutdown.append(close_streams)
    app.router.add_post("/api/groups/{group}/messages", post_message)
    app.router.add_get("/api/groups/{group}/messages", get_messages)
    app.router.add_get("/api/groups/{group}/stream", stream)
    app.router.add_get("/api/groups/{group}/files/{message_id}/{index}", get_file)
