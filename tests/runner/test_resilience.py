"""The runner loses nothing to a failing path to the model, a stop, or a host that went away.

The mock provider fails on transport on request (``[flaky]``: twice, then it answers;
``[unreachable]``: always), as codex does when the host restarts or the model service fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_runner.config import ConfigError, RunnerConfig

from nanohost.transport import Doorbell, SessionQueues
from tests.runner.conftest import Harness, make_paths

BACKOFF = (0.01, 0.05, 0.05)


@pytest.fixture
def runner_options() -> dict[str, Any]:
    return {"backoff": BACKOFF}


def acks(harness: Harness, ids: list[int]) -> dict[int, tuple[str, str | None]]:
    return {i: (a.status, a.reason) for i, a in harness.host.acks(ids).items()}


def archived(harness: Harness) -> list[str]:
    return [p.read_text() for p in (harness.paths.workspace / "conversations").glob("*.md")]


async def test_a_turn_that_failed_on_transport_is_retried_and_answered_once(harness: Harness) -> None:
    message_id = harness.send("[flaky] hello")
    await harness.until(lambda: not harness.host.unconsumed())
    assert harness.replies() == [{"text": "echo: [flaky] hello", "in_reply_to": [message_id]}]
    assert acks(harness, [message_id]) == {message_id: ("done", None)}
    statuses = [r.payload for r in harness.host.outbound_after(0) if r.kind == "status"]
    assert [s["error_kind"] for s in statuses] == ["transport", "transport"]  # two tries failed
    (text,) = archived(harness)
    assert "echo: [flaky] hello" in text


async def test_messages_that_arrive_during_a_backoff_wait_and_keep_their_order(harness: Harness) -> None:
    first = harness.send("[flaky] first")
    await harness.until(lambda: any(r.kind == "status" for r in harness.host.outbound_after(0)))
    second = harness.send("second")
    await harness.until(lambda: not harness.host.unconsumed())
    replies = harness.replies()
    answered = [i for reply in replies for i in reply["in_reply_to"]]  # type: ignore[attr-defined]
    assert sorted(answered) == [first, second] and len(answered) == 2
    text = " ".join(str(r["text"]) for r in replies)
    assert text.index("[flaky] first") < text.index("second")
    assert acks(harness, [first, second]) == {first: ("done", None), second: ("done", None)}


async def test_a_path_that_stays_down_is_told_once_in_plain_words(harness: Harness) -> None:
    message_id = harness.send("[unreachable] hello")
    await harness.until(lambda: not harness.host.unconsumed())
    (reply,) = harness.replies()
    assert reply["in_reply_to"] == [message_id]
    assert "could not reach the AI model service" in str(reply["text"])
    assert "127.0.0.1" not in str(reply["text"]) and "mock connection reset" not in str(reply["text"])
    assert acks(harness, [message_id])[message_id][0] == "failed"
    tries = [r for r in harness.host.outbound_after(0) if r.kind == "status"]
    assert len(tries) == len(BACKOFF) + 1  # the first try and one per backoff step
    assert archived(harness) == []
    follow_up = harness.send("are you back?")  # the queue is not blocked afterwards
    await harness.until(lambda: len(harness.replies()) == 2)
    assert harness.replies()[1] == {"text": "echo: are you back?", "in_reply_to": [follow_up]}


def runner_env(paths: Any) -> dict[str, str]:
    return {
        **os.environ,
        "NANOHOST_SESSION_DIR": str(paths.session),
        "NANOHOST_WORKSPACE": str(paths.workspace),
        "CODEX_HOME": str(paths.codex_home),
    }


async def wait_for(predicate: Any, rung: asyncio.Event, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            rung.clear()
            if predicate():
                return
            await rung.wait()


async def test_sigterm_mid_turn_exits_at_once_and_leaves_the_message_queued(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    (paths.session / "runner.json").write_text(
        json.dumps({"provider": "mock", "runner": "agent_runner.mock:build"})
    )
    host = SessionQueues(paths.session)
    host.append(1, "[slow] a long job", "alice", [])
    rung = asyncio.Event()
    bell = Doorbell(paths.session / "doorbell.sock", rung.set)
    await bell.start()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_runner", env=runner_env(paths), stderr=subprocess.PIPE
    )
    await wait_for(lambda: any(r.kind == "progress" for r in host.outbound_after(0)), rung)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert time.monotonic() - started < 3
    assert host.unconsumed() == [1]  # not answered, not failed: the next container takes it
    assert [r for r in host.outbound_after(0) if r.kind == "message"] == []

    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_runner", env=runner_env(paths), stderr=subprocess.PIPE
    )
    await wait_for(lambda: sum(r.kind == "progress" for r in host.outbound_after(0)) >= 2, rung)
    host.append(2, "and finish", "alice", [])
    bell.ring()
    await wait_for(lambda: not host.unconsumed(), rung)
    replies = [r.payload for r in host.outbound_after(0) if r.kind == "message"]
    assert replies == [{"text": "echo: [slow] a long job | and finish", "in_reply_to": [1, 2]}]
    second.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(second.wait(), 10) == 0
    await bell.stop()
    host.close()


async def test_a_runner_whose_host_stays_away_stops_itself(tmp_path: Path) -> None:
    paths = make_paths(tmp_path)
    (paths.session / "runner.json").write_text(
        json.dumps({"provider": "mock", "runner": "agent_runner.mock:build", "host_away_timeout": 1})
    )
    host = SessionQueues(paths.session)
    rung = asyncio.Event()
    bell = Doorbell(paths.session / "doorbell.sock", rung.set)
    await bell.start()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_runner", env=runner_env(paths), stderr=subprocess.PIPE
    )
    await asyncio.wait_for(bell.connected.wait(), 10)
    connected = time.time()
    heartbeat = paths.session / "heartbeat"
    async with asyncio.timeout(10):  # connected for longer than the timeout: it keeps running
        while not heartbeat.exists() or heartbeat.stat().st_mtime < connected + 2:
            assert process.returncode is None
            await asyncio.sleep(0.1)  # polling a file's mtime, bounded by the timeout above
    assert process.returncode is None
    host.append(1, "still there?", "alice", [])
    bell.ring()
    await wait_for(lambda: not host.unconsumed(), rung)
    await bell.stop()  # the host goes away and does not come back
    gone = time.monotonic()
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert 0.9 < time.monotonic() - gone < 5
    host.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 1800.0), (60, 60.0), (2.5, 2.5), (0, "error"), ("x", "error"), (True, "error")],
)
def test_host_away_timeout_in_runner_json(value: object, expected: object) -> None:
    data: dict[str, object] = {"provider": "mock", "runner": "agent_runner.mock:build"}
    if value is not None:
        data["host_away_timeout"] = value
    if expected == "error":
        with pytest.raises(ConfigError, match="host_away_timeout"):
            RunnerConfig.from_dict(data)
    else:
        assert RunnerConfig.from_dict(data).host_away_timeout == expected


async def test_a_message_whose_ring_was_lost_still_joins_the_running_turn(harness: Harness) -> None:
    first = harness.send("[slow] a long job")
    await harness.until(lambda: any(r.kind == "progress" for r in harness.host.outbound_after(0)))
    harness.host.append(2, "and this", "alice", [])  # queued, but the doorbell never rings for it
    await harness.until(lambda: not harness.host.unconsumed())  # the slow poll finds it
    assert harness.replies() == [{"text": "echo: [slow] a long job | and this", "in_reply_to": [first, 2]}]
