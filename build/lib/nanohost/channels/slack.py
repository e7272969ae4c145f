"""Slack over Socket Mode: events in through a websocket, replies out through the Web API.

Follows Slack's documented behaviour (docs.slack.dev, "Using Socket Mode", "Events API",
"Uploading files", "Formatting text"):

* ``start`` checks the bot token with ``auth.test`` (and remembers the bot's user and bot ids),
  asks ``apps.connections.open`` with the app-level token for a websocket URL and connects to it.
  A refused token (HTTP 401/403, ``invalid_auth``, ``not_authed``, ``account_inactive``,
  ``token_revoked``, ``token_expired``, ``not_allowed_token_type``) is a ``ChannelStartError``
  naming the environment variable to fix; a Slack that cannot be reached or answers 5xx/429 (or
  anything else) at start is a ``TransientError``, and the host retries ``start`` later. A failed
  ``start`` leaves nothing open, so the same object can be started again.
* Every Socket Mode envelope is acknowledged (``{"envelope_id": ...}``) as soon as it is read,
  BEFORE the event is processed: Slack wants the ack within 3 seconds and re-sends otherwise.
  Events are then handed, in order, to one worker task that calls the sink, so a slow sink never
  delays acks. ``slash_commands`` and ``interactive`` envelopes are acked and ignored. Parsing
  never raises: a hostile payload is logged with its envelope and event ids and skipped.
* A ``disconnect`` envelope (``refresh_requested``, ``warning``, ``link_disabled``) means "open a
  new connection": the loop asks ``apps.connections.open`` again and reconnects at once. A dropped
  websocket reconnects with backoff (1 s doubling to 30 s, reset once a ``hello`` arrives).
* ``message`` and ``app_mention`` events become ``InboundMessage``s (``parse_event``, a pure
  function). A mention arrives as both events with the same channel and ``ts``; both get the
  platform id ``"<channel>:<ts>"`` so the router keeps one. The bot's own ``<@U…>`` mention in
  the text is rewritten to ``@bot`` (the agent has no use for Slack's user id), and Slack's three
  HTML entities (``&amp;`` ``&lt;`` ``&gt;``) are decoded. Replies go to the thread the message
  came from (``thread_ts``), or to the channel when it was not in a thread. Slack events name
  the sender only by user id, so ``sender`` and ``sender_id`` are that id and ``sender_handle``
  stays None.
* Outgoing text is escaped the way Slack asks (``&``, ``<``, ``>`` as entities), so agent text
  cannot turn into accidental mentions or links. Escaping lengthens text (``&`` → ``&amp;``), so
  ``measure`` reports the escaped length and delivery splits by it; ``send_text`` posts once.
  Files go up with the current external flow:
  ``files.getUploadURLExternal`` → a multipart POST of the bytes → ``files.completeUploadExternal``.
* Errors: HTTP 429 (``Retry-After``), 5xx, network failures and ``ok: false`` with
  ``ratelimited`` or a Slack-side failure are ``TransientError``; every other ``ok: false`` code
  (``channel_not_found``, ``not_in_channel``, ``is_archived``, ``invalid_auth``,
  ``msg_too_long``, …) is a ``PermanentError`` carrying that code.

Tokens travel only in ``Authorization`` headers and are never logged; the websocket URL (which
carries a connection ticket) is not logged either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp

from nanohost.channels.base import (
    ChannelAdapter,
    ChannelSink,
    ChannelStartError,
    ChatTarget,
    InboundMessage,
    IncomingFile,
    PermanentError,
    TransientError,
)
from nanohost.channels.http import Backoff, raise_for_status, read_capped, read_outgoing, retry_after

log = logging.getLogger(__name__)

APP_TOKEN_ENV = "NANOHOST_SLACK_APP_TOKEN"
BOT_TOKEN_ENV = "NANOHOST_SLACK_BOT_TOKEN"

API_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
"""One Web API call; a hung call becomes a TransientError rather than a stuck delivery."""
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=300, connect=10, sock_read=60)
"""A file download or upload may be large; it still must not hang forever."""
HEARTBEAT = 30.0
"""Websocket ping interval: a silently dead connection is noticed and reconnected."""
BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
"""Reconnect waits after a dropped websocket (read when the receive loop starts)."""
UPLOAD_LIMIT = 100 * 1024**2
"""The largest file we read into memory to upload (Slack itself takes more; this is our bound)."""

ACCEPTED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
"""Message subtypes that are a person writing; edits, deletions, joins and bot posts are not."""
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
"""``ok: false`` codes that mean "Slack had a problem, try again later"."""
AUTH_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "not_allowed_token_type",
        "HTTP 401",
        "HTTP 403",
    }
)
"""Answers (``ok: false`` codes, HTTP statuses) that mean Slack refused the token itself."""

Fetch = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True)
class SlackBot:
    """Who the bot is on Slack (from ``auth.test``): its user id (mentions) and bot id (own posts)."""

    user_id: str
    bot_id: str | None = None


# --- parsing (pure) -------------------------------------------------------------------------


def parse_event(
    payload: object, bot: SlackBot, fetcher: Callable[[str], Fetch] | None = None
) -> InboundMessage | None:
    """The ``InboundMessage`` for an ``events_api`` envelope's payload, or None to skip it.

    Pure: no I/O happens here; ``fetcher(url)`` only builds the download function for a file.
    Malformed payloads are logged (with the event id) and skipped; this never raises.
    """
    if not isinstance(payload, Mapping):
        log.warning("slack: events_api payload is not an object; skipped")
        return None
    event_id = payload.get("event_id")
    event = payload.get("event")
    if not isinstance(event, Mapping):
        log.warning("slack: event %s has no event object; skipped", event_id)
        return None
    try:
        return _parse_message(event, bot, fetcher)
    except _Malformed as exc:
        log.warning("slack: event %s is malformed (%s); skipped", event_id, exc)
    except Exception:
        log.exception("slack: event %s could not be parsed; skipped", event_id)
    return None


class _Malformed(Exception):
    """A field has the wrong type or is missing."""


def _parse_message(
    event: Mapping[str, Any], bot: SlackBot, fetcher: Callable[[str], Fetch] | None
) -> InboundMessage | None:
    kind = event.get("type")
    if kind not in ("message", "app_mention"):
        log.debug("slack: ignoring %s event", kind)
        return None
    subtype = event.get("subtype")
    if subtype not in ACCEPTED_SUBTYPES:
        log.debug("slack: ignoring message subtype %s", subtype)
        return None
    if event.get("bot_id") is not None:
        return None  # posted by a bot (possibly us): never answer bots
    user = _str(event, "user")
    if user == bot.user_id:
        return None
    channel, ts = _str(event, "channel"), _str(event, "ts")
    text = event.get("text", "")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise _Malformed("text is not a string")
    thread_ts = _optional_str(event, "thread_ts")
    mention = _mention_pattern(bot.user_id)
    mentions_bot = (
        kind == "app_mention"
        or bool(mention.search(text))
        or (thread_ts is not None and event.get("parent_user_id") == bot.user_id)
    )
    return InboundMessage(
        channel="slack",
        chat_id=channel,
        sender=user,
        sender_id=user,
        text=_unescape(mention.sub("@bot", text)),
        platform_message_id=f"{channel}:{ts}",
        thread_id=thread_ts,
        mentions_bot=mentions_bot,
        is_direct=event.get("channel_type") == "im",
        files=_parse_files(event.get("files"), fetcher, f"{channel}:{ts}"),
    )


def _str(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{key} is missing or not a string")
    return value


def _optional_str(event: Mapping[str, Any], key: str) -> str | None:
    value = event.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Malformed(f"{key} is not a string")
    return value or None


def _mention_pattern(user_id: str) -> re.Pattern[str]:
    """``<@U0BOT>`` or the older ``<@U0BOT|name>`` form."""
    return re.compile(rf"<@{re.escape(user_id)}(?:\|[^>]*)?>")


def _parse_files(raw: object, fetcher: Callable[[str], Fetch] | None, where: str) -> list[IncomingFile]:
    """The downloadable files of a message; entries without a name or URL are logged and skipped."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _Malformed("files is not a list")
    files: list[IncomingFile] = []
    for item in raw:
        if not isinstance(item, Mapping):
            log.warning("slack: message %s has a file entry that is not an object; skipped", where)
            continue
        name = item.get("name")
        url = item.get("url_private_download") or item.get("url_private")
        size = item.get("size")
        if not isinstance(name, str) or not name or not isinstance(url, str):
            log.warning(
                "slack: message %s: file %s has no name or download URL; skipped", where, item.get("id")
            )
            continue
        if fetcher is None:
            continue
        declared = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
        files.append(IncomingFile(name=name, size=declared, fetch=fetcher(url)))
    return files


