"""The OpenCode provider driving the real ``opencode serve`` against the scripted model server
(no Docker): a turn answered, the session resumed by a new server, a follow-up during a turn not
lost, interrupt, the group's instructions applied once, the MCP tools offered and used."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_runner.config import Paths, RunnerConfig
from agent_runner.main import build_provider
from agent_runner.opencode.provider import MAX_RETRIES, OpenCodeProvider
from agent_runner.provider import Event, InitEvent, Input, Provider, ResultEvent

from tests.fakes.model_server import ModelServer, Reply, user_texts
from tests.runner.conftest import Harness

pytestmark = pytest.mark.opencode

MARKER = "GROUP-INSTRUCTIONS-MARKER-7f3a"


def make_provider(tmp_path: Path, model_server: ModelServer, opencode_bin: str) -> OpenCodeProvider:
    """The provider as the runner builds it from runner.json, with this test's paths."""
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    instructions = tmp_path / "composed" / "AGENTS.md"
    instructions.parent.mkdir(exist_ok=True)
    instructions.write_text(f"# Instructions\n\n{MARKER}: answer briefly.\n")
    paths = Paths(session=tmp_path / "session", workspace=workspace, codex_home=tmp_path / "codex")
    config = RunnerConfig.from_dict(
        {
            "provider": "opencode",
            "runner": "agent_runner.opencode.runner:build",
            "placeholder": "nh-ph-test",
            "model": "gpt-test",
            "options": {"instructions": [str(instructions)], "opencode_bin": opencode_bin},
        }
    )
    provider = build_provider(config, paths, model_server.url)
    assert isinstance(provider, OpenCodeProvider)
    return provider


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """OpenCode's home (its sessions live in .local/share/opencode under it), and the import
    path the MCP server child needs."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    return home


@pytest.fixture
def provider(tmp_path: Path, model_server: ModelServer, opencode_bin: str, home: Path) -> Provider:
    return make_provider(tmp_path, model_server, opencode_bin)


@pytest.fixture
async def started(provider: Provider) -> AsyncIterator[Provider]:
    await provider.start()
    yield provider
    await provider.close()


async def until_result(events: AsyncIterator[Event], seen: list[Event]) -> ResultEvent:
    async with asyncio.timeout(60):
        async for event in events:
            seen.append(event)
            if isinstance(event, ResultEvent):
                return event
    raise AssertionError(f"the query ended without a result: {seen}")


async def test_a_turn_is_answered_with_the_instructions_and_the_tools(
    harness: Harness, model_server: ModelServer
) -> None:
    model_server.script(
        Reply.function("nanohost_send_message", text="interim update from a tool"), "all done"
    )
    message_id = harness.send("please work")
    await harness.until(lambda: any(p.get("text") == "all done" for p in harness.replies()), limit=60)
    assert [p["text"] for p in harness.replies()] == ["interim update from a tool", "all done"]
    assert {i: a.status for i, a in harness.host.acks([message_id]).items()} == {message_id: "done"}
    first = model_server.requests[0]
    assert first.headers.get("Authorization") == "Bearer nh-ph-test"  # the placeholder, never a key
    assert first.all_text.count(MARKER) == 1  # OpenCode's own `instructions`, read once
    tools = {t.get("name") for t in first.body.get("tools", [])}
    assert {"nanohost_send_message", "nanohost_send_file", "nanohost_schedule_task"} <= tools
    assert user_texts(model_server.requests[-1].body)[-1:] == ["please work"]  # then the tool result
    archived = list((harness.paths.workspace / "conversations").glob("*.md"))
    assert len(archived) == 1 and "all done" in archived[0].read_text()
    assert "provider: opencode" in archived[0].read_text()
    continuation = harness.host.continuation()
    assert continuation is not None and continuation.startswith("ses_")


async def test_a_new_server_resumes_the_session_with_its_history(
    tmp_path: Path, model_server: ModelServer, opencode_bin: str, home: Path
) -> None:
    first = make_provider(tmp_path, model_server, opencode_bin)
    await first.start()
    seen: list[Event] = []
    query = first.query(Input("remember the word heron", (1,)), None)
    events = aiter(query)
    result = await until_result(events, seen)
    assert result.status == "completed" and result.ids == (1,)
    session = next(e.continuation for e in seen if isinstance(e, InitEvent))
    query.end()
    await first.close()

    second = make_provider(tmp_path, model_server, opencode_bin)  # a respawned container
    await second.start()
    try:
        seen = []
        query = second.query(Input("which word?", (2,)), session)
        result = await until_result(aiter(query), seen)
        init = next(e for e in seen if isinstance(e, InitEvent))
        assert (init.continuation, init.fresh) == (session, False)
        assert result.status == "completed" and result.text == "echo: which word?"
        history = user_texts(model_server.requests[-1].body)
        assert history == ["remember the word heron", "which word?"]
        query.end()
    finally:
        await second.close()


async def test_an_unknown_session_starts_a_fresh_one(started: Provider) -> None:
    seen: list[Event] = []
    query = started.query(Input("hello", (1,)), "ses_doesnotexist000000000000")
    result = await until_result(aiter(query), seen)
    init = next(e for e in seen if isinstance(e, InitEvent))
    assert init.fresh and init.continuation != "ses_doesnotexist000000000000"
    assert result.status == "completed"
    query.end()


async def test_a_follow_up_during_a_turn_is_answered_not_lost(
    started: Provider, model_server: ModelServer
) -> None:
    release = asyncio.Event()
    model_server.script(Reply(text="first part", hold=release))
    query = started.query(Input("start a long job", (1,)), None)
    events = aiter(query)
    seen: list[Event] = []
    pending = asyncio.ensure_future(until_result(events, seen))
    await model_server.wait_streaming(1, timeout=60)
    query.push(Input("also add this", (2,)))
    release.set()
    result = await pending
    assert result.status == "completed" and set(result.ids) == {1, 2}
    texts = [t for r in model_server.requests for t in user_texts(r.body)]
    assert "also add this" in texts  # the model saw the follow-up in the same turn
    assert result.text == "echo: also add this"
    query.end()


async def test_interrupt_ends_the_turn_and_the_session_goes_on(
    started: Provider, model_server: ModelServer
) -> None:
    release = asyncio.Event()
    model_server.script(Reply(text="never finished", hold=release))
    query = started.query(Input("think forever", (1,)), None)
    events = aiter(query)
    seen: list[Event] = []
    pending = asyncio.ensure_future(until_result(events, seen))
    await model_server.wait_streaming(1, timeout=60)
    await query.abort(resend=False)
    result = await pending
    release.set()
    assert result.status == "interrupted" and result.ids == (1,)
    session = next(e.continuation for e in seen if isinstance(e, InitEvent))
    again = started.query(Input("are you there?", (2,)), session)
    result = await until_result(aiter(again), [])
    assert result.status == "completed" and result.text == "echo: are you there?"
    again.end()


async def test_a_model_error_is_classified(started: Provider, model_server: ModelServer) -> None:
    model_server.script(Reply(status=401, error_body=json.dumps({"error": {"message": "bad key"}})))
    query = started.query(Input("hello", (1,)), None)
    result = await until_result(aiter(query), [])
    assert result.status == "failed" and result.kind == "auth" and not result.retryable
    query.end()


async def test_close_kills_the_whole_process_group(started: Provider) -> None:
    assert isinstance(started, OpenCodeProvider)
    process = started.server.process
    assert process is not None and started.server.address is not None
    host, port = started.server.address
    await started.close()
    assert process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # no member of its group is left
    with pytest.raises(OSError):
        await asyncio.open_connection(host, port)  # and nothing keeps its port


async def test_a_model_that_keeps_failing_ends_the_turn_as_retryable_and_rolls_it_back(
    started: Provider, model_server: ModelServer
) -> None:
    model_server.script(*[Reply(status=503) for _ in range(MAX_RETRIES + 1)])
    query = started.query(Input("are you up?", (1,)), None)
    seen: list[Event] = []
    result = await until_result(aiter(query), seen)
    assert result.status == "failed" and result.kind == "transport" and result.retryable
    assert len(model_server.requests) == MAX_RETRIES + 1  # OpenCode's own retries are bounded
    session = next(e.continuation for e in seen if isinstance(e, InitEvent))
    again = started.query(Input("are you up?", (1,)), session)  # the runner sends it again
    result = await until_result(aiter(again), [])
    assert result.status == "completed" and result.text == "echo: are you up?"
    assert user_texts(model_server.requests[-1].body) == ["are you up?"]  # the failed turn is gone
    again.end()
