"""Persistence: typed models, engine/session helpers and migrations."""

from nanohost.db.engine import make_engine, make_session_factory, transaction
from nanohost.db.models import (
    AgentGroup,
    AgentSession,
    Base,
    ChatBinding,
    ContainerConfig,
    Message,
    ScheduledTask,
)

__all__ = [
    "AgentGroup",
    "AgentSession",
    "Base",
    "ChatBinding",
    "ContainerConfig",
    "Message",
    "ScheduledTask",
    "make_engine",
    "make_session_factory",
    "transaction",
]
