"""The real Codex binary's turn steps reach the viewer: a turn in which the model runs a shell
command shows up as items (live rows and the archived JSON line), with the command's output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from agent_runner.config import Paths, RunnerConfig
from agent_runner.main import build_provider
from agent_runner.provider import Provider

from nanohost.boundary import ItemRow
from nanohost.viewer import parse_lines
from tests.fakes.model_server import ModelServer, Reply
from tests.runner.conftest import Harness

pytestmark = pytest.mark.codex


@pytest.fixture
def provider(
    tmp_path: Path, model_server: ModelServer, codex_bin: str, monkeypatch: pytest.MonkeyPatch
) -> Provider:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))  # the MCP server child imports agent_runner
    (tmp_path / "workspace").mkdir(exist_ok=True)
    paths = Paths(
        session=tmp_path / "session", workspace=tmp_path / "workspace", codex_home=tmp_path / "codex"
    )
    config = RunnerConfig(
        provider="codex", runner="agent_runner.codex.runner:build", placeholder="nh-ph-x", codex_bin=codex_bin
    )
    return build_provider(config, paths, model_server.url)


async def test_a_turn_with_a_command_shows_up_as_items(
    harness: Harness,
    model_server: ModelServer,  # noqa: F811
) -> None:
    model_server.script(
        Reply(**{**vars(Reply.command("echo viewer-$((6*7))")), "usage": (1000, 10)}),
        Reply(text="the command said viewer-42", usage=(1200, 34)),
    )
    harness.send("run the check")
    await harness.until(lambda: harness.replies(), limit=60)
    await harness.until(
        lambda: any(r.kind == "item" and r.payload["phase"] == "end" for r in harness.host.outbound_after(0)),
        limit=10,
    )
    rows = [r for r in harness.host.outbound_after(0) if r.kind == "item"]
    assert all(isinstance(r.row, ItemRow) for r in rows), [r.row for r in rows]
    assert rows[0].payload["phase"] == "start" and rows[0].payload["prompts"] == ["run the check"]
    live = [r.payload["item"] for r in rows if r.payload["phase"] == "item"]
    commands = [i for i in live if i["type"] == "command"]
    assert commands and "echo viewer-$((6*7))" in commands[0]["command"]
    assert "viewer-42" in commands[-1]["output"]
    end = rows[-1].payload
    assert end["phase"] == "end" and end["status"] == "completed" and end["duration_ms"] > 0
    assert end["model"]  # the model the thread runs (codex says it at thread/start)

    (day,) = (harness.paths.workspace / "conversations" / "turns").glob("*.jsonl")
    (turn,) = parse_lines(day.read_bytes())
    assert turn.turn == rows[0].payload["turn"] and turn.provider == "codex"
    assert turn.reply == "the command said viewer-42" and turn.prompts == ["run the check"]
    (command,) = [i for i in turn.items if i.type == "command"]
    assert command.output is not None and "viewer-42" in command.output
    assert command.status == "completed" and command.exit_code == 0
    assert any(i.type == "message" and i.text == "the command said viewer-42" for i in turn.items)
    # the turn's two model calls, summed
    assert turn.usage is not None and (turn.usage.input, turn.usage.output) == (2200, 44)
    assert turn.usage.total == 2244 and turn.model == end["model"]


async def test_reasoning_and_mcp_tool_calls_show_up_as_items(
    harness: Harness,
    model_server: ModelServer,  # noqa: F811
) -> None:
    model_server.script(
        Reply(
            **{
                **vars(Reply.mcp("nanohost", "send_message", text="progress report")),
                "reasoning": "Tell them first.",
            }
        ),
        "sent it",
    )
    harness.send("report progress")
    await harness.until(lambda: any(p.get("text") == "sent it" for p in harness.replies()), limit=60)
    (day,) = (harness.paths.workspace / "conversations" / "turns").glob("*.jsonl")
    (turn,) = parse_lines(day.read_bytes())
    kinds = [i.type for i in turn.items]
    assert kinds.index("reasoning") < kinds.index("tool_call") < kinds.index("message"), kinds
    (thought,) = [i for i in turn.items if i.type == "reasoning"]
    assert thought.text == "Tell them first."
    (call,) = [i for i in turn.items if i.type == "tool_call"]
    assert (call.server, call.tool, call.status) == ("nanohost", "send_message", "completed")
    assert call.arguments is not None and json.loads(call.arguments) == {"text": "progress report"}
    assert call.result  # what the tool answered, as text


async def test_a_long_commands_steps_end_with_its_whole_output(
    tmp_path: Path,
    model_server: ModelServer,  # noqa: F811
    codex_bin: str,
) -> None:
    from agent_runner.codex.provider import CodexProvider
    from agent_runner.provider import Input, ItemEvent

    from tests.codex.test_codex_provider import Collector

    workspace = tmp_path / "agent"
    workspace.mkdir()
    provider = CodexProvider(
        codex_home=tmp_path / "codex-home",
        cwd=workspace,
        base_url=model_server.url,
        placeholder="nh-ph-test",
        codex_bin=codex_bin,
    )
    await provider.start()
    try:
        model_server.script(Reply.command("seq 1 3000"), "counted")
        run = Collector(provider.query(Input("count", (1,)), None))
        await run.until(lambda c: c.results(), timeout=60)
        await run.finish()
    finally:
        await provider.close()
    versions = [e.item for e in run.events if isinstance(e, ItemEvent) and e.item["type"] == "command"]
    # started first, completed last with the whole output; any update between (Codex streams a
    # command's output only when it reads it while the command runs: CommandSteps) is a prefix
    assert versions[0]["status"] == "inProgress" and versions[-1]["status"] == "completed"
    final = versions[-1]["output"]
    assert final.startswith("1\n2\n3\n") and final.endswith("2999\n3000\n")
    assert all(final.startswith(v["output"]) for v in versions[:-1])


async def test_a_file_the_agent_writes_shows_up_as_a_file_change(
    harness: Harness,
    model_server: ModelServer,  # noqa: F811
) -> None:
    patch = "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: hello.txt\n+hi there\n*** End Patch\nEOF\n"
    model_server.script(Reply.command(patch), "wrote it")
    harness.send("write a file")
    await harness.until(lambda: any(p.get("text") == "wrote it" for p in harness.replies()), limit=60)
    assert (harness.paths.workspace / "hello.txt").read_text() == "hi there\n"
    (day,) = (harness.paths.workspace / "conversations" / "turns").glob("*.jsonl")
    (turn,) = parse_lines(day.read_bytes())
    (change,) = [i for i in turn.items if i.type == "file_change"]
    assert change.status == "completed" and change.changes is not None
    ((path, kind, diff),) = [(c.path, c.kind, c.diff) for c in change.changes]
    assert path.endswith("/hello.txt") and kind == "add" and diff == "hi there\n"
