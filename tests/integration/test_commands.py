"""Chat commands and operator edits that must apply: answered by the host, never the model;
config changes and restarts stop the container cleanly (never a crash); delete cleans up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from nanohost.channels.api import ROUTER
from nanohost.channels.base import InboundMessage
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, Message
from tests.integration.conftest import add_group, bind, make_settings
from tests.support.host import containers_of

pytestmark = pytest.mark.docker


def containers(docker_client: Any, settings: Any, folder: str) -> list[Any]:
    """This test's own containers of ``folder``, running or not."""
    return list(containers_of(docker_client, settings, folder, all=True))


async def exit_code_of(container: Any) -> int:
    """Wait (the engine's own wait, bounded) for the container to exit; its exit code."""
    result = await asyncio.to_thread(container.wait, timeout=30)
    return int(result["StatusCode"])


async def test_help_and_status_are_answered_by_the_host_without_a_container(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "team", model="gpt-5.5")
    host = await start_host(settings)
    sent = await host.send("team", "/help")
    (reply,) = await host.replies_after("team", sent)
    assert "/status" in reply["text"] and "/new" in reply["text"] and reply["sender"] == "nanohost"
    sent = await host.send("team", "/status")
    (reply,) = await host.replies_after("team", sent)
    assert "model gpt-5.5" in reply["text"] and "not running" in reply["text"]
    assert "no model calls" in reply["text"]  # the mock agent: nothing is paid for
    add_group(settings, "plan", provider="codex", auth="chatgpt")
    sent = await host.send("plan", "/status")
    (reply,) = await host.replies_after("plan", sent)
    assert reply["text"].startswith("Agent: codex") and "paid by the host's ChatGPT sign-in" in reply["text"]
    assert "Last error: none" in reply["text"]
    assert containers(docker_client, settings, "team") == []  # the model (and its container) never saw them


async def test_commands_obey_the_sender_allow_list(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "team", allowed_senders=["telegram:@alice"])
    bind(settings, "telegram", "-100", "team")
    host = await start_host(settings)
    router = host.app[ROUTER]
    for who, pid in (("mallory", "1"), ("alice", "2")):
        await router.receive(
            InboundMessage(
                "telegram", "-100", who, "/status@nanobot", platform_message_id=pid, sender_handle=who
            )
        )
    rows = host.outbound_rows()
    assert len(rows) == 1 and rows[0].text.startswith("Agent: mock")  # alice's only


async def test_new_starts_a_fresh_thread_and_stops_the_old_container_cleanly(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "team")
    host = await start_host(settings)
    first = await host.send("team", "hello")
    assert await host.replies_after("team", first)
    (old,) = containers(docker_client, settings, "team")
    sent = await host.send("team", "/new")
    (reply,) = await host.replies_after("team", sent)
    assert "new conversation" in reply["text"]
    assert await exit_code_of(old) == 0
    again = await host.send("team", "after new")
    assert [r["text"] for r in await host.replies_after("team", again)] == ["echo: after new"]
    with transaction(host.orchestrator.ctx.db) as db:
        sessions = db.scalars(select(AgentSession).order_by(AgentSession.id)).all()
        assert [s.id for s in sessions] == [1, 2]
        assert sessions[0].crash_count == 0 and sessions[0].last_error is None
        message = db.get(Message, again)
        assert message is not None and message.session_id == 2


async def test_a_config_change_replaces_the_container_when_idle_not_as_a_crash(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "team", memory_limit="256m")
    host = await start_host(settings)
    first = await host.send("team", "hello")
    assert await host.replies_after("team", first)
    (old,) = containers(docker_client, settings, "team")
    with transaction(host.orchestrator.ctx.db) as db:  # what `groups config team --memory 320m` does
        group = db.scalar(select(AgentGroup).where(AgentGroup.name == "team"))
        assert group is not None
        group.config.memory_limit = "320m"
        group.config.version += 1
    host.orchestrator.ctx.sweep_now.set()
    assert await exit_code_of(old) == 0
    second = await host.send("team", "with the new config")
    assert await host.replies_after("team", second)
    running = [
        c for c in containers(docker_client, settings, "team") if c.status == "running" or c.id != old.id
    ]
    new = next(c for c in running if c.id != old.id)
    assert new.attrs["HostConfig"]["Memory"] == 320 * 1024**2
    with transaction(host.orchestrator.ctx.db) as db:
        session = db.get(AgentSession, 1)
        assert session is not None and session.crash_count == 0 and session.last_error is None


