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
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, bindparam, exists, insert, literal_column, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from nanohost.bus import MessageBus
from nanohost.channels.base import FileTooLarge, InboundMessage
from nanohost.channels.inbox import save_for_group
from nanohost.commands import ChatCommands, command_of
from nanohost.db.engine import core_transaction, new_id, reading, transaction
from nanohost.db.models import AgentGroup, AgentSession, ChatBinding, ContainerConfig, Message
from nanohost.disk import is_disk_full
from nanohost.orchestrator import Orchestrator, newest_session, session_of
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


class Binding(Protocol):
    """A chat binding's row, or ``_ROUTE``'s columns of it."""

    @property
    def channel(self) -> str: ...
    @property
    def chat_id(self) -> str: ...
    @property
    def session_mode(self) -> str: ...


def session_key(binding: Binding) -> str | None:
    """Which of its group's sessions a bound chat talks to: its own (``per-chat``) or the
    group's shared one (None)."""
    return chat_key(binding.channel, binding.chat_id) if binding.session_mode == "per-chat" else None


@dataclass(frozen=True)
class Route:
    """Where a bound chat's messages go and the rules they meet there, as plain values."""

    group_id: int
    group_name: str
    folder: str
    session_key: str | None
    allowed_senders: list[str]
    engage_mode: str
    trigger_word: str | None


