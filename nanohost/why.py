"""``nanohost why GROUP``: why a group is silent, in plain words, from facts in the database.

Each check looks at one thing a user's message passes on its way to a reply (a bound chat, the
sender allow-list, the engage mode, the session's health, a container slot, the model's key,
delivery to the platform) and says something only when it finds a reason. The answer lists every
reason found, most likely first; with none, it says when the group last answered.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nanohost.db.models import AgentGroup, AgentSession, ChatBinding, Message, utcnow
from nanohost.providers.registry import uses_model
from nanohost.sessions import current_sessions
from nanohost.settings import Settings
from nanohost.validation import InvalidInput

RECENT = 20
"""How many of the group's newest messages are looked at."""


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "at an unknown time"
    seconds = max(0, int((utcnow() - moment).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return f"{seconds} s ago"


def explain(db: Session, settings: Settings, group: AgentGroup) -> list[str]:
    """Every reason found for the group staying silent, most likely first."""
    reasons: list[str] = []
    config = group.config
    bindings = db.scalars(select(ChatBinding).where(ChatBinding.group_id == group.id)).all()
    if not bindings:
        reasons.append(
            "No chat is bound to it, so only the HTTP API reaches it: bind one with "
            f"`nanohost bind CHANNEL CHAT_ID {group.name}`."
        )
    recent = db.scalars(
        select(Message).where(Message.group_id == group.id).order_by(Message.id.desc()).limit(RECENT)
    ).all()
    inbound = [m for m in recent if m.direction == "in"]
    if not inbound:
        reasons.append(
            "It has received no message yet. If people are writing in a bound chat, check the "
            "host's log for 'is not bound' or 'not on group … allow-list' lines."
        )
    if config.allowed_senders:
        reasons.append(
            "Only these senders are let in (others are ignored silently): "
            + ", ".join(config.allowed_senders)
            + ". Add one with `--allow-sender`."
        )
    if config.engage_mode == "mention":
        reasons.append(
            "It answers only when @-mentioned, replied to, or in a direct message (engage mode: mention)."
        )
    elif config.engage_mode == "trigger":
        reasons.append(
            f"It answers only messages that start with {config.trigger_word!r} (engage mode: trigger)."
        )
    refused = [m for m in inbound if m.status == "refused"]
    if refused:
        reasons.append(f"Its latest refused message ({_ago(refused[0].created_at)}): {refused[0].error}.")
    for session in current_sessions(db, group.id):
        reasons.extend(_session_reasons(db, settings, group, session))
    undelivered = [m for m in recent if m.direction == "out" and m.status == "failed"]
    if undelivered:
        reasons.append(
            f"A reply could not be delivered to {undelivered[0].channel} "
            f"({_ago(undelivered[0].updated_at)}): {undelivered[0].error}."
        )
    quarantined = db.scalar(
        select(func.count()).where(
            AgentSession.group_id == group.id, AgentSession.quarantined_at.is_not(None)
        )
    )
    if quarantined:
        reasons.append(
            f"{quarantined} of its conversations had an unreadable queue and were set aside "
            "(kept under the data dir's quarantine/); a fresh one took over."
        )
    if not reasons or all(r.startswith(("Only these senders", "It answers only")) for r in reasons):
        answered = next((m for m in recent if m.direction == "out" and m.sender == "agent"), None)
        if answered is not None:
            reasons.append(f"Nothing stands out: it last answered {_ago(answered.created_at)}.")
    return reasons


def _session_reasons(db: Session, settings: Settings, group: AgentGroup, session: AgentSession) -> list[str]:
    reasons: list[str] = []
    provider = session.provider_override or group.agent_provider
    try:
        if provider == "codex" and group.config.auth == "chatgpt":  # the host's ChatGPT sign-in
            from nanohost.auth.refresher import describe
            from nanohost.auth.store import TokenStore

            sign_in = describe(TokenStore.for_settings(settings))
            if sign_in["state"] != "ok":
                reasons.append(
                    f"It uses the host's ChatGPT sign-in, which is {sign_in['state']}, so every turn is "
                    "refused; run `nanohost auth login`."
                )
        elif uses_model(provider) and settings.openai_api_key is None:
            reasons.append(
                f"It uses {provider} but the host has no OPENAI_API_KEY, so every turn is refused."
            )
    except InvalidInput as exc:
        reasons.append(f"It cannot wake: {exc}. Set a registered one with `nanohost groups config`.")
    error = session.last_error or ""
    if session.status == "failed" and session.quarantined_at is None:
        reasons.append(
            f"It failed {session.crash_count} time(s) in a row and is paused until a new message "
            f"or `nanohost sessions reset {group.name}`. Last error ({_ago(session.last_error_at)}): {error}"
        )
    elif error:
        if "401" in error or "Unauthorized" in error or "auth" in error.lower():
            reasons.append(f"The model refused the key ({_ago(session.last_error_at)}): {error}")
        else:
            reasons.append(f"Its last error ({_ago(session.last_error_at)}): {error}")
    waiting = db.scalars(
        select(Message)
        .where(
            Message.session_id == session.id,
            Message.direction == "in",
            Message.status.in_(("pending", "queued")),
        )
        .order_by(Message.id)
    ).all()
    if waiting and session.status != "running":
        running = db.scalar(select(func.count()).where(AgentSession.status == "running")) or 0
        if running >= settings.max_containers:
            reasons.append(
                f"{len(waiting)} message(s) are waiting for a container slot "
                f"({running} of {settings.max_containers} in use; the oldest waits since "
                f"{_ago(waiting[0].created_at)})."
            )
        else:
            reasons.append(
                f"{len(waiting)} message(s) are waiting for its container to start "
                f"(the oldest since {_ago(waiting[0].created_at)})."
            )
    elif waiting:
        reasons.append(
            f"It is working on {len(waiting)} message(s) (the oldest since {_ago(waiting[0].created_at)})."
        )
    return reasons
