"""Inbound: a message for a group becomes a recorded row and a queued prompt in its session.

Two ways in. ``to_group`` is for the HTTP API and the web chat, which name the group. ``receive``
is for chat platforms and applies the same rules to every channel, in this order: the chat must
be bound to a group (unbound chats are ignored, logged once); the sender must be on the group's
allow-list when it has one; the group's engage mode must be met (``always``; ``mention``: the
bot's @-mention, a reply to the bot, or a direct chat; ``trigger``: the trigger word first);
a platform message id seen before is dropped. Attachments are then saved under the group's
``inbox/`` and the message is recorded and queued, in the chat's own session when the binding
says ``per-chat``. Anything refused for a reason the user can fix (an oversized message or file)
gets a reply that says why; nothing raises back into a channel's receive loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, joinedload

from nanohost.bus import MessageBus
from nanohost.channels.base import FileTooLarge, InboundMessage
from nanohost.channels.inbox import save_for_group
from nanohost.commands import ChatCommands, command_of
from nanohost.db.engine import reading, transaction
from nanohost.db.models import AgentGroup, AgentSession, ChatBinding, Message
from nanohost.disk import is_disk_full
from nanohost.orchestrator import Orchestrator
from nanohost.snapshots import Busy

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_TEXT = 100_000
"""Characters one inbound message may carry (any channel)."""
DB_ATTEMPTS = 3
DB_RETRY_BASE = 0.5
"""Seconds before the first retry when the database stays locked; doubled each time."""

__all__ = ["MAX_TEXT", "Duplicate", "InboundMessage", "NotQueued", "Router"]


class Duplicate(Exception):
    """This platform message was already recorded."""


class NotQueued(Exception):
    """The message was recorded, but the database failed before it reached the session's queue.

    Nothing is lost: the session's next wake queues it. ``message_id`` is the recorded row."""

    def __init__(self, message_id: int, why: str) -> None:
        super().__init__(f"message {message_id} was recorded but not queued ({why})")
        self.message_id = message_id


def _lost(message: InboundMessage, exc: Exception) -> None:
    log.error(
        "%s chat %s message %s LOST: the database stayed unavailable (%s)",
        message.channel,
        message.chat_id,
        message.platform_message_id,
        exc,
    )


def _plain(message: InboundMessage) -> bool:
    """Text only, no chat command, within the size limit: what ``receive_many`` records in bulk."""
    return (
        not message.attachments
        and not message.files
        and bool(message.text.strip())
        and len(message.text) <= MAX_TEXT
        and command_of(message.text) is None
    )


def chat_key(channel: str, chat_id: str) -> str:
    """The session key of a per-chat session."""
    return f"{channel}:{chat_id}"


def session_key(binding: ChatBinding) -> str | None:
    """Which of its group's sessions a bound chat talks to: its own (``per-chat``) or the
    group's shared one (None)."""
    return chat_key(binding.channel, binding.chat_id) if binding.session_mode == "per-chat" else None


_ID_SHAPED = re.compile(r"\d+|[UWB][A-Z0-9]{6,}")
"""Telegram and Discord user ids are numbers; Slack's are U…/W…/B… in capitals."""


def sender_allowed(entries: list[str], message: InboundMessage) -> bool:
    """Whether an allow-list (empty: everyone) lets ``message``'s sender in.

    An entry is a user id (``123456789``, ``U012AB3CD``: matched exactly against the platform's
    id), ``@name`` (matched, ignoring case, against the sender's unique user name) or a bare name
    (either). ``telegram:@alice`` or ``discord:1234`` limits an entry to one platform, since the
    same name on two platforms may be two people. Display names never match: anyone can choose one.
    """
    if not entries:
        return True
    handle = (message.sender_handle or "").lower()
    for entry in entries:
        platform, scoped, who = entry.partition(":")
        if not scoped:
            who = entry
        elif platform != message.channel:
            continue
        if who.startswith("@"):
            if handle and who[1:].lower() == handle:
                return True
        elif who == message.sender_id:
            return True
        elif handle and not _ID_SHAPED.fullmatch(who) and who.lower() == handle:
            return True
    return False


def starts_with_trigger(text: str, trigger: str) -> bool:
    """True when ``text`` begins with the trigger word (case-insensitive, as a whole word)."""
    pattern = re.escape(trigger.strip())
    return bool(re.match(rf"\s*{pattern}(?![\w])", text, re.IGNORECASE))


