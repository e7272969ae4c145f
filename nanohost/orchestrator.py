"""Keeps every session's runtime: creates them on demand, adopts containers after a restart,
and runs the sweeper.

The sweeper runs every ``sweep_interval`` seconds and at once when something happens (a runner's
doorbell line drops). Each session is checked on its own: one broken session is logged and
skipped, never aborting the pass for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from nanohost.containers.backend import LABEL_SESSION
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, Message
from nanohost.runtime import LABEL_LAYOUT, HostContext, SessionRuntime
from nanohost.session_dir import LAYOUT

log = logging.getLogger(__name__)


class Orchestrator:
    """All live sessions of this host."""

    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        self.runtimes: dict[int, SessionRuntime] = {}
        self._create_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.adopt()
        await self.resume_waiting()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def close(self) -> None:
        """Stop watching; containers keep running and are adopted by the next host process."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for runtime in self.runtimes.values():
            await runtime.close()
        self.runtimes.clear()

    def session_for(self, group: AgentGroup, chat_key: str | None, db: Session | None = None) -> int:
        """The session a message to ``group`` from ``chat_key`` belongs to (created when missing),
        in the caller's transaction ``db`` when given (one transaction per routed message)."""
        if db is None:
            with transaction(self.ctx.db) as own:
                return self.session_for(group, chat_key, own)
        same_chat = AgentSession.chat_key.is_(None) if chat_key is None else AgentSession.chat_key == chat_key
        found = db.scalar(
            select(AgentSession.id)
            .where(AgentSession.group_id == group.id, same_chat)
            .order_by(AgentSession.id.desc())
            .limit(1)
        )
        if found is not None:
            return int(found)
        session = AgentSession(group_id=group.id, chat_key=chat_key)
        db.add(session)
        db.flush()
        return session.id

    async def runtime(self, session_id: int) -> SessionRuntime:
        """The live runtime of a session (made when missing). A quarantined session's is its
        successor's, and its waiting messages move there first."""
        async with self._create_lock:
            runtime = self.runtimes.get(session_id)
            if runtime is None:
                with transaction(self.ctx.db) as db:
                    session = db.get(AgentSession, session_id)
                    if session is None:
                        raise LookupError(f"session {session_id} does not exist")
                    if session.quarantined_at is not None:
                        self._move_off_quarantined(db)
                        session = db.get(AgentSession, self._successor(db, session))
                        assert session is not None
                        if (found := self.runtimes.get(session.id)) is not None:
                            return found
                        session_id = session.id
                    group_id, folder = session.group_id, session.group.folder
                runtime = SessionRuntime(self.ctx, session_id, group_id, folder)
                await runtime.open()
                self.runtimes[session_id] = runtime
            return runtime

    async def adopt(self) -> None:
        """Adopt running nanohost containers whose session still exists; remove the rest."""
        for state in await self.ctx.backend.list_managed():
            try:
                session_id = int(state.labels.get(LABEL_SESSION, ""))
            except ValueError:
                session_id = -1
            with transaction(self.ctx.db) as db:
                exists = db.get(AgentSession, session_id) is not None
            if state.running and exists and state.labels.get(LABEL_LAYOUT) != LAYOUT:
                # started by an older host, with its session dir writable as a whole: never trusted
                log.info("stopping container %s: started with an older session layout", state.name)
                await self.ctx.backend.stop(state.id)
            elif state.running and exists:
                runtime = await self.runtime(session_id)
                await runtime.adopt(state.id)
            elif state.running:
                log.info("stopping orphan container %s (session %s is gone)", state.name, session_id)
                await self.ctx.backend.stop(state.id)

    async def resume_waiting(self) -> None:
        """Sessions with unanswered messages get their runtimes back, with those messages in
        their queues (the sweeper wakes them). Messages that reached a quarantined session after
        it was set aside move to the session that replaced it."""
        with transaction(self.ctx.db) as db:
            self._move_off_quarantined(db)
            ids = db.scalars(
                select(Message.session_id)
                .where(Message.direction == "in", Message.status.in_(("pending", "queued")))
                .distinct()
            ).all()
        for session_id in ids:
            if session_id is not None:
                (await self.runtime(session_id)).requeue_waiting()
        if ids:
            self.ctx.sweep_now.set()

    @staticmethod
    def _move_off_quarantined(db: Session) -> None:
        stranded = db.scalars(
            select(Message)
            .join(AgentSession, Message.session_id == AgentSession.id)
            .where(
                AgentSession.quarantined_at.is_not(None),
                Message.direction == "in",
                Message.status.in_(("pending", "queued")),
            )
        ).all()
        for message in stranded:
            old = db.get(AgentSession, message.session_id)
            assert old is not None
            message.session_id, message.status = Orchestrator._successor(db, old), "pending"

    @staticmethod
    def _successor(db: Session, old: AgentSession) -> int:
        """The session that took over from a quarantined one (made if it is somehow missing)."""
        same_chat = (
            AgentSession.chat_key.is_(None) if old.chat_key is None else AgentSession.chat_key == old.chat_key
        )
        newest = db.scalar(
            select(AgentSession.id)
            .where(AgentSession.group_id == old.group_id, same_chat, AgentSession.quarantined_at.is_(None))
            .order_by(AgentSession.id.desc())
            .limit(1)
        )
        if newest is not None:
            return int(newest)
        fresh = AgentSession(
            group_id=old.group_id, chat_key=old.chat_key, provider_override=old.provider_override
        )
        db.add(fresh)
        db.flush()
        return fresh.id

    async def sweep(self) -> None:
        for runtime in list(self.runtimes.values()):
            try:
                await runtime.check()
            except Exception:
                log.exception(
                    "sweeper: session %s check failed; continuing with the others", runtime.session_id
                )
        replaced = [r for r in self.runtimes.values() if r.replaced_by is not None]
        for runtime in replaced:
            del self.runtimes[runtime.session_id]
            await runtime.close()
        if replaced:
            await self.resume_waiting()

    async def _sweep_forever(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the cancel that ends us
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ctx.settings.sweep_interval):
                    await self.ctx.sweep_now.wait()
            self.ctx.sweep_now.clear()
            await self.sweep()