def cli(monkeypatch: pytest.MonkeyPatch, settings: Any, *args: str) -> Any:
    from nanohost.cli import app

    monkeypatch.setenv("NANOHOST_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("NANOHOST_GROUPS_DIR", str(settings.groups_dir))
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result


async def test_restart_and_delete_from_the_cli_while_the_host_runs(
    tmp_path: Path, start_host: Any, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "team")
    add_group(settings, "other")
    host = await start_host(settings)
    first = await host.send("team", "hello")
    assert await host.replies_after("team", first)
    (old,) = containers(docker_client, settings, "team")

    result = await asyncio.to_thread(cli, monkeypatch, settings, "groups", "restart", "team")
    assert result.exit_code == 0 and "restarting team" in result.stdout, result.stdout
    assert await exit_code_of(old) == 0

    again = await host.send("team", "again")
    assert await host.replies_after("team", again)
    refused = await asyncio.to_thread(cli, monkeypatch, settings, "groups", "delete", "team")
    assert refused.exit_code != 0 and "--yes" in refused.stderr
    deleted = await asyncio.to_thread(cli, monkeypatch, settings, "groups", "delete", "team", "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    assert all(
        c.status == "exited" for c in (c.reload() or c for c in containers(docker_client, settings, "team"))
    )
    assert not (settings.sessions_dir / "1").exists() and not (settings.groups_dir / "team").exists()
    await host.orchestrator.sweep()  # what the CLI's nudge starts: the runtime retires quietly
    assert 1 not in host.orchestrator.runtimes
    other = await host.send("other", "still here")
    assert [r["text"] for r in await host.replies_after("other", other)] == ["echo: still here"]


async def test_metrics_count_what_happened(tmp_path: Path, start_host: Any, docker_client: Any) -> None:
    from tests.integration.conftest import AUTH

    settings = make_settings(tmp_path)
    add_group(settings, "team")
    host = await start_host(settings)
    for text in ("one", "two"):
        sent = await host.send("team", text)
        assert await host.replies_after("team", sent)
    assert (await host.client.get("/metrics")).status == 401
    response = await host.client.get("/metrics", headers=AUTH)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'nanohost_messages_total{channel="api",direction="in"} 2.0' in text
    assert 'nanohost_messages_total{channel="api",direction="out"} 2.0' in text
    assert "nanohost_wakes_total 1.0" in text
    assert "nanohost_turn_seconds_count 2.0" in text
    assert "nanohost_containers_running 1.0" in text


async def test_each_containers_output_and_ending_are_kept(
    tmp_path: Path, start_host: Any, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "team")
    host = await start_host(settings)
    first = await host.send("team", "hello")
    assert await host.replies_after("team", first)
    (old,) = containers(docker_client, settings, "team")
    await host.orchestrator.runtimes[1].stop("test: a clean stop")
    second = await host.send("team", "again")
    assert await host.replies_after("team", second)
    result = await asyncio.to_thread(cli, monkeypatch, settings, "logs", "team")
    assert result.exit_code == 0, result.stderr
    assert f"container {old.id[:12]} stopped (test: a clean stop)" in result.stdout
    assert "running container" in result.stdout


async def test_stop_interrupts_the_turn_and_keeps_the_thread(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "team")
    host = await start_host(settings)
    first = await host.send("team", "hello")
    assert await host.replies_after("team", first)
    (container,) = containers(docker_client, settings, "team")
    events = host.orchestrator.ctx.bus.subscribe(1)
    slow = await host.send("team", "[slow] think for ever")
    async with asyncio.timeout(30):  # the turn is under way once the agent reports progress
        while (await events.get()).get("type") != "progress":
            pass
    stop = await host.send("team", "/stop")
    (reply,) = await host.replies_after("team", stop)
    assert reply["text"].startswith("Stopped.")
    async with asyncio.timeout(30):
        while True:
            with transaction(host.orchestrator.ctx.db) as db:
                message = db.get(Message, slow)
                assert message is not None
                if message.status != "queued":
                    break
            await events.get()  # a message's status change is published; look again then
    assert message.status == "failed" and "stopped by the user" in (message.error or "")
    after = await host.send("team", "still there?")
    replies = await host.replies_after("team", after)
    assert [r["text"] for r in replies] == ["echo: still there?"]  # the stopped one never answered
    (same,) = containers(docker_client, settings, "team")
    assert same.id == container.id  # the container (and its thread) kept going
