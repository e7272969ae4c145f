"""One session's running state: its queues, doorbell, container and backoff, in one object.

A ``SessionRuntime`` is created from the session's rows and owns everything that happens to that
session: ``submit`` queues a message and wakes the container, ``pump`` imports what the
container wrote, ``check`` is the sweeper's look at its health, ``stop`` ends it. Nothing about a
session's life lives anywhere else, and one session's failure never reaches another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload, sessionmaker

from nanohost import container_logs
from nanohost.auth import check_auth_mode
from nanohost.bus import MessageBus
from nanohost.containers.backend import (
    LABEL_GROUP,
    LABEL_INSTALLATION,
    LABEL_SESSION,
    ContainerBackend,
    ContainerSpec,
)
from nanohost.containers.mounts import check_extra_mount
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, Message, ScheduledTask, utcnow
from nanohost.disk import is_disk_full
from nanohost.gateway import CONTAINER_SOCKET_DIR, EGRESS_SOCKET_NAME, SOCKET_NAME, Gateway, Route
from nanohost.group_commit import GroupCommit
from nanohost.importer import KeptFiles, OutboundImport, ReplyTarget
from nanohost.installation import container_name
from nanohost.limits import check_limits
from nanohost.metrics import HostMetrics
from nanohost.providers import GroupSpec, Mount
from nanohost.providers.registry import HostProvider
from nanohost.quota import DiskQuota, OverQuota
from nanohost.safe_fs import hand_tree_to_agent
from nanohost.session_dir import LAYOUT, SessionDir
from nanohost.sessions import start_afresh
from nanohost.settings import Settings
from nanohost.slots import Slots
from nanohost.snapshots import start_guard
from nanohost.transport import Doorbell, QueueUnreadable, SessionQueues
from nanohost.validation import InvalidInput

log = logging.getLogger(__name__)


def _stored_auth(granted: str | None) -> str:
    """The auth mode an adopted container was granted (host state; none recorded: ``api-key``,
    as every container before auth modes was)."""
    try:
        return check_auth_mode(granted)
    except InvalidInput:
        return "api-key"


WORKSPACE = PurePosixPath("/workspace/agent")
MAX_CRASHES = 3
START_GRACE = 30.0
"""Seconds after a start during which a missing heartbeat is not held against a container."""
STUCK_AFTER = 120.0
"""A heartbeat older than this while messages wait means the runner is stuck."""
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0

LABEL_LAYOUT = "nanohost.layout"
__all__ = ["HostContext", "KeptFiles", "ReplyTarget", "SessionRuntime"]


@dataclass
class HostContext:
    """What every runtime needs from the host (built once by the composition root)."""

    settings: Settings
    db: sessionmaker[Session]
    backend: ContainerBackend
    gateway: Gateway
    contributions: Mapping[str, HostProvider]
    """The providers' host sides by name (``providers.registry.Providers``)."""
    bus: MessageBus = field(default_factory=MessageBus)
    slots: Slots = field(default_factory=lambda: Slots(8))
    sweep_now: asyncio.Event = field(default_factory=asyncio.Event)
    tasks_changed: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: HostMetrics = field(default_factory=HostMetrics)
    """Set when an import added or changed a scheduled task: the scheduler looks again."""
    installation: str = ""
    """This installation's id (``installation``): in every container's label and name."""
    quota: DiskQuota = field(default_factory=lambda: DiskQuota(0))
    """Per-group disk quota (off unless the composition root sets one)."""


