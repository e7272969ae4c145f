"""Telegram over the Bot API (https://core.telegram.org/bots/api), plain aiohttp, long polling.

- ``start`` checks the token with ``getMe`` and remembers the bot's id and user name for mention
  detection. A refused token (401/403, or 404, Telegram's answer to a malformed one) is a
  ``ChannelStartError`` naming ``NANOHOST_TELEGRAM_TOKEN``; an API that cannot be reached or
  answers 429/5xx is a ``TransientError`` (the host retries the start). A failed start leaves
  nothing open, so ``start`` may be called again on the same object.
- Receiving is ``getUpdates`` long polling with ``allowed_updates=["message"]``. The offset (last
  ``update_id`` + 1) is written to the ``ChannelStore`` after each update is handled and read at
  start, so a restart neither loses nor repeats updates: Telegram drops every update below the
  offset the next poll sends. A 409 Conflict means another poller or a webhook holds the bot; it is
  logged with what to do and retried with the usual backoff (1 s doubling to 30 s).
- Sending: ``sendMessage``, ``sendPhoto`` (images under 10 MB) or ``sendDocument`` (multipart),
  ``sendChatAction`` ``typing``. Answers map to delivery's errors: 429 → ``TransientError`` with
  ``parameters.retry_after``; 5xx and network errors → ``TransientError``; 400/403 →
  ``PermanentError`` with Telegram's description. A 400 carrying
  ``parameters.migrate_to_chat_id`` (the group became a supergroup) moves the chat's binding
  (``sink.chat_moved``) and the same call is sent once more to the new chat id: that answer is
  the send's result. Later sends still addressed to the old id go straight to the new one.
- The token is part of every URL path (``/bot<token>/<method>``), so URLs are never logged and
  the token is scrubbed from any error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from nanohost.channels.base import (
    ChannelAdapter,
    ChannelSink,
    ChannelStartError,
    ChatTarget,
    FileTooLarge,
    InboundMessage,
    PermanentError,
    TransientError,
)
from nanohost.channels.http import Backoff, raise_for_status, read_capped, read_outgoing, retry_after
from nanohost.channels.state import ChannelStore
from nanohost.channels.telegram_parse import BotIdentity, ChatMove, parse_update, update_id_of

log = logging.getLogger(__name__)

OFFSET_KEY = "offset"
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
PHOTO_MAX_BYTES = 10 * 1024**2
"""``sendPhoto`` refuses larger photos; those go as documents."""
UPLOAD_MAX_BYTES = 50 * 1024**2
"""The Bot API's upload cap for ``sendDocument``."""
REFUSED_TOKEN = frozenset({401, 403, 404})
"""``getMe`` answers meaning the token itself is wrong (404: Telegram's answer to a malformed one)."""

Body = Callable[[dict[str, Any]], dict[str, Any] | aiohttp.FormData]
"""Builds a send call's body for a ``chat_id`` (+ topic): a form is rebuilt for a resend."""


class ChatMovedError(PermanentError):
    """Telegram answered that the chat became a supergroup with a new id (and the resend there
    was answered the same way)."""

    def __init__(self, message: str, new_chat_id: str) -> None:
        super().__init__(message)
        self.new_chat_id = new_chat_id


