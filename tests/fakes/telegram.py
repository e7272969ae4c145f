"""A fake Telegram Bot API on 127.0.0.1, speaking the real wire protocol.

Paths are the Bot API's (``/bot<token>/<method>``, downloads at ``/file/bot<token>/<file_path>``),
parameters arrive as JSON, form fields, multipart or the query string, and every answer is
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description": ...,
"parameters": {...}}`` with the matching HTTP status, as Telegram sends them.

``getUpdates`` is a real long poll: the request is held until an update is queued or its
``timeout`` passes, and an ``offset`` confirms (drops) every update below it, so an adapter that
does not advance its offset gets the same updates again, as on Telegram.

Test controls: ``inject_message`` (groups or private chats, @-mentions with correct UTF-16
entity offsets, replies to the bot, documents, photos), ``inject_raw`` (malformed updates),
``fail_next`` (one failing answer, e.g. 429 with ``retry_after``), ``fail_chat`` (every send to a
chat fails, e.g. 403 kicked), ``migrate_chat`` (group → supergroup upgrade), ``drop_polls`` (cut
the connection of pending long polls), ``conflict_next_poll`` (409), ``unreachable`` (cut every
request's connection). Every call is recorded in
``calls`` and ``wait_for`` waits for calls without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

TOKEN = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz"
BOT_ID = 7000001
BOT_USERNAME = "nano_host_bot"
SEND_METHODS = ("sendMessage", "sendDocument", "sendPhoto", "sendChatAction")

KICKED = (403, "Forbidden: bot was kicked from the group chat")
CHAT_NOT_FOUND = (400, "Bad Request: chat not found")
UPGRADED = (400, "Bad Request: group chat was upgraded to a supergroup chat")


@dataclass
class Upload:
    """A file the bot uploaded (multipart field)."""

    filename: str
    data: bytes
    content_type: str


@dataclass
class Call:
    """One request the bot made: its method, parameters and uploaded files, and our status."""

    method: str
    params: dict[str, Any]
    files: dict[str, Upload] = field(default_factory=dict)
    status: int = 200

    @property
    def chat_id(self) -> str:
        return str(self.params.get("chat_id"))


@dataclass
class Failure:
    status: int
    description: str
    parameters: dict[str, Any] | None = None


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram entity offsets."""
    return len(text.encode("utf-16-le")) // 2


