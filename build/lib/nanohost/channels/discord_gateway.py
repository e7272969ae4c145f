"""The Discord Gateway (v10, JSON encoding) client: one session kept alive across reconnects.

Follows Discord's "Gateway" guide: after op 10 Hello the first heartbeat goes out after
``heartbeat_interval * jitter``, then one every interval, each carrying the last sequence number;
a heartbeat that is due while the previous one has no op 11 ACK means the connection is a zombie,
so it is closed with a non-1000 code (which keeps the session resumable) and resumed. A new
session starts with op 2 Identify; after a drop, op 7 Reconnect, or a resumable op 9, the client
connects to READY's ``resume_gateway_url`` and sends op 6 Resume, and Discord replays the
dispatches it missed. Op 9 with ``d=false`` and close codes 4007/4009 end the session: wait (1-5 s
for op 9) and identify anew. Close codes 4004 (token refused) and 4010-4014 (shard, version,
intents) cannot be fixed by reconnecting: the client logs why and stops. Reconnects back off from
``backoff_start`` doubling to ``backoff_max``, reset once a connection reaches READY or RESUMED.

Dispatches are handed on through ``on_message`` without waiting for the router, so a slow
message never delays heartbeat ACK handling (which would look like a zombie connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from nanohost.channels.http import Backoff

log = logging.getLogger(__name__)

GUILDS = 1 << 0
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
INTENTS = GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT

RESUMABLE_CLOSE = 4000
"""Our close code when we mean to resume: Discord ends the session on 1000/1001, not on this."""

FATAL_CLOSE_CODES: dict[int, str] = {
    4004: "NANOHOST_DISCORD_TOKEN was refused by the Discord gateway (close code 4004 Authentication failed)",
    4010: "Discord gateway closed with 4010 Invalid shard",
    4011: "Discord gateway closed with 4011 Sharding required (the bot is in too many guilds for one shard)",
    4012: "Discord gateway closed with 4012 Invalid API version",
    4013: "Discord gateway closed with 4013 Invalid intents",
    4014: (
        "Discord gateway closed with 4014 Disallowed intents: enable the Message Content intent for "
        "this bot in the Discord developer portal (Bot → Privileged Gateway Intents)"
    ),
}
NEW_SESSION_CLOSE_CODES = frozenset({4007, 4009})
"""Invalid sequence / session timed out: the session is gone, identify anew."""


@dataclass
class GatewayTimings:
    """The waits the protocol leaves to the client; tests shorten them."""

    backoff_start: float = 1.0
    backoff_max: float = 30.0
    jitter: Callable[[], float] = random.random
    """Fraction of the heartbeat interval before the first heartbeat (Discord asks for random)."""
    reidentify_delay: Callable[[], float] = field(default=lambda: random.uniform(1.0, 5.0))
    """Wait after op 9 Invalid Session (not resumable) before identifying anew."""
    hello_timeout: float = 30.0
    close_timeout: float = 5.0


class GatewayFatal(Exception):
    """Reconnecting cannot help (token refused, intents not enabled): the message says what to fix."""


@dataclass(frozen=True)
class Disconnect:
    """Why a connection ended, and how long to wait before the next (None: the backoff)."""

    reason: str
    wait: float | None = None


class DiscordGateway:
    """Keeps one gateway session for the bot; ``run()`` returns only on a fatal close."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        token: str,
        url: str,
        on_message: Callable[[Any], None],
        timings: GatewayTimings | None = None,
    ) -> None:
        self._http = http
        self._token = token
        self._url = url
        self._on_message = on_message
        self.timings = timings or GatewayTimings()
        self.session_id: str | None = None
        self.resume_url: str | None = None
        self.seq: int | None = None
        self.bot_id: str | None = None
        self.ready = asyncio.Event()
        """Set at the first READY: the bot is receiving."""
        self.fatal: str | None = None
        self._healthy = False
        self._acked = True
        self._zombie = False

    async def run(self) -> None:
        """Connect, and reconnect after every drop, until a fatal close (then log it and return)."""
        backoff = Backoff(self.timings.backoff_start, self.timings.backoff_max)
        while True:
            try:
                outcome = await self._connect_once()
            except GatewayFatal as exc:
                self.fatal = str(exc)
                log.error("Discord channel stopped: %s", exc)
                return
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                outcome = Disconnect(f"could not connect ({type(exc).__name__}: {exc})")
            except Exception as exc:  # a bug here must not end receiving for good
                log.exception("Discord gateway: unexpected error")
                outcome = Disconnect(f"unexpected error ({type(exc).__name__})")
            if self._healthy:
                backoff.reset()
            wait = outcome.wait if outcome.wait is not None else backoff.next()
            log.warning("Discord gateway: %s; reconnecting in %.1f s", outcome.reason, wait)
            await asyncio.sleep(wait)

    # --- one connection --------------------------------------------------------------------

    async def _connect_once(self) -> Disconnect:
        resuming = self.session_id is not None and self.resume_url is not None
        base = self.resume_url if resuming and self.resume_url else self._url
        self._healthy, self._acked, self._zombie = False, True, False
        ws = await self._http.ws_connect(
            _with_query(base),
            autoping=True,
            max_msg_size=0,
            timeout=aiohttp.ClientWSTimeout(ws_close=self.timings.close_timeout),
        )
        heartbeat: asyncio.Task[None] | None = None
        code = RESUMABLE_CLOSE
        try:
            interval = await self._hello(ws)
            if interval is None:
                return self._closed(ws.close_code)
            await ws.send_json(self._resume() if resuming else self._identify())
            heartbeat = asyncio.create_task(self._heartbeats(ws, interval))
            outcome = await self._read(ws)
            if self.session_id is None:
                code = 1000  # nothing left to resume
            return outcome
        finally:
            if heartbeat is not None:
                await _finish(heartbeat, cancel=not self._zombie)  # a zombie's is closing the socket
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close(code=code)

    async def _hello(self, ws: aiohttp.ClientWebSocketResponse) -> float | None:
        """The heartbeat interval in seconds from op 10, or None when the socket closed first."""
        msg = await ws.receive(timeout=self.timings.hello_timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return None
        payload = json.loads(msg.data)
        data = payload.get("d") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or payload.get("op") != 10 or not isinstance(data, dict):
            raise ValueError("the first gateway frame was not op 10 Hello")
        interval = data.get("heartbeat_interval")
        if not isinstance(interval, int | float) or interval <= 0:
            raise ValueError("op 10 Hello has no heartbeat_interval")
        return float(interval) / 1000

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> Disconnect:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                outcome = await self._frame(ws, msg.data)
                if outcome is not None:
                    return outcome
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return Disconnect(f"connection error ({ws.exception()})")
        return self._closed(ws.close_code)

    def _closed(self, code: int | None) -> Disconnect:
        """What a close means: fatal codes raise, session-ending codes forget the session."""
        if self._zombie:
            return Disconnect("no heartbeat ACK arrived: the connection was a zombie", wait=0.0)
        if code in FATAL_CLOSE_CODES:
            raise GatewayFatal(FATAL_CLOSE_CODES[code])
        if code in NEW_SESSION_CLOSE_CODES:
            self._forget_session()
            return Disconnect(f"closed with {code}: the session ended, identifying anew")
        return Disconnect(f"connection closed (code {code})")

    async def _frame(self, ws: aiohttp.ClientWebSocketResponse, raw: str) -> Disconnect | None:
        """Handle one gateway frame; a Disconnect ends this connection."""
        try:
            payload = json.loads(raw)
        except ValueError:
            log.warning("Discord gateway sent a frame that is not JSON; skipped")
            return None
        if not isinstance(payload, dict):
            log.warning("Discord gateway sent a frame that is not an object; skipped")
            return None
        op = payload.get("op")
        if op == 0:
            self._dispatch(payload)
        elif op == 1:
            await self._send_heartbeat(ws)
        elif op == 11:
            self._acked = True
        elif op == 7:
            return Disconnect("Discord asked to reconnect (op 7)", wait=0.0)
        elif op == 9:
            return self._invalid_session(payload.get("d") is True)
        return None

    def _invalid_session(self, resumable: bool) -> Disconnect:
        if resumable:
            return Disconnect("invalid session (op 9, resumable)", wait=0.0)
        self._forget_session()
        return Disconnect("invalid session (op 9): identifying anew", wait=self.timings.reidentify_delay())

    def _dispatch(self, payload: dict[str, Any]) -> None:
        seq = payload.get("s")
        if isinstance(seq, int):
            self.seq = seq
        kind, data = payload.get("t"), payload.get("d")
        if kind == "MESSAGE_CREATE":
            self._on_message(data)
        elif kind == "READY":
            self._ready(data)
        elif kind == "RESUMED":
            self._healthy = True
            log.info("Discord gateway session resumed at sequence %s", self.seq)

    def _ready(self, data: object) -> None:
        if not isinstance(data, dict):
            log.warning("Discord READY has no payload; cannot resume this session later")
            return
        session_id, resume_url = data.get("session_id"), data.get("resume_gateway_url")
        self.session_id = session_id if isinstance(session_id, str) else None
        self.resume_url = resume_url if isinstance(resume_url, str) else None
        user = data.get("user")
        if isinstance(user, dict) and isinstance(user.get("id"), str):
            self.bot_id = user["id"]
        self._healthy = True
        self.ready.set()
        log.info("Discord gateway ready (bot user %s)", self.bot_id)

    def _forget_session(self) -> None:
        self.session_id, self.resume_url, self.seq = None, None, None

    # --- heartbeats and payloads --------------------------------------------------------------

    async def _heartbeats(self, ws: aiohttp.ClientWebSocketResponse, interval: float) -> None:
        """Beat every ``interval`` s; a beat due with the last one un-ACKed closes the zombie."""
        await asyncio.sleep(interval * self.timings.jitter())
        while not ws.closed:
            if not self._acked:
                self._zombie = True
                log.warning("Discord gateway: no heartbeat ACK within %.1f s; reconnecting", interval)
                with contextlib.suppress(Exception):
                    await ws.close(code=RESUMABLE_CLOSE, message=b"heartbeat ACK missing")
                return
            await self._send_heartbeat(ws)
            await asyncio.sleep(interval)

    async def _send_heartbeat(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._acked = False
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_json({"op": 1, "d": self.seq})

    def _identify(self) -> dict[str, Any]:
        properties = {"os": sys.platform, "browser": "nanohost", "device": "nanohost"}
        return {"op": 2, "d": {"token": self._token, "intents": INTENTS, "properties": properties}}

    def _resume(self) -> dict[str, Any]:
        return {"op": 6, "d": {"token": self._token, "session_id": self.session_id, "seq": self.seq}}


def _with_query(url: str) -> str:
    """The gateway URL with the version and encoding Discord asks clients to name."""
    return f"{url}{'&' if '?' in url else '?'}v=10&encoding=json"


async def _finish(task: asyncio.Task[None], *, cancel: bool) -> None:
    """Wait for a helper task to end (cancelling it first when asked) without eating our own cancel."""
    if cancel:
        task.cancel()
    try:
        await asyncio.wait([task])
    finally:
        task.cancel()
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.warning("Discord heartbeat task failed: %r", task.exception())
