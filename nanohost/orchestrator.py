"""Keeps every session's runtime: creates them on demand, adopts containers after a restart,
and runs the sweeper.

The sweeper runs every ``sweep_interval`` seconds and at once when something happens (a runner's
doorbell line drops). Each session is checked on its own: one broken session is logged and
skipped, never aborting the pass for the others. Runtimes with nothing to do (no container, no
waiting message, idle past ``idle_timeout``) are closed and dropped; a message brings one back.

The container engine may be away (Docker down, at start or later): the host keeps serving, messages
are recorded and queued, and wakes wait (``EngineWatch``). Each pass pings the engine; when it
answers again, what still runs is adopted and the waiting wakes go ahead. Only this installation's
containers are ever adopted or stopped (``installation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.orm import Session

from nanohost.containers.backend import (
    LABEL_INSTALLATION,
    LABEL_SESSION,
    ContainerState,
    EngineWatch,
    mounts_under,
)
from nanohost.db.engine import new_id, transaction
from nanohost.db.models import AgentGroup, AgentSession, ContainerConfig, Message
from nanohost.quota import Usage, over_message, tree_bytes
from nanohost.runtime import LABEL_LAYOUT, HostContext, SessionRuntime
from nanohost.session_dir import LAYOUT
from nanohost.sessions import new_session_like

log = logging.getLogger(__name__)

ENGINE_RETRY = 5.0
"""Seconds between pings at most while the container engine is away."""


QUOTA_EVERY = 10.0
"""Seconds between disk quota checks at most: the engine walks each container's layer for one."""


_NEWEST_SHARED = (
    select(AgentSession.id, AgentSession.status)
    .where(AgentSession.group_id == bindparam("group_id"), AgentSession.chat_key.is_(None))
    .order_by(AgentSession.id.desc())
    .limit(1)
)
_NEWEST_OF_CHAT = (
    select(AgentSession.id, AgentSession.status)
    .where(AgentSession.group_id == bindparam("group_id"), AgentSession.chat_key == bindparam("chat_key"))
    .order_by(AgentSession.id.desc())
    .limit(1)
)


def newest_session(db: Session | Connection, group_id: int, chat_key: str | None) -> tuple[int, str] | None:
    """(id, status) of the session a message to the group from ``chat_key`` (None: its shared
    session) belongs to: the newest one; None when there is none yet. ``db`` is an ORM session or,
    on the router's hot path, a Core connection (statements built once: building one cost more
    than running it)."""
    if chat_key is None:
        row = db.execute(_NEWEST_SHARED, {"group_id": group_id}).first()
    else:
        row = db.execute(_NEWEST_OF_CHAT, {"group_id": group_id, "chat_key": chat_key}).first()
    return None if row is None else (int(row.id), str(row.status))


def session_of(db: Session | Connection, group_id: int, chat_key: str | None) -> int:
    """``newest_session``'s id, the session created when missing, in the caller's transaction."""
    if (found := newest_session(db, group_id, chat_key)) is not None:
        return found[0]
    if isinstance(db, Session):
        session = AgentSession(group_id=group_id, chat_key=chat_key)
        db.add(session)
        db.flush()
        return session.id
    return new_id(db.execute(insert(AgentSession).values(group_id=group_id, chat_key=chat_key)))


