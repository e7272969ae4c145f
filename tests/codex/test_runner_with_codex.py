"""The runner loop driving the real Codex binary: archive and MCP tools end to end (no Docker)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from agent_runner.config import RunnerConfig
from agent_runner.main import build_provider
from agent_runner.provider import Provider

from tests.fakes.model_server import ModelServer, Reply
from tests.runner.conftest import Harness

pytestmark = pytest.mark.codex


@pytest.fixture
def provider(
    tmp_path: Path, model_server: ModelServer, codex_bin: str, monkeypatch: pytest.MonkeyPatch
) -> Provider:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))  # the MCP server child imports agent_runner
    (tmp_path / "workspace").mkdir(exist_ok=True)
    from agent_runner.config import Paths

    paths = Paths(
        session=tmp_path / "session", workspace=tmp_path / "workspace", codex_home=tmp_path / "codex"
    )
    config = RunnerConfig(
        provider="codex", runner="agent_runner.codex.runner:build", placeholder="nh-ph-x", codex_bin=codex_bin
    )
    return build_provider(config, paths, model_server.url)


async def test_reply_is_archived_and_mcp_send_message_reaches_the_queue(
    harness: Harness,
    model_server: ModelServer,  # noqa: F811
) -> None:
    model_server.script(Reply.mcp("nanohost", "send_message", text="interim update from a tool"), "all done")
    message_id = harness.send("please work")
    await harness.until(lambda: any(p.get("text") == "all done" for p in harness.replies()), limit=60)
    texts = [p["text"] for p in harness.replies()]
    assert texts == ["interim update from a tool", "all done"]
    assert {i: (a.status, a.reason) for i, a in harness.host.acks([message_id]).items()} == {
        message_id: ("done", None)
    }
    tools = [t for t in model_server.requests[0].body.get("tools", []) if t.get("name") == "mcp__nanohost"]
    assert tools, "the nanohost MCP server was not offered to the model"
    archived = list((harness.paths.workspace / "conversations").glob("*.md"))
    assert (
        len(archived) == 1
        and "all done" in archived[0].read_text()
        and "provider: codex" in archived[0].read_text()
    )
    assert harness.host.continuation() is not None
