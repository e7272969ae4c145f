"""The host's data model: typed SQLAlchemy 2 tables.

The schema is owned by Alembic (``migrations/``); these classes must match it, and a test
checks that they do. Small value sets (providers, engage modes, statuses) are plain strings
checked here and in the CLI, so adding one is a code change, not a migration. Provider names are
not listed here at all: they come from the registry (``nanohost.providers.registry``) and a stored
one is checked when the group wakes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from nanohost.limits import check_limits
from nanohost.quota import parse_quota
from nanohost.validation import InvalidInput, check_env

ENGAGE_MODES = ("always", "mention", "trigger")
SESSION_MODES = ("shared", "per-chat")
SESSION_STATUSES = ("idle", "starting", "running", "stopped", "failed")
DIRECTIONS = ("in", "out")
_LIMIT_ARGS = {"memory_limit": "memory", "cpu_limit": "cpus", "pids_limit": "pids"}


def utcnow() -> datetime:
    """Timestamps are stored in UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base; JSON columns map from ``dict``/``list``."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, list[str]: JSON}


class AgentGroup(Base):
    """A chat group's agent: its name, its folder under the groups dir, its provider."""

    __tablename__ = "agent_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    folder: Mapped[str] = mapped_column(String(64), unique=True)
    agent_provider: Mapped[str] = mapped_column(String(32), default="mock")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    config: Mapped[ContainerConfig] = relationship(
        back_populates="group", cascade="all, delete-orphan", uselist=False
    )
    bindings: Mapped[list[ChatBinding]] = relationship(back_populates="group", cascade="all, delete-orphan")
    sessions: Mapped[list[AgentSession]] = relationship(back_populates="group", cascade="all, delete-orphan")


class ContainerConfig(Base):
    """One per group: what its container is woken with. Changes apply at the next wake."""

    __tablename__ = "container_configs"

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("agent_groups.id", ondelete="CASCADE"), unique=True)
    model: Mapped[str | None] = mapped_column(String(128))
    reasoning_effort: Mapped[str | None] = mapped_column(String(16))
    mcp_servers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    skills: Mapped[list[str]] = mapped_column(default=list)
    additional_mounts: Mapped[list[Any]] = mapped_column(default=list)
    egress_allow: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    """Host patterns (``api.github.com``, ``*.pypi.org``) the agent may reach through the gateway."""
    memory_limit: Mapped[str | None] = mapped_column(String(16))
    cpu_limit: Mapped[float | None] = mapped_column(Float)
    pids_limit: Mapped[int | None] = mapped_column(Integer)
    disk_quota: Mapped[str | None] = mapped_column(String(16))
    """The group's own disk quota (``10g``; ``0``: none); None: ``NANOHOST_GROUP_DISK_QUOTA``."""
    allowed_senders: Mapped[list[str]] = mapped_column(default=list)
    engage_mode: Mapped[str] = mapped_column(String(16), default="always")
    trigger_word: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))
    """IANA zone the group's cron schedules are read in; None: the host's."""
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """Bumped by every edit that needs a new container; a container started with an older one is
    replaced at its next idle moment."""
    snapshot_excludes: Mapped[list[str] | None] = mapped_column(JSON)
    """Name or path patterns left out of the group's snapshots; None: ``snapshots.DEFAULT_EXCLUDES``."""
    snapshot_on: Mapped[str] = mapped_column(String(8), default="off", server_default="off")
    """Automatic snapshots: ``off``, ``idle`` (after each busy spell) or ``daily``."""
    snapshot_keep: Mapped[int] = mapped_column(Integer, default=10, server_default="10")
    """How many automatic snapshots of the group are kept (the oldest beyond go)."""
    auth: Mapped[str] = mapped_column(String(16), default="api-key", server_default="api-key")
    """How the group reaches the model: ``api-key`` or ``chatgpt`` (``nanohost.auth``); checked
    again when read at a wake (``GroupSpec``)."""
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    group: Mapped[AgentGroup] = relationship(back_populates="config")

    @validates("env")
    def _check_env(self, _key: str, value: Any) -> dict[str, str]:
        """Whoever writes the row through the ORM meets the CLI's env rule (``validation``)."""
        return check_env(value)

    @validates("disk_quota")
    def _check_disk_quota(self, _key: str, value: Any) -> str | None:
        """A size the quota check can read, stored as written (lower case), or None."""
        if value is None:
            return None
        text = str(value).strip().lower()
        try:
            parse_quota(text)
        except ValueError as exc:
            raise InvalidInput(f"--disk-quota: {exc}") from None
        return text

    @validates("memory_limit", "cpu_limit", "pids_limit")
    def _check_limit(self, key: str, value: Any) -> Any:
        """The CLI's fixed bounds for limits (``limits.check_limits``); ``None`` is "the default"."""
        if value is not None:
            check_limits(**{_LIMIT_ARGS[key]: value})
        return value

    __table_args__ = (
        CheckConstraint("engage_mode IN ('always', 'mention', 'trigger')", name="ck_config_engage"),
        CheckConstraint(
            "engage_mode != 'trigger' OR trigger_word IS NOT NULL", name="ck_config_trigger_word"
        ),
    )


class ChatBinding(Base):
    """A platform chat bound to exactly one group."""

    __tablename__ = "chat_bindings"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(128))
    group_id: Mapped[int] = mapped_column(ForeignKey("agent_groups.id", ondelete="CASCADE"), index=True)
    session_mode: Mapped[str] = mapped_column(String(16), default="shared")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    group: Mapped[AgentGroup] = relationship(back_populates="bindings")

    __table_args__ = (
        UniqueConstraint("channel", "chat_id", name="uq_binding_chat"),
        CheckConstraint("session_mode IN ('shared', 'per-chat')", name="ck_binding_session_mode"),
    )