class SessionRuntime:
    """The live side of one ``sessions`` row."""

    def __init__(self, ctx: HostContext, session_id: int, group_id: int, folder: str) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.group_id = group_id
        self.folder = folder
        self.dir = ctx.settings.sessions_dir / str(session_id)
        self.session_dir = SessionDir(self.dir)
        self.session_dir.prepare()  # before anything opens a file in it (an older layout is taken back)
        self.queues = SessionQueues(self.dir)
        self.output = OutboundImport(
            ctx.db,
            self.queues,
            session_id=session_id,
            group_id=group_id,
            folder=ctx.settings.groups_dir / folder,
            outbox=ctx.settings.data_dir / "outbox" / str(session_id),
            on_tasks_changed=lambda db: self._write_tasks(db, group_id),
            on_answered=ctx.metrics.turn_seconds.observe,
        )
        self.gone = False
        """Set when the session's row was deleted (``groups delete``): the orchestrator drops it."""
        self.replaced_by: int | None = None
        """Set when the session was quarantined: the fresh session that took over."""
        self.doorbell = Doorbell(self.dir / "doorbell.sock", self._rung, self._hung_up)
        self._appends = GroupCommit(self.queues, self._queued, self._not_queued)
        self._premarked: set[int] = set()
        """Messages being appended that the router recorded as queued already."""
        self.container_id: str | None = None
        self.placeholder: str | None = None
        self.started_at = 0.0
        self.boot_marks: dict[str, float] = {}
        """Wall-clock times of the last start's steps (nanohost.boot_phases.HOST_MARKS), for bench/."""
        self.last_activity = time.monotonic()
        self.next_attempt = 0.0
        self._holds_slot = False
        self._held_back = False
        """Its slot's quantum is over while other wakes wait: new messages wait in the database
        (not in its queue) until it has stopped between turns and woken again (see slots.py)."""
        self._wake_lock = asyncio.Lock()
        self._pump_lock = asyncio.Lock()
        self._pump_task: asyncio.Task[None] | None = None
        self._pump_again = False
        self._wake_task: asyncio.Task[None] | None = None
        self._quarantine_task: asyncio.Task[None] | None = None

    @property
    def retired(self) -> bool:
        """Quarantined (replaced by a fresh session) or deleted: the orchestrator drops it."""
        return self.gone or self.replaced_by is not None

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self.doorbell.start()

    async def close(self) -> None:
        if self._quarantine_task is not None:
            await asyncio.gather(self._quarantine_task, return_exceptions=True)
        if self._wake_task is not None:
            self._wake_task.cancel()
            await asyncio.gather(self._wake_task, return_exceptions=True)
        await self.doorbell.stop()
        if self._pump_task is not None:
            await asyncio.gather(self._pump_task, return_exceptions=True)
        self.queues.close()
        self._release_slot()

    async def submit(
        self,
        message_id: int,
        text: str,
        sender: str | None,
        attachments: list[str],
        *,
        wait: bool = True,
        marked: bool = False,
        revived: bool = False,
    ) -> None:
        """Queue a message for the agent and make sure its container is up. ``wait``: return once
        it is in the queue (raising what the write raised), else at once (see group_commit).
        ``marked``: the router recorded it as queued already (and revived a failed session:
        ``revived``), so no further database write is needed here."""
        if self.replaced_by is not None:  # quarantined meanwhile: the sweeper moves it on
            self.ctx.sweep_now.set()
            return
        # held back (slots.py, rule 3): the message stays "pending"; the next wake queues it
        held_back = self._held_back and self.container_id is not None
        self.last_activity = time.monotonic()
        if revived:
            self.next_attempt = 0.0
        if held_back:
            if marked:
                self._mark_waiting(message_id)
            else:
                self._mark_queued([message_id], queued=False)
            log.info("session %s: message %s waits for the next wake", self.session_id, message_id)
            return
        if marked:
            self._premarked.add(message_id)
        try:  # with whatever else arrives meanwhile: one inbound.db commit, one marking, one ring
            await self._appends.add((message_id, text, sender, attachments), wait=wait)
        except BaseException:
            self._premarked.discard(message_id)
            raise
        self.wake_soon()

    def _mark_waiting(self, message_id: int) -> None:
        """A message the router recorded as queued stays pending: the session is held back."""
        with transaction(self.ctx.db) as db:
            db.execute(
                update(Message)
                .where(Message.id == message_id, Message.status == "queued")
                .values(status="pending")
            )

    async def settled(self) -> None:
        """Return once every message submitted so far is in the queue (or refused); a chat
        platform's message is routed without waiting for that (see ``submit``)."""
        await self._appends.settled()

    def _queued(self, message_ids: list[int]) -> None:
        """A batch is in inbound.db: mark its rows queued (unless recorded so) and ring the
        runner's doorbell."""
        unmarked = [i for i in message_ids if i not in self._premarked]
        self._premarked.difference_update(message_ids)
        if unmarked:
            self._mark_queued(unmarked)
        self.doorbell.ring()

    def _not_queued(self, message_ids: list[int], error: BaseException) -> None:
        """A batch nobody waited for failed to reach inbound.db: a full disk takes its messages
        back (refused: never answered beside a resend); otherwise they stay pending for the next
        wake."""
        self._premarked.difference_update(message_ids)
        if isinstance(error, (sqlite3.Error, OSError)) and is_disk_full(error):
            log.error("session %s: messages %s refused: the disk was full", self.session_id, message_ids)
            try:
                with transaction(self.ctx.db) as db:
                    db.execute(
                        update(Message)
                        .where(Message.id.in_(message_ids), Message.status.in_(("pending", "queued")))
                        .values(status="refused", error="the host's disk was full")
                    )
            except Exception as exc:  # the next wake queues them: they are still pending
                log.error("session %s: messages %s not taken back: %s", self.session_id, message_ids, exc)
            for message_id in message_ids:
                self.ctx.bus.publish(self.group_id, {"type": "message", "id": message_id})
        else:
            log.error(
                "session %s: messages %s recorded but not queued (%s); queued at the next wake",
                self.session_id,
                message_ids,
                error,
            )

    def _mark_queued(self, message_ids: list[int], *, queued: bool = True) -> None:
        """Mark messages now in the queue as queued, and give a failed session a fresh start."""
        with transaction(self.ctx.db) as db:  # two UPDATEs: this runs for every routed message
            if queued:
                db.execute(
                    update(Message)
                    .where(Message.id.in_(message_ids), Message.status == "pending")
                    .values(status="queued")
                )
            # a new message is the operator-free way out of "failed": try again from scratch
            revived = db.execute(
                update(AgentSession)
                .where(AgentSession.id == self.session_id, AgentSession.status == "failed")
                .values(status="idle", crash_count=0, failure_notified=False)
            )
            if revived.rowcount:  # type: ignore[attr-defined]
                self.next_attempt = 0.0

    def wake_soon(self) -> None:
        """Start waking now, in the background: a wake may wait for a container slot, and neither
        the sender nor the sweeper may wait with it."""
        if self._wake_task is None or self._wake_task.done():
            self._wake_task = asyncio.get_running_loop().create_task(self._wake_quietly())

    @property
    def waking(self) -> bool:
        return self._wake_task is not None and not self._wake_task.done()

    async def _wake_quietly(self) -> None:
        with contextlib.suppress(Exception):  # recorded by wake(); the sweeper retries
            await self.wake()

    async def wake(self) -> None:
        """Start the container unless it runs; idempotent and safe to call concurrently."""
        async with self._wake_lock:
            if self.container_id is not None:
                state = await self.ctx.backend.inspect(self.container_id)
                if state is not None and state.running:
                    return
                await self._container_gone(state.exit_reason if state else "container disappeared")
            if not self._holds_slot:
                await self.ctx.slots.acquire(self)
                self._holds_slot = True
            self._held_back = False  # a fresh start: _start queues every waiting message
            try:
                await self._start()
                self.ctx.metrics.wakes.inc()
            except InvalidInput as exc:  # the group's config is wrong: retrying cannot help
                self._release_slot()
                log.error("session %s: cannot start: %s", self.session_id, exc)
                fix = "files" if isinstance(exc, OverQuota) else "config (`nanohost groups config`)"
                self._fail(
                    f"cannot start: {exc}",
                    f"I cannot start: {exc}. An operator must fix the group's {fix}; "
                    "then send a new message.",
                )
                raise
            except Exception as exc:
                self._release_slot()
                log.error("session %s: wake failed: %s", self.session_id, exc)
                self._record_error(f"wake failed: {exc}", crashed=True)
                raise

    async def adopt(self, container_id: str) -> None:
        """Take over a container a previous host process started.

        Its gateway grant comes from the database (host state), never from anything the
        container's side could have written."""
        with transaction(self.ctx.db) as db:
            session, group = self._load(db)
            placeholder, egress = session.gateway_placeholder, list(session.gateway_egress or [])
            auth = _stored_auth(session.gateway_auth)
            name = session.provider_override or group.agent_provider
        routes: frozenset[Route] = frozenset()  # an unregistered provider's container calls nothing
        with contextlib.suppress(InvalidInput, KeyError):
            routes = self.ctx.contributions[name].routes
        if placeholder:
            self.ctx.gateway.restore(
                placeholder, self.folder, self.session_id, egress, auth=auth, routes=routes
            )
            self.placeholder = placeholder
        await self.ctx.slots.acquire(self)
        self._holds_slot = True
        self.container_id = container_id
        self.started_at = time.monotonic()
        self.schedule_pump()
        log.info("session %s: adopted container %s", self.session_id, container_id[:12])

    async def stop(self, reason: str) -> None:
        """Stop the container cleanly (the runner exits 0 on SIGTERM)."""
        async with self._wake_lock:
            if self.container_id is None:
                return
            await self._stop_locked(reason)
        self._wake_again_if_waiting()

    async def _stop_locked(self, reason: str) -> None:
        """The clean stop, under the wake lock: SIGTERM (the runner ends or checkpoints its turn and
        exits 0), import its last output, free the slot. Never recorded as a crash."""
        assert self.container_id is not None
        log.info("session %s: stopping container %s: %s", self.session_id, self.container_id[:12], reason)
        await self.ctx.backend.stop(self.container_id)
        await self._keep_logs(f"stopped ({reason})")
        await self.pump()
        self._forget_container()
        with transaction(self.ctx.db) as db:
            session = db.get(AgentSession, self.session_id)
            if session is not None and session.status != "failed":
                session.status = "stopped"

    async def stop_over_quota(self, why: str) -> None:
        """Stop at once, mid-turn too (a clean stop: unanswered messages wait), and tell the chat
        once; ``ctx.quota`` refuses its wakes until it is back under (``quota.py``)."""
        await self.stop(f"over its disk quota: {why}")
        self._fail(
            f"stopped: {why}",
            f"I was stopped: {why}. Messages wait until an operator makes room; then send a new message.",
        )

    def _wake_again_if_waiting(self) -> None:
        """After a clean stop: messages that wait (held back, or come while it stopped) go into the
        queue and the session wakes again, at the back of the wake queue when the cap is full."""
        self._held_back = False
        if self.replaced_by is None and self.requeue_waiting():
            self.wake_soon()

    # --- the slot (see slots.py for the rule) ---------------------------------------------

    def __repr__(self) -> str:
        return f"session {self.session_id}"

    @property
    def last_used(self) -> float:
        return self.last_activity

    async def between_turns(self) -> bool:
        """Its container runs, no wake or stop is under way, and every queued message is answered."""
        if self.container_id is None or self._wake_lock.locked() or self.replaced_by is not None:
            return False
        return not await self._unconsumed()

    async def give_up_slot(self, reason: str) -> bool:
        """Stop cleanly to free the slot for a waiting wake, only between turns; False otherwise.
        Messages arriving meanwhile wait in the database and wake the session again afterwards."""
        async with self._wake_lock:
            if self.container_id is None or self.replaced_by is not None:
                return False
            held_back, self._held_back = self._held_back, True  # from here no message joins the queue
            stopped = False
            try:
                if not await self._unconsumed():
                    await self._stop_locked(reason)
                    stopped = True
            finally:
                if not stopped:  # a message came (mid-turn after all), or the stop failed
                    self._held_back = held_back
                    if not held_back:  # any that arrived meanwhile join the queue after all
                        with contextlib.suppress(Exception):
                            self.requeue_waiting()
        if stopped:
            self._wake_again_if_waiting()
        return stopped

    def hold_back(self) -> None:
        log.info(
            "session %s: slot quantum over while other wakes wait: new messages wait for its next wake",
            self.session_id,
        )
        self._held_back = True

    # --- waking ---------------------------------------------------------------------------

    def _own_disk_quota(self) -> str | None:
        """The group's own disk quota as its config row says now (None: the host's)."""
        with transaction(self.ctx.db) as db:
            _, group = self._load(db)
            return group.config.disk_quota

    def _load(self, db: Session) -> tuple[AgentSession, AgentGroup]:
        """The session with its group and config, in one query (a wake reads all three)."""
        session = db.get(
            AgentSession,
            self.session_id,
            options=[joinedload(AgentSession.group).joinedload(AgentGroup.config)],
        )
        if session is None:
            raise LookupError(f"session {self.session_id} no longer exists")
        return session, session.group

    async def _start(self) -> None:
        await self.ctx.quota.check_wake(self.folder, self._own_disk_quota)
        # never while a snapshot restore swaps the group's folder; a dead restore is finished first
        async with start_guard(self.ctx.settings, self.ctx.db, self.folder):
            await self._start_container()

    async def _start_container(self) -> None:
        settings = self.ctx.settings
        self.boot_marks = {"wake": time.time()}
        with transaction(self.ctx.db) as db:
            session, group = self._load(db)
            config = group.config
            spec = GroupSpec(
                name=group.name,
                folder=group.folder,
                folder_path=settings.groups_dir / group.folder,
                provider=session.provider_override or group.agent_provider,
                model=config.model,
                reasoning_effort=config.reasoning_effort,
                mcp_servers=dict(config.mcp_servers),
                env=dict(config.env),
                skills=list(config.skills),
            )
            extra = [check_extra_mount(raw, settings.allowed_mounts) for raw in config.additional_mounts]
            egress = list(config.egress_allow)
            auth = check_auth_mode(config.auth)  # a row written behind the CLI is refused here
            limits = (
                config.memory_limit or settings.container_memory,
                config.cpu_limit if config.cpu_limit is not None else settings.container_cpus,
                config.pids_limit if config.pids_limit is not None else settings.container_pids,
            )
            # a row written behind the CLI's back is checked too: Docker reads pids 0 as unlimited
            check_limits(memory=limits[0], cpus=limits[1], pids=limits[2])
            requeue = self._waiting(db)
            self._write_tasks(db, group.id)
        for item in requeue:  # a host crash between recording and queueing loses nothing
            self.queues.append(*item)
        provider = self.ctx.contributions[spec.provider]  # an unregistered name: InvalidInput
        modes = getattr(provider, "auth_modes", ("api-key",))
        if provider.routes and auth not in modes:
            raise InvalidInput(
                f"the {spec.provider} provider cannot use the {auth} auth mode (it takes "
                f"{', '.join(modes)}); set it with `nanohost groups config {spec.name} --auth`"
            )
        contribution = provider.prepare(spec)
        if self.placeholder is not None:
            self.ctx.gateway.revoke(self.placeholder)
        self.placeholder = self.ctx.gateway.grant(
            spec.name, self.session_id, egress, auth=auth, routes=provider.routes
        )
        with transaction(self.ctx.db) as db:  # the grant is host state: adoption reads it from here
            session, _ = self._load(db)
            session.gateway_placeholder, session.gateway_egress = self.placeholder, egress
            session.gateway_auth = auth
        runner = {
            **contribution.runner,
            "provider": provider.name,
            "runner": provider.runner,
            "turn_timeout": settings.turn_timeout,
            "host_away_timeout": settings.idle_timeout,
            "gateway_socket": f"{CONTAINER_SOCKET_DIR}/{SOCKET_NAME}" if provider.routes else None,
            "egress_socket": f"{CONTAINER_SOCKET_DIR}/{EGRESS_SOCKET_NAME}" if egress else None,
            "egress_allow": egress,
            "placeholder": self.placeholder,
            "auth": auth,
        }
        self.session_dir.prepare()
        self.session_dir.write("runner.json", json.dumps(runner, indent=2))
        spec.folder_path.mkdir(parents=True, exist_ok=True)
        writable = [spec.folder_path, *(m.source for m in contribution.mounts if not m.read_only)]
        # a stat per entry (~160 ms for 50,000 files): never on the loop every other group shares
        for tree in writable:
            await asyncio.to_thread(hand_tree_to_agent, tree)
        mounts = [
            Mount(spec.folder_path, str(WORKSPACE)),
            *contribution.mounts,
            *self.session_dir.mounts(),
            Mount(self.ctx.gateway.socket_dir, CONTAINER_SOCKET_DIR, read_only=True),
            *(Mount(m.source, m.target, m.read_only) for m in extra),
        ]
        container = ContainerSpec(
            name=container_name(self.ctx.installation, spec.folder, self.session_id),
            image=settings.image_tag,
            mounts=mounts,
            labels={
                LABEL_GROUP: spec.folder,
                LABEL_SESSION: str(self.session_id),
                LABEL_LAYOUT: LAYOUT,
                **({LABEL_INSTALLATION: self.ctx.installation} if self.ctx.installation else {}),
            },
            memory=limits[0],
            cpus=limits[1],
            pids=limits[2],
            env={k: str(v) for k, v in spec.env.items()},
        )
        started = time.monotonic()
        self.boot_marks["composed"] = time.time()
        self.container_id = await self.ctx.backend.run(container)
        self.boot_marks["started"] = time.time()
        self.started_at = self.last_activity = time.monotonic()
        with transaction(self.ctx.db) as db:
            session, group = self._load(db)
            session.status = "running"
            session.config_version, session.restart_requested = group.config.version, False
            session.container_id = self.container_id
            session.started_at = session.last_active_at = utcnow()
        log.info(
            "session %s: started container %s for group %s (%s, %.0f ms)%s",
            self.session_id,
            self.container_id[:12],
            spec.name,
            spec.provider,
            (time.monotonic() - started) * 1000,
            "; " + "; ".join(contribution.notes) if contribution.notes else "",
        )

    def _waiting(self, db: Session) -> list[tuple[int, str, str | None, list[str]]]:
        """This session's inbound messages not answered yet, as queue rows."""
        pending = db.scalars(
            select(Message).where(
                Message.session_id == self.session_id,
                Message.direction == "in",
                Message.status.in_(("pending", "queued")),
            )
        ).all()
        return [(m.id, m.text, m.sender, [str(a) for a in m.attachments]) for m in pending]

    def requeue_waiting(self) -> int:
        """Put this session's unanswered messages (back) into its queue; idempotent."""
        with transaction(self.ctx.db) as db:
            waiting = self._waiting(db)
        for item in waiting:
            self.queues.append(*item)
        if waiting:
            with transaction(self.ctx.db) as db:
                for message in db.scalars(select(Message).where(Message.id.in_([w[0] for w in waiting]))):
                    if message.status == "pending":
                        message.status = "queued"  # queued: its ack is applied when it comes
            self.doorbell.ring()
        return len(waiting)

    async def interrupt(self) -> bool:
        """Ask the runner to interrupt the turn under way (``/stop``); False when none runs."""
        if self.container_id is None or not await self._unconsumed():
            return False
        self.doorbell.interrupt()
        return True

    def _operator_asks(self) -> tuple[bool, bool]:
        """(a clean restart was asked for, the container runs an older config than the group's)."""
        with transaction(self.ctx.db) as db:
            session, group = self._load(db)
            restart, session.restart_requested = session.restart_requested, False
            stale = session.config_version != group.config.version  # unknown (an older host's): older
            return restart, stale

    async def _unconsumed(self) -> list[int]:
        """Queued messages the runner has not acknowledged; read in a worker thread, since a
        hostile container can hold its queue's lock for the whole busy timeout."""
        return await asyncio.to_thread(self.queues.unconsumed)

    def _release_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.ctx.slots.release(self)

    def _forget_container(self) -> None:
        self.container_id = None
        self._release_slot()

    async def _container_gone(self, reason: str) -> None:
        """The container is no longer running: import its last words, keep its exit reason."""
        assert self.container_id is not None
        logs = await self._keep_logs(f"exited ({reason})")
        await self.pump()
        waiting = bool(await self._unconsumed())
        detail = f"container exited ({reason})" + (
            f"; last output: {logs.strip()[-500:]}" if logs.strip() else ""
        )
        log.warning("session %s: %s%s", self.session_id, detail, " with messages waiting" if waiting else "")
        self._forget_container()
        if self._held_back:  # the messages it held back join the queue; the sweeper wakes it (backoff)
            self._held_back = False
            self.requeue_waiting()
        self._record_error(detail, crashed=waiting)

    async def _keep_logs(self, ending: str) -> str:
        """Keep the container's output under the data dir (``container_logs``); returns it."""
        assert self.container_id is not None
        container_id = self.container_id
        output = await self.ctx.backend.logs(container_id, tail=5000)
        try:
            await asyncio.to_thread(
                container_logs.keep, self.ctx.settings.data_dir, self.session_id, container_id, output, ending
            )
        except OSError as exc:
            log.warning("session %s: could not keep the container's output: %s", self.session_id, exc)
        return output

    def _record_error(self, error: str, *, crashed: bool) -> None:
        with transaction(self.ctx.db) as db:
            session = db.get(AgentSession, self.session_id)
            if session is None:
                return
            session.last_error = error
            if crashed:
                self.ctx.metrics.crashes.inc()
                session.crash_count += 1
                delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (session.crash_count - 1))
                self.next_attempt = time.monotonic() + delay
            session.status = "stopped"

    # --- outbound -------------------------------------------------------------------------

    def _rung(self) -> None:
        self.last_activity = time.monotonic()
        self.schedule_pump()
        self.ctx.slots.nudge()  # a turn may have ended: a waiting wake may take this slot now

    def _hung_up(self) -> None:
        self.ctx.sweep_now.set()  # the runner's line dropped: probably died; look now

    def schedule_pump(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self.pump())
        else:
            self._pump_again = True

    async def pump(self) -> None:
        """Import every new outbound row, a bounded batch per transaction, in a worker thread:
        a container flooding its queue never holds up the event loop (other groups, /healthz)."""
        async with self._pump_lock:
            while self.replaced_by is None:
                self._pump_again = False
                try:
                    imported, read = await asyncio.to_thread(self.output.batch)
                except QueueUnreadable as exc:
                    # not here: a caller may hold the wake lock, which quarantine takes
                    self._quarantine_soon(str(exc))
                    return
                except LookupError:  # the session was deleted (`groups delete`)
                    self.gone = True
                    return
                except Exception:
                    log.exception("session %s: importing outbound rows failed", self.session_id)
                    return
                for event in imported:
                    self.ctx.bus.publish(self.group_id, event)
                if self.output.tasks_changed:
                    self.output.tasks_changed = False
                    self.ctx.tasks_changed.set()
                if imported:
                    self.last_activity = time.monotonic()
                if not read and not self._pump_again:
                    return

    def _write_tasks(self, db: Session, group_id: int) -> None:
        """The group's live tasks as the agent's ``list_tasks`` tool sees them (session/tasks.json)."""
        tasks = db.scalars(
            select(ScheduledTask).where(ScheduledTask.group_id == group_id, ScheduledTask.status == "active")
        ).all()
        listing = [{"id": t.id, "prompt": t.prompt, "schedule": t.schedule} for t in tasks]
        self.session_dir.write("tasks.json", json.dumps(listing, indent=2))

    def keep_file(self, row_id: int, container_path: str) -> tuple[Path, str] | str:
        """The host's kept copy of a file the agent sent and its name, or why it was refused."""
        return self.output.keep_file(row_id, container_path)

    @property
    def outbox(self) -> Path:
        """Host-owned copies of the files this session's agent sent (no container mounts it)."""
        return self.output.outbox

    def host_path(self, container_path: str) -> Path:
        """Map a container path of a file to send onto the host (see ``OutboundImport.host_path``)."""
        return self.output.host_path(container_path)

    # --- quarantine -----------------------------------------------------------------------

    async def quarantine(self, reason: str) -> None:
        """The container's queue cannot be read: set the session's files aside for the operator,
        hand its unanswered messages to a fresh session, and tell the chat once.

        Only this session is touched; every other group keeps answering. The fresh session
        starts on a new thread (the old one's state was in the unreadable files)."""
        async with self._wake_lock, self._pump_lock:
            if self.replaced_by is not None:
                return
            log.error("session %s: quarantined: %s", self.session_id, reason)
            if self.container_id is not None:
                with contextlib.suppress(Exception):
                    await self.ctx.backend.kill(self.container_id)
                self._forget_container()
            if self.placeholder is not None:
                self.ctx.gateway.revoke(self.placeholder)
            await self.doorbell.stop()
            self.queues.close()
            kept = await asyncio.to_thread(
                self.session_dir.move_aside, self.ctx.settings.data_dir / "quarantine"
            )
            self._replace(reason, kept)
        self.ctx.sweep_now.set()  # the orchestrator moves on to the fresh session

    def _quarantine_soon(self, reason: str) -> None:
        if self._quarantine_task is None:
            self._quarantine_task = asyncio.get_running_loop().create_task(self.quarantine(reason))

    def _replace(self, reason: str, kept: Path) -> None:
        """Record the quarantine and the fresh session that takes over, in one transaction."""
        with transaction(self.ctx.db) as db:
            session, _ = self._load(db)
            target = self.output.reply_target(db, [])
            session.status = "failed"
            session.last_error = f"quarantined: {reason}; its files are kept in {kept}"
            session.quarantined_at = utcnow()
            session.container_id = session.gateway_placeholder = None
            fresh = start_afresh(db, session)
            session.restart_requested = False  # its container is stopped already
            notice = self.output.add_outbound(
                db,
                target,
                "nanohost",
                "Something went wrong with this conversation's message queue, so it was set aside for "
                "the operator and a fresh conversation has started. Messages still waiting for an "
                "answer are answered there; earlier context may be missing.",
                [],
            )
            self.replaced_by = fresh.id
        self.ctx.bus.publish(self.group_id, {"type": "message", "id": notice})

    # --- health ---------------------------------------------------------------------------

    async def check(self) -> None:
        """The sweeper's look at this session: respawn, unstick, idle-stop, or give up and say so;
        an unreadable queue quarantines the session."""
        if self.retired:
            return
        try:
            await self._check()
        except QueueUnreadable as exc:
            self._quarantine_soon(str(exc))
        except LookupError:  # its session (or group) was deleted: nothing left to look after
            log.info("session %s no longer exists; its runtime retires", self.session_id)
            self.gone = True
            return
        if self._quarantine_task is not None:
            await asyncio.shield(self._quarantine_task)

    async def _check(self) -> None:
        now = time.monotonic()
        await self.pump()
        if self.waking:
            return  # a wake is queued for a slot or starting; judge the session after it
        if self.container_id is not None:
            state = await self.ctx.backend.inspect(self.container_id)
            if state is None or not state.running:
                async with self._wake_lock:
                    if self.container_id is not None:
                        await self._container_gone(state.exit_reason if state else "container disappeared")
            else:
                waiting = bool(await self._unconsumed())
                restart, stale = await asyncio.to_thread(self._operator_asks)
                if restart or (stale and not waiting):
                    # a restart is clean even mid-turn: the runner leaves the message queued and the
                    # next container answers it; a config change waits for an idle moment
                    await self.stop(
                        "restart asked for by the operator" if restart else "the group's config changed"
                    )
                    return
                age = self.queues.heartbeat_age()
                if waiting and now - self.started_at > START_GRACE and (age is None or age > STUCK_AFTER):
                    log.warning(
                        "session %s: heartbeat %s s old with messages waiting; killing",
                        self.session_id,
                        "never" if age is None else f"{age:.0f}",
                    )
                    await self.ctx.backend.kill(self.container_id)
                    async with self._wake_lock:
                        if self.container_id is not None:
                            await self._container_gone("killed: stuck (stale heartbeat)")
                elif not waiting and now - self.last_activity > self.ctx.settings.idle_timeout:
                    await self.stop(f"idle for {now - self.last_activity:.0f} s")
                    return
        if self.container_id is None and await self._unconsumed():
            await self._retry_or_fail(now)

    def _fail(self, error: str, notice: str) -> None:
        """Mark the session failed and tell its chat once; it stays quiet until a new message or a reset."""
        with transaction(self.ctx.db) as db:
            session = db.get(AgentSession, self.session_id)
            if session is None:
                return
            session.status, session.last_error = "failed", error
            if session.failure_notified:
                return
            session.failure_notified = True
            message_id = self.output.add_outbound(
                db, self.output.reply_target(db, []), "nanohost", notice, []
            )
        self.ctx.bus.publish(self.group_id, {"type": "message", "id": message_id})

    async def _retry_or_fail(self, now: float) -> None:
        with transaction(self.ctx.db) as db:
            session = db.get(AgentSession, self.session_id)
            if session is None or session.status == "failed":
                return
            crashes, error = session.crash_count, session.last_error
        if crashes >= MAX_CRASHES:
            log.error(
                "session %s: failed after %d crashes; not retrying until a new message",
                self.session_id,
                crashes,
            )
            self._fail(
                error or "repeated crashes",
                f"The agent failed {crashes} times in a row and is paused. "
                f"Last error: {error}. Send a new message or run `nanohost sessions reset` to try again.",
            )
            return
        if now < self.next_attempt:
            return
        log.info("session %s: respawning (attempt after %d crash(es))", self.session_id, crashes)
        self.wake_soon()
