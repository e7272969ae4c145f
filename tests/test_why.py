"""`nanohost why GROUP` names the real reason a group is silent, from the facts stored."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from nanohost.db import make_engine, make_session_factory
from nanohost.db.engine import transaction
from nanohost.db.models import AgentSession, Message, utcnow
from nanohost.settings import load_settings
from tests.test_cli import Run, cli, engine_asked, ready  # noqa: F401  (fixtures)


def rows(*add: object) -> None:
    engine = make_engine(load_settings().db_url)
    with transaction(make_session_factory(engine)) as db:
        for row in add:
            db.add(row)
    engine.dispose()


def why(run: Run, group: str) -> list[str]:
    reasons = run("why", group, "--json").json()
    assert isinstance(reasons, list)
    return [str(r) for r in reasons]


def test_a_new_group_says_what_it_lacks(ready: Run) -> None:  # noqa: F811
    ready("groups", "create", "quiet", "--provider", "codex")
    reasons = why(ready, "quiet")
    assert any("No chat is bound" in r for r in reasons)
    assert any("received no message yet" in r for r in reasons)
    assert not any("OPENAI_API_KEY" in r for r in reasons)  # no session yet: nothing to say of it


def test_routing_rules_are_named(ready: Run) -> None:  # noqa: F811
    ready(
        "groups",
        "config",
        "main",
        "--allow-sender",
        "telegram:@alice",
        "--engage",
        "trigger",
        "--trigger",
        "bot",
    )
    reasons = why(ready, "main")
    assert any("telegram:@alice" in r for r in reasons)
    assert any("start with 'bot'" in r for r in reasons)


def test_a_failed_session_and_a_refused_key_are_explained(ready: Run, host_env: Path) -> None:  # noqa: F811
    rows(AgentSession(group_id=1, status="failed", crash_count=3, last_error="container exited 1"))
    assert any("failed 3 time(s)" in r and "container exited 1" in r for r in why(ready, "main"))
    ready("groups", "create", "keyless")
    rows(AgentSession(group_id=2, status="stopped", last_error="auth: unexpected status 401 Unauthorized"))
    assert any("refused the key" in r for r in why(ready, "keyless"))


def test_waiting_for_a_container_slot(ready: Run, host_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("NANOHOST_MAX_CONTAINERS", "1")
    ready("groups", "create", "busy")
    rows(
        AgentSession(group_id=2, status="running", container_id="c1"),
        AgentSession(group_id=1, status="stopped"),
    )
    rows(
        Message(
            group_id=1,
            session_id=2,
            direction="in",
            channel="web",
            chat_id="main",
            text="hi",
            status="queued",
            created_at=utcnow() - timedelta(minutes=3),
        )
    )
    reasons = why(ready, "main")
    assert any("waiting for a container slot (1 of 1 in use" in r and "3 minutes ago" in r for r in reasons)
