"""Importing what a session's container wrote: checked rows into the host database, off the loop.

``OutboundImport.batch`` runs in a worker thread: it reads a bounded batch of rows (``boundary``
limits), copies the files they send into the host's outbox, then stores the rows and advances the
session's cursor in one transaction, so each row is imported exactly once across crashes. A row
that fails its model, or goes over a per-turn limit, is recorded once (the session's
``last_error`` and the log) and skipped; the rows after it still arrive. A "turn" here is what
the host sees between two answered inbound messages.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nanohost.agent_files import MAX_FILE_BYTES, keep_copy
from nanohost.boundary import (
    MAX_FILE_BYTES_PER_TURN,
    MAX_FILES_PER_TURN,
    MAX_LIVE_BATCH_BYTES,
    MAX_MESSAGES_PER_TURN,
    BadRow,
    CancelTask,
    FileRow,
    ItemRow,
    MessageRow,
    ProgressRow,
    ScheduleTask,
    StatusRow,
    cap_text,
    live_bytes,
    live_event,
)
from nanohost.db.engine import reading, transaction
from nanohost.db.models import AgentGroup, AgentSession, Message, ScheduledTask, utcnow
from nanohost.scheduler import MAIN_GROUP, plan
from nanohost.transport import PRUNE_EVERY, OutboundRow, SessionQueues

log = logging.getLogger(__name__)

MAX_ITEM_EVENTS = 50
"""Live viewer steps published per import batch (the runner sends far fewer; the rest of a flood
is never shown: steps are hints, the archive is the record)."""


def live_feed(events: list[dict[str, Any]]) -> set[int]:
    """Which of a batch's live events are published: the last start and the last end, and the
    newest steps (``MAX_ITEM_EVENTS`` at most), all within ``MAX_LIVE_BATCH_BYTES``."""
    items = [i for i, e in enumerate(events) if e["type"] == "item"]
    starts = [i for i in items if events[i].get("phase") == "start"][-1:]
    ends = [i for i in items if events[i].get("phase") == "end"][-1:]
    kept = set(starts + ends)
    budget = MAX_LIVE_BATCH_BYTES - sum(live_bytes(events[i]) for i in kept)
    steps = [i for i in items if events[i].get("phase") == "item"]
    for i in reversed(steps[-MAX_ITEM_EVENTS:]):  # a flood of steps: the newest are shown
        budget -= live_bytes(events[i])
        if budget < 0:
            break
        kept.add(i)
    return kept


WORKSPACE = PurePosixPath("/workspace/agent")
KeptFiles = dict[int, tuple[Path, str] | str]
"""Outbound row id → (the host's copy, the file's name), or why the file was refused."""
ReplyTarget = tuple[str, str, str | None]
"""(channel, chat id, thread id) a reply goes to."""


@dataclass
class TurnBudget:
    """What one turn's output has used of the per-turn limits."""

    messages: int = 0
    files: int = 0
    file_bytes: int = 0
    over: set[str] = field(default_factory=set)
    """Limits already reported this turn (each is said once)."""


