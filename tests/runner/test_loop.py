"""The runner loop with the mock provider, through the real transport."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from agent_runner.archive import archive_exchange
from agent_runner.memory import link_skills, scaffold

from nanohost.transport import Doorbell, SessionQueues
from tests.runner.conftest import Harness, make_paths


async def test_round_trip_and_ack(harness: Harness) -> None:
    message_id = harness.send("hello")
    await harness.until(lambda: harness.replies())
    assert harness.replies() == [{"text": "echo: hello", "in_reply_to": [message_id]}]
    assert harness.host.unconsumed() == []
    assert {i: (a.status, a.reason) for i, a in harness.host.acks([message_id]).items()} == {
        message_id: ("done", None)
    }
    assert harness.host.continuation() is not None and harness.host.continuation().startswith("mock-")


async def test_messages_are_answered_in_order_and_exactly_once(harness: Harness) -> None:
    ids = [harness.send(f"m{i}") for i in range(5)]
    await harness.until(lambda: not harness.host.unconsumed())
    answered = [i for reply in harness.replies() for i in reply["in_reply_to"]]  # type: ignore[union-attr]
    assert sorted(answered) == ids and len(answered) == len(set(answered))
    texts = " ".join(str(r["text"]) for r in harness.replies())
    assert [texts.index(f"m{i}") for i in range(5)] == sorted(texts.index(f"m{i}") for i in range(5))


async def test_follow_up_during_a_turn_is_steered_in(harness: Harness) -> None:
    first = harness.send("[slow] first")
    await harness.until(lambda: any(r.kind == "progress" for r in harness.host.outbound_after(0)))
    second = harness.send("second")
    await harness.until(lambda: not harness.host.unconsumed())
    assert harness.replies() == [{"text": "echo: [slow] first | second", "in_reply_to": [first, second]}]


async def test_malformed_rows_are_failed_and_never_block(harness: Harness) -> None:
    bad_json = harness.send("", raw="{not json")
    no_text = harness.send("", raw=json.dumps({"sender": "x"}))
    odd_kind = harness.send("", raw=json.dumps({"text": "x"}), kind="telepathy")
    good = harness.send("still works")
    await harness.until(lambda: not harness.host.unconsumed())
    acks = {
        i: (a.status, a.reason) for i, a in harness.host.acks([bad_json, no_text, odd_kind, good]).items()
    }
    assert acks[good] == ("done", None)
    assert acks[bad_json][0] == "failed" and "JSON" in str(acks[bad_json][1])
    assert acks[no_text] == ("failed", "payload has no text")
    assert acks[odd_kind] == ("failed", "unknown inbound kind 'telepathy'")
    assert harness.replies() == [{"text": "echo: still works", "in_reply_to": [good]}]


async def test_failed_turn_tells_the_user_and_is_acked_failed(harness: Harness) -> None:
    message_id = harness.send("[fail] please")
    await harness.until(lambda: harness.replies())
    assert "could not answer" in str(harness.replies()[0]["text"])
    assert harness.host.acks([message_id])[message_id].status == "failed"
    statuses = [r.payload for r in harness.host.outbound_after(0) if r.kind == "status"]
    assert statuses and statuses[0]["error"] == "mock failure requested"


async def test_exchange_is_archived(harness: Harness) -> None:
    harness.send("archive me")
    await harness.until(lambda: harness.replies())
    files = list((harness.paths.workspace / "conversations").glob("*.md"))
    assert len(files) == 1
    text = files[0].read_text()
    assert "archive me" in text and "echo: archive me" in text and "provider: mock" in text


def test_archive_names_are_unique_within_a_second_and_empty_replies_write_nothing(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    paths = {
        archive_exchange(
            tmp_path, provider="mock", thread="t", status="completed", prompts=["p"], reply="r", now=now
        )
        for _ in range(20)
    }
    assert len(paths) == 20 and all(p and p.name.startswith("2026-11-24T12-00-00Z") for p in paths)
    assert (
        archive_exchange(tmp_path, provider="mock", thread="t", status="completed", prompts=["p"], reply=" ")
        is None
    )
    long = archive_exchange(
        tmp_path, provider="mock", thread="t", status="completed", prompts=["p"], reply="x" * 30_000
    )
    assert long is not None and "truncated: 10000 more characters" in long.read_text()
    assert not list(tmp_path.glob(".tmp-*"))


def test_scaffold_never_overwrites_and_skills_are_linked(tmp_path: Path) -> None:
    workspace, codex_home = tmp_path / "ws", tmp_path / "codex"
    (workspace / "memory").mkdir(parents=True)
    (workspace / "memory" / "index.md").write_text("mine")
    scaffold(workspace)
    assert (workspace / "memory" / "index.md").read_text() == "mine"
    assert (workspace / "memory" / "system" / "definition.md").is_file()
    (workspace / "skills" / "pdf").mkdir(parents=True)
    (workspace / "skills" / "pdf" / "SKILL.md").write_text("x")
    (workspace / "skills" / ".hidden").mkdir()
    (workspace / "skills" / ".hidden" / "SKILL.md").write_text("x")
    (codex_home / "skills").mkdir(parents=True)
    (codex_home / "skills" / "system-skill").mkdir()
    assert link_skills(workspace, codex_home) == ["pdf"]
    assert os.readlink(codex_home / "skills" / "pdf") == str(workspace / "skills" / "pdf")
    (workspace / "skills" / "pdf" / "SKILL.md").unlink()
    link_skills(workspace, codex_home)
    assert not (codex_home / "skills" / "pdf").is_symlink()
    assert (codex_home / "skills" / "system-skill").is_dir()


async def test_sigterm_ends_the_runner_with_exit_0(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    (paths.session / "runner.json").write_text(
        json.dumps({"provider": "mock", "runner": "agent_runner.mock:build"})
    )
    host = SessionQueues(paths.session)
    host.append(1, "before the signal", "alice", [])
    rung = asyncio.Event()
    bell = Doorbell(paths.session / "doorbell.sock", rung.set)
    await bell.start()
    env = {
        **os.environ,
        "NANOHOST_SESSION_DIR": str(paths.session),
        "NANOHOST_WORKSPACE": str(paths.workspace),
        "CODEX_HOME": str(paths.codex_home),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_runner", env=env, stderr=subprocess.PIPE
    )
    async with asyncio.timeout(10):
        while not [r for r in host.outbound_after(0) if r.kind == "message"]:
            rung.clear()
            await rung.wait()
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    await bell.stop()
    host.close()


async def test_bad_runner_json_is_reported_and_exits_non_zero(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    (paths.session / "runner.json").write_text(
        json.dumps({"provider": "gpt", "runner": "agent_runner.gpt:build"})
    )
    env = {
        **os.environ,
        "NANOHOST_SESSION_DIR": str(paths.session),
        "NANOHOST_WORKSPACE": str(paths.workspace),
        "CODEX_HOME": str(paths.codex_home),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_runner", env=env, stderr=subprocess.PIPE
    )
    assert await asyncio.wait_for(process.wait(), 10) == 2
    host = SessionQueues(paths.session)
    status = [r.payload for r in host.outbound_after(0) if r.kind == "status"]
    assert status and "provider runner agent_runner.gpt:build is not installed in this image" in str(
        status[0]["error"]
    )
    host.close()
