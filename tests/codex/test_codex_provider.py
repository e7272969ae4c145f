"""CodexProvider against the real pinned `codex app-server` and the scripted model server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_runner.codex.errors import CodexStartError
from agent_runner.codex.provider import CodexProvider, CodexQuery
from agent_runner.provider import ErrorEvent, Event, InitEvent, Input, ResultEvent

from tests.fakes.model_server import ModelServer, Reply

pytestmark = pytest.mark.codex


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    cwd = tmp_path / "agent"
    cwd.mkdir()
    (cwd / "AGENTS.md").write_text("AGENTS-MARKER: answer briefly.")
    return cwd


def make(
    tmp_path: Path, workspace: Path, model_server: ModelServer, codex_bin: str, **kw: Any
) -> CodexProvider:
    return CodexProvider(
        codex_home=tmp_path / "codex-home",
        cwd=workspace,
        base_url=model_server.url,
        placeholder="nh-ph-test",
        codex_bin=codex_bin,
        **kw,
    )


@pytest.fixture
async def provider(
    tmp_path: Path, workspace: Path, model_server: ModelServer, codex_bin: str
) -> AsyncIterator[CodexProvider]:
    p = make(tmp_path, workspace, model_server, codex_bin)
    await p.start()
    yield p
    await p.close()


class Collector:
    """Runs a query in the background and lets the test wait for events by predicate."""

    def __init__(self, query: CodexQuery) -> None:
        self.query = query
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for event in self.query:
            self.events.append(event)
            async with self._changed:
                self._changed.notify_all()

    def results(self) -> list[ResultEvent]:
        return [e for e in self.events if isinstance(e, ResultEvent)]

    def errors(self) -> list[ErrorEvent]:
        return [e for e in self.events if isinstance(e, ErrorEvent)]

    async def until(self, predicate: Any, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def finish(self, timeout: float = 30) -> list[Event]:
        self.query.end()
        await asyncio.wait_for(self.task, timeout)
        return self.events


async def test_round_trip_with_agents_md_and_placeholder(
    provider: CodexProvider, model_server: ModelServer
) -> None:
    run = Collector(provider.query(Input("hello", (1,)), None))
    await run.until(lambda c: c.results())
    events = await run.finish()
    assert isinstance(events[0], InitEvent) and not events[0].fresh
    assert run.results() == [ResultEvent("echo: hello", "completed", (1,))]
    request = model_server.requests[0]
    assert "AGENTS-MARKER: answer briefly." in request.all_text
    assert request.headers["Authorization"] == "Bearer nh-ph-test"


async def test_follow_up_during_a_turn_is_steered(provider: CodexProvider, model_server: ModelServer) -> None:
    hold = asyncio.Event()
    model_server.script(Reply(text="first answer", hold=hold))
    run = Collector(provider.query(Input("first", (1,)), None))
    await model_server.wait_for_requests(1)
    run.query.push(Input("second thought", (2,)))
    await asyncio.sleep(0)  # let the steer request go out before the model answers
    hold.set()
    await run.until(lambda c: c.results())
    await run.finish()
    (result,) = run.results()
    assert result.ids == (1, 2) and result.status == "completed"
    assert any("second thought" in r.user_texts for r in model_server.requests[1:])


@pytest.mark.parametrize("moment", ["in the completion's tick", "after completion"])
async def test_follow_up_racing_turn_completion_is_never_lost(
    provider: CodexProvider, model_server: ModelServer, moment: str
) -> None:
    query = provider.query(Input("first", (1,)), None)

    class RacingNotes(asyncio.Queue[tuple[str, dict[str, Any]]]):
        """Delivers turn/completed to the query and pushes a follow-up at that very moment."""

        raced = False

        def put_nowait(self, item: tuple[str, dict[str, Any]]) -> None:
            if item[0] == "turn/completed" and not self.raced:
                self.raced = True
                if moment == "in the completion's tick":
                    query.push(Input("racer", (2,)))  # steered while the turn is ending
                    super().put_nowait(item)
                else:
                    super().put_nowait(item)
                    asyncio.get_running_loop().call_soon(query.push, Input("racer", (2,)))
                return
            super().put_nowait(item)

    query.notes = RacingNotes()
    run = Collector(query)
    await run.until(lambda c: sum(len(r.ids) for r in c.results()) >= 2)
    await run.finish()
    answered = [i for r in run.results() for i in r.ids]
    assert sorted(answered) == [1, 2], run.events
    assert any(r.user_texts and r.user_texts[-1] == "racer" for r in model_server.requests)


async def test_abort_interrupts_the_turn(provider: CodexProvider, model_server: ModelServer) -> None:
    hold = asyncio.Event()
    model_server.script(Reply(text="never", hold=hold))
    run = Collector(provider.query(Input("long task", (1,)), None))
    await model_server.wait_for_requests(1)
    started = time.monotonic()
    await run.query.abort()
    await asyncio.wait_for(run.task, 10)
    hold.set()
    assert run.results() == [ResultEvent("", "interrupted", (1,))]
    assert time.monotonic() - started < 5


async def test_thread_resumes_after_an_app_server_restart(
    tmp_path: Path, workspace: Path, model_server: ModelServer, codex_bin: str
) -> None:
    first = make(tmp_path, workspace, model_server, codex_bin)
    await first.start()
    run = Collector(first.query(Input("remember the word PAPAYA", (1,)), None))
    await run.until(lambda c: c.results())
    await run.finish()
    thread = next(e for e in run.events if isinstance(e, InitEvent)).continuation
    await first.close()

    second = make(tmp_path, workspace, model_server, codex_bin)
    await second.start()
    try:
        run = Collector(second.query(Input("what was the word?", (2,)), thread))
        await run.until(lambda c: c.results())
        await run.finish()
    finally:
        await second.close()
    init = next(e for e in run.events if isinstance(e, InitEvent))
    assert init.continuation == thread and not init.fresh
    assert "remember the word PAPAYA" in model_server.requests[-1].user_texts


async def test_stale_thread_starts_fresh(provider: CodexProvider) -> None:
    run = Collector(provider.query(Input("hi", (1,)), "0199a0b1-0000-7000-8000-000000000000"))
    await run.until(lambda c: c.results())
    await run.finish()
    init = next(e for e in run.events if isinstance(e, InitEvent))
    assert init.fresh and init.continuation != "0199a0b1-0000-7000-8000-000000000000"
    assert run.results()[0].text == "echo: hi"


async def test_app_server_killed_mid_turn_ends_the_turn_with_the_cause(
    provider: CodexProvider, model_server: ModelServer
) -> None:
    hold = asyncio.Event()
    model_server.script(Reply(text="never", hold=hold))
    run = Collector(provider.query(Input("work", (1,)), None))
    await model_server.wait_for_requests(1)
    killed = time.monotonic()
    provider.kill_for_tests()
    await asyncio.wait_for(run.task, 2)
    hold.set()
    elapsed = time.monotonic() - killed
    (error,) = run.errors()
    assert error.kind == "crash" and "exited with code" in error.message
    assert run.results() == []  # unanswered: the runner retries it
    assert elapsed < 2
    again = Collector(provider.query(Input("after the crash", (2,)), None))  # respawned
    await again.until(lambda c: c.results())
    await again.finish()
    assert again.results()[0].text == "echo: after the crash"


async def test_401_is_classified_as_auth(provider: CodexProvider, model_server: ModelServer) -> None:
    model_server.script(*[Reply(status=401, error_body='{"error":{"message":"bad key"}}')] * 4)
    run = Collector(provider.query(Input("hi", (1,)), None))
    await run.until(lambda c: c.results())
    await run.finish()
    assert run.errors() and run.errors()[-1].kind == "auth"
    assert run.results()[0].status == "failed"


async def test_tool_call_then_text(provider: CodexProvider, model_server: ModelServer) -> None:
    model_server.script(Reply.command("echo hi-from-the-shell"), "the command said hi")
    run = Collector(provider.query(Input("run it", (1,)), None))
    await run.until(lambda c: c.results(), timeout=60)
    await run.finish()
    assert run.results()[0].text == "the command said hi"
    outputs = [
        item for item in model_server.requests[1].body["input"] if item.get("type") == "function_call_output"
    ]
    assert outputs and "hi-from-the-shell" in json.dumps(outputs)


async def test_turn_timeout_ends_a_hung_turn(
    tmp_path: Path, workspace: Path, model_server: ModelServer, codex_bin: str
) -> None:
    hold = asyncio.Event()
    model_server.script(Reply(text="never", hold=hold))
    p = make(tmp_path, workspace, model_server, codex_bin, turn_timeout=1.0)
    await p.start()
    try:
        run = Collector(p.query(Input("hang", (1,)), None))
        await run.until(lambda c: c.results(), timeout=10)
        hold.set()
        await run.finish()
    finally:
        await p.close()
    assert run.errors()[0].kind == "timeout"
    assert run.results()[0].status == "failed" and "timed out" in str(run.results()[0].error)


async def test_missing_binary_is_a_clear_error(
    tmp_path: Path, workspace: Path, model_server: ModelServer
) -> None:
    p = make(tmp_path, workspace, model_server, str(tmp_path / "no-codex-here"))
    with pytest.raises(CodexStartError, match="codex binary not found"):
        await p.start()


async def test_generated_images_are_files_before_the_result(
    provider: CodexProvider, model_server: ModelServer, workspace: Path
) -> None:
    from agent_runner.provider import FileEvent

    hold = asyncio.Event()
    model_server.script(Reply(text="here is your picture", hold=hold))
    run = Collector(provider.query(Input("draw a cat", (1,)), None))
    await model_server.wait_for_requests(1)
    thread = next(e for e in run.events if isinstance(e, InitEvent)).continuation
    images = provider.codex_home / "generated_images" / thread
    images.mkdir(parents=True)
    (images / "cat.png").write_bytes(b"\x89PNG fake")
    hold.set()
    await run.until(lambda c: c.results())
    await run.finish()
    kinds = [type(e).__name__ for e in run.events if isinstance(e, FileEvent | ResultEvent)]
    assert kinds == ["FileEvent", "ResultEvent"]
    (file_event,) = [e for e in run.events if isinstance(e, FileEvent)]
    assert file_event.path == workspace / "generated" / "cat.png"
    assert file_event.path.read_bytes() == b"\x89PNG fake"