class OutboundImport:
    """The import side of one session (its runtime's delegate)."""

    def __init__(
        self,
        db: sessionmaker[Session],
        queues: SessionQueues,
        *,
        session_id: int,
        group_id: int,
        folder: Path,
        outbox: Path,
        on_tasks_changed: Any,
        on_answered: Callable[[float], None] | None = None,
    ) -> None:
        self.db = db
        self.queues = queues
        self.session_id = session_id
        self.group_id = group_id
        self.folder = folder
        self.outbox = outbox
        self._on_tasks_changed = on_tasks_changed
        self._on_answered = on_answered
        """Called with each answered message's seconds from being recorded to being answered."""
        self._cursor: int | None = None
        self.mark_every = PRUNE_EVERY
        self.clock: Callable[[], float] = time.monotonic
        self._marked_at = -math.inf
        self.budget = TurnBudget()
        self.tasks_changed = False
        """Set when an import added or cancelled a task (the runtime tells the scheduler)."""

    # --- one batch (worker thread) -------------------------------------------------------------

    def batch(self) -> tuple[list[dict[str, Any]], bool]:
        """Import one bounded batch; (events to publish, whether any row was read).

        The cursor of the batch before is handed to the runner (and ``inbound.db`` pruned) first
        (``settle``), here rather than at the end of that batch: both are ``inbound.db`` commits
        (fsyncs), and its events (a reply) are published before the next batch is asked for;
        ``runtime.pump`` asks again after every batch that read rows."""
        if self._cursor is None:
            with reading(self.db) as db:
                self._cursor = self._session(db).outbound_cursor
        else:
            self.settle()
        rows = self.queues.outbound_after(self._cursor)
        if not rows and self._nothing_acknowledged():
            return [], False
        copies = self._copy_files(rows)
        events = self._store(rows, copies)
        return events, bool(rows)

    def _nothing_acknowledged(self) -> bool:
        """No new acknowledgement of a queued message: an import without rows would change
        nothing, so it is not begun (it takes the write lock; the look here takes none). The
        pump asks once more after every batch with rows, and that one almost always finds
        nothing. Raises LookupError for a deleted session, as the import does."""
        with reading(self.db) as db:
            self._session(db)
            waiting = db.scalars(
                select(Message.id).where(
                    Message.session_id == self.session_id,
                    Message.direction == "in",
                    Message.status == "queued",
                )
            ).all()
        return not waiting or not self.queues.acks(list(waiting))

    def settle(self, *, force: bool = False) -> None:
        """After an import has committed: record how far (the runner may prune what the host
        has imported) and prune the inbound rows the runner has answered. The cursor is written
        at most every ``mark_every`` seconds unless ``force``: the runner prunes on its own timer
        anyway (``PRUNE_EVERY``), and each write is an fsynced ``inbound.db`` commit in the way
        of the next message's append. A quiet session's last cursor is written at its next
        batch after that (the sweeper pumps every session)."""
        now = self.clock()
        if self._cursor is not None and (force or now - self._marked_at >= self.mark_every):
            self._marked_at = now
            self.queues.mark_imported(self._cursor)
        self.queues.prune()

    def _copy_files(self, rows: list[OutboundRow]) -> KeptFiles:
        """Copy the files of new rows before the import transaction: a 50 MiB copy must not
        hold the database's write lock. Files over the turn's budget are refused here."""
        copies: KeptFiles = {}
        files, size = self.budget.files, self.budget.file_bytes
        for row in rows:
            if not isinstance(row.row, FileRow):
                continue
            if files >= MAX_FILES_PER_TURN:
                copies[row.id] = f"more than {MAX_FILES_PER_TURN} files in one turn"
                continue
            kept = self.keep_file(row.id, row.row.path, MAX_FILE_BYTES_PER_TURN - size)
            if not isinstance(kept, str):
                files += 1
                size += kept[0].stat().st_size
            copies[row.id] = kept
        return copies

    def keep_file(self, row_id: int, container_path: str, limit: int | None = None) -> tuple[Path, str] | str:
        """The host's kept copy of a file the agent sent and its name, or why it was refused."""
        try:
            source = self.host_path(container_path)
            cap = MAX_FILE_BYTES if limit is None else min(MAX_FILE_BYTES, max(0, limit))
            return keep_copy(source, [self.folder], self.outbox, str(row_id), cap), source.name
        except (ValueError, OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            log.error("session %s: refused file from the agent: %s", self.session_id, exc)
            return str(exc)

    def host_path(self, container_path: str) -> Path:
        """Map a container path of a file to send onto the host, refusing anything outside the
        workspace. Only a first check: ``keep_copy`` checks what it actually opened."""
        path = PurePosixPath(container_path)
        if path != WORKSPACE and WORKSPACE not in path.parents:
            raise ValueError(f"{container_path} is outside /workspace/agent")
        root = self.folder.resolve()
        candidate = (root / path.relative_to(WORKSPACE)).resolve()
        if candidate == root or root not in candidate.parents:
            raise ValueError(f"{container_path} resolves outside the workspace")
        if not candidate.is_file():
            raise ValueError(f"{container_path} is not a file")
        return candidate

    def _session(self, db: Session) -> AgentSession:
        session = db.get(AgentSession, self.session_id)
        if session is None:
            raise LookupError(f"session {self.session_id} no longer exists")
        return session

    def _store(self, rows: list[OutboundRow], copies: KeptFiles) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        tasks_changed = False
        with transaction(self.db) as db:
            session = self._session(db)
            acked = self._apply_acks(db)  # first: a recovery clears old errors, not this batch's
            answered = len(acked)
            # each message's new status reaches live clients (a stopped one stops "thinking…")
            events.extend({"type": "message", "id": message_id} for message_id in acked)
            for row in rows:
                try:
                    if isinstance(row.row, (ItemRow, ProgressRow)):
                        # shown, never stored: no SQL, so no savepoint (a live turn sends many)
                        found, changed = self._store_row(db, session, row, copies)
                    else:
                        with db.begin_nested():
                            found, changed = self._store_row(db, session, row, copies)
                except Exception as exc:  # a row the models let through but the database refused
                    log.exception("session %s: outbound row %s could not be stored", self.session_id, row.id)
                    self._refuse(session, row.id, f"could not be stored: {exc}")
                    found, changed = [], False
                events.extend(found)
                tasks_changed |= changed
            if rows:  # past every row read, stored or refused (set once: a savepoint flushes it)
                session.outbound_cursor = rows[-1].id
            if answered:
                self.budget = TurnBudget()
            if rows or answered:
                session.last_active_at = utcnow()
                continuation = self.queues.continuation()
                if continuation and continuation != session.continuation:
                    session.continuation = continuation
            if tasks_changed:
                db.flush()
                self._on_tasks_changed(db)
                self.tasks_changed = True
            cursor = session.outbound_cursor
        self._cursor = cursor  # committed; the next batch (or ``settle``) tells the runner
        progress = [e for e in events if e["type"] == "progress"]
        live = live_feed(events)
        kept = [e for i, e in enumerate(events) if e["type"] not in ("progress", "item") or i in live]
        return kept + progress[-1:]  # the latest progress only

    def _refuse(self, session: AgentSession, row_id: int, reason: str) -> None:
        session.last_error = f"outbound row {row_id} refused: {reason}"

    def _over(self, session: AgentSession, db: Session, limit: str, notice: str) -> list[dict[str, Any]]:
        """A per-turn limit is reached: record it and tell the chat, once per turn."""
        if limit in self.budget.over:
            return []
        self.budget.over.add(limit)
        session.last_error = f"agent output over a limit: {notice}"
        log.warning("session %s: %s", self.session_id, notice)
        message_id = self.add_outbound(db, self.reply_target(db, []), "nanohost", notice, [])
        return [{"type": "message", "id": message_id}]

    def _store_row(
        self, db: Session, session: AgentSession, row: OutboundRow, copies: KeptFiles
    ) -> tuple[list[dict[str, Any]], bool]:
        item = row.row
        if isinstance(item, BadRow):
            self._refuse(session, row.id, item.reason)
            return [
                {"type": "status", "state": "error", "error": f"a bad row was skipped: {item.reason}"}
            ], False
        if isinstance(item, ProgressRow):
            return [{"type": "progress", "text": item.text}], False
        if isinstance(item, ItemRow):  # the viewer's live feed: shown, never stored
            return [live_event(item)], False
        if isinstance(item, StatusRow):
            if item.error:
                session.last_error = f"{item.error_kind or 'error'}: {item.error}"
            return [{"type": "status", "state": item.state, "error": item.error}], False
        if isinstance(item, ScheduleTask):
            return self._schedule(db, session, row.id, item), True
        if isinstance(item, CancelTask):
            task = db.get(ScheduledTask, item.id)
            if task is not None and task.group_id == self.group_id:
                task.status = "cancelled"
            return [], True
        self.budget.messages += 1
        if self.budget.messages > MAX_MESSAGES_PER_TURN:
            return self._over(
                session,
                db,
                "messages",
                f"The agent sent more than {MAX_MESSAGES_PER_TURN} messages in one turn; "
                "the rest of this turn's messages were dropped.",
            ), False
        ids = list(item.in_reply_to) if isinstance(item, MessageRow) else []
        target = self.reply_target(db, ids)
        attachments: list[dict[str, str]] = []
        if isinstance(item, MessageRow):
            text = cap_text(item.text)
        else:
            text = cap_text(item.caption or "")
            kept = copies.get(row.id) or self.keep_file(row.id, item.path)
            if isinstance(kept, str):
                text = f"(the agent tried to send a file that is not allowed: {kept})"
                self._refuse(session, row.id, kept)
            else:
                self.budget.files += 1
                self.budget.file_bytes += os.stat(kept[0]).st_size
                attachments.append({"path": str(kept[0]), "name": kept[1]})
        message_id = self.add_outbound(db, target, "agent", text, attachments)
        return [{"type": "message", "id": message_id}], False

    def _schedule(
        self, db: Session, session: AgentSession, row_id: int, item: ScheduleTask
    ) -> list[dict[str, Any]]:
        """A task the agent scheduled. A group schedules for itself; the main group may name
        another group (whose own chat gets the replies)."""
        own = db.get(AgentGroup, self.group_id)
        assert own is not None
        channel: str | None
        chat_id: str | None
        target, (channel, chat_id, _) = own, self.reply_target(db, [])
        if item.group is not None and item.group != own.name:
            other = db.scalar(select(AgentGroup).where(AgentGroup.name == item.group))
            if own.name != MAIN_GROUP or other is None:
                why = "only the main group may schedule for another group" if other else "no such group"
                self._refuse(session, row_id, f"task for group {item.group!r}: {why}")
                return []
            target, channel, chat_id = other, None, None
        task = ScheduledTask(
            group_id=target.id,
            session_id=self.session_id if target is own else None,
            prompt=item.prompt,
            schedule=item.schedule,
            channel=channel,
            chat_id=chat_id,
            created_at=utcnow(),
        )
        db.add(task)
        db.flush()
        plan(task, target.config.timezone, task.created_at)
        return []

    def _apply_acks(self, db: Session) -> list[int]:
        """Mark the queued messages the runner acknowledged; returns their ids."""
        waiting = db.scalars(
            select(Message).where(
                Message.session_id == self.session_id, Message.direction == "in", Message.status == "queued"
            )
        ).all()
        acks = self.queues.acks([m.id for m in waiting])
        answered = False
        for message in waiting:
            ack = acks.get(message.id)
            if ack is not None:
                message.status = "answered" if ack.status == "done" else "failed"
                message.error = ack.reason
                answered |= ack.status == "done"
                if self._on_answered is not None and message.created_at is not None:
                    self._on_answered(max(0.0, (utcnow() - message.created_at).total_seconds()))
        if answered:  # the group has recovered: an old error no longer describes it
            session = self._session(db)
            session.last_error, session.crash_count = None, 0
        return [m.id for m in waiting if m.id in acks]

    # --- shared with the runtime ---------------------------------------------------------------

    def add_outbound(
        self,
        db: Session,
        target: ReplyTarget,
        sender: str,
        text: str,
        attachments: list[dict[str, str]],
    ) -> int:
        """Record a message for this session's chat (``record_outbound``)."""
        return record_outbound(db, self.group_id, self.session_id, target, sender, text, attachments)

    def reply_target(self, db: Session, ids: list[int]) -> ReplyTarget:
        """Where a reply goes: the chat (and thread) of the newest message it answers."""
        query = select(Message).where(Message.session_id == self.session_id, Message.direction == "in")
        if ids:
            query = query.where(Message.id.in_(ids))
        source = db.scalars(query.order_by(Message.id.desc()).limit(1)).first()
        if source is None:
            return ("api", self.folder.name, None)
        return (source.channel, source.chat_id, source.thread_id)


def record_outbound(
    db: Session,
    group_id: int,
    session_id: int,
    target: ReplyTarget,
    sender: str,
    text: str,
    attachments: list[dict[str, str]] | None = None,
) -> int:
    """Record a message for a chat; returns its id. API and web replies are delivered by being
    stored; chat platform replies stay ``pending`` until delivery has sent them."""
    channel, chat_id, thread_id = target
    message = Message(
        group_id=group_id,
        session_id=session_id,
        direction="out",
        channel=channel,
        chat_id=chat_id,
        thread_id=thread_id,
        sender=sender,
        text=text,
        attachments=attachments or [],
        status="delivered" if channel in ("api", "web") else "pending",
    )
    db.add(message)
    db.flush()
    return message.id
