"""Scheduled tasks fire: each due task becomes an inbound message in its group's session.

One ``tick`` fires every task whose ``next_run_at`` has come: in one transaction it records the
message (sender ``scheduler``, text marked as a scheduled task, in the chat the task was made
from) and moves the task to its next run (``schedules.next_after``: computed from the schedule,
never from "now + interval"; after downtime a task fires at most once, then resumes its
schedule; a one-off becomes ``done``). Then the message is queued for the agent like any other;
a crash between the two is healed by the orchestrator's ``resume_waiting`` at the next start.

The loop sleeps until the earliest due task (at most ``POLL`` seconds, and it wakes early when a
task is added or changed), so an idle host costs nothing. The clock is injectable, so tests run on
a simulated clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from nanohost.channels.base import InboundMessage
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, ChatBinding, Message, ScheduledTask
from nanohost.schedules import first_run, next_after, parse, zone
from nanohost.validation import InvalidInput

log = logging.getLogger(__name__)

POLL = 30.0
"""Longest sleep between looks at the tasks (a task edited by the CLI is seen within this)."""
SCHEDULER_SENDER = "scheduler"
MAIN_GROUP = "main"
"""The operator's own group (made by ``nanohost setup``): its agent may schedule for others."""

Clock = Callable[[], datetime]
Queue = Callable[[int, int, str], Awaitable[None]]
"""(session id, message id, text) → queue it for the agent (the orchestrator's runtime.submit)."""
SessionFor = Callable[[AgentGroup, str | None, Session], int]


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def scheduled_text(task: ScheduledTask) -> str:
    return f"[scheduled task #{task.id}: {task.schedule}] {task.prompt}"


def plan(task: ScheduledTask, timezone: str | None, now: datetime) -> None:
    """Set a new (or edited) task's first run from its schedule; a schedule that no longer
    parses pauses the task with the reason, rather than failing every tick."""
    try:
        tz = zone(timezone)
        task.next_run_at = first_run(parse(task.schedule, tz), now, tz)
    except InvalidInput as exc:
        log.error("scheduled task %s: %s; paused", task.id, exc)
        task.status, task.next_run_at = "paused", None


class Scheduler:
    """Fires due tasks into their groups' sessions."""

    def __init__(
        self,
        db: sessionmaker[Session],
        session_for: SessionFor,
        queue: Queue,
        *,
        clock: Clock = utc_now,
        changed: asyncio.Event | None = None,
    ) -> None:
        self.db = db
        self.session_for = session_for
        self.queue = queue
        self.clock = clock
        self.changed = changed if changed is not None else asyncio.Event()
        """Set when a task was added or changed, so the loop looks again at once."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                wait = self._seconds_to_next()
            except Exception:
                log.exception("scheduler: a tick failed; trying again shortly")
                wait = POLL
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.changed.wait()
            self.changed.clear()

    def _seconds_to_next(self) -> float:
        with transaction(self.db) as db:
            earliest = db.scalar(
                select(ScheduledTask.next_run_at)
                .where(ScheduledTask.status == "active", ScheduledTask.next_run_at.is_not(None))
                .order_by(ScheduledTask.next_run_at)
                .limit(1)
            )
        if earliest is None:
            return POLL
        return max(0.0, min(POLL, (earliest - self.clock()).total_seconds()))

    async def tick(self) -> list[int]:
        """Fire every due task once; returns the ids of the messages it queued."""
        now = self.clock()
        fired: list[tuple[int, int, str]] = []
        with transaction(self.db) as db:
            due = db.scalars(
                select(ScheduledTask).where(
                    ScheduledTask.status == "active",
                    or_(ScheduledTask.next_run_at.is_(None), ScheduledTask.next_run_at <= now),
                )
            ).all()
            for task in due:
                group = db.get(AgentGroup, task.group_id)
                if group is None:
                    continue
                if task.next_run_at is None:  # new, from the agent or an old row: plan it first
                    plan(task, group.config.timezone, task.created_at or now)
                    if task.next_run_at is None or task.next_run_at > now:
                        continue
                fired.append(self._fire(db, task, group, now))
        for session_id, message_id, text in fired:
            try:
                await self.queue(session_id, message_id, text)
            except Exception:  # recorded: the session's next wake queues it
                log.exception("scheduler: message %s recorded but not queued", message_id)
        return [message_id for _, message_id, _ in fired]

    def _fire(
        self, db: Session, task: ScheduledTask, group: AgentGroup, now: datetime
    ) -> tuple[int, int, str]:
        channel = task.channel or "api"
        chat_id = task.chat_id or group.folder
        binding = db.scalar(
            select(ChatBinding).where(ChatBinding.channel == channel, ChatBinding.chat_id == chat_id)
        )
        chat_key = (
            f"{channel}:{chat_id}"
            if binding is not None and binding.group_id == group.id and binding.session_mode == "per-chat"
            else None
        )
        session_id = self.session_for(group, chat_key, db)
        text = scheduled_text(task)
        message = _message_row(group.id, session_id, InboundMessage(channel, chat_id, SCHEDULER_SENDER, text))
        db.add(message)
        db.flush()
        tz = zone(group.config.timezone)
        schedule = parse(task.schedule, tz)
        task.last_run_at = now
        task.next_run_at = next_after(schedule, now, anchor=task.created_at or now, tz=tz)
        if task.next_run_at is None:
            task.status = "done"
        log.info("scheduler: task %s fired for group %s (next: %s)", task.id, group.name, task.next_run_at)
        return session_id, message.id, text


def _message_row(group_id: int, session_id: int, message: InboundMessage) -> Message:
    from nanohost.router import inbound_row  # the router's one definition of an inbound record

    return inbound_row(group_id, session_id, message, status="pending")
