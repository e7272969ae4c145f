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
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nanohost.agent_files import keep_copy
from nanohost.bus import MessageBus
from nanohost.containers.backend import (
    LABEL_GROUP,
    LABEL_SESSION,
    ContainerBackend,
    ContainerSpec,
    hand_to_agent,
)
from nanohost.containers.mounts import check_extra_mount
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, Message, ScheduledTask, utcnow
from nanohost.gateway import CONTAINER_SOCKET_DIR, EGRESS_SOCKET_NAME, SOCKET_NAME, Gateway
from nanohost.providers import GroupSpec, Mount, ProviderContribution
from nanohost.settings import Settings
from nanohost.transport import Doorbell, OutboundRow, SessionQueues
from nanohost.validation import InvalidInput

log = logging.getLogger(__name__)

WORKSPACE = PurePosixPath("/workspace/agent")
SESSION_MOUNT = PurePosixPath("/workspace/session")
MAX_CRASHES = 3
START_GRACE = 30.0
"""Seconds after a start during which a missing heartbeat is not held against a container."""
STUCK_AFTER = 120.0
"""A heartbeat older than this while messages wait means the runner is stuck."""
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0

KeptFiles = dict[int, tuple[Path, str] | str]
"""Outbound row id → (the host's copy, the file's name), or why the file was refused."""
ReplyTarget = tuple[str, str, str | None]
"""(channel, chat id, thread id) a reply goes to."""


@dataclass
class HostContext:
    """What every runtime needs from the host (built once by the composition root)."""

    settings: Settings
    db: sessionmaker[Session]
    backend: ContainerBackend
    gateway: Gateway
    contributions: dict[str, ProviderContribution]
    bus: MessageBus = field(default_factory=MessageBus)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    sweep_now: asyncio.Event = field(default_factory=asyncio.Event)