class FakeTelegram:
    """The fake Bot API server plus the controls tests use."""

    def __init__(self, token: str = TOKEN, bot_id: int = BOT_ID, bot_username: str = BOT_USERNAME) -> None:
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.files: dict[str, StoredFile] = {}
        self.downloads: list[str] = []
        self._update_ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._failures: dict[str, list[Failure]] = {}
        self._chat_failures: dict[str, Failure] = {}
        self._drops = 0
        self._closing = False
        self._conflicts = 0
        self.unreachable = False
        """While True every API request has its connection cut, as when Telegram cannot be reached."""
        self._changed = asyncio.Event()
        self._server: TestServer | None = None

    # --- server ------------------------------------------------------------------------------

    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=60 * 1024**2)  # the Bot API takes 50 MB uploads
        app.router.add_route("*", "/file/bot{token}/{path:.+}", self._download)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def close(self) -> None:
        """Answer pending long polls at once (so shutdown does not wait them out), then stop."""
        self._closing = True
        self._notify()
        if self._server is not None:
            await self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    # --- controls ----------------------------------------------------------------------------

    def inject_message(
        self,
        chat_id: int | str,
        text: str | None = None,
        *,
        chat_type: str | None = None,
        user_id: int = 501,
        username: str | None = "alice",
        first_name: str = "Alice",
        is_bot: bool = False,
        mention: bool = False,
        reply_to_bot: bool = False,
        document: tuple[str, bytes] | None = None,
        photo: bytes | None = None,
        thread_id: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Queue a user's message; ``mention`` prefixes ``@botname`` with a proper entity.

        With ``document``/``photo`` the text becomes the caption, as in Telegram.
        """
        chat = int(chat_id)
        kind = chat_type or ("private" if chat > 0 else "supergroup")
        sender: dict[str, Any] = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
        if username is not None:
            sender["username"] = username
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "from": sender,
            "chat": {"id": chat, "type": kind, **({"first_name": first_name} if kind == "private" else {})},
            "date": int(time.time()),
        }
        if kind != "private":
            message["chat"]["title"] = "Team"
        body = text or ""
        entities: list[dict[str, Any]] = []
        if mention:
            handle = f"@{self.bot_username}"
            entities.append({"type": "mention", "offset": 0, "length": utf16_len(handle)})
            body = f"{handle} {body}" if body else handle
        files = document is not None or photo is not None
        if body or not files:
            message["caption" if files else "text"] = body
            if entities:
                message["caption_entities" if files else "entities"] = entities
        if document is not None:
            stored = self.add_file(document[1], f"documents/{document[0]}")
            message["document"] = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_name": document[0],
                "mime_type": "application/octet-stream",
                "file_size": len(document[1]),
            }
        if photo is not None:
            message["photo"] = self._photo_sizes(photo)
        if reply_to_bot:
            message["reply_to_message"] = self._bot_message(chat, kind, "an earlier answer")
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        message.update(extra or {})
        return self.inject_raw({"message": message})

    def inject_raw(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update as given (``update_id`` added when missing); wakes pending polls."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        self.updates.append(update)
        self._notify()
        return update

    def migrate_chat(self, old: int | str, new: int | str, *, notify: bool = True) -> dict[str, Any] | None:
        """The group ``old`` becomes supergroup ``new``: sends to ``old`` answer 400 with
        ``migrate_to_chat_id``, and (with ``notify``) both service messages are queued. Returns the
        old chat's service message update."""
        self._chat_failures[str(old)] = Failure(*UPGRADED, {"migrate_to_chat_id": int(new)})
        if not notify:  # the bot has not polled the service messages yet: only sends learn of it
            self._notify()
            return None
        base = {"from": {"id": 501, "is_bot": False, "first_name": "Alice"}, "date": int(time.time())}
        update = self.inject_raw(
            {
                "message": {
                    **base,
                    "message_id": next(self._message_ids),
                    "chat": {"id": int(old), "type": "group", "title": "Team"},
                    "migrate_to_chat_id": int(new),
                }
            }
        )
        self.inject_raw(
            {
                "message": {
                    **base,
                    "message_id": next(self._message_ids),
                    "chat": {"id": int(new), "type": "supergroup", "title": "Team"},
                    "migrate_from_chat_id": int(old),
                }
            }
        )
        return update

    def add_file(self, data: bytes, file_path: str) -> StoredFile:
        """Serve ``data`` through getFile + download."""
        n = next(self._file_ids)
        stored = StoredFile(f"FILEID{n:04d}-AgADBAAD", f"UNQ{n:04d}", file_path, data)
        self.files[stored.file_id] = stored
        return stored

    def fail_next(
        self, method: str, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        """The next call of ``method`` gets this error (queued in order); later calls succeed."""
        self._failures.setdefault(method, []).append(Failure(status, description, parameters))

    def fail_next_with_429(self, method: str, retry_after: int = 1) -> None:
        self.fail_next(
            method, 429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
        )

    def fail_chat(self, chat_id: int | str, status: int, description: str) -> None:
        """Every send to ``chat_id`` fails this way (a kicked bot stays kicked)."""
        self._chat_failures[str(chat_id)] = Failure(status, description)

    def drop_polls(self) -> None:
        """Cut the TCP connection of every pending long poll (as a flaky network would)."""
        self._drops += 1
        self._notify()

    def conflict_next_poll(self) -> None:
        """The next getUpdates answers 409 Conflict, as when another poller holds the bot."""
        self._conflicts += 1

    # --- inspection --------------------------------------------------------------------------

    def calls_of(self, method: str, chat_id: int | str | None = None) -> list[Call]:
        return [
            c for c in self.calls if c.method == method and (chat_id is None or c.chat_id == str(chat_id))
        ]

    def texts_to(self, chat_id: int | str) -> list[str]:
        """Texts the bot successfully sent to the chat, in order."""
        return [str(c.params["text"]) for c in self.calls_of("sendMessage", chat_id) if c.status == 200]

    async def wait_for(
        self, method: str, count: int = 1, *, chat_id: int | str | None = None, timeout: float = 10.0
    ) -> list[Call]:
        """Wait until at least ``count`` calls of ``method`` (to ``chat_id``) were made."""
        await self._wait(lambda: len(self.calls_of(method, chat_id)) >= count, timeout)
        return self.calls_of(method, chat_id)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked after every call and control)."""
        await self._wait(predicate, timeout)

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    # --- handlers ----------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        if self.unreachable:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        params, files = await _read_params(request)
        call = Call(method, params, files)
        failure = self._failure_for(call)
        if failure is None and method == "getUpdates":
            return await self._get_updates(call, request)
        handler = self._handlers().get(method)
        if failure is None and handler is None:
            failure = Failure(404, "Not Found")
        result = handler(call) if failure is None and handler is not None else failure
        if isinstance(result, Failure):
            call.status = result.status
            self._record(call)
            return _error(result.status, result.description, result.parameters)
        self._record(call)
        return _ok(result)

    def _handlers(self) -> dict[str, Any]:
        return {
            "getMe": self._get_me,
            "getFile": self._get_file,
            "sendMessage": self._send_message,
            "sendDocument": self._send_media,
            "sendPhoto": self._send_media,
            "sendChatAction": self._send_chat_action,
        }

    def _failure_for(self, call: Call) -> Failure | None:
        queued = self._failures.get(call.method)
        if queued:
            return queued.pop(0)
        if call.method == "getUpdates" and self._conflicts:
            self._conflicts -= 1
            return Failure(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        if call.method in SEND_METHODS:
            return self._chat_failures.get(call.chat_id)
        return None

    def _get_me(self, call: Call) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Nano",
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _get_updates(self, call: Call, request: web.Request) -> web.StreamResponse:
        """Hold the poll until an update at or past ``offset`` exists, the timeout, or a drop."""
        offset = int(call.params.get("offset") or 0)
        if offset > 0:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        limit = int(call.params.get("limit") or 100)
        drops = self._drops
        self._record(call)
        try:
            await self._wait(
                lambda: bool(self.updates) or self._drops != drops or self._closing,
                float(call.params.get("timeout") or 0),
            )
        except TimeoutError:
            pass
        if self._drops != drops:
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        return _ok(self.updates[:limit])

    def _get_file(self, call: Call) -> dict[str, Any] | Failure:
        stored = self.files.get(str(call.params.get("file_id")))
        if stored is None:
            return Failure(400, "Bad Request: invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.file_path,
        }

    def _send_message(self, call: Call) -> dict[str, Any]:
        return {**self._bot_message(call.params["chat_id"], None, None), "text": call.params.get("text", "")}

    def _send_media(self, call: Call) -> dict[str, Any]:
        message = self._bot_message(call.params["chat_id"], None, None)
        if "caption" in call.params:
            message["caption"] = call.params["caption"]
        for name, upload in call.files.items():
            stored = self.add_file(upload.data, f"{name}s/{upload.filename}")
            info = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
            if name == "photo":
                message["photo"] = [{**info, "width": 1, "height": 1, "file_size": len(upload.data)}]
            else:
                message[name] = {**info, "file_name": upload.filename, "file_size": len(upload.data)}
        return message

    def _send_chat_action(self, call: Call) -> bool:
        return True

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        path = request.match_info["path"]
        self.downloads.append(path)
        for stored in self.files.values():
            if stored.file_path == path:
                return web.Response(body=stored.data, content_type="application/octet-stream")
        return _error(404, "Not Found")

    # --- helpers -----------------------------------------------------------------------------

    def _bot_message(self, chat_id: int | str, kind: str | None, text: str | None) -> dict[str, Any]:
        chat = int(chat_id)
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "Nano", "username": self.bot_username},
            "chat": {"id": chat, "type": kind or ("private" if chat > 0 else "supergroup")},
            "date": int(time.time()),
        }
        if text is not None:
            message["text"] = text
        return message

    def _photo_sizes(self, data: bytes) -> list[dict[str, Any]]:
        """Telegram's several sizes of one photo, smallest first; only the largest is the real one."""
        thumb = self.add_file(b"thumb", "photos/thumb.jpg")
        full = self.add_file(data, "photos/file_1.jpg")
        return [
            {
                "file_id": thumb.file_id,
                "file_unique_id": thumb.file_unique_id,
                "width": 90,
                "height": 60,
                "file_size": 5,
            },
            {
                "file_id": full.file_id,
                "file_unique_id": full.file_unique_id,
                "width": 1280,
                "height": 853,
                "file_size": len(data),
            },
        ]

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._notify()

    def _notify(self) -> None:
        """Wake every waiter (they re-check their condition); a fresh event for the next change."""
        self._changed.set()
        self._changed = asyncio.Event()


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[FakeTelegram]:
    """A started fake, closed afterwards."""
    fake = await FakeTelegram().start()
    try:
        yield fake
    finally:
        await fake.close()


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, Upload]]:
    """Parameters however the Bot API accepts them: query string, JSON, urlencoded or multipart."""
    params: dict[str, Any] = dict(request.query)
    files: dict[str, Upload] = {}
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = Upload(value.filename, value.file.read(), value.content_type)
            else:
                params[key] = _maybe_json(key, str(value))
    return params, files


JSON_FIELDS = frozenset({"chat_id", "message_thread_id", "offset", "limit", "timeout", "allowed_updates"})


def _maybe_json(key: str, value: str) -> Any:
    """Form fields carry numbers and JSON-serialised lists as strings, as Telegram parses them."""
    if key in JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
