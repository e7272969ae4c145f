"""Starting a conversation afresh: one rule for ``/new``, ``sessions reset`` and quarantine.

A fresh session is a new ``sessions`` row for the same group and chat: routing always picks a
chat's newest session, and a new row has a new session directory, so its runner starts a new
provider thread. The old thread stays where it was (the Codex state dir, ``conversations/``), so
nothing of the history is lost. Messages still waiting for an answer move to the fresh session,
and the old one is asked to stop its container cleanly (``restart_requested``; the sweeper acts
on it, or the next host start).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from nanohost.db.models import AgentSession, Message


def new_session_like(db: Session, old: AgentSession) -> AgentSession:
    """A new, empty session for ``old``'s group and chat (in the caller's transaction)."""
    fresh = AgentSession(
        group_id=old.group_id, chat_key=old.chat_key, provider_override=old.provider_override
    )
    db.add(fresh)
    db.flush()
    return fresh


def start_afresh(db: Session, old: AgentSession) -> AgentSession:
    """A fresh session taking over from ``old`` (in the caller's transaction)."""
    fresh = new_session_like(db, old)
    for message in db.scalars(
        select(Message).where(
            Message.session_id == old.id,
            Message.direction == "in",
            Message.status.in_(("pending", "queued")),
        )
    ):
        message.session_id, message.status = fresh.id, "pending"
    old.restart_requested = True
    old.crash_count, old.failure_notified = 0, False
    return fresh


def current_sessions(db: Session, group_id: int) -> list[AgentSession]:
    """The group's live sessions: the newest one of each chat key."""
    return current_sessions_by_group(db, group_id).get(group_id, [])


def current_sessions_by_group(db: Session, group_id: int | None = None) -> dict[int, list[AgentSession]]:
    """Every group's live sessions (or one group's), in one query: the newest session of each
    chat key, unless it is quarantined."""
    query = select(AgentSession).order_by(AgentSession.id)
    if group_id is not None:
        query = query.where(AgentSession.group_id == group_id)
    newest: dict[tuple[int, str | None], AgentSession] = {}
    for session in db.scalars(query):
        newest[(session.group_id, session.chat_key)] = session
    live: dict[int, list[AgentSession]] = {}
    for session in newest.values():
        if session.quarantined_at is None:
            live.setdefault(session.group_id, []).append(session)
    return live