def _unescape(text: str) -> str:
    """Slack sends ``&``, ``<`` and ``>`` as HTML entities; the agent should see the characters."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape(text: str) -> str:
    """Escape the three characters Slack's text formatting reserves (docs: "Escaping text")."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- the adapter ----------------------------------------------------------------------------


class SlackChannel(ChannelAdapter):
    """Slack via Socket Mode (no public URL needed) and the Web API."""

    name: ClassVar[str] = "slack"
    text_limit: ClassVar[int] = 40_000
    caption_limit: ClassVar[int] = 3_000
    typing_interval: ClassVar[float | None] = None

    def __init__(self, *, app_token: str, bot_token: str, api_base: str) -> None:
        self._app_token = app_token
        self._bot_token = bot_token
        self._api_base = api_base.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self._sink: ChannelSink | None = None
        self.bot: SlackBot | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, sink: ChannelSink) -> None:
        """Validate both tokens, connect the Socket Mode websocket, start receiving."""
        if not self._app_token or not self._bot_token:
            raise ChannelStartError(
                f"Slack needs both {APP_TOKEN_ENV} (xapp-…, an app-level token with connections:write) "
                f"and {BOT_TOKEN_ENV} (xoxb-…, the bot token)"
            )
        if self._session is not None:
            raise RuntimeError("slack channel is already started")
        self._sink = sink
        self._session = aiohttp.ClientSession(timeout=API_TIMEOUT)
        try:
            self.bot = await self._auth_test()
            url = await self._open_connection(startup=True)
            ws = await self._connect(url)
        except BaseException:
            await self._close_ws()
            await self._close_session()
            raise
        self._worker_task = asyncio.create_task(self._work(), name="slack-events")
        self._loop_task = asyncio.create_task(self._receive_loop(ws), name="slack-socket-mode")
        log.info("slack: connected as %s (Socket Mode)", self.bot.user_id)

    async def stop(self) -> None:
        """Cancel the receive loop and the event worker, close the websocket and the session."""
        for task in (self._loop_task, self._worker_task):
            if task is not None:
                task.cancel()
        for task in (self._loop_task, self._worker_task):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:
                    log.exception("slack: task failed while stopping")
        self._loop_task = self._worker_task = None
        await self._close_ws()
        await self._close_session()

    async def _close_ws(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close()

    async def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _auth_test(self) -> SlackBot:
        """Who the bot token belongs to; a refused token stops the channel with a clear message,
        any other failure is transient (the host retries the start)."""
        try:
            answer = await self._call("auth.test", self._bot_token)
        except PermanentError as exc:
            if _code(exc) in AUTH_ERRORS:
                raise ChannelStartError(f"{BOT_TOKEN_ENV} was refused by Slack ({_code(exc)})") from None
            raise TransientError(f"could not check {BOT_TOKEN_ENV} with Slack: {exc}") from None
        user_id, bot_id = answer.get("user_id"), answer.get("bot_id")
        if not isinstance(user_id, str) or not user_id:
            raise TransientError("slack auth.test: the answer does not name the bot user")
        return SlackBot(user_id=user_id, bot_id=bot_id if isinstance(bot_id, str) else None)

    async def _open_connection(self, *, startup: bool = False) -> str:
        """A fresh Socket Mode websocket URL (``apps.connections.open``, app-level token)."""
        try:
            answer = await self._call("apps.connections.open", self._app_token)
        except PermanentError as exc:
            if not startup:
                raise
            if _code(exc) in AUTH_ERRORS:
                raise ChannelStartError(
                    f"{APP_TOKEN_ENV} was refused by Slack ({_code(exc)}); it must be an app-level "
                    "token (xapp-…) with connections:write, and Socket Mode must be enabled for the app"
                ) from None
            raise TransientError(f"could not open a Socket Mode connection: {exc}") from None
        url = answer.get("url")
        if not isinstance(url, str) or not url:
            raise TransientError("slack apps.connections.open: no url in the answer")
        return url

    async def _connect(self, url: str) -> aiohttp.ClientWebSocketResponse:
        try:
            self._ws = await self._http().ws_connect(url, heartbeat=HEARTBEAT)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"slack websocket connect: {_describe(exc)}") from None
        return self._ws

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise TransientError("slack channel is not started")
        return self._session

    # --- receiving ------------------------------------------------------------------------

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse | None) -> None:
        """Read envelopes forever; reconnect on ``disconnect`` at once, on a drop with backoff."""
        backoff = Backoff(BACKOFF_START, BACKOFF_MAX)
        while True:
            requested = False
            try:
                if ws is None:
                    ws = await self._connect(await self._open_connection())
                requested, greeted = await self._read(ws)
                if greeted:
                    backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("slack: Socket Mode connection failed: %s", exc)
            finally:
                ws = None
                await self._close_ws()
            if requested:
                log.info("slack: Slack asked for a new connection; reconnecting")
                continue
            delay = backoff.next()
            log.info("slack: websocket closed; reconnecting in %.0f s", delay)
            await asyncio.sleep(delay)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[bool, bool]:
        """Handle frames until the socket ends; returns (Slack asked to reconnect, hello seen)."""
        greeted = False
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                if frame.type == aiohttp.WSMsgType.ERROR:
                    log.warning("slack: websocket error: %s", ws.exception())
                    break
                continue
            envelope = _load(frame.data)
            if envelope is None:
                continue
            kind = envelope.get("type")
            if kind == "hello":
                greeted = True
                continue
            if kind == "disconnect":
                reason = envelope.get("reason")
                if reason == "link_disabled":
                    log.warning("slack: Socket Mode was turned off for this app; trying to reconnect anyway")
                else:
                    log.info("slack: disconnect envelope (%s)", reason)
                return True, greeted
            await self._ack(ws, envelope)
            if kind == "events_api":
                self._dispatch(envelope)  # never raises: a hostile payload is logged and skipped
            else:
                log.debug("slack: ignoring %s envelope", kind)
        return False, greeted

    async def _ack(self, ws: aiohttp.ClientWebSocketResponse, envelope: Mapping[str, Any]) -> None:
        """Acknowledge an envelope before it is processed (Slack re-sends unacked ones after 3 s)."""
        envelope_id = envelope.get("envelope_id")
        if isinstance(envelope_id, str) and envelope_id:
            await ws.send_json({"envelope_id": envelope_id})
        else:
            log.warning("slack: %s envelope without an envelope_id", envelope.get("type"))

    def _dispatch(self, envelope: Mapping[str, Any]) -> None:
        """Parse one event and queue it for the worker; a bad event is logged and skipped."""
        try:
            assert self.bot is not None
            message = parse_event(envelope.get("payload"), self.bot, self._fetcher)
        except Exception:
            payload = envelope.get("payload")
            event_id = payload.get("event_id") if isinstance(payload, Mapping) else None
            log.exception(
                "slack: envelope %s (event %s) could not be parsed; skipped",
                envelope.get("envelope_id"),
                event_id,
            )
            return
        if message is not None:
            self._events.put_nowait(message)

    async def _work(self) -> None:
        """Hand queued messages to the sink one at a time, in the order Slack sent them."""
        while True:
            message = await self._events.get()
            try:
                assert self._sink is not None
                await self._sink.receive(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("slack: routing message %s failed", message.platform_message_id)

    # --- files in -------------------------------------------------------------------------

    def _fetcher(self, url: str) -> Fetch:
        async def fetch(limit: int) -> bytes:
            return await self._download(url, limit)

        return fetch

    async def _download(self, url: str, limit: int) -> bytes:
        """GET a private file with the bot token, streaming; ``FileTooLarge`` past ``limit`` bytes."""
        if not self._trusted(url):
            raise PermanentError("slack file URL is not on Slack's file host; not sending the token there")
        headers = {"Authorization": f"Bearer {self._bot_token}"}
        try:
            async with self._http().get(url, headers=headers, timeout=DOWNLOAD_TIMEOUT) as response:
                raise_for_status("slack", "file download", response.status, "", retry_after(response.headers))
                if response.content_type == "text/html":
                    raise PermanentError(
                        "slack file download: got a login page (does the bot have files:read?)"
                    )
                return await read_capped(response, limit, "slack file")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"slack file download: {exc}") from None

    def _trusted(self, url: str) -> bool:
        """The bot token goes only to Slack: a ``*.slack.com`` host or the configured API host."""
        host = (urlsplit(url).hostname or "").lower()
        return host == "slack.com" or host.endswith(".slack.com") or host == urlsplit(self._api_base).hostname

    # --- sending --------------------------------------------------------------------------

    def measure(self, text: str) -> int:
        """Slack counts the escaped text, so delivery splits by that (``&`` is five characters)."""
        return len(escape(text))

    async def send_text(self, target: ChatTarget, text: str) -> str | None:
        """``chat.postMessage`` into the chat, in the target's thread when it has one."""
        body: dict[str, Any] = {"channel": target.chat_id, "text": escape(text)}
        if target.thread_id:
            body["thread_ts"] = target.thread_id
        answer = await self._call("chat.postMessage", self._bot_token, json_body=body)
        ts = answer.get("ts")
        return f"{target.chat_id}:{ts}" if isinstance(ts, str) else None

    async def send_file(self, target: ChatTarget, path: Path, caption: str) -> str | None:
        """Upload with the external flow: reserve a URL, POST the bytes, then share it in the chat."""
        data = await asyncio.to_thread(read_outgoing, path, UPLOAD_LIMIT, "slack")
        reserved = await self._call(
            "files.getUploadURLExternal",
            self._bot_token,
            form={"filename": path.name, "length": str(len(data))},
        )
        upload_url, file_id = reserved.get("upload_url"), reserved.get("file_id")
        if not isinstance(upload_url, str) or not isinstance(file_id, str):
            raise TransientError("slack files.getUploadURLExternal: no upload_url/file_id in the answer")
        await self._upload(upload_url, path.name, data)
        body: dict[str, Any] = {"files": [{"id": file_id, "title": path.name}], "channel_id": target.chat_id}
        if caption:
            body["initial_comment"] = escape(caption)
        if target.thread_id:
            body["thread_ts"] = target.thread_id
        await self._call("files.completeUploadExternal", self._bot_token, json_body=body)
        return file_id

    async def _upload(self, url: str, filename: str, data: bytes) -> None:
        """POST the bytes to the reserved upload URL as a multipart form (what Slack's SDKs send)."""
        form = aiohttp.FormData()
        form.add_field("file", data, filename=filename, content_type="application/octet-stream")
        try:
            async with self._http().post(url, data=form, timeout=DOWNLOAD_TIMEOUT) as response:
                detail = (await response.text())[:200]
                raise_for_status(
                    "slack", "file upload", response.status, detail, retry_after(response.headers)
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"slack file upload: {exc}") from None

    async def typing(self, target: ChatTarget) -> None:
        """Socket Mode bots have no typing indicator: nothing to do."""

    # --- the Web API ----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        token: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One Web API call (one attempt); the answer's body when ``ok``, else a classified error."""
        headers = {"Authorization": f"Bearer {token}"}
        wait: float | None = None
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
            kwargs["data"] = json.dumps(json_body).encode()
        elif form is not None:
            kwargs["data"] = dict(form)
        try:
            async with self._http().post(f"{self._api_base}/{method}", headers=headers, **kwargs) as response:
                wait = retry_after(response.headers)
                raise_for_status("slack", method, response.status, "", wait)
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise TransientError(f"slack {method}: {type(exc).__name__}: {exc}") from None
        if not isinstance(answer, dict):
            raise TransientError(f"slack {method}: the answer is not a JSON object")
        if answer.get("ok") is True:
            return answer
        code = str(answer.get("error") or "unknown_error")
        if code in TRANSIENT_ERRORS:
            raise TransientError(f"slack {method}: {code}", retry_after=wait)
        raise PermanentError(f"slack {method}: {code}")


def _describe(exc: BaseException) -> str:
    """An error without its URL: the Socket Mode URL carries a connection ticket, kept out of logs."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}".strip()
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _code(exc: Exception) -> str:
    """The Slack error code at the end of one of our error messages (``slack auth.test: code``)."""
    return str(exc).rsplit(": ", 1)[-1]


def _load(data: str) -> dict[str, Any] | None:
    """A websocket frame as a JSON object, or None (logged) when it is not one."""
    try:
        envelope = json.loads(data)
    except ValueError:
        log.warning("slack: websocket frame is not JSON; skipped")
        return None
    if not isinstance(envelope, dict):
        log.warning("slack: websocket frame is not a JSON object; skipped")
        return None
    return envelope