class Orchestrator:
    """All live sessions of this host."""

    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        engine = ctx.backend if isinstance(ctx.backend, EngineWatch) else EngineWatch(ctx.backend)
        ctx.backend = self.engine = engine  # every runtime's starts wait while the engine is away
        self.runtimes: dict[int, SessionRuntime] = {}
        self._create_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._quota_checked = 0.0

    async def start(self) -> None:
        """Adopt what runs (when the engine answers), queue what waits, start the sweeper. An engine
        that does not answer is no reason not to start: it is retried on every sweep."""
        await self._reconnect(at_start=True)
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
                return session_of(own, group.id, chat_key)
        return session_of(db, group.id, chat_key)

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

    async def _reconnect(self, *, at_start: bool = False) -> bool:
        """Ping the engine; when it answers after being away (or at start), adopt what runs, then let
        the waiting wakes go. False while it does not answer. An adoption that fails while the
        engine answers fails the start; later it is logged, and the wakes go ahead regardless."""
        if not await self.engine.ping():
            self.engine.lost("no answer to a ping")
            return False
        if self.engine.reachable and not at_start:
            return True
        try:
            await self.adopt()
        except Exception as exc:
            if not await self.engine.ping():
                self.engine.lost(f"adoption failed: {exc}")
                return False
            if at_start:
                raise
            log.exception("adopting containers after the engine came back failed")
        self.engine.back()
        return True

    def _whose(self, state: ContainerState) -> str:
        """``own``; ``older``: an older host's on this data dir (no installation id yet), which
        must stop, or it would serve a session beside its successor; ``other``: never touched."""
        theirs = state.labels.get(LABEL_INSTALLATION, "")
        data_dir = self.ctx.settings.data_dir
        if theirs != self.ctx.installation:
            return "older" if not theirs and mounts_under(state, data_dir) else "other"
        if state.mounts and not mounts_under(state, data_dir):
            log.warning(
                "container %s carries this installation's id (%s) but mounts another data dir, "
                "probably a copy of this one: left alone",
                state.name,
                theirs,
            )
            return "other"
        return "own"

    async def adopt(self) -> None:
        """Adopt this installation's running containers whose session still exists; stop the rest.
        Containers of other installations on the same engine are never touched."""
        for state in await self.ctx.backend.list_managed():
            whose = self._whose(state)
            if whose == "older" and state.running:
                log.info("stopping container %s: started on this data dir by an older host", state.name)
                await self.ctx.backend.stop(state.id)
            if whose != "own":
                continue
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
                # a wake under way (waiting for the engine) replaces the container by name itself
                if runtime.container_id is None and not runtime.waking:
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
        return new_session_like(db, old).id

    async def sweep(self) -> None:
        if not await self._reconnect():
            return  # the engine is away: nothing can be judged or started; the next pass pings again
        for runtime in list(self.runtimes.values()):
            try:
                await runtime.check()
            except Exception:
                log.exception(
                    "sweeper: session %s check failed; continuing with the others", runtime.session_id
                )
        replaced = [r for r in self.runtimes.values() if r.retired]
        for runtime in replaced:
            del self.runtimes[runtime.session_id]
            await runtime.close()
        if replaced:
            await self.resume_waiting()
        if time.monotonic() - self._quota_checked >= QUOTA_EVERY:
            await self.enforce_quota()
        await self.evict_idle()
        try:
            await self.ctx.backend.tend()
        except Exception:
            log.exception("sweeper: container housekeeping failed; the next pass tries again")

    async def enforce_quota(self) -> None:
        """Stop every running group over its disk quota (``quota.py``): its own, else the host's."""
        self._quota_checked = time.monotonic()
        quota = self.ctx.quota
        with transaction(self.ctx.db) as db:
            own: dict[str, str] = dict(
                db.execute(  # type: ignore[arg-type]
                    select(AgentGroup.folder, ContainerConfig.disk_quota)
                    .join(ContainerConfig, ContainerConfig.group_id == AgentGroup.id)
                    .where(ContainerConfig.disk_quota.is_not(None))
                ).all()
            )
        limits = {folder: quota.limit(text) for folder, text in own.items()}  # each row read once
        if not quota.quota and not any(limits.values()):
            return
        for runtime in list(self.runtimes.values()):
            container_id = runtime.container_id
            limit = limits.get(runtime.folder, quota.quota)
            if container_id is None or not limit:
                continue
            try:
                state = await self.ctx.backend.inspect(container_id)
                if state is None or not state.running:
                    continue
                trees = await asyncio.to_thread(tree_bytes, [Path(p) for p in state.writable_mounts])
                usage = Usage(trees, await self.ctx.backend.layer_bytes(container_id))
                if not quota.over_quota(runtime.folder, usage, limit):
                    continue
                why = over_message(runtime.folder, usage, limit, own=runtime.folder in own)
                log.warning("session %s: %s; stopping it", runtime.session_id, why)
                quota.mark(runtime.folder, state.writable_mounts)
                await runtime.stop_over_quota(why)
            except Exception:
                log.exception("sweeper: disk quota check of session %s failed", runtime.session_id)

    async def evict_idle(self) -> None:
        """Close and drop runtimes with nothing to do: no container and no wake, nothing waiting
        (in the queue or the database), idle past ``idle_timeout``. A new message makes a new one."""
        timeout = self.ctx.settings.idle_timeout
        for runtime in list(self.runtimes.values()):
            if not self._may_evict(runtime, time.monotonic(), timeout):
                continue
            async with self._create_lock:  # no one fetches it meanwhile; a fetch after gets a new one
                if (
                    self.runtimes.get(runtime.session_id) is not runtime
                    or not self._may_evict(runtime, time.monotonic(), timeout)
                    or await self._has_waiting(runtime)
                ):
                    continue
                del self.runtimes[runtime.session_id]
                await runtime.close()
            log.debug("session %s: runtime dropped (idle, no container)", runtime.session_id)

    def _may_evict(self, runtime: SessionRuntime, now: float, timeout: float) -> bool:
        return (
            runtime.container_id is None
            and not runtime.waking
            and not self.ctx.slots.holds(runtime)
            and now - runtime.last_activity > timeout
        )

    async def _has_waiting(self, runtime: SessionRuntime) -> bool:
        if await asyncio.to_thread(runtime.queues.unconsumed):
            return True
        with transaction(self.ctx.db) as db:
            waiting = db.scalar(
                select(Message.id)
                .where(
                    Message.session_id == runtime.session_id,
                    Message.direction == "in",
                    Message.status.in_(("pending", "queued")),
                )
                .limit(1)
            )
        return waiting is not None

    async def _sweep_forever(self) -> None:
        while True:
            interval = self.ctx.settings.sweep_interval
            if not self.engine.reachable:
                interval = min(interval, ENGINE_RETRY)
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the cancel that ends us
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self.ctx.sweep_now.wait()
            self.ctx.sweep_now.clear()
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeper pass failed; the next one tries again")