class SessionRuntime:
    """The live side of one ``sessions`` row."""

    def __init__(self, ctx: HostContext, session_id: int, group_id: int, folder: str) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.group_id = group_id
        self.folder = folder
        self.dir = ctx.settings.sessions_dir / str(session_id)
        self.queues = SessionQueues(self.dir)
        self.doorbell = Doorbell(self.dir / "doorbell.sock", self._rung, self._hung_up)
        self.container_id: str | None = None
        self.placeholder: str | None = None
        self.started_at = 0.0
        self.last_activity = time.monotonic()
        self.next_attempt = 0.0
        self._holds_slot = False
        self._wake_lock = asyncio.Lock()
        self._pump_lock = asyncio.Lock()
        self._pump_task: asyncio.Task[None] | None = None
        self._pump_again = False
        self._imported_to: int | None = None
        """The session's outbound cursor as this runtime (its only writer) last committed it."""
        self._wake_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self.doorbell.start()
        hand_to_agent(self.dir)

    async def close(self) -> None:
        if self._wake_task is not None:
            self._wake_task.cancel()
            await asyncio.gather(self._wake_task, return_exceptions=True)
        await self.doorbell.stop()
        if self._pump_task is not None:
            await asyncio.gather(self._pump_task, return_exceptions=True)
        self.queues.close()
        self._release_slot()

    async def submit(self, message_id: int, text: str, sender: str | None, attachments: list[str]) -> None:
        """Queue a message for the agent and make sure its container is up."""
        self.queues.append(message_id, text, sender, attachments)
        with transaction(self.ctx.db) as db:
            message = db.get(Message, message_id)
            if message is not None and message.status == "pending":
                message.status = "queued"
            session = db.get(AgentSession, self.session_id)
            if session is not None and session.status == "failed":
                # a new message is the operator-free way out of "failed": try again from scratch
                session.status, session.crash_count, session.failure_notified = "idle", 0, False
                self.next_attempt = 0.0
        self.last_activity = time.monotonic()
        self.doorbell.ring()
        self.wake_soon()

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
                await self.ctx.slots.acquire()
                self._holds_slot = True
            try:
                await self._start()
            except InvalidInput as exc:  # the group's config is wrong: retrying cannot help
                self._release_slot()
                log.error("session %s: cannot start: %s", self.session_id, exc)
                self._fail(
                    f"cannot start: {exc}",
                    f"I cannot start: {exc}. An operator must fix the group's "
                    "config (`nanohost groups config`); then send a new message.",
                )
                raise
            except Exception as exc:
                self._release_slot()
                log.error("session %s: wake failed: %s", self.session_id, exc)
                self._record_error(f"wake failed: {exc}", crashed=True)
                raise

    async def adopt(self, container_id: str) -> None:
        """Take over a container a previous host process started."""
        runner = self._read_runner_json()
        placeholder = runner.get("placeholder")
        if isinstance(placeholder, str):
            egress = [str(h) for h in runner.get("egress_allow") or []]
            self.ctx.gateway.restore(placeholder, self.folder, self.session_id, egress)
            self.placeholder = placeholder
        await self.ctx.slots.acquire()
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
            log.info("session %s: stopping container %s: %s", self.session_id, self.container_id[:12], reason)
            await self.ctx.backend.stop(self.container_id)
            await self.pump()
            self._forget_container()
            with transaction(self.ctx.db) as db:
                session = db.get(AgentSession, self.session_id)
                if session is not None and session.status != "failed":
                    session.status = "stopped"

    # --- waking ---------------------------------------------------------------------------

    def _load(self, db: Session) -> tuple[AgentSession, AgentGroup]:
        session = db.get(AgentSession, self.session_id)
        if session is None:
            raise LookupError(f"session {self.session_id} no longer exists")
        return session, session.group

    async def _start(self) -> None:
        settings = self.ctx.settings
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
            limits = (
                config.memory_limit or settings.container_memory,
                config.cpu_limit if config.cpu_limit is not None else settings.container_cpus,
                config.pids_limit if config.pids_limit is not None else settings.container_pids,
            )
            pending = db.scalars(
                select(Message).where(
                    Message.session_id == self.session_id,
                    Message.direction == "in",
                    Message.status.in_(("pending", "queued")),
                )
            ).all()
            requeue = [(m.id, m.text, m.sender, [str(a) for a in m.attachments]) for m in pending]
            self._write_tasks(db, group.id)
        for item in requeue:  # a host crash between recording and queueing loses nothing
            self.queues.append(*item)
        contribution = self.ctx.contributions[spec.provider].prepare(spec)
        if self.placeholder is not None:
            self.ctx.gateway.revoke(self.placeholder)
        self.placeholder = self.ctx.gateway.grant(spec.name, self.session_id, egress)
        runner = {
            **contribution.runner,
            "turn_timeout": settings.turn_timeout,
            "gateway_socket": f"{CONTAINER_SOCKET_DIR}/{SOCKET_NAME}",
            "egress_socket": f"{CONTAINER_SOCKET_DIR}/{EGRESS_SOCKET_NAME}" if egress else None,
            "egress_allow": egress,
            "placeholder": self.placeholder,
        }
        (self.dir / "runner.json").write_text(json.dumps(runner, indent=2))
        spec.folder_path.mkdir(parents=True, exist_ok=True)
        hand_to_agent(self.dir, spec.folder_path, *(m.source for m in contribution.mounts if not m.read_only))
        mounts = [
            Mount(spec.folder_path, str(WORKSPACE)),
            *contribution.mounts,
            Mount(self.dir, str(SESSION_MOUNT)),
            Mount(self.ctx.gateway.socket_dir, CONTAINER_SOCKET_DIR, read_only=True),
            *(Mount(m.source, m.target, m.read_only) for m in extra),
        ]
        container = ContainerSpec(
            name=f"nanohost-{spec.folder}-s{self.session_id}",
            image=settings.image_tag,
            mounts=mounts,
            labels={LABEL_GROUP: spec.folder, LABEL_SESSION: str(self.session_id)},
            memory=limits[0],
            cpus=limits[1],
            pids=limits[2],
            env={k: str(v) for k, v in spec.env.items()},
        )
        started = time.monotonic()
        self.container_id = await self.ctx.backend.run(container)
        self.started_at = self.last_activity = time.monotonic()
        with transaction(self.ctx.db) as db:
            session, _ = self._load(db)
            session.status = "running"
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

    def _read_runner_json(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / "runner.json").read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _release_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.ctx.slots.release()

    def _forget_container(self) -> None:
        self.container_id = None
        self._release_slot()

    async def _container_gone(self, reason: str) -> None:
        """The container is no longer running: import its last words, keep its exit reason."""
        assert self.container_id is not None
        logs = await self.ctx.backend.logs(self.container_id, tail=20)
        await self.pump()
        waiting = bool(self.queues.unconsumed())
        detail = f"container exited ({reason})" + (
            f"; last output: {logs.strip()[-500:]}" if logs.strip() else ""
        )
        log.warning("session %s: %s%s", self.session_id, detail, " with messages waiting" if waiting else "")
        self._forget_container()
        self._record_error(detail, crashed=waiting)

    def _record_error(self, error: str, *, crashed: bool) -> None:
        with transaction(self.ctx.db) as db:
            session = db.get(AgentSession, self.session_id)
            if session is None:
                return
            session.last_error = error
            if crashed:
                session.crash_count += 1
                delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (session.crash_count - 1))
                self.next_attempt = time.monotonic() + delay
            session.status = "stopped"

    # --- outbound -------------------------------------------------------------------------

    def _rung(self) -> None:
        self.last_activity = time.monotonic()
        self.schedule_pump()

    def _hung_up(self) -> None:
        self.ctx.sweep_now.set()  # the runner's line dropped: probably died; look now

    def schedule_pump(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self.pump())
        else:
            self._pump_again = True

    async def pump(self) -> None:
        """Import every new outbound row in one transaction, advancing the session's cursor with it."""
        async with self._pump_lock:
            while True:
                self._pump_again = False
                try:
                    copies = await self._copy_new_files()
                    imported = self._import_outbound(copies)
                except Exception:
                    log.exception("session %s: importing outbound rows failed", self.session_id)
                    return
                for event in imported:
                    self.ctx.bus.publish(self.group_id, event)
                if not imported and not self._pump_again:
                    return

    def _import_outbound(self, copies: KeptFiles) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        with transaction(self.ctx.db) as db:
            session, group = self._load(db)
            rows = self.queues.outbound_after(session.outbound_cursor)
            for row in rows:
                events.extend(self._import_row(db, session, group, row, copies))
                session.outbound_cursor = row.id
            answered = self._apply_acks(db)
            if rows or answered:
                session.last_active_at = utcnow()
                continuation = self.queues.continuation()
                if continuation and continuation != session.continuation:
                    session.continuation = continuation
            cursor = session.outbound_cursor
        self._imported_to = cursor  # committed
        if events:
            self.last_activity = time.monotonic()
        return events

    def _apply_acks(self, db: Session) -> int:
        waiting = db.scalars(
            select(Message).where(
                Message.session_id == self.session_id, Message.direction == "in", Message.status == "queued"
            )
        ).all()
        acks = self.queues.acks([m.id for m in waiting])
        for message in waiting:
            if message.id in acks:
                status, reason = acks[message.id]
                message.status = "answered" if status == "done" else "failed"
                message.error = reason
        return len(acks)

    def _add_outbound(
        self,
        db: Session,
        target: ReplyTarget,
        sender: str,
        text: str,
        attachments: list[dict[str, str]],
    ) -> int:
        """Record a message for the chat. API and web replies are delivered by being stored;
        chat platform replies stay ``pending`` until delivery has sent them."""
        channel, chat_id, thread_id = target
        message = Message(
            group_id=self.group_id,
            session_id=self.session_id,
            direction="out",
            channel=channel,
            chat_id=chat_id,
            thread_id=thread_id,
            sender=sender,
            text=text,
            attachments=attachments,
            status="delivered" if channel in ("api", "web") else "pending",
        )
        db.add(message)
        db.flush()
        return message.id

    def _reply_target(self, db: Session, ids: list[int]) -> ReplyTarget:
        """Where a reply goes: the chat (and thread) of the newest message it answers."""
        query = select(Message).where(Message.session_id == self.session_id, Message.direction == "in")
        if ids:
            query = query.where(Message.id.in_(ids))
        source = db.scalars(query.order_by(Message.id.desc()).limit(1)).first()
        if source is None:
            return ("api", self.folder, None)
        return (source.channel, source.chat_id, source.thread_id)

    def _import_row(
        self, db: Session, session: AgentSession, group: AgentGroup, row: OutboundRow, copies: KeptFiles
    ) -> list[dict[str, Any]]:
        payload = row.payload
        if row.kind == "progress":
            return [{"type": "progress", "text": str(payload.get("text", ""))}]
        if row.kind == "status":
            state = payload.get("state")
            if payload.get("error"):
                session.last_error = f"{payload.get('error_kind') or 'error'}: {payload['error']}"
            return [{"type": "status", "state": state, "error": payload.get("error")}]
        if row.kind == "task":
            events = self._import_task(db, session, group, payload)
            db.flush()
            self._write_tasks(db, group.id)
            return events
        if row.kind not in ("message", "file"):
            log.error("session %s: outbound row %s has unknown kind %r", self.session_id, row.id, row.kind)
            return []
        ids = [int(i) for i in payload.get("in_reply_to", []) if isinstance(i, int)]
        target = self._reply_target(db, ids)
        attachments: list[dict[str, str]] = []
        text = str(payload.get("text", ""))
        if row.kind == "file":
            text = str(payload.get("caption") or "")
            kept = copies.get(row.id) or self.keep_file(row.id, str(payload.get("path", "")))
            if isinstance(kept, str):
                text = f"(the agent tried to send a file that is not allowed: {kept})"
            else:
                attachments.append({"path": str(kept[0]), "name": kept[1]})
        message_id = self._add_outbound(db, target, "agent", text, attachments)
        return [{"type": "message", "id": message_id}]

    def _import_task(
        self, db: Session, session: AgentSession, group: AgentGroup, payload: dict[str, Any]
    ) -> list[dict[str, Any]]:
        op = payload.get("op")
        if op == "schedule":
            channel, chat_id, _ = self._reply_target(db, [])
            db.add(
                ScheduledTask(
                    group_id=group.id,
                    session_id=session.id,
                    prompt=str(payload.get("prompt", "")),
                    schedule=str(payload.get("schedule", "")),
                    channel=channel,
                    chat_id=chat_id,
                )
            )
        elif op == "cancel":
            task = db.get(ScheduledTask, int(str(payload.get("task_id", "0")) or 0))
            if task is not None and task.group_id == group.id:
                task.status = "cancelled"
        return []

    def _write_tasks(self, db: Session, group_id: int) -> None:
        """The group's live tasks as the agent's ``list_tasks`` tool sees them (session/tasks.json)."""
        tasks = db.scalars(
            select(ScheduledTask).where(ScheduledTask.group_id == group_id, ScheduledTask.status == "active")
        ).all()
        listing = [{"id": t.id, "prompt": t.prompt, "schedule": t.schedule} for t in tasks]
        path = self.dir / "tasks.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(listing, indent=2))
        tmp.replace(path)

    async def _copy_new_files(self) -> KeptFiles:
        """Copy the files of new outbound rows into the outbox in a worker thread, before the
        import transaction: a 50 MiB copy must neither stall the event loop nor hold the
        database's write lock."""
        if self._imported_to is None:  # once per runtime; afterwards the import keeps it
            with transaction(self.ctx.db) as db:
                self._imported_to = self._load(db)[0].outbound_cursor
        wanted = [
            (r.id, str(r.payload.get("path", "")))
            for r in self.queues.outbound_after(self._imported_to)
            if r.kind == "file"
        ]
        return {row_id: await asyncio.to_thread(self.keep_file, row_id, path) for row_id, path in wanted}

    def keep_file(self, row_id: int, container_path: str) -> tuple[Path, str] | str:
        """The host's kept copy of a file the agent sent and its name, or why it was refused."""
        try:
            source = self.host_path(container_path)
            return keep_copy(source, self._roots(), self.outbox, str(row_id)), source.name
        except (ValueError, OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            # one bad file must not block the session's later rows: refuse it and go on
            log.error("session %s: refused file from the agent: %s", self.session_id, exc)
            return str(exc)

    def _roots(self) -> list[Path]:
        return [self.ctx.settings.groups_dir / self.folder, self.dir]

    @property
    def outbox(self) -> Path:
        """Host-owned copies of the files this session's agent sent (no container mounts it)."""
        return self.ctx.settings.data_dir / "outbox" / str(self.session_id)

    def host_path(self, container_path: str) -> Path:
        """Map a container path of a file to send onto the host, refusing anything outside the mounts.

        The answer is only a first check: the agent can still swap the file afterwards, so the
        caller copies it with ``agent_files.keep_copy``, which checks what it actually opened.
        """
        path = PurePosixPath(container_path)
        roots = dict(zip((WORKSPACE, SESSION_MOUNT), self._roots(), strict=True))
        for inside, host_root in roots.items():
            if path == inside or inside in path.parents:
                candidate = (host_root / path.relative_to(inside)).resolve()
                if candidate != host_root.resolve() and host_root.resolve() in candidate.parents:
                    if not candidate.is_file():
                        raise ValueError(f"{container_path} is not a file")
                    return candidate
                raise ValueError(f"{container_path} resolves outside the workspace")
        raise ValueError(f"{container_path} is outside /workspace/agent and /workspace/session")

    # --- health ---------------------------------------------------------------------------

    async def check(self) -> None:
        """The sweeper's look at this session: respawn, unstick, idle-stop, or give up and say so."""
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
                waiting = bool(self.queues.unconsumed())
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
        if self.container_id is None and self.queues.unconsumed():
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
            message_id = self._add_outbound(db, self._reply_target(db, []), "nanohost", notice, [])
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
