"""Outbound: stored replies for chat platforms are sent through their channel adapters.

Replies reach the host database first (``runtime.pump``), as ``pending`` rows; this module sends
them and marks each ``delivered`` or ``failed``. Every chat has its own worker, so chats never
wait on each other and one chat's replies keep their order. A reply is split under the
platform's limit (``chunking``); a file goes with its caption when the caption fits, after its
text otherwise. Each platform call is retried on ``TransientError`` (honouring retry-after)
with exponential backoff up to ``max_attempts``; a ``PermanentError`` (bot kicked, chat gone)
is recorded once, on the row and on the session's ``last_error`` (so ``nanohost status`` shows
it), and never retried. Each outcome is published on the bus as ``{"type": "delivery", "id",
"status"}``. A host that dies between sending and marking sends a reply at most once
more on restart; rows are picked up again from the database, so none is lost.

While the agent works on a chat's message, the chat sees the platform's typing signal, re-sent
every ``typing_interval`` seconds until nothing from that chat waits for an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nanohost.agent_files import kept_copy
from nanohost.bus import MessageBus
from nanohost.channels.base import ChannelAdapter, ChatTarget, PermanentError, TransientError
from nanohost.channels.chunking import split_to_fit
from nanohost.db.engine import transaction
from nanohost.db.models import AgentSession, Message

log = logging.getLogger(__name__)

T = TypeVar("T")
ChatKey = tuple[str, str, str | None]
"""(channel, chat id, thread id)."""

RESCAN_EVERY = 30.0
"""Seconds between scans for pending rows whose event was missed (a full event queue)."""


class DeliveryFailed(Exception):
    """A reply could not be sent; the message says why."""


class Delivery:
    """Sends pending outbound rows of the enabled chat platforms."""

    def __init__(
        self,
        db: sessionmaker[Session],
        bus: MessageBus,
        adapters: dict[str, ChannelAdapter],
        outbox: Path,
        *,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        typing_for: float = 600.0,
    ) -> None:
        self.db = db
        self.bus = bus
        self.adapters = adapters
        self.outbox = outbox
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.typing_for = typing_for
        self._workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: set[tuple[str, str]] = set()
        self._unmarked: dict[int, tuple[str, str | None]] = {}
        self._typing: dict[ChatKey, asyncio.Task[None]] = {}
        self._typing_wake: dict[ChatKey, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for new rows and send what was left pending before this start."""
        queue = self.bus.subscribe_all()
        self._listener = asyncio.get_running_loop().create_task(self._listen(queue))
        self.rescan()

    async def close(self) -> None:
        tasks = [t for t in (self._listener, *self._workers.values(), *self._typing.values()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._typing.clear()

    async def _listen(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Act on each new row as it is announced, and rescan every ``RESCAN_EVERY`` seconds
        whatever the traffic (a busy bus is exactly when a full queue drops events). A failure
        (a locked database) is logged and the loop goes on: it must outlive any one event."""
        next_rescan = time.monotonic() + RESCAN_EVERY
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_rescan - time.monotonic())):
                        event = await queue.get()
                        if event.get("type") == "message" and isinstance(event.get("id"), int):
                            self._guarded(self._on_message, event["id"])
                if time.monotonic() >= next_rescan:
                    next_rescan = time.monotonic() + RESCAN_EVERY
                    self._guarded(self.rescan)
        finally:
            self.bus.unsubscribe_all(queue)

    @staticmethod
    def _guarded(step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except Exception:
            log.exception("delivery: %s failed; carrying on", getattr(step, "__name__", step))

    def rescan(self) -> None:
        """Start a worker for every chat with pending rows on an enabled channel."""
        if not self.adapters:
            return
        with transaction(self.db) as db:
            chats = db.execute(
                select(Message.channel, Message.chat_id)
                .where(
                    Message.direction == "out",
                    Message.status == "pending",
                    Message.channel.in_(list(self.adapters)),
                )
                .distinct()
            ).all()
        for channel, chat_id in chats:
            self._kick(channel, chat_id)

    def _on_message(self, message_id: int) -> None:
        if not self.adapters:  # web and API replies need no sending: spare the hot path a read
            return
        with transaction(self.db) as db:
            row = db.get(Message, message_id)
            if row is None or row.channel not in self.adapters:
                return
            direction, channel, chat_id, thread_id = row.direction, row.channel, row.chat_id, row.thread_id
        if direction == "out":
            self._kick(channel, chat_id)
        else:
            self._start_typing((channel, chat_id, thread_id))

    # --- sending --------------------------------------------------------------------------

    def _kick(self, channel: str, chat_id: str) -> None:
        key = (channel, chat_id)
        worker = self._workers.get(key)
        if worker is not None and not worker.done():
            self._again.add(key)
            return
        self._workers[key] = asyncio.get_running_loop().create_task(self._work(channel, chat_id))

    async def _work(self, channel: str, chat_id: str) -> None:
        """Send the chat's pending rows oldest first, until none is left."""
        adapter = self.adapters[channel]
        while True:
            self._again.discard((channel, chat_id))
            self._settle_unmarked()
            with transaction(self.db) as db:
                row = db.scalars(
                    select(Message)
                    .where(
                        Message.channel == channel,
                        Message.chat_id == chat_id,
                        Message.direction == "out",
                        Message.status == "pending",
                        Message.id.not_in(list(self._unmarked)),  # sent; only its mark is missing
                    )
                    .order_by(Message.id)
                    .limit(1)
                ).first()
                if row is None:
                    if (channel, chat_id) in self._again:
                        continue
                    return
                message_id, text, thread_id = row.id, row.text, row.thread_id
                files = [Path(str(a["path"])) for a in row.attachments if isinstance(a, dict) and "path" in a]
            target = ChatTarget(chat_id, thread_id)
            try:
                await self._send(adapter, target, text, files)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._settle(message_id, "failed", str(exc))
            else:
                self._settle(message_id, "delivered", None)
            self._poke_typing((channel, chat_id, thread_id))

    async def _send(self, adapter: ChannelAdapter, target: ChatTarget, text: str, files: list[Path]) -> None:
        caption = ""
        if files and adapter.measure(text) <= adapter.caption_limit:
            caption, text = text, ""
        for piece in split_to_fit(text, adapter.text_limit, adapter.measure) if text.strip() else []:
            await self._attempt(partial(adapter.send_text, target, piece))
        for path in files:
            kept = kept_copy(path, self.outbox)  # only the host's own copies, never the workspace
            if kept is None:
                raise DeliveryFailed(f"the file {path.name} is no longer there")
            await self._attempt(partial(adapter.send_file, target, kept, caption))
            caption = ""

    async def _attempt(self, call: Callable[[], Awaitable[T]]) -> T:
        """One platform call, retried on transient errors with backoff; permanent ones pass up."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await call()
            except PermanentError:
                raise
            except TransientError as exc:
                if attempt == self.max_attempts:
                    raise DeliveryFailed(f"gave up after {attempt} attempts: {exc}") from exc
                backoff = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
                delay = max(backoff, exc.retry_after or 0.0)
                log.info("delivery: %s; retrying in %.1f s (attempt %d)", exc, delay, attempt)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _settle(self, message_id: int, status: str, error: str | None) -> None:
        """Mark a row sent or failed; if the database refuses just now, remember the outcome and
        try again later, so a sent reply is never sent again for want of its mark."""
        try:
            if status == "failed":
                self._mark_failed(message_id, error or "")
            else:
                self._mark(message_id, status, error)
        except Exception as exc:
            log.warning("delivery: cannot mark message %s %s yet: %s", message_id, status, exc)
            self._unmarked[message_id] = (status, error)
        else:
            self._unmarked.pop(message_id, None)

    def _settle_unmarked(self) -> None:
        for message_id, (status, error) in list(self._unmarked.items()):
            self._settle(message_id, status, error)

    def _mark(self, message_id: int, status: str, error: str | None) -> None:
        with transaction(self.db) as db:
            row = db.get(Message, message_id)
            if row is None:
                return
            row.status, row.error = status, error
            group_id = row.group_id
        self.bus.publish(group_id, {"type": "delivery", "id": message_id, "status": status})

    def _mark_failed(self, message_id: int, error: str) -> None:
        """Record a reply that could not be delivered: on the row, the session and in the log."""
        with transaction(self.db) as db:
            row = db.get(Message, message_id)
            if row is None:
                return
            row.status, row.error = "failed", error
            where, group_id = f"{row.channel} chat {row.chat_id}", row.group_id
            session = db.get(AgentSession, row.session_id) if row.session_id is not None else None
            if session is not None:
                session.last_error = f"delivery to {where} failed: {error}"
        log.error("delivery: message %s to %s failed: %s", message_id, where, error)
        self.bus.publish(group_id, {"type": "delivery", "id": message_id, "status": "failed"})

    # --- typing ---------------------------------------------------------------------------

    def _start_typing(self, key: ChatKey) -> None:
        adapter = self.adapters.get(key[0])
        if adapter is None or adapter.typing_interval is None:
            return
        task = self._typing.get(key)
        if task is not None and not task.done():
            return
        self._typing_wake[key] = asyncio.Event()
        self._typing[key] = asyncio.get_running_loop().create_task(self._keep_typing(adapter, key))

    def _poke_typing(self, key: ChatKey) -> None:
        wake = self._typing_wake.get(key)
        if wake is not None:
            wake.set()

    def _waiting(self, key: ChatKey) -> bool:
        """Whether a message from this chat still waits for the agent's answer."""
        channel, chat_id, thread_id = key
        with transaction(self.db) as db:
            found = db.scalar(
                select(Message.id)
                .where(
                    Message.channel == channel,
                    Message.chat_id == chat_id,
                    Message.thread_id.is_(None) if thread_id is None else Message.thread_id == thread_id,
                    Message.direction == "in",
                    Message.status.in_(("pending", "queued")),
                )
                .limit(1)
            )
        return found is not None

    async def _keep_typing(self, adapter: ChannelAdapter, key: ChatKey) -> None:
        assert adapter.typing_interval is not None
        wake = self._typing_wake[key]
        deadline = time.monotonic() + self.typing_for
        target = ChatTarget(key[1], key[2])
        try:
            while time.monotonic() < deadline and self._waiting(key):
                try:
                    await adapter.typing(target)
                except Exception as exc:  # a typing signal is a courtesy; never let it fail a turn
                    log.debug("typing signal to %s chat %s failed: %s", key[0], key[1], exc)
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(adapter.typing_interval):
                        await wake.wait()
        finally:
            if self._typing_wake.get(key) is wake:  # forget the chat; a new message starts afresh
                del self._typing_wake[key]
                self._typing.pop(key, None)
