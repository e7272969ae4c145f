"""A group's agent filling the disk is stopped and told; while its folder is over its quota its
wakes are refused, its messages wait and are answered once there is room (real container, mock
agent, files written from inside it as the agent user)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nanohost.db.engine import transaction
from nanohost.db.models import AgentSession, Message
from tests.integration.conftest import add_group, make_settings
from tests.support.host import Host, containers_of

pytestmark = pytest.mark.docker
FILL = "head -c 30000000 /dev/zero > {}"  # 28.6 MiB, over the 20 MiB quota below


def as_agent(container: Any, script: str) -> int:
    code, _ = container.exec_run(["sh", "-c", script], user="1000:1000")
    return int(code)


async def woken(tmp_path: Path, start_host: Any, docker_client: Any) -> tuple[Host, Any, int]:
    """A host with groups team and other (quota 20 MiB); team has answered once: (host, its
    container, the id of its reply)."""
    settings = make_settings(tmp_path, group_disk_quota="20m")
    add_group(settings, "team")
    add_group(settings, "other")
    host = await start_host(settings)
    first = await host.send("team", "hello")
    answered = await host.replies_after("team", first)
    assert answered
    (container,) = containers_of(docker_client, settings, "team")
    await host.orchestrator.enforce_quota()  # under the quota: nothing happens
    container.reload()
    assert container.status == "running"
    return host, container, answered[-1]["id"]


async def stopped_and_told(host: Host, container: Any, after: int, counted_as: str) -> dict[str, Any]:
    await host.orchestrator.enforce_quota()
    container.reload()
    assert container.status == "exited"
    (notice,) = await host.replies_after("team", after)
    assert notice["sender"] == "nanohost" and "I was stopped" in notice["text"]
    assert "over its quota of 20.0 MiB" in notice["text"] and counted_as in notice["text"]
    return notice


async def test_a_folder_over_its_quota_is_refused_until_there_is_room_and_nothing_is_lost(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    host, container, after = await woken(tmp_path, start_host, docker_client)
    assert as_agent(container, FILL.format("/workspace/agent/big")) == 0
    notice = await stopped_and_told(host, container, after, "uses 28.")

    waiting = await host.send("team", "are you there?")
    (refused,) = await host.replies_after("team", notice["id"])
    assert "I cannot start" in refused["text"] and "fix the group's files" in refused["text"]
    with transaction(host.orchestrator.ctx.db) as db:
        assert db.get(Message, waiting).status in ("pending", "queued")  # waits, not lost
        session = db.scalars(select(AgentSession).order_by(AgentSession.id)).first()
        assert session is not None and "over its quota" in (session.last_error or "")
    other = await host.send("other", "still fine?")  # another group is not held up
    assert await host.replies_after("other", other)

    (host.settings.groups_dir / "team" / "big").unlink()  # the operator makes room
    again = await host.send("team", "and now?")
    (answer,) = await host.replies_after("team", refused["id"])
    assert "are you there?" in answer["text"] and "and now?" in answer["text"]
    with transaction(host.orchestrator.ctx.db) as db:
        assert {db.get(Message, i).status for i in (waiting, again)} == {"answered"}


async def test_a_container_filling_its_own_layer_is_stopped_and_the_next_wake_starts_afresh(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    host, container, after = await woken(tmp_path, start_host, docker_client)
    assert as_agent(container, FILL.format("/tmp/big")) == 0
    notice = await stopped_and_told(host, container, after, "inside its container")

    asked = await host.send("team", "are you there?")  # the filled layer goes with the old container
    (answer,) = await host.replies_after("team", notice["id"])
    assert answer["text"] == "echo: are you there?"
    (fresh,) = containers_of(docker_client, host.settings, "team", all=True)
    assert fresh.id != container.id
    assert as_agent(fresh, "test ! -e /tmp/big") == 0
    with transaction(host.orchestrator.ctx.db) as db:
        assert db.get(Message, asked).status == "answered"


def set_disk_quota(host: Host, group: str, value: str | None) -> None:
    """What `nanohost groups config GROUP --disk-quota VALUE` does to the row (the CLI's own
    parsing is tested in tests/test_cli.py)."""
    from nanohost.db.models import AgentGroup

    with transaction(host.orchestrator.ctx.db) as db:
        row = db.scalars(select(AgentGroup).where(AgentGroup.name == group)).one()
        row.config.disk_quota = value


async def test_a_groups_own_quota_is_enforced_without_a_host_quota_and_raising_it_lets_it_start(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path, group_disk_quota="0")  # no host-wide quota
    add_group(settings, "team")
    add_group(settings, "other")
    host = await start_host(settings)
    set_disk_quota(host, "team", "20m")
    first = await host.send("team", "hello")
    (answered,) = await host.replies_after("team", first)
    (container,) = containers_of(docker_client, settings, "team")
    other = await host.send("other", "hello")
    assert await host.replies_after("other", other)
    (other_container,) = containers_of(docker_client, settings, "other")
    assert as_agent(container, FILL.format("/workspace/agent/big")) == 0
    assert as_agent(other_container, FILL.format("/workspace/agent/big")) == 0  # no quota: fine

    await host.orchestrator.enforce_quota()
    container.reload()
    other_container.reload()
    assert container.status == "exited" and other_container.status == "running"
    (notice,) = await host.replies_after("team", answered["id"])
    assert "over its quota of 20.0 MiB (the group's own" in notice["text"]

    waiting = await host.send("team", "still there?")
    (refused,) = await host.replies_after("team", notice["id"])
    assert "I cannot start" in refused["text"]
    set_disk_quota(host, "team", "50m")  # the operator raises the group's quota: no restart needed
    again = await host.send("team", "and now?")
    (answer,) = await host.replies_after("team", refused["id"])
    assert "still there?" in answer["text"] and "and now?" in answer["text"]
    with transaction(host.orchestrator.ctx.db) as db:
        assert {db.get(Message, i).status for i in (waiting, again)} == {"answered"}