_ROUTE = (
    select(
        ChatBinding.channel,
        ChatBinding.chat_id,
        ChatBinding.session_mode,
        AgentGroup.id,
        AgentGroup.name,
        AgentGroup.folder,
        ContainerConfig.allowed_senders,
        ContainerConfig.engage_mode,
        ContainerConfig.trigger_word,
        exists()
        .where(
            # 'in' as a literal: SQLite matches a bound value to the partial unique index's WHERE
            # by preparing the statement again at every run (~60 µs, most of this query's time)
            Message.direction == literal_column("'in'"),
            Message.channel == ChatBinding.channel,
            Message.platform_message_id == bindparam("platform_id"),
        )
        .label("seen"),
    )
    .join(AgentGroup, AgentGroup.id == ChatBinding.group_id)
    .join(ContainerConfig, ContainerConfig.group_id == AgentGroup.id)
    .where(ChatBinding.channel == bindparam("channel"), ChatBinding.chat_id == bindparam("chat_id"))
)
"""A chat's binding, group and config and whether a platform message id was recorded before, in
one Core query: the routing path's ORM joined load of the three alone took 0.6 ms a message."""


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
        return await self._record(group.id, message, chat_key)

    async def _record(
        self, group_id: int, message: InboundMessage, chat_key: str | None, *, wait: bool = True
    ) -> int:
        """Record the message in its session (one transaction), then queue it for the agent;
        ``wait``: until it is in the queue (see SessionRuntime.submit)."""
        message_id, session_id, revived = await self._retrying(self._insert, group_id, message, chat_key)
        await self._queue(group_id, message_id, session_id, revived, message, wait=wait)
        return message_id

    async def _queue(
        self,
        group_id: int,
        message_id: int,
        session_id: int,
        revived: bool,
        message: InboundMessage,
        *,
        wait: bool,
    ) -> None:
        """Queue a recorded message for its session's agent (see SessionRuntime.submit) and tell
        the group's watchers. Raises ``NotQueued`` when the database failed on the way (the next
        wake queues it); a full disk takes the message back and raises."""
        self.bus.publish(group_id, {"type": "message", "id": message_id})
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
                self._take_back(group_id, message_id, "the host's disk was full")
            raise

    def _take_back(self, group_id: int, message_id: int, why: str) -> None:
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
        self.bus.publish(group_id, {"type": "message", "id": message_id})

    def _insert(self, group_id: int, message: InboundMessage, chat_key: str | None) -> tuple[int, int, bool]:
        """Record the message as queued, in one transaction with what else routing changes: its
        session (made when missing), revived when it had failed (a new message is the way out).
        Returns the message id, the session id and whether the session was revived. The runtime
        appends it to the queue next; a host that stops in between queues it at the next wake
        (pending and queued are both waiting), and one held back puts it back to pending."""
        try:
            with core_transaction(self.orchestrator.ctx.db) as db:
                session_id, revived = _session_for(db, group_id, chat_key)
                return _record_queued(db, group_id, session_id, message), session_id, revived
        except IntegrityError:
            raise Duplicate(
                f"{message.channel} message {message.platform_message_id} was already received"
            ) from None

    # --- chat platforms ---------------------------------------------------------------------

    async def receive(self, message: InboundMessage) -> None:
        """Route a chat platform's message by the rules above; never raises for a refused one.

        A plain message (text only, no chat command) is checked and recorded in one transaction
        (``_insert_run``); any other goes through ``_receive``. Each database step waits out a
        database that stays locked past its busy timeout a few times; when it never frees up,
        the message is logged as lost (the platform will not send it again), or, if it was
        already recorded, as waiting for the session's next wake.
        """
        if _plain(message):
            await self._receive_run([message])
        else:
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
        the same rules as ``receive``, in order. Consecutive plain messages are checked and
        recorded in one transaction and queued by one group commit per session; any other
        message goes through ``receive`` where it stands. Never raises for a refused message."""
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
        """Route plain messages (one or more, in order): recorded in one transaction, then queued."""
        if not run:
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
            try:
                await self._queue(group_id, message_id, session_id, revived, message, wait=False)
            except NotQueued as exc:
                log.error("%s; it is queued at the session's next wake", exc)

    def _insert_run(self, run: list[InboundMessage]) -> list[tuple[int, int, int, bool, InboundMessage]]:
        """Check plain messages by the rules (route, allow-list, de-duplication, engage mode) and
        record each one let in as queued, all in one transaction of Core statements (the ORM's
        work was ~2 ms a message): (group id, message id, session id, session revived, message)
        of each one recorded."""
        recorded: list[tuple[int, int, int, bool, InboundMessage]] = []
        sessions: dict[tuple[int, str | None], int] = {}
        try:
            with core_transaction(self.orchestrator.ctx.db) as db:
                for message in run:
                    found = self._route(message, db)
                    if found is None or not _let_in(*found, message) or not _addressed(found[0], message):
                        continue
                    route = found[0]
                    to = (route.group_id, route.session_key)
                    revived = False
                    if to not in sessions:  # looked up, and revived when failed, once a run
                        sessions[to], revived = _session_for(db, route.group_id, route.session_key)
                    message_id = _record_queued(db, route.group_id, sessions[to], message)
                    recorded.append((route.group_id, message_id, sessions[to], revived, message))
                return recorded
        except IntegrityError:
            raise Duplicate("a message of this run was already received") from None

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
        """The full path: for a message that is not plain (a chat command, files, an empty or
        oversized text), and for a plain one whose run met a platform id recorded meanwhile."""
        where = _where(message)
        found = await self._retrying(self._route_alone, message)
        if found is None:
            return
        route, seen = found
        key = route.session_key
        if not _let_in(route, seen, message):
            return
        if (command := command_of(message.text)) is not None:  # explicit, so in any engage mode
            group = await self._retrying(self._group, route.group_id)
            if group is not None:
                await self.commands.run(group, message, key, command)
            return
        if not _addressed(route, message):
            return
        if len(message.text) > MAX_TEXT:
            self._refuse(
                route.group_id,
                message,
                key,
                f"your message is longer than {MAX_TEXT:,} characters",
                whole=True,
            )
            return
        attachments, refusals = await self._save_files(route.folder, message, where)
        if not message.text.strip() and not attachments:
            if refusals:
                await self._retrying(self._refuse, route.group_id, message, key, "; ".join(refusals), True)
            else:
                log.info("%s: empty message; ignored", where)
            return
        if refusals:
            await self._retrying(self._refuse, route.group_id, message, key, "; ".join(refusals), False)
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
            await self._record(route.group_id, inbound, key, wait=False)
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

    def _route_alone(self, message: InboundMessage) -> tuple[Route, bool] | None:
        """``_route`` in a transaction of its own."""
        with core_transaction(self.orchestrator.ctx.db) as db:
            return self._route(message, db)

    def _route(self, message: InboundMessage, db: Connection) -> tuple[Route, bool] | None:
        """The chat's route and whether this platform message was recorded before (``_ROUTE``);
        None for an unbound chat (logged once)."""
        row = db.execute(
            _ROUTE,
            {
                "channel": message.channel,
                "chat_id": message.chat_id,
                "platform_id": message.platform_message_id,
            },
        ).first()
        if row is None:
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
        route = Route(
            group_id=row.id,
            group_name=row.name,
            folder=row.folder,
            session_key=session_key(row),
            allowed_senders=row.allowed_senders,
            engage_mode=row.engage_mode,
            trigger_word=row.trigger_word,
        )
        return route, bool(row.seen)

    def _group(self, group_id: int) -> AgentGroup | None:
        """The group's row, for a chat command (``ChatCommands.run`` takes one)."""
        with transaction(self.orchestrator.ctx.db) as db:
            return db.get(AgentGroup, group_id)

    async def _save_files(
        self, folder: str, message: InboundMessage, where: str
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
                path = await asyncio.to_thread(save_for_group, settings, folder, incoming.name, data)
                saved.append(path)
            except Busy:
                log.error("%s: could not save %r: a snapshot restore held the group", where, incoming.name)
                refusals.append(f"{incoming.name!r} arrived during a long snapshot restore; send it again")
            except OSError as exc:
                log.error("%s: could not save %r in %s: %s", where, incoming.name, folder, exc)
                refusals.append(f"{incoming.name!r} could not be saved on the host")
        return saved, refusals

    def _refuse(self, group_id: int, message: InboundMessage, key: str | None, why: str, whole: bool) -> None:
        """Tell the chat why (part of) its message was not passed on; delivery sends it.

        A message refused whole is recorded too (status ``refused``), so the platform sending it
        again is recognised as a duplicate and not answered twice.
        """
        with transaction(self.orchestrator.ctx.db) as db:
            session_id = session_of(db, group_id, key)
            if whole:
                db.add(inbound_row(group_id, session_id, message, status="refused", error=why))
            row = Message(
                group_id=group_id,
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
        self.bus.publish(group_id, {"type": "message", "id": message_id})


def _where(message: InboundMessage) -> str:
    """How the log names a chat platform's message."""
    return f"{message.channel} chat {message.chat_id} message {message.platform_message_id}"


def _let_in(route: Route, seen: bool, message: InboundMessage) -> bool:
    """The first rules for any message of a bound chat: its sender on the group's allow-list, its
    platform message id not recorded before. A refusal is logged."""
    if not sender_allowed(route.allowed_senders, message):
        log.info(
            "%s: sender %s is not on group %s's allow-list; ignored",
            _where(message),
            message.sender,
            route.group_name,
        )
        return False
    if seen:
        log.info("%s: already received; ignored", _where(message))
        return False
    return True


def _addressed(route: Route, message: InboundMessage) -> bool:
    """``_engaged``, logging a refusal."""
    if _engaged(route, message):
        return True
    log.debug("%s: not addressed to the bot (engage mode %s); ignored", _where(message), route.engage_mode)
    return False


def _engaged(route: Route, message: InboundMessage) -> bool:
    """Whether the group's engage mode lets the message in (see the module docstring)."""
    if route.engage_mode == "always" or message.is_direct:
        return True
    if route.engage_mode == "mention":
        return message.mentions_bot
    trigger = route.trigger_word or ""
    return bool(trigger) and starts_with_trigger(message.text, trigger)


_INSERT_INBOUND = insert(Message)


def _record_queued(db: Connection, group_id: int, session_id: int, message: InboundMessage) -> int:
    """Record an inbound message as queued (a Core insert of ``inbound_values``); its id."""
    values = inbound_values(group_id, session_id, message, status="queued")
    return new_id(db.execute(_INSERT_INBOUND, values))


_REVIVE = (
    update(AgentSession)
    .where(AgentSession.id == bindparam("session_id"), AgentSession.status == "failed")
    .values(status="idle", crash_count=0, failure_notified=False)
)


def _session_for(db: Connection, group_id: int, key: str | None) -> tuple[int, bool]:
    """A routed message's session (made when missing), and whether it was revived: a new message
    is the way out of a failed session. Its status is read in this transaction, so the ``UPDATE``
    runs only for a failed one."""
    found = newest_session(db, group_id, key)
    if found is None:
        return session_of(db, group_id, key), False
    session_id, status = found
    return session_id, status == "failed" and bool(db.execute(_REVIVE, {"session_id": session_id}).rowcount)


def inbound_values(
    group_id: int, session_id: int, message: InboundMessage, *, status: str, error: str | None = None
) -> dict[str, Any]:
    """The host's record of an inbound message, as column values (text bounded for refused ones)."""
    return {
        "group_id": group_id,
        "session_id": session_id,
        "direction": "in",
        "channel": message.channel,
        "chat_id": message.chat_id,
        "thread_id": message.thread_id,
        "sender": message.sender,
        "text": message.text if status != "refused" else message.text[:2000],
        "attachments": list(message.attachments),
        "platform_message_id": message.platform_message_id,
        "status": status,
        "error": error,
    }


def inbound_row(
    group_id: int, session_id: int, message: InboundMessage, *, status: str, error: str | None = None
) -> Message:
    """The host's record of an inbound message (text bounded for refused ones)."""
    return Message(**inbound_values(group_id, session_id, message, status=status, error=error))


def _size(size: int) -> str:
    """A byte count as people read it: 20 MiB, 512 KiB."""
    if size >= 1024**2:
        return f"{size / 1024**2:.3g} MiB"
    return f"{size / 1024:.3g} KiB"