@dataclass(frozen=True)
class _Answer:
    """One Bot API answer before interpretation: HTTP status, headers and the decoded body."""

    status: int
    reason: str
    headers: dict[str, str]
    body: Any

    @property
    def ok(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("ok") is True

    @property
    def code(self) -> int:
        code = self.body.get("error_code") if isinstance(self.body, dict) else None
        return code if isinstance(code, int) and code >= 400 else self.status

    @property
    def description(self) -> str:
        text = self.body.get("description") if isinstance(self.body, dict) else None
        return text if isinstance(text, str) else self.reason

    @property
    def parameters(self) -> dict[str, Any]:
        params = self.body.get("parameters") if isinstance(self.body, dict) else None
        return params if isinstance(params, dict) else {}


class TelegramChannel(ChannelAdapter):
    """One Telegram bot: receives by long polling, sends through the Bot API."""

    name = "telegram"
    text_limit = 4096
    caption_limit = 1024
    typing_interval = 4.0

    def __init__(
        self,
        token: str,
        api_base: str,
        store: ChannelStore,
        *,
        poll_timeout: float = 25.0,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
    ) -> None:
        self._token = token
        self._api_base = api_base.rstrip("/")
        self._store = store
        self.poll_timeout = poll_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self._session: aiohttp.ClientSession | None = None
        self._sink: ChannelSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._offset: int | None = None
        self._moved: dict[str, str] = {}
        """Old chat id → supergroup id, learned from migration answers and service messages."""
        self.bot: BotIdentity | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, sink: ChannelSink) -> None:
        """Check the token with ``getMe``, load the stored offset, start polling.

        On any failure the HTTP session is closed again, so a later ``start`` begins afresh.
        """
        await self.stop()  # a retried start must not leave an earlier session or poll behind
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
        )
        try:
            self.bot = await self._get_me()
            self._offset = self._load_offset()
        except BaseException:
            await self._close_session()
            raise
        self._sink = sink
        self._task = asyncio.create_task(self._receive_loop(), name="telegram-poll")
        log.info("telegram: polling as @%s (offset %s)", self.bot.username, self._offset)

    async def stop(self) -> None:
        """Cancel the poll (the pending long poll is abandoned) and close the HTTP session."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_session()

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _get_me(self) -> BotIdentity:
        """Who the bot is. Only a refused token is a ``ChannelStartError``; anything else that goes
        wrong (no connection, 429/5xx, an answer we cannot read) is a ``TransientError``."""
        try:
            answer = await self._request("getMe")
        except TransientError as exc:
            raise TransientError(
                f"Telegram could not be reached at {self._api_base}: {exc}", retry_after=exc.retry_after
            ) from None
        if answer.code in REFUSED_TOKEN:
            raise ChannelStartError(
                f"NANOHOST_TELEGRAM_TOKEN was refused by Telegram ({answer.code} {answer.description}); "
                "check the token @BotFather gave you"
            )
        try:
            me = self._result("getMe", answer)
        except PermanentError as exc:  # another 4xx: not the token, so worth trying again later
            raise TransientError(f"Telegram getMe failed: {exc}") from None
        bot_id, username = (me.get("id"), me.get("username")) if isinstance(me, dict) else (None, None)
        if not isinstance(bot_id, int) or not isinstance(username, str):
            raise TransientError("Telegram getMe answered without the bot's id and user name")
        return BotIdentity(bot_id, username)

    def _load_offset(self) -> int | None:
        raw = self._store.get(OFFSET_KEY)
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            log.warning("telegram: stored update offset %r is not a number; starting without it", raw)
            return None

    # --- receiving ---------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        """Poll forever; any failure waits (1 s doubling to 30 s, reset on success) and polls again."""
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while True:
            try:
                updates = await self._get_updates()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wait = max(backoff.next(), getattr(exc, "retry_after", None) or 0.0)
                if not isinstance(exc, _Conflict):
                    log.warning("telegram: getUpdates failed (%s); polling again in %.1f s", exc, wait)
                await asyncio.sleep(wait)
                continue
            backoff.reset()
            if len(updates) > 1 and getattr(self._sink, "receive_many", None) is not None:
                await self._handle_batch(updates)
                continue
            for update in updates:
                try:
                    await self._handle(update)
                except asyncio.CancelledError:
                    raise
                except Exception:  # _handle does not raise; this is the last line of defence
                    log.exception("telegram update %s: skipped", update_id_of(update))

    async def _handle_batch(self, updates: list[Any]) -> None:
        """A poll's updates handed over at once to a sink that routes a batch (the router's
        ``receive_many``: one transaction for the plain messages), chat moves in their place;
        then the offset moves past the last one. If the batch fails, each message is handed
        over on its own (the router drops any it recorded already as a duplicate)."""
        assert self.bot is not None and self._sink is not None
        sink = self._sink
        batch: list[tuple[int, InboundMessage]] = []
        last: int | None = None

        async def deliver() -> None:
            if not batch:
                return
            try:
                await sink.receive_many([message for _, message in batch])  # type: ignore[attr-defined]
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("telegram: %d updates could not be routed together; one by one", len(batch))
                for uid, message in batch:
                    try:
                        await sink.receive(message)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("telegram update %s: handling failed; skipped", uid)
            batch.clear()

        for update in updates:
            uid = update_id_of(update)
            if uid is None:
                log.warning("telegram: an update without an update_id was skipped")
                continue
            if self._offset is not None and uid < self._offset:
                continue  # already handled: Telegram resent it before seeing our offset
            last = uid
            try:
                parsed = parse_update(update, self.bot, self._fetch_file)
            except Exception:
                log.exception("telegram update %s: handling failed; skipped", uid)
                continue
            if isinstance(parsed, ChatMove):
                await deliver()
                self._moved[parsed.old_chat_id] = parsed.new_chat_id
                try:
                    await sink.chat_moved(self.name, parsed.old_chat_id, parsed.new_chat_id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("telegram update %s: handling failed; skipped", uid)
            elif parsed is not None:
                batch.append((uid, parsed))
        await deliver()
        if last is not None:
            self._advance(last + 1)

    async def _get_updates(self) -> list[Any]:
        # Telegram takes whole seconds; 0 would be short polling, a busy loop against the API.
        seconds = max(1, round(self.poll_timeout))
        payload: dict[str, Any] = {"timeout": seconds, "allowed_updates": ["message"]}
        if self._offset is not None:
            payload["offset"] = self._offset
        answer = await self._request(
            "getUpdates", payload=payload, timeout=aiohttp.ClientTimeout(total=seconds + 15)
        )
        if answer.code == 409:
            log.error(
                "telegram: getUpdates conflict (%s): another process polls this bot, or a webhook is set "
                "(remove it with deleteWebhook); only one nanohost may use a bot token",
                answer.description,
            )
            raise _Conflict(answer.description)
        result = self._result("getUpdates", answer)
        if not isinstance(result, list):
            raise TransientError("telegram getUpdates: the result is not a list")
        return result

    async def _handle(self, update: Any) -> None:
        """Hand one update to the sink (never raising), then move the offset past it."""
        uid = update_id_of(update)
        if uid is None:
            log.warning("telegram: an update without an update_id was skipped")
            return
        if self._offset is not None and uid < self._offset:
            return  # already handled: Telegram resent it before seeing our offset
        assert self.bot is not None and self._sink is not None
        try:
            parsed = parse_update(update, self.bot, self._fetch_file)
            if isinstance(parsed, ChatMove):
                self._moved[parsed.old_chat_id] = parsed.new_chat_id
                await self._sink.chat_moved(self.name, parsed.old_chat_id, parsed.new_chat_id)
            elif parsed is not None:
                await self._sink.receive(parsed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("telegram update %s: handling failed; skipped", uid)
        self._advance(uid + 1)

    def _advance(self, offset: int) -> None:
        self._offset = max(offset, self._offset or 0)
        try:
            self._store.set(OFFSET_KEY, str(self._offset))
        except Exception:
            log.exception("telegram: could not store the update offset %s", self._offset)

    async def _fetch_file(self, file_id: str, limit: int) -> bytes:
        """``getFile`` then stream the download; ``FileTooLarge`` once past ``limit`` bytes."""
        answer = await self._request("getFile", payload={"file_id": file_id})
        if answer.code == 400 and "too big" in answer.description.lower():
            raise FileTooLarge(f"telegram: {answer.description} (bots may download up to 20 MB)")
        info = self._result("getFile", answer)
        file_path = info.get("file_path") if isinstance(info, dict) else None
        if not isinstance(file_path, str):
            raise PermanentError("telegram getFile: no file_path in the answer")
        declared = info.get("file_size")
        if isinstance(declared, int) and declared > limit:
            raise FileTooLarge(f"telegram file is {declared} bytes, over the {limit} byte limit")
        url = f"{self._api_base}/file/bot{self._token}/{file_path}"
        try:
            async with self._http().get(url) as response:
                if response.status != 200:
                    raise_for_status(self.name, "file download", response.status, response.reason or "")
                return await read_capped(response, limit, "telegram file")
        except aiohttp.ClientError as exc:
            raise TransientError(f"telegram file download: {self._scrub(exc)}") from None
        except TimeoutError:
            raise TransientError("telegram file download: timed out") from None

    # --- sending -----------------------------------------------------------------------------

    def measure(self, text: str) -> int:
        """Telegram counts UTF-16 code units: an emoji is two of its 4096."""
        return len(text.encode("utf-16-le")) // 2

    async def send_text(self, target: ChatTarget, text: str) -> str | None:
        result = await self._send("sendMessage", target, lambda where: {**where, "text": text})
        return self._message_ref(target, result)

    async def send_file(self, target: ChatTarget, path: Path, caption: str) -> str | None:
        """Images under 10 MB as photos (shown inline), everything else as documents."""
        data = await asyncio.to_thread(read_outgoing, path, UPLOAD_MAX_BYTES, self.name)
        as_photo = path.suffix.lower() in PHOTO_SUFFIXES and len(data) < PHOTO_MAX_BYTES
        if as_photo:
            try:
                result = await self._upload("sendPhoto", "photo", target, path.name, data, caption)
                return self._message_ref(target, result)
            except ChatMovedError:
                raise
            except PermanentError as exc:
                if "PHOTO" not in str(exc) and "IMAGE" not in str(exc):
                    raise
                log.info("telegram: %s was refused as a photo (%s); sending it as a document", path.name, exc)
        result = await self._upload("sendDocument", "document", target, path.name, data, caption)
        return self._message_ref(target, result)

    async def typing(self, target: ChatTarget) -> None:
        await self._send("sendChatAction", target, lambda where: {**where, "action": "typing"})

    async def _upload(
        self, method: str, field: str, target: ChatTarget, name: str, data: bytes, caption: str
    ) -> Any:
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"

        def form(where: dict[str, Any]) -> aiohttp.FormData:
            built = aiohttp.FormData()
            for key, value in where.items():
                built.add_field(key, str(value))
            if caption:
                built.add_field("caption", caption)
            built.add_field(field, io.BytesIO(data), filename=name, content_type=content_type)
            return built

        return await self._send(method, target, form, timeout=aiohttp.ClientTimeout(total=300))

    async def _send(
        self, method: str, target: ChatTarget, body: Body, *, timeout: aiohttp.ClientTimeout | None = None
    ) -> Any:
        """One call, plus one resend when Telegram answers that the chat became a supergroup.

        The move is reported to the sink first (so the binding follows the chat), then the same
        call goes to the new id and its answer is the result; only a failing resend raises.
        """
        target = self._current(target)
        for resent in (False, True):
            fields = body(self._where(target))
            payload, data = (None, fields) if isinstance(fields, aiohttp.FormData) else (fields, None)
            answer = await self._request(method, payload=payload, data=data, timeout=timeout)
            try:
                return self._result(method, answer, chat_id=target.chat_id)
            except ChatMovedError as exc:
                await self._chat_moved(target.chat_id, exc.new_chat_id)
                if resent:
                    raise
                log.info(
                    "telegram %s: chat %s is now %s; sending there", method, target.chat_id, exc.new_chat_id
                )
                target = ChatTarget(exc.new_chat_id, target.thread_id)
        raise AssertionError("unreachable")  # pragma: no cover

    def _current(self, target: ChatTarget) -> ChatTarget:
        """The target with a chat id we already know moved replaced by its supergroup's id."""
        moved = self._moved.get(target.chat_id)
        return target if moved is None else ChatTarget(moved, target.thread_id)

    async def _chat_moved(self, old: str, new: str) -> None:
        self._moved[old] = new
        if self._sink is None:
            return
        try:
            await self._sink.chat_moved(self.name, old, new)
        except Exception:
            log.exception("telegram: moving chat %s to %s failed", old, new)

    @staticmethod
    def _where(target: ChatTarget) -> dict[str, Any]:
        """``chat_id`` (and a forum topic's ``message_thread_id``) for a send call."""
        chat: int | str = int(target.chat_id) if target.chat_id.lstrip("-").isdigit() else target.chat_id
        where: dict[str, Any] = {"chat_id": chat}
        if target.thread_id is not None and target.thread_id.isdigit():
            where["message_thread_id"] = int(target.thread_id)
        return where

    @staticmethod
    def _message_ref(target: ChatTarget, result: Any) -> str | None:
        """``chat:message`` of a sent message, with the chat it really went to (after a move)."""
        if not isinstance(result, dict):
            return None
        message_id, chat = result.get("message_id"), result.get("chat")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        where = str(chat_id) if isinstance(chat_id, int) else target.chat_id
        return f"{where}:{message_id}" if isinstance(message_id, int) else None

    # --- HTTP --------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise TransientError("telegram: the channel is not running")
        return self._session

    async def _request(
        self,
        method: str,
        *,
        payload: dict[str, Any] | None = None,
        data: aiohttp.FormData | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> _Answer:
        """POST one Bot API method; network trouble is a ``TransientError`` (the URL never shows)."""
        url = f"{self._api_base}/bot{self._token}/{method}"
        kwargs: dict[str, Any] = {"json": payload} if data is None else {"data": data}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            async with self._http().post(url, **kwargs) as response:
                raw = await response.read()
                return _Answer(response.status, response.reason or "", dict(response.headers), _decode(raw))
        except aiohttp.ClientError as exc:
            raise TransientError(f"telegram {method}: {self._scrub(exc)}") from None
        except TimeoutError:
            raise TransientError(f"telegram {method}: timed out") from None

    def _result(self, method: str, answer: _Answer, chat_id: str | None = None) -> Any:
        """The ``result`` of a successful answer, or the error delivery should see."""
        if answer.ok:
            return answer.body.get("result")
        moved_to = answer.parameters.get("migrate_to_chat_id")
        if isinstance(moved_to, int) and chat_id is not None:
            raise ChatMovedError(
                f"telegram {method}: chat {chat_id} was upgraded to a supergroup and is now {moved_to} "
                f"({answer.description}); its binding moved there, later replies go to the new chat",
                str(moved_to),
            )
        seconds = answer.parameters.get("retry_after")
        wait = retry_after(answer.headers, seconds if isinstance(seconds, int | float) else None)
        if answer.code < 400:
            raise TransientError(f"telegram {method}: unexpected answer (HTTP {answer.status})")
        raise_for_status(self.name, method, answer.code, answer.description, wait)
        raise PermanentError(f"telegram {method}: {answer.description}")  # pragma: no cover

    def _scrub(self, exc: BaseException) -> str:
        """An exception's text with the token removed (aiohttp errors may quote the URL)."""
        text = str(exc) or type(exc).__name__
        return text.replace(self._token, "<token>") if self._token else text


class _Conflict(Exception):
    """getUpdates answered 409: someone else receives this bot's updates."""


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
