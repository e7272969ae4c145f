"""The Discord channel: a bot user on the Gateway (v10) for receiving, REST (v10) for sending.

``start`` checks the token with ``GET /users/@me`` (401/403 → ``ChannelStartError`` naming
NANOHOST_DISCORD_TOKEN), asks ``GET /gateway/bot`` for the gateway URL, and keeps a gateway
session (``discord_gateway``: heartbeats, resume, reconnect). A gateway close that reconnecting
cannot fix (4004 token refused, 4014 intent not enabled) before READY is a ``ChannelStartError``
too. Discord unreachable, 5xx or 429 at start is a ``TransientError``: the host retries ``start``
later; a failed start leaves nothing open or running, so the same object can start again. Each
MESSAGE_CREATE is parsed by the pure ``discord_parse.parse_message`` and handed to the router in
gateway order; a payload that makes parsing fail is logged with its ids and skipped.

Sending follows Discord's REST docs: ``POST /channels/{id}/messages`` with JSON, or multipart
``payload_json`` + ``files[0]`` for a file; ``allowed_mentions: {"parse": []}`` on everything,
so agent text can never ping @everyone, roles or users. ``POST /channels/{id}/typing`` shows the
typing indicator (it lasts about 10 s; delivery re-sends it every 8 s). Rate limits follow the
per-route headers: when a route's bucket reports ``X-RateLimit-Remaining: 0`` the next call on it
waits ``X-RateLimit-Reset-After`` first (a pre-emptive wait, not a retry). A 429 raises
``TransientError`` with the body's ``retry_after``; 5xx and network errors are transient too; 403
(50001 Missing Access, 50013 Missing Permissions), 404 (10003 Unknown Channel) and other 4xx are
``PermanentError`` carrying Discord's message and code. Each method makes one attempt; delivery
retries. Files over ``UPLOAD_LIMIT`` (a bot's 10 MiB) are refused before any request. The token
goes only into the ``Authorization`` header of API calls, never into logs or to the attachment CDN.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import time
from pathlib import Path
from typing import Any

import aiohttp

from nanohost.channels.base import (
    ChannelAdapter,
    ChannelSink,
    ChannelStartError,
    ChatTarget,
    TransientError,
)
from nanohost.channels.discord_gateway import DiscordGateway, GatewayTimings
from nanohost.channels.discord_parse import parse_message
from nanohost.channels.http import raise_for_status, read_capped, read_outgoing, retry_after

log = logging.getLogger(__name__)

USER_AGENT = "DiscordBot (https://github.com/nanohost, 0.1)"
NO_PINGS: dict[str, list[str]] = {"parse": []}
TOKEN_ENV = "NANOHOST_DISCORD_TOKEN"
UPLOAD_LIMIT = 10 * 1024 * 1024
"""The most a bot may upload in one message (without the guild's boost tiers)."""


class RouteLimits:
    """Discord's per-route rate limit buckets, as far as the response headers tell us.

    A route (method + path template) maps to the bucket Discord names in ``X-RateLimit-Bucket``;
    limits apply per bucket and major parameter (the channel id). A bucket with no calls left is
    blocked until its ``Reset-After`` has passed.
    """

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait
        self._bucket_of: dict[str, str] = {}
        self._blocked_until: dict[str, float] = {}

    def _key(self, route: str, major: str) -> str:
        return f"{self._bucket_of.get(route, route)}:{major}"

    async def wait(self, route: str, major: str) -> None:
        """Wait out an exhausted bucket; a very long wait is left to delivery's retry instead."""
        left = self._blocked_until.get(self._key(route, major), 0.0) - time.monotonic()
        if left > self.max_wait:
            raise TransientError(f"discord {route}: rate limit bucket exhausted", retry_after=left)
        if left > 0:
            log.debug("discord %s: bucket exhausted; waiting %.2f s", route, left)
            await asyncio.sleep(left)

    def update(self, route: str, major: str, headers: Any) -> None:
        bucket = headers.get("X-RateLimit-Bucket")
        if bucket:
            self._bucket_of[route] = bucket
        key = self._key(route, major)
        remaining, reset_after = headers.get("X-RateLimit-Remaining"), headers.get("X-RateLimit-Reset-After")
        try:
            exhausted = remaining is not None and int(remaining) <= 0 and reset_after is not None
            until = time.monotonic() + float(reset_after) if exhausted else None
        except ValueError:
            until = None
        if until is not None:
            self._blocked_until[key] = until
        else:
            self._blocked_until.pop(key, None)


class DiscordChannel(ChannelAdapter):
    """A Discord bot: Gateway in, REST out."""

    name = "discord"
    text_limit = 2000
    caption_limit = 2000
    typing_interval = 8.0

    def __init__(
        self,
        token: str,
        api_base: str,
        *,
        timings: GatewayTimings | None = None,
        ready_timeout: float = 15.0,
        max_rate_limit_wait: float = 30.0,
    ) -> None:
        self._token = token
        self._api_base = api_base.rstrip("/")
        self._timings = timings
        self._ready_timeout = ready_timeout
        self._limits = RouteLimits(max_rate_limit_wait)
        self._http: aiohttp.ClientSession | None = None
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.gateway: DiscordGateway | None = None
        self.receiver: asyncio.Task[None] | None = None
        """The gateway loop; it ends only on a fatal close (token refused, intents not enabled)."""
        self._consumer: asyncio.Task[None] | None = None
        self.bot_id: str | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, sink: ChannelSink) -> None:
        """Check the token, find the gateway, connect; returns once READY (or after a timeout).

        Raises ``ChannelStartError`` when Discord refuses the token (or the intents), and
        ``TransientError`` when it cannot be reached or is failing; either way nothing is left
        running, so ``start`` may be called again.
        """
        await self.stop()  # a second start (the host's retry) begins from nothing
        self._http = aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT}, timeout=aiohttp.ClientTimeout(total=60, sock_connect=15)
        )
        try:
            url = await self._discover()
            self._inbox = asyncio.Queue()
            self.gateway = DiscordGateway(self._http, self._token, url, self._inbox.put_nowait, self._timings)
            self.receiver = asyncio.create_task(self.gateway.run(), name="discord-gateway")
            self._consumer = asyncio.create_task(self._consume(sink), name="discord-inbox")
            await self._await_ready()
        except BaseException:
            await self.stop()
            raise

    async def _discover(self) -> str:
        me = await self._start_call("/users/@me")
        if not isinstance(me, dict) or not isinstance(me.get("id"), str):
            raise TransientError("Discord GET /users/@me answered without a user id")
        self.bot_id = me["id"]
        gateway = await self._start_call("/gateway/bot")
        if not isinstance(gateway, dict) or not isinstance(gateway.get("url"), str):
            raise TransientError("Discord GET /gateway/bot answered without a gateway url")
        limit = gateway.get("session_start_limit")
        if isinstance(limit, dict) and limit.get("remaining") == 0:
            log.warning(
                "Discord: no session starts left today; the gateway refuses to identify for %s ms",
                limit.get("reset_after"),
            )
        log.info("Discord: signed in as bot user %s (%s)", me.get("username"), self.bot_id)
        return str(gateway["url"])

    async def _start_call(self, path: str) -> Any:
        """One GET during start: a refused token is a ``ChannelStartError`` saying what to fix;
        anything else that fails (unreachable, 429, 5xx, an unexpected 4xx) is a ``TransientError``
        the host retries."""
        try:
            async with self._session.get(self._api_base + path, headers=self._auth) as resp:
                body = await _body(resp)
                if resp.status in (401, 403):
                    raise ChannelStartError(
                        f"{TOKEN_ENV} was refused by Discord ({resp.status} {resp.reason}: {_detail(body)})"
                    )
                if resp.status >= 400:
                    raise TransientError(
                        f"Discord GET {path} failed: HTTP {resp.status} {_detail(body)}".strip(),
                        retry_after=_retry_after(resp, body) if resp.status == 429 else None,
                    )
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(
                f"could not reach Discord at {self._api_base}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _await_ready(self) -> None:
        """Wait for READY; a fatal close before it (4004, 4014) means the channel cannot start."""
        assert self.gateway is not None and self.receiver is not None
        ready = asyncio.create_task(self.gateway.ready.wait())
        try:
            await asyncio.wait(
                {ready, self.receiver}, timeout=self._ready_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if self.gateway.fatal is not None:
            raise ChannelStartError(self.gateway.fatal)  # start() stops everything on the way out
        if not self.gateway.ready.is_set():
            log.warning(
                "Discord gateway not ready after %.0f s; still trying in the background", self._ready_timeout
            )

    def broken(self) -> str | None:
        return self.gateway.fatal if self.gateway is not None else None

    async def stop(self) -> None:
        """Cancel the gateway and inbox tasks, close the websocket and the HTTP session."""
        for task in (self.receiver, self._consumer):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
                if not task.cancelled() and task.exception() is not None:
                    log.error("Discord: the %s task had failed: %r", task.get_name(), task.exception())
        self.receiver = self._consumer = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _consume(self, sink: ChannelSink) -> None:
        """Hand MESSAGE_CREATE payloads to the router one by one, in gateway order."""
        while True:
            data = await self._inbox.get()
            bot_id = (self.gateway.bot_id if self.gateway else None) or self.bot_id or ""
            try:
                message = parse_message(data, bot_id, self._download)
            except Exception:  # the parser catches its own errors; this is the last line of defence
                log.exception("discord channel %r message %r: could not be parsed; skipped", *_ids(data))
                continue
            if message is None:
                continue
            try:
                await sink.receive(message)
            except Exception:
                log.exception(
                    "discord channel %s message %s: the router failed; skipped",
                    message.chat_id,
                    message.platform_message_id,
                )

    # --- sending ----------------------------------------------------------------------------

    async def send_text(self, target: ChatTarget, text: str) -> str | None:
        payload = {"content": text, "allowed_mentions": NO_PINGS}
        data = await self._api("POST", "/channels/{id}/messages", target.chat_id, json_body=payload)
        return _message_id(data)

    async def send_file(self, target: ChatTarget, path: Path, caption: str) -> str | None:
        content = await asyncio.to_thread(read_outgoing, path, UPLOAD_LIMIT, "discord")
        payload: dict[str, Any] = {
            "allowed_mentions": NO_PINGS,
            "attachments": [{"id": 0, "filename": path.name}],
        }
        if caption:
            payload["content"] = caption
        form = aiohttp.FormData()
        form.add_field("payload_json", json.dumps(payload), content_type="application/json")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        form.add_field("files[0]", content, filename=path.name, content_type=kind)
        data = await self._api("POST", "/channels/{id}/messages", target.chat_id, form=form)
        return _message_id(data)

    async def typing(self, target: ChatTarget) -> None:
        await self._api("POST", "/channels/{id}/typing", target.chat_id)

    async def _api(
        self,
        method: str,
        template: str,
        channel_id: str,
        *,
        json_body: dict[str, Any] | None = None,
        form: aiohttp.FormData | None = None,
    ) -> Any:
        """One REST call; raises ``TransientError``/``PermanentError`` as delivery expects."""
        route = f"{method} {template}"
        await self._limits.wait(route, channel_id)
        url = self._api_base + template.format(id=channel_id)
        try:
            async with self._session.request(
                method, url, json=json_body, data=form, headers=self._auth
            ) as resp:
                self._limits.update(route, channel_id, resp.headers)
                body = await _body(resp)
                if resp.status >= 400:
                    self._fail(route, resp, body)
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"discord {route}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _fail(route: str, resp: aiohttp.ClientResponse, body: Any) -> None:
        wait = None
        if resp.status == 429:
            wait = _retry_after(resp, body)
            is_global = resp.headers.get("X-RateLimit-Global") or (
                isinstance(body, dict) and body.get("global")
            )
            if is_global:
                log.warning("Discord global rate limit hit (%s); retry after %s s", route, wait)
        raise_for_status("discord", route, resp.status, _detail(body), wait)

    async def _download(self, url: str, limit: int) -> bytes:
        """Stream an attachment from Discord's CDN (no token sent), stopping past ``limit`` bytes."""
        try:
            async with self._session.get(url) as resp:
                if resp.status >= 400:
                    raise_for_status("discord", "attachment download", resp.status, resp.reason or "")
                return await read_capped(resp, limit, "discord attachment")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"discord attachment download: {type(exc).__name__}") from exc

    @property
    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise TransientError("discord channel is not started")
        return self._http

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bot {self._token}"}


async def _body(resp: aiohttp.ClientResponse) -> Any:
    """The JSON body, or the text when it is not JSON, or None when empty (204)."""
    text = await resp.text()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text[:300]


def _detail(body: Any) -> str:
    """Discord's error message and code (``Missing Access (code 50001)``)."""
    if isinstance(body, dict):
        message, code = body.get("message"), body.get("code")
        return f"{message} (code {code})" if code is not None else str(message or "")
    return str(body or "")


def _retry_after(resp: aiohttp.ClientResponse, body: Any) -> float | None:
    """A 429's wait: the body's precise ``retry_after`` seconds, else the headers'."""
    seconds = body.get("retry_after") if isinstance(body, dict) else None
    usable = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    return retry_after(resp.headers, seconds if usable else None)


def _ids(data: object) -> tuple[object, object]:
    """(channel id, message id) of a raw MESSAGE_CREATE payload, for logs; None when absent."""
    if not isinstance(data, dict):
        return None, None
    return data.get("channel_id"), data.get("id")


def _message_id(data: Any) -> str | None:
    return str(data["id"]) if isinstance(data, dict) and data.get("id") is not None else None
