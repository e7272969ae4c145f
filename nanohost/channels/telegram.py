"""Telegram over the Bot API (https://core.telegram.org/bots/api), plain aiohttp, long polling.

- ``start`` checks the token with ``getMe`` (401/404: ``ChannelStartError`` naming
  ``NANOHOST_TELEGRAM_TOKEN``) and remembers the bot's id and user name for mention detection.
- Receiving is ``getUpdates`` long polling with ``allowed_updates=["message"]``. The offset (last
  ``update_id`` + 1) is written to the ``ChannelStore`` after each update is handled and read at
  start, so a restart neither loses nor repeats updates: Telegram drops every update below the
  offset the next poll sends. A 409 Conflict means another poller or a webhook holds the bot; it is
  logged with what to do and retried with the usual backoff (1 s doubling to 30 s).
- Sending: ``sendMessage``, ``sendPhoto`` (images under 10 MB) or ``sendDocument`` (multipart),
  ``sendChatAction`` ``typing``. Answers map to delivery's errors: 429 → ``TransientError`` with
  ``parameters.retry_after``; 5xx and network errors → ``TransientError``; 400/403 →
  ``PermanentError`` with Telegram's description. A 400 carrying
  ``parameters.migrate_to_chat_id`` (the group became a supergroup) moves the chat's binding and
  is permanent for that message.
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
    PermanentError,
    TransientError,
)
from nanohost.channels.http import raise_for_status, retry_after
from nanohost.channels.state import ChannelStore
from nanohost.channels.telegram_parse import BotIdentity, ChatMove, parse_update, update_id_of

log = logging.getLogger(__name__)

OFFSET_KEY = "offset"
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
PHOTO_MAX_BYTES = 10 * 1024**2
"""``sendPhoto`` refuses larger photos; those go as documents."""
UPLOAD_MAX_BYTES = 50 * 1024**2
"""The Bot API's upload cap for ``sendDocument``."""
CHUNK = 64 * 1024


class ChatMovedError(PermanentError):
    """Telegram answered that the chat became a supergroup with a new id."""

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
        self.bot: BotIdentity | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, sink: ChannelSink) -> None:
        """Check the token with ``getMe``, load the stored offset, start polling."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
        )
        try:
            self.bot = await self._get_me()
        except BaseException:
            await self._close_session()
            raise
        self._sink = sink
        self._offset = self._load_offset()
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
        try:
            answer = await self._request("getMe")
        except TransientError as exc:
            raise ChannelStartError(f"Telegram could not be reached at {self._api_base}: {exc}") from None
        if answer.code in (401, 404):
            raise ChannelStartError(
                f"NANOHOST_TELEGRAM_TOKEN was refused by Telegram ({answer.code} {answer.description}); "
                "check the token @BotFather gave you"
            )
        try:
            me = self._result("getMe", answer)
        except (TransientError, PermanentError) as exc:
            raise ChannelStartError(f"Telegram getMe failed: {exc}") from None
        bot_id, username = (me.get("id"), me.get("username")) if isinstance(me, dict) else (None, None)
        if not isinstance(bot_id, int) or not isinstance(username, str):
            raise ChannelStartError("Telegram getMe answered without the bot's id and user name")
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
        delay = self.reconnect_delay
        while True:
            try:
                updates = await self._get_updates()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wait = max(delay, getattr(exc, "retry_after", None) or 0.0)
                if not isinstance(exc, _Conflict):
                    log.warning("telegram: getUpdates failed (%s); polling again in %.1f s", exc, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            delay = self.reconnect_delay
            for update in updates:
                await self._handle(update)

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
                return await _read_capped(response, limit)
        except aiohttp.ClientError as exc:
            raise TransientError(f"telegram file download: {self._scrub(exc)}") from None
        except TimeoutError:
            raise TransientError("telegram file download: timed out") from None

    # --- sending -----------------------------------------------------------------------------

    async def send_text(self, target: ChatTarget, text: str) -> str | None:
        payload = {**self._where(target), "text": text}
        return self._message_ref(target, await self._send("sendMessage", target, payload=payload))

    async def send_file(self, target: ChatTarget, path: Path, caption: str) -> str | None:
        """Images under 10 MB as photos (shown inline), everything else as documents."""
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise PermanentError(f"telegram: cannot read {path.name}: {exc.strerror}") from None
        if len(data) > UPLOAD_MAX_BYTES:
            raise PermanentError(f"telegram: {path.name} is over the Bot API's 50 MB upload limit")
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
        await self._send("sendChatAction", target, payload={**self._where(target), "action": "typing"})

    async def _upload(
        self, method: str, field: str, target: ChatTarget, name: str, data: bytes, caption: str
    ) -> Any:
        form = aiohttp.FormData()
        for key, value in self._where(target).items():
            form.add_field(key, str(value))
        if caption:
            form.add_field("caption", caption)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        form.add_field(field, io.BytesIO(data), filename=name, content_type=content_type)
        return await self._send(method, target, data=form, timeout=aiohttp.ClientTimeout(total=300))

    async def _send(
        self,
        method: str,
        target: ChatTarget,
        *,
        payload: dict[str, Any] | None = None,
        data: aiohttp.FormData | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        """One attempt; a "chat moved" answer moves the binding before it is raised."""
        answer = await self._request(method, payload=payload, data=data, timeout=timeout)
        try:
            return self._result(method, answer, chat_id=target.chat_id)
        except ChatMovedError as exc:
            if self._sink is not None:
                try:
                    await self._sink.chat_moved(self.name, target.chat_id, exc.new_chat_id)
                except Exception:
                    log.exception("telegram: moving chat %s to %s failed", target.chat_id, exc.new_chat_id)
            raise

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
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return f"{target.chat_id}:{message_id}" if isinstance(message_id, int) else None

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


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read a body in chunks, giving up as soon as it passes ``limit`` bytes."""
    data = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        data.extend(chunk)
        if len(data) > limit:
            raise FileTooLarge(f"telegram file is over the {limit} byte limit")
    return bytes(data)