class Router:
    """Records inbound messages and queues them for their group's session."""

    def __init__(self, orchestrator: Orchestrator, *, max_attachment_bytes: int = 20 * 1024**2) -> None:
        self.orchestrator = orchestrator
        self.max_attachment_bytes = max_attachment_bytes
        self._unbound_logged: set[tuple[str, str]] = set()
        self.commands = ChatCommands(orchestrator)

    @property
    def bus(self) -> MessageBus:
        return self.orchestrator.ctx.bus

    async def to_group(
        self,
        group_name: str,
        message: InboundMessage,
        *,
        chat_key: str | None = None,
    ) -> int:
        """Record ``message`` for the named group and queue it; returns the message id."""
        with reading(self.orchestrator.ctx.db) as db:
            group = db.scalar(select(AgentGroup).where(AgentGroup.name == group_name))
            if group is None:
                raise LookupError(f"no group named {group_name!r}")
        return await self.to_loaded_group(group, message, chat_key=chat_key)

    async def to_loaded_group(
        self, group: AgentGroup, message: InboundMessage, *, chat_key: str | None = None
    ) -> int:
        """``to_group`` for a group the caller has just read (the API and the web chat look it up
        to check the URL): no second lookup on the way in."""
        if (command := command_of(message.text)) is not None and not message.attachments:
            return (await self.commands.run(group, message, chat_key, command))[0]
        return await self._record(group, message, chat_key)

    async def _record(
        self, group: AgentGroup, message: InboundMessage, chat_key: str | None, *, wait: bool = True
    ) -> int:
        """Record the message in its session (one transaction), then queue it for the agent;
        ``wait``: until it is in the queue (see SessionRuntime.submit)."""
        message_id, session_id, revived = await self._retrying(self._insert, group, message, chat_key)
        self.bus.publish(group.id, {"type": "message", "id": message_id})
        try:
            runtime = await self.orchestrator.runtime(session_id)
            await runtime.submit(
                message_id,
                message.text,
                message.sender,
                list(message.attachments),
                wait=wait,
                marked=True,
                revived=revived,
            )
        except OperationalError as exc:  # recorded: the session's next wake queues it
            raise NotQueued(message_id, str(exc)) from exc
        except (sqlite3.Error, OSError) as exc:
            if is_disk_full(exc):  # stored whole or not at all: the sender is told to send it again
                self._take_back(group, message_id, "the host's disk was full")
            raise
        return message_id

    def _take_back(self, group: AgentGroup, message_id: int, why: str) -> None:
        """A recorded message that could not be queued is marked refused (not deleted: its id is
        never reused), so it is not answered later beside the copy its sender sends again."""
        try:
            with transaction(self.orchestrator.ctx.db) as db:
                row = db.get(Message, message_id)
                if row is not None and row.status in ("pending", "queued"):
                    row.status, row.error = "refused", why
        except OperationalError as exc:
            log.error(
                "message %s: neither queued nor taken back (%s); its session's next wake queues it",
                message_id,
                exc,
            )
            return
        self.bus.publish(group.id, {"type": "message", "id": message_id})

    def _insert(
        self, group: AgentGroup, message: InboundMessage, chat_key: str | None
    ) -> tuple[int, int, bool]:
        """Record the message as queued, in one transaction with what else routing changes: its
        session (made when missing), revived when it had failed (a new message is the way out).
        Returns the message id, the session id and whether the session was revived. The runtime
        appends it to the queue next; a host that stops in between queues it at the next wake
        (pending and queued are both waiting), and one held back puts it back to pending."""
        try:
            with transaction(self.orchestrator.ctx.db) as db:
                session_id = self.orchestrator.session_for(group, chat_key, db)
                row = inbound_row(group.id, session_id, message, status="queued")
                db.add(row)
                db.flush()
                revived = db.execute(
                    update(AgentSession)
                    .where(AgentSession.id == session_id, AgentSession.status == "failed")
                    .values(status="idle", crash_count=0, failure_notified=False)
                )
                return row.id, session_id, bool(revived.rowcount)  # type: ignore[attr-defined]
        except IntegrityError:
            raise Duplicate(
                f"{message.channel} message {message.platform_message_id} was already received"
            ) from None

    # --- chat platforms ---------------------------------------------------------------------

    async def receive(self, message: InboundMessage) -> None:
        """Route a chat platform's message by the rules above; never raises for a refused one.

        Each database step waits out a database that stays locked past its busy timeout a few
        times; when it never frees up, the message is logged as lost (the platform will not send
        it again), or, if it was already recorded, as waiting for the session's next wake.
        """
        await self._receive_one(message)

    async def _receive_one(self, message: InboundMessage) -> None:
        try:
            await self._receive(message)
        except OperationalError as exc:
            _lost(message, exc)
        except NotQueued as exc:
            log.error("%s; it is queued at the session's next wake", exc)

    async def receive_many(self, messages: list[InboundMessage]) -> None:
        """Route a platform's batch of messages (Telegram's ``getUpdates`` returns up to 100) by
        the same rules as ``receive``, in order. Consecutive plain messages (text only, no chat
        command) are checked and recorded in one transaction and queued by one group commit per
        session; any other message goes through ``receive`` where it stands. Never raises for a
        refused message."""
        run: list[InboundMessage] = []
        for message in messages:
            if _plain(message):
                run.append(message)
                continue
            await self._receive_run(run)
            run = []
            await self._receive_one(message)
        await self._receive_run(run)

    async def _receive_run(self, run: list[InboundMessage]) -> None:
        if len(run) <= 1:  # one alone: as ``receive`` (measured no faster through the batch path)
            for message in run:
                await self._receive_one(message)
            return
        try:
            recorded = await self._retrying(self._insert_run, run)
        except OperationalError as exc:  # the database stayed locked: nothing was recorded
            for message in run:
                _lost(message, exc)
            return
        except Duplicate:  # a race on a platform id: each on its own, where that is handled
            for message in run:
                await self._receive_one(message)
            return
        for group_id, message_id, session_id, revived, message in recorded:
            self.bus.publish(group_id, {"type": "message", "id": message_id})
            try:
                runtime = await self.orchestrator.runtime(session_id)
                await runtime.submit(
                    message_id, message.text, message.sender, [], wait=False, marked=True, revived=revived
                )
            except OperationalError as exc:  # recorded: the session's next wake queues it
                log.error("message %s recorded but not queued (%s); queued at the next wake", message_id, exc)

    def _insert_run(
        self, run: list[InboundMessage]
    ) -> list[tuple[int, int, int, bool, InboundMessage]]:
        """``_binding_and_seen`` and ``_insert`` for plain messages, all in one transaction:
        (group id, message id, session id, session revived, message) of each one recorded."""
        kept: list[tuple[int, Message, int, bool, InboundMessage]] = []
        try:
            with transaction(self.orchestrator.ctx.db) as db, db.no_autoflush:
                bindings: dict[tuple[str, str], tuple[AgentGroup, str | None] | None] = {}
                sessions: dict[tuple[int, str | None], tuple[int, bool]] = {}
                ids = self._seen_of(run, db)  # one query for the batch, not one each
                for message in run:
                    chat = (message.channel, message.chat_id)
                    if chat not in bindings:
                        bindings[chat] = self._binding(message, db)
                    found = bindings[chat]
                    if found is None:
                        continue
                    group, key = found
                    where = f"{message.channel} chat {message.chat_id} message {message.platform_message_id}"
                    if not self._sender_allowed(group, message):
                        log.info(
                            "%s: sender %s is not on group %s's allow-list; ignored",
                            where,
                            message.sender,
                            group.name,
                        )
                        continue
                    if message.platform_message_id is not None:
                        platform_id = (message.channel, message.platform_message_id)
                        if platform_id in ids:
                            log.info("%s: already received; ignored", where)
                            continue
                        ids.add(platform_id)
                    if not self._engaged(group, message):
                        log.debug("%s: not addressed to the bot; ignored", where)
                        continue
                    if (group.id, key) not in sessions:
                        session_id = self.orchestrator.session_for(group, key, db)
                        revived = db.execute(
                            update(AgentSession)
                            .where(AgentSession.id == session_id, AgentSession.status == "failed")
                            .values(status="idle", crash_count=0, failure_notified=False)
                        )
                        sessions[(group.id, key)] = (session_id, bool(revived.rowcount))  # type: ignore[attr-defined]
                    session_id, revived_now = sessions[(group.id, key)]
                    row = inbound_row(group.id, session_id, message, status="queued")
                    db.add(row)
                    kept.append((group.id, row, session_id, revived_now, message))
                    sessions[(group.id, key)] = (session_id, False)  # revived once is enough
                db.flush()
                return [(g, row.id, sid, rev, m) for g, row, sid, rev, m in kept]
        except IntegrityError:
            raise Duplicate("a message of this batch was already received") from None

    async def _retrying(self, step: Callable[..., T], *args: Any) -> T:
        """Run one database step, waiting out a locked database ``DB_ATTEMPTS`` times."""
        for attempt in range(DB_ATTEMPTS):
            try:
                return step(*args)
            except OperationalError as exc:
                if attempt + 1 == DB_ATTEMPTS or is_disk_full(exc):  # waiting frees no disk space
                    raise
                log.warning("router: database busy (%s); trying again", exc)
                await asyncio.sleep(DB_RETRY_BASE * 2**attempt)
        raise AssertionError("unreachable")

    async def _receive(self, message: InboundMessage) -> None:
        where = f"{message.channel} chat {message.chat_id} message {message.platform_message_id}"
        found, seen = await self._retrying(self._binding_and_seen, message)
        if found is None:
            return
        group, key = found
        if not self._sender_allowed(group, message):
            log.info(
                "%s: sender %s is not on group %s's allow-list; ignored", where, message.sender, group.name
            )
            return
        if seen:
            log.info("%s: already received; ignored", where)
            return
        if (command := command_of(message.text)) is not None:  # explicit, so in any engage mode
            await self.commands.run(group, message, key, command)
            return
        if not self._engaged(group, message):
            log.debug(
                "%s: not addressed to the bot (engage mode %s); ignored", where, group.config.engage_mode
            )
            return
        if len(message.text) > MAX_TEXT:
            self._refuse(
                group, message, key, f"your message is longer than {MAX_TEXT:,} characters", whole=True
            )
            return
        attachments, refusals = await self._save_files(group, message, where)
        if not message.text.strip() and not attachments:
            if refusals:
                await self._retrying(self._refuse, group, message, key, "; ".join(refusals), True)
            else:
                log.info("%s: empty message; ignored", where)
            return
        if refusals:
            await self._retrying(self._refuse, group, message, key, "; ".join(refusals), False)
        inbound = InboundMessage(
            channel=message.channel,
            chat_id=message.chat_id,
            sender=message.sender,
            text=message.text,
            attachments=attachments,
            platform_message_id=message.platform_message_id,
            sender_id=message.sender_id,
            thread_id=message.thread_id,
        )
        try:  # recorded is what counts here: a failed queue write is handled by the runtime
            await self._record(group, inbound, key, wait=False)
        except Duplicate:
            log.info("%s: already received; ignored", where)

    async def chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        """Move a chat's binding (and its per-chat sessions) to the chat's new platform id."""
        with transaction(self.orchestrator.ctx.db) as db:
            binding = db.scalar(
                select(ChatBinding).where(ChatBinding.channel == channel, ChatBinding.chat_id == old_chat_id)
            )
            taken = db.scalar(
                select(ChatBinding).where(ChatBinding.channel == channel, ChatBinding.chat_id == new_chat_id)
            )
            if binding is None or taken is not None:
                return
            binding.chat_id = new_chat_id
            for session in db.scalars(
                select(AgentSession).where(AgentSession.chat_key == chat_key(channel, old_chat_id))
            ):
                session.chat_key = chat_key(channel, new_chat_id)
        log.info("%s chat %s is now %s; its binding moved with it", channel, old_chat_id, new_chat_id)

    def _binding_and_seen(
        self, message: InboundMessage
    ) -> tuple[tuple[AgentGroup, str | None] | None, bool]:
        """``_binding`` and ``_seen`` in one transaction (each costs one on the routing path)."""
        with transaction(self.orchestrator.ctx.db) as db:
            found = self._binding(message, db)
            return found, found is not None and self._seen(message, db)

    def _binding(self, message: InboundMessage, db: Session) -> tuple[AgentGroup, str | None] | None:
        """The bound group and the session key, or None for an unbound chat (logged once)."""
        binding = db.scalar(
            select(ChatBinding)
            .options(joinedload(ChatBinding.group).joinedload(AgentGroup.config))
            .where(ChatBinding.channel == message.channel, ChatBinding.chat_id == message.chat_id)
        )
        if binding is None:
            chat = (message.channel, message.chat_id)
            if chat not in self._unbound_logged:
                self._unbound_logged.add(chat)
                log.info(
                    "%s chat %s is not bound to a group; ignoring it (bind it with "
                    "`nanohost bind %s %s GROUP`)",
                    *chat,
                    *chat,
                )
            return None
        return binding.group, session_key(binding)

    @staticmethod
    def _sender_allowed(group: AgentGroup, message: InboundMessage) -> bool:
        return sender_allowed(group.config.allowed_senders, message)

    @staticmethod
    def _engaged(group: AgentGroup, message: InboundMessage) -> bool:
        mode = group.config.engage_mode
        if mode == "always" or message.is_direct:
            return True
        if mode == "mention":
            return message.mentions_bot
        trigger = group.config.trigger_word or ""
        return bool(trigger) and starts_with_trigger(message.text, trigger)

    @staticmethod
    def _seen_of(run: list[InboundMessage], db: Session) -> set[tuple[str, str]]:
        """The (channel, platform message id) of the messages in ``run`` recorded before."""
        wanted: dict[str, set[str]] = {}
        for message in run:
            if message.platform_message_id is not None:
                wanted.setdefault(message.channel, set()).add(message.platform_message_id)
        seen: set[tuple[str, str]] = set()
        for channel, platform_ids in wanted.items():
            for found in db.scalars(
                select(Message.platform_message_id).where(
                    Message.direction == "in",
                    Message.channel == channel,
                    Message.platform_message_id.in_(sorted(platform_ids)),
                )
            ):
                seen.add((channel, str(found)))
        return seen

    @staticmethod
    def _seen(message: InboundMessage, db: Session) -> bool:
        if message.platform_message_id is None:
            return False
        found = db.scalar(
            select(Message.id).where(
                Message.direction == "in",
                Message.channel == message.channel,
                Message.platform_message_id == message.platform_message_id,
            )
        )
        return found is not None

    async def _save_files(
        self, group: AgentGroup, message: InboundMessage, where: str
    ) -> tuple[list[str], list[str]]:
        """Download and save each attachment under the group's inbox; returns (paths, refusals)."""
        saved: list[str] = []
        refusals: list[str] = []
        limit = self.max_attachment_bytes
        settings = self.orchestrator.ctx.settings
        for incoming in message.files:
            if incoming.size is not None and incoming.size > limit:
                refusals.append(f"{incoming.name!r} is larger than the {_size(limit)} limit")
                continue
            try:
                data = await incoming.fetch(limit)
            except FileTooLarge:
                refusals.append(f"{incoming.name!r} is larger than the {_size(limit)} limit")
                continue
            except Exception as exc:
                log.warning("%s: could not download %r: %s", where, incoming.name, exc)
                refusals.append(f"{incoming.name!r} could not be downloaded")
                continue
            try:
                path = await asyncio.to_thread(save_for_group, settings, group.folder, incoming.name, data)
                saved.append(path)
            except Busy:
                log.error("%s: could not save %r: a snapshot restore held the group", where, incoming.name)
                refusals.append(f"{incoming.name!r} arrived during a long snapshot restore; send it again")
            except OSError as exc:
                log.error("%s: could not save %r in %s: %s", where, incoming.name, group.folder, exc)
                refusals.append(f"{incoming.name!r} could not be saved on the host")
        return saved, refusals

    def _refuse(
        self, group: AgentGroup, message: InboundMessage, key: str | None, why: str, whole: bool
    ) -> None:
        """Tell the chat why (part of) its message was not passed on; delivery sends it.

        A message refused whole is recorded too (status ``refused``), so the platform sending it
        again is recognised as a duplicate and not answered twice.
        """
        with transaction(self.orchestrator.ctx.db) as db:
            session_id = self.orchestrator.session_for(group, key, db)
            if whole:
                db.add(inbound_row(group.id, session_id, message, status="refused", error=why))
            row = Message(
                group_id=group.id,
                session_id=session_id,
                direction="out",
                channel=message.channel,
                chat_id=message.chat_id,
                thread_id=message.thread_id,
                sender="nanohost",
                text=f"Not passed to the agent: {why}.",
                status="pending",
            )
            db.add(row)
            db.flush()
            message_id = row.id
        log.info("%s chat %s: refused: %s", message.channel, message.chat_id, why)
        self.bus.publish(group.id, {"type": "message", "id": message_id})


def inbound_row(
    group_id: int, session_id: int, message: InboundMessage, *, status: str, error: str | None = None
) -> Message:
    """The host's record of an inbound message (text bounded for refused ones)."""
    return Message(
        group_id=group_id,
        session_id=session_id,
        direction="in",
        channel=message.channel,
        chat_id=message.chat_id,
        thread_id=message.thread_id,
        sender=message.sender,
        text=message.text if status != "refused" else message.text[:2000],
        attachments=list(message.attachments),
        platform_message_id=message.platform_message_id,
        status=status,
        error=error,
    )


def _size(size: int) -> str:
    """A byte count as people read it: 20 MiB, 512 KiB."""
    if size >= 1024**2:
        return f"{size / 1024**2:.3g} MiB"
    return f"{size / 1024:.3g} KiB"
