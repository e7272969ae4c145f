"""Chat commands: ``/status``, ``/stop``, ``/new``, ``/help``, answered by the host itself.

A message whose first word is one of these (``/status@MyBot`` too, as Telegram sends it in
groups) never reaches the model. The router hands it here only after the chat's binding and the
sender allow-list have let it in, so a command obeys the same rules as a message; it is recorded
(so a platform's redelivery is still a duplicate) and answered in the same chat and thread.

- ``/status``: provider, model, effort, the container's state, messages waiting, the last error
  with its time.
- ``/stop``: interrupts the turn under way (the runner sends ``turn/interrupt``); the thread is
  kept and the interrupted messages are not retried.
- ``/new``: a fresh conversation (``sessions.start_afresh``); the old thread stays archived.
- ``/help``: this list.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nanohost.channels.base import InboundMessage
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, Message
from nanohost.importer import record_outbound
from nanohost.sessions import start_afresh

if TYPE_CHECKING:
    from nanohost.orchestrator import Orchestrator

log = logging.getLogger(__name__)

HELP = (
    "Commands (answered by nanohost, not the agent):\n"
    "/status: the agent's provider, model, state and last error\n"
    "/stop: stop what the agent is doing now (the conversation is kept)\n"
    "/new: start a new conversation (the old one stays in the archive)\n"
    "/help: this list"
)
COMMANDS = frozenset({"/status", "/stop", "/new", "/help"})


def command_of(text: str) -> str | None:
    """The chat command ``text`` is, or None for an ordinary message."""
    first = text.strip().split(maxsplit=1)[0].lower() if text.strip() else ""
    name = first.split("@", 1)[0]
    return name if name in COMMANDS else None


class ChatCommands:
    """Runs a command for a group's chat and records the exchange."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    async def run(
        self, group: AgentGroup, message: InboundMessage, key: str | None, command: str
    ) -> tuple[int, int]:
        """Answer ``command``; returns (the command's id, the reply's id)."""
        ctx = self.orchestrator.ctx
        with transaction(ctx.db) as db:
            session_id = self.orchestrator.session_for(group, key, db)
        if command == "/stop":
            reply = await self._stop(session_id)
        else:
            reply = ""
        with transaction(ctx.db) as db:
            from nanohost.router import inbound_row  # the router's one definition of an inbound record

            recorded = inbound_row(group.id, session_id, message, status="answered")
            db.add(recorded)
            if command == "/help":
                reply = HELP
            elif command == "/status":
                reply = self._status(db, group.id, session_id)
            elif command == "/new":
                session = db.get(AgentSession, session_id)
                assert session is not None
                fresh = start_afresh(db, session)
                reply = "Started a new conversation. The previous one is kept in the archive."
                log.info("group %s: /new: session %s takes over from %s", group.name, fresh.id, session_id)
            target = (message.channel, message.chat_id, message.thread_id)
            reply_id = record_outbound(db, group.id, session_id, target, "nanohost", reply)
        if command == "/new":
            ctx.sweep_now.set()  # the old session's container stops now
        ctx.bus.publish(group.id, {"type": "message", "id": recorded.id})
        ctx.bus.publish(group.id, {"type": "message", "id": reply_id})
        return recorded.id, reply_id

    async def _stop(self, session_id: int) -> str:
        runtime = self.orchestrator.runtimes.get(session_id)
        if runtime is None or not await runtime.interrupt():
            return "Nothing is running right now."
        return "Stopped. The conversation is kept; send a new message to go on."

    def _status(self, db: Session, group_id: int, session_id: int) -> str:
        group = db.get(AgentGroup, group_id)
        session = db.get(AgentSession, session_id)
        assert group is not None and session is not None
        runtime = self.orchestrator.runtimes.get(session_id)
        running = runtime is not None and runtime.container_id is not None
        waiting = db.scalar(
            select(func.count()).where(
                Message.session_id == session_id,
                Message.direction == "in",
                Message.status.in_(("pending", "queued")),
            )
        )
        config = group.config
        provider = session.provider_override or group.agent_provider
        calls = True
        with contextlib.suppress(Exception):  # an unregistered name: the wake says so
            calls = bool(self.orchestrator.ctx.contributions[provider].routes)
        paid = "the host's ChatGPT sign-in" if config.auth == "chatgpt" else "the host's API key"
        lines = [
            f"Agent: {provider}"
            f" (model {config.model or 'default'}, effort {config.reasoning_effort or 'default'}"
            + (f"; model calls paid by {paid})" if calls else "; no model calls)"),
            f"Container: {'running' if running else 'not running (it starts with the next message)'}",
            f"Messages waiting: {waiting}",
        ]
        if session.last_error:
            when = f"{session.last_error_at:%Y-%m-%d %H:%M} UTC" if session.last_error_at else "earlier"
            lines.append(f"Last error ({when}): {session.last_error[:500]}")
        else:
            lines.append("Last error: none")
        return "\n".join(lines)
