"""Message in → real Codex in the real container, through the credential gateway → reply out.

The model server stands in for the upstream API on 127.0.0.1; the container has no network and
reaches it only through the gateway's unix socket. The real key must reach the model and must
appear nowhere the container can see.
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
REAL_KEY = "sk-real-upstream-key-7f3a"


def everything_the_container_sees(container: Any, settings: Any, folder: str) -> str:
    """Env, labels, command, every mounted file (text) and the container's own view of its env."""
    parts = [json.dumps(container.attrs["Config"]), json.dumps(container.attrs["HostConfig"])]
    for mount in container.attrs["Mounts"]:
        source = Path(mount["Source"])
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        for path in files:
            if path.stat().st_size < 5_000_000:
                parts.append(path.read_bytes().decode(errors="replace"))
    exit_code, output = container.exec_run(["sh", "-c", "cat /proc/1/environ; env; cat ~/.codex/config.toml"])
    parts.append(output.decode(errors="replace"))
    return "\n".join(parts)


async def test_codex_reply_through_the_gateway_with_the_key_only_on_the_host(
    tmp_path: Path,
    start_host: Any,
    docker_client: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, openai_api_key=REAL_KEY, model_base_url=model_server.url)
    add_group(
        settings,
        "coders",
        provider="codex",
        mcp_servers={
            "docs": {"command": "true", "args": [], "env": {}, "instructions": "MCP-DOCS-INSTRUCTIONS-MARKER"}
        },
    )
    (settings.groups_dir / "coders" / "memory" / "index.md").write_text("- MEMORY-INDEX-MARKER")
    host = await start_host(settings)
    message_id = await host.send("coders", "hello codex")
    replies = await host.replies_after("coders", message_id, wait=120)
    assert [r["text"] for r in replies] == ["echo: hello codex"]

    request = model_server.requests[0]
    assert request.headers["Authorization"] == f"Bearer {REAL_KEY}"  # injected by the gateway
    for marker in ("Composed by nanohost", "MEMORY-INDEX-MARKER", "MCP-DOCS-INSTRUCTIONS-MARKER"):
        assert marker in request.all_text  # the composed AGENTS.md reached the model

    (container,) = containers_of(docker_client, settings, "coders")
    seen = everything_the_container_sees(container, settings, "coders")
    assert "nh-ph-" in seen  # the placeholder is what the container holds...
    assert REAL_KEY not in seen  # ...and the real key is nowhere in it
    logs = container.logs().decode(errors="replace")
    assert REAL_KEY not in logs

    # the thread id is persisted on the host so a respawn resumes it
    sessions = await (await host.client.get("/healthz")).json()
    assert sessions["ok"] is True


async def test_follow_up_during_a_slow_turn_is_steered(
    tmp_path: Path,
    start_host: Any,
    docker_client: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    import asyncio

    settings = make_settings(tmp_path, openai_api_key=REAL_KEY, model_base_url=model_server.url)
    add_group(settings, "steer", provider="codex")
    host = await start_host(settings)
    hold = asyncio.Event()
    model_server.script(Reply(text="first part", hold=hold))
    first = await host.send("steer", "start a long job")
    await model_server.wait_for_requests(1, timeout=120)
    await host.send("steer", "also do this")
    await model_server.wait_for_requests(1)
    hold.set()
    replies = await host.replies_after("steer", first, wait=60)
    texts = " ".join(r["text"] for r in replies)
    while "echo: also do this" not in texts:
        more = await host.replies_after("steer", replies[-1]["id"], wait=60)
        assert more, f"no reply to the follow-up; got {texts!r}"
        replies += more
        texts = " ".join(r["text"] for r in replies)
    assert any("also do this" in r.user_texts for r in model_server.requests[1:])


async def test_oversized_mcp_instructions_degrade_and_the_group_still_answers(
    tmp_path: Path,
    start_host: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, openai_api_key=REAL_KEY, model_base_url=model_server.url)
    servers = {
        "huge": {"command": "true", "args": [], "env": {}, "instructions": "H" * 40_000},
        "small": {"command": "true", "args": [], "env": {}, "instructions": "SMALL-SERVER-MARKER"},
    }
    add_group(settings, "wordy", provider="codex", mcp_servers=servers)
    host = await start_host(settings)
    message_id = await host.send("wordy", "still there?")
    replies = await host.replies_after("wordy", message_id, wait=120)
    assert [r["text"] for r in replies] == ["echo: still there?"]
    seen = model_server.requests[0].all_text
    assert "Omitted for size" in seen and "MCP server: huge" in seen and "SMALL-SERVER-MARKER" in seen
    assert "H" * 1000 not in seen
    composed = (settings.data_dir / "composed" / "wordy" / "AGENTS.md").read_bytes()
    assert len(composed) <= 32 * 1024
