"""Inbound: a message for a group becomes a recorded row and a queued prompt in its session.

Channels hand over an ``InboundMessage``; the router records it (refusing duplicates by the
platform's message id), picks the session and hands it to the session's runtime, which wakes
the container at once rather than on a sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, Message
from nanohost.orchestrator import Orchestrator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundMessage:
    """A message from any channel, in the host's terms."""

    channel: str
    chat_id: str
    sender: str | None
    text: str
    attachments: list[str] = field(default_factory=list)
    platform_message_id: str | None = None


class Duplicate(Exception):
    """This platform message was already recorded."""


class Router:
    """Records inbound messages and queues them for their group's session."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    async def to_group(self, group_name: str, message: InboundMessage, *, chat_key: str | None = None) -> int:
        """Record ``message`` for the named group and queue it; returns the message id."""
        db_factory = self.orchestrator.ctx.db
        with transaction(db_factory) as db:
            group = db.scalar(select(AgentGroup).where(AgentGroup.name == group_name))
            if group is None:
                raise LookupError(f"no group named {group_name!r}")
        session_id = self.orchestrator.session_for(group, chat_key)
        try:
            with transaction(db_factory) as db:
                row = Message(
                    group_id=group.id,
                    session_id=session_id,
                    direction="in",
                    channel=message.channel,
                    chat_id=message.chat_id,
                    sender=message.sender,
                    text=message.text,
                    attachments=list(message.attachments),
                    platform_message_id=message.platform_message_id,
                    status="pending",
                )
                db.add(row)
                db.flush()
                message_id = row.id
        except IntegrityError:
            raise Duplicate(
                f"{message.channel} message {message.platform_message_id} was already received"
            ) from None
        runtime = await self.orchestrator.runtime(session_id)
        await runtime.submit(message_id, message.text, message.sender, list(message.attachments))
        return message_id
