"""Snapshots with the real host and a mock agent in its real container: take one, let the
conversation and the folder move on, restore it while the container runs, and the next message
is answered on the snapshot's thread, over the snapshot's files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nanohost import snapshots
from nanohost.control import poke
from nanohost.db.engine import transaction
from nanohost.db.models import AgentSession
from nanohost.sessions import current_sessions, start_afresh
from tests.integration.conftest import add_group, make_settings
from tests.support.host import containers_of, installation_id

pytestmark = pytest.mark.docker


def threads(host: Any) -> dict[int, str | None]:
    with transaction(host.orchestrator.ctx.db) as db:
        return {s.id: s.continuation for s in db.scalars(select(AgentSession).order_by(AgentSession.id))}


async def test_restore_brings_back_the_files_and_the_thread(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "snap")
    host = await start_host(settings)
    db = host.orchestrator.ctx.db
    folder = settings.groups_dir / "snap"

    first = await host.send("snap", "one")
    assert [r["text"] for r in await host.replies_after("snap", first)] == ["echo: one"]
    ((session_a, thread_a),) = threads(host).items()
    assert thread_a and thread_a.startswith("mock-")
    (folder / "notes.txt").write_text("version 1")  # the agent's work so far
    taken = await asyncio.to_thread(snapshots.create, settings, db, "snap")
    assert taken.continuation == thread_a

    # the agent works on, and the conversation moves to a new thread, with its container running
    (folder / "notes.txt").write_text("version 2")
    (folder / "junk.txt").write_text("junk")
    with transaction(db) as session:
        (live,) = current_sessions(session, live_group_id(session))
        start_afresh(session, live)
    host.orchestrator.ctx.sweep_now.set()
    second = await host.send("snap", "two")
    assert [r["text"] for r in await host.replies_after("snap", second)] == ["echo: two"]
    session_b, thread_b = list(threads(host).items())[-1]
    assert session_b != session_a and thread_b not in (None, thread_a)
    # (session A's container may still be stopping: the restore must stop whatever runs)
    (running,) = [
        c
        for c in containers_of(docker_client, settings, "snap")
        if c.labels["nanohost.session"] == str(session_b)
    ]

    containers = snapshots.DockerContainers(
        installation_id(settings), settings.data_dir, lambda: poke(settings.data_dir, "sweep")
    )
    try:
        done = await asyncio.to_thread(snapshots.restore, settings, db, "snap", taken.id, containers)
    finally:
        containers.close()
    assert running.id in done.stopped
    assert containers_of(docker_client, settings, "snap") == []  # none runs once the restore is done
    assert (folder / "notes.txt").read_text() == "version 1"
    assert not (folder / "junk.txt").exists()
    assert done.before.continuation == thread_b

    third = await host.send("snap", "three")
    assert [r["text"] for r in await host.replies_after("snap", third)] == ["echo: three"]
    (fresh,) = done.sessions
    (answering,) = containers_of(docker_client, settings, "snap")
    assert answering.labels["nanohost.session"] == str(fresh)
    # the runner resumed the seeded thread (a new one would have replaced it in the session row)
    assert threads(host)[fresh] == thread_a


def live_group_id(session: Any) -> int:
    from nanohost.groups import get_group

    return get_group(session, "snap").id
