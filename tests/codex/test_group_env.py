"""A group's ``--env`` reaches the commands the agent runs (real Codex, scripted model, no Docker).

The host puts the group's env into the container's environment (the Docker side is checked in
tests/integration/test_group_env.py); here the runner's Codex provider is built with that
variable in its environment, as in the container, and the model asks Codex to print it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from agent_runner.codex.provider import CodexProvider
from agent_runner.provider import Input, ResultEvent

from tests.fakes.model_server import ModelServer, Reply

pytestmark = pytest.mark.codex


async def test_a_group_variable_reaches_a_command_the_agent_runs(
    tmp_path: Path, model_server: ModelServer, codex_bin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GREETING", "bonjour-from-the-group-env")
    monkeypatch.setenv("NANOHOST_LOG_LEVEL", "INFO")  # the runner's own: not for the agent
    workspace = tmp_path / "agent"
    workspace.mkdir()
    provider = CodexProvider(
        codex_home=tmp_path / "codex-home",
        cwd=workspace,
        base_url=model_server.url,
        placeholder="nh-ph-env",
        codex_bin=codex_bin,
    )
    model_server.script(
        Reply.command('echo "greeting=$GREETING log=${NANOHOST_LOG_LEVEL:-unset}"'), "printed it"
    )
    await provider.start()
    results: list[ResultEvent] = []
    try:
        query = provider.query(Input("print the greeting", (1,)), None)
        async with asyncio.timeout(60):
            async for event in query:
                if isinstance(event, ResultEvent):
                    results.append(event)
                    query.end()  # one turn is all this test asks for
    finally:
        await provider.close()
    assert [e.text for e in results] == ["printed it"]
    outputs = [
        item for item in model_server.requests[1].body["input"] if item.get("type") == "function_call_output"
    ]
    assert "greeting=bonjour-from-the-group-env log=unset" in json.dumps(outputs)
