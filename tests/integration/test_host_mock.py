"""Message in through the API → the mock agent in its real container → reply out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nanohost.settings import Settings
from tests.integration.conftest import add_group, make_settings
from tests.support.host import containers_of, installation_id

pytestmark = pytest.mark.docker


async def test_round_trip_in_a_locked_down_container(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "team", memory_limit="256m", pids_limit=128, cpu_limit=0.5)
    host = await start_host(settings)
    message_id = await host.send("team", "hello there")
    replies = await host.replies_after("team", message_id)
    assert [r["text"] for r in replies] == ["echo: hello there"]

    (container,) = containers_of(docker_client, settings, "team")
    config, hostconfig = container.attrs["Config"], container.attrs["HostConfig"]
    assert config["User"] == "1000:1000"
    assert hostconfig["NetworkMode"] == "none"
    assert hostconfig["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in hostconfig["SecurityOpt"]
    assert hostconfig["Init"] is True
    assert hostconfig["Memory"] == 256 * 1024**2
    assert hostconfig["PidsLimit"] == 128
    assert hostconfig["NanoCpus"] == 500_000_000
    assert container.name == f"nanohost-{installation_id(settings)}-team-s1"
    assert config["Labels"]["nanohost.session"] == "1"
    assert config["Labels"]["nanohost.installation"] == installation_id(settings)
    # the exchange was archived in the group's folder, owned by the container user
    archived = list((settings.groups_dir / "team" / "conversations").glob("*.md"))
    assert len(archived) == 1 and "hello there" in archived[0].read_text()


async def test_two_messages_at_once_start_one_container(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "pair")
    host = await start_host(settings)
    first, second = await asyncio.gather(host.send("pair", "one"), host.send("pair", "two"))
    replies = await host.replies_after("pair", min(first, second))
    while sum(r["text"].count("one") + r["text"].count("two") for r in replies) < 2:
        replies += await host.replies_after("pair", replies[-1]["id"])
    assert len(containers_of(docker_client, settings, "pair", all=True)) == 1


async def test_agent_tasks_reach_the_scheduler_table_and_tasks_json(tmp_path: Path, start_host: Any) -> None:
    """A schedule_task row from the container becomes a scheduled_tasks row and shows in tasks.json."""
    import json as jsonlib
    import sqlite3

    settings = make_settings(tmp_path)
    add_group(settings, "planner")
    host = await start_host(settings)
    first = await host.send("planner", "hi")
    await host.replies_after("planner", first)
    runtime = host.orchestrator.runtimes[1]
    outbound = sqlite3.connect(runtime.dir / "outbound.db", isolation_level=None)  # as the MCP tool writes it
    outbound.execute(
        "INSERT INTO outbound (kind, payload, created_at) VALUES ('task', ?, 0)",
        (jsonlib.dumps({"op": "schedule", "prompt": "standup", "schedule": "0 9 * * 1-5"}),),
    )
    outbound.close()
    await runtime.pump()
    tasks = jsonlib.loads((runtime.dir / "tasks.json").read_text())
    assert [(t["prompt"], t["schedule"]) for t in tasks] == [("standup", "0 9 * * 1-5")]


async def test_missing_image_is_said_once_not_retried(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path, image_name="nanohost-no-such-image")
    add_group(settings, "imageless")
    host = await start_host(settings)
    message_id = await host.send("imageless", "hello?")
    (notice,) = await host.replies_after("imageless", message_id)
    assert f"{settings.image_tag} is missing; run `nanohost image build`" in notice["text"]
    assert settings.image_tag.startswith("nanohost-no-such-image:0.138.0-")  # + the content hash


def test_image_build_if_missing_skips_a_present_image(
    agent_image: str, host_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from nanohost.cli import app

    name, version = agent_image.split(":")[0], Settings().codex_version
    monkeypatch.setenv("NANOHOST_IMAGE_NAME", name)
    result = CliRunner().invoke(app, ["image", "build", "--if-missing"])
    assert result.exit_code == 0, result.output
    assert f"{agent_image} is present, built from this code (Codex {version})" in result.stdout
