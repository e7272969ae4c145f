"""What `groups config` promises reaches a real agent: real host, real container, real Codex.

A group's ``--env`` is in the container's environment and in the commands the agent runs; the
MCP server README's example adds (``nanohost-mcp-sqlite``, shipped in the image) starts and
answers a tool call; the runtime contract is in the instructions the model gets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.model_server import ModelServer, Reply, model_server  # noqa: F401  (fixture)
from tests.integration.conftest import add_group, make_settings
from tests.support.host import containers_of

pytestmark = [pytest.mark.docker, pytest.mark.codex]


def tool_outputs(request: Any) -> str:
    kinds = ("function_call_output", "mcp_tool_call_output")
    return json.dumps([i for i in request.body["input"] if i.get("type") in kinds])


async def test_env_mcp_server_and_contract_reach_the_agent(
    tmp_path: Path,
    start_host: Any,
    docker_client: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, openai_api_key="sk-upstream", model_base_url=model_server.url)
    add_group(
        settings,
        "envy",
        provider="codex",
        env={"GREETING": "bonjour-from-groups-config", "REPORT_STYLE": "short"},
        mcp_servers={"db": {"command": "nanohost-mcp-sqlite", "args": ["records.db"], "env": {}}},
    )
    host = await start_host(settings)
    model_server.script(
        Reply.command('echo "greeting=$GREETING style=$REPORT_STYLE"'),
        Reply.mcp("db", "write_query", sql="CREATE TABLE notes (text TEXT)"),
        Reply.mcp("db", "write_query", sql="INSERT INTO notes VALUES (?)", params=["from the agent"]),
        "all set",
    )
    message_id = await host.send("envy", "print the greeting and note something")
    replies = await host.replies_after("envy", message_id, wait=120)
    assert [r["text"] for r in replies] == ["all set"]

    requests = model_server.requests
    assert "greeting=bonjour-from-groups-config style=short" in tool_outputs(requests[1])
    assert "done (1 row changed)" in tool_outputs(requests[3])
    database = settings.groups_dir / "envy" / "records.db"
    assert database.is_file()  # in the group's folder, where the server's cwd is
    assert "`send_file(path, caption)`" in requests[0].all_text  # the shipped runtime contract

    (container,) = containers_of(docker_client, settings, "envy")
    assert "GREETING=bonjour-from-groups-config" in container.attrs["Config"]["Env"]
    assert container.attrs["Config"]["Image"] == settings.image_tag