class AgentSession(Base):
    """A group's conversation with its agent: the thread to resume and the container serving it."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("agent_groups.id", ondelete="CASCADE"), index=True)
    chat_key: Mapped[str | None] = mapped_column(String(192))  # "channel:chat_id" for per-chat sessions
    provider_override: Mapped[str | None] = mapped_column(String(32))
    continuation: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="idle")
    container_id: Mapped[str | None] = mapped_column(String(80))
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_active_at: Mapped[datetime | None] = mapped_column(DateTime)
    crash_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    outbound_cursor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The last outbound.db row imported; advanced in the same transaction as the import."""
    failure_notified: Mapped[bool] = mapped_column(default=False, server_default="0")
    gateway_placeholder: Mapped[str | None] = mapped_column(String(64))
    """The gateway placeholder granted to the running container: host state, so a restarted host
    re-grants exactly this, never what the container's side says it was given."""
    gateway_egress: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    """The egress allow-list granted with the placeholder."""
    gateway_auth: Mapped[str | None] = mapped_column(String(16))
    """The auth mode granted with the placeholder (``api-key``/``chatgpt``): the one the running
    container was started with, whatever the group's config says now."""
    quarantined_at: Mapped[datetime | None] = mapped_column(DateTime)
    config_version: Mapped[int | None] = mapped_column(Integer)
    """The group config version its running container was started with."""
    restart_requested: Mapped[bool] = mapped_column(default=False, server_default="0")
    """An operator asked for a clean restart (``groups restart``, ``config --now``, ``sessions reset``)."""
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime)
    """When the session's queue files were found unreadable and set aside (status ``failed``)."""
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    group: Mapped[AgentGroup] = relationship(back_populates="sessions")

    @validates("last_error")
    def _stamp_error(self, _key: str, value: str | None) -> str | None:
        """Every error carries its time; clearing the error clears the time."""
        self.last_error_at = utcnow() if value is not None else None
        return value

    __table_args__ = (
        CheckConstraint(
            "status IN ('idle', 'starting', 'running', 'stopped', 'failed')", name="ck_session_status"
        ),
        Index("ix_sessions_group_chat", "group_id", "chat_key"),
    )


class Message(Base):
    """Every message in and out, with its delivery state."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("agent_groups.id", ondelete="CASCADE"))
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(3))
    channel: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(128))
    sender: Mapped[str | None] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text, default="")
    attachments: Mapped[list[Any]] = mapped_column(default=list)
    platform_message_id: Mapped[str | None] = mapped_column(String(128))
    thread_id: Mapped[str | None] = mapped_column(String(128))
    """Where in the chat the message lives (a Slack thread); replies go to the same place."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        CheckConstraint("direction IN ('in', 'out')", name="ck_message_direction"),
        Index("ix_messages_group_id", "group_id", "id"),
        Index("ix_messages_session_status", "session_id", "direction", "status"),
        Index("ix_messages_chat_status", "channel", "chat_id", "status"),
        Index(
            "uq_inbound_platform_id",
            "channel",
            "platform_message_id",
            unique=True,
            sqlite_where=sql_text("direction = 'in' AND platform_message_id IS NOT NULL"),
            postgresql_where=sql_text("direction = 'in' AND platform_message_id IS NOT NULL"),
        ),
    )


class ScheduledTask(Base):
    """A prompt the agent (or an operator) asked to run later: cron, interval or once."""

    __tablename__ = "scheduled_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("agent_groups.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"))
    prompt: Mapped[str] = mapped_column(Text)
    schedule: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str | None] = mapped_column(String(32))
    chat_id: Mapped[str | None] = mapped_column(String(128))
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("status IN ('active', 'paused', 'cancelled', 'done')", name="ck_task_status"),
    )


class ChannelState(Base):
    """Small durable values a channel keeps across restarts (Telegram's update offset)."""

    __tablename__ = "channel_state"

    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Installation(Base):
    """This host's identity (one row, made with the database): its containers carry it in their
    labels and names, so two hosts on one container engine never touch each other's."""

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(primary_key=True)
    installation_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (CheckConstraint("id = 1", name="ck_installation_one_row"),)


SNAPSHOT_REASONS = ("manual", "before-restore", "idle", "daily")


class Snapshot(Base):
    """One archive of a group's folder and agent state (``nanohost.snapshots``): the file is
    ``<data dir>/snapshots/<folder>/<archive>``; the row says what it holds and which threads it
    resumes."""

    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("agent_groups.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    continuation: Mapped[str | None] = mapped_column(String(128))
    """The thread a restore resumes: that of the group's most recently active session."""
    threads: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Every live session's thread by chat key (``""``: the shared session)."""
    archive: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    """Bytes of the archive."""
    content_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    """Bytes of the files archived (before compression)."""
    files: Mapped[int] = mapped_column(Integer, default=0)
    restored_at: Mapped[datetime | None] = mapped_column(DateTime)
    restore_token: Mapped[str | None] = mapped_column(String(32))
    """The token of its last restore's journal: set in the restore's commit, so recovery after a
    crash knows whether that restore was committed."""

    __table_args__ = (
        CheckConstraint("reason IN ('manual', 'before-restore', 'idle', 'daily')", name="ck_snapshot_reason"),
    )
