"""Message in → real OpenCode in the real container, through the credential gateway → reply out;
a killed container is respawned and OpenCode resumes the same session from the group's data dir.

The model server stands in for the upstream API on 127.0.0.1; the container has no network and
reaches it only through the gateway's unix socket, which forwards only OpenCode's own calls.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.model_server import ModelServer, Reply, model_server  # noqa: F401  (fixture)
from tests.integration.conftest import add_group, make_settings
from tests.integration.test_lifecycle import docker_event
from tests.support.host import containers_of

pytestmark = [pytest.mark.docker, pytest.mark.opencode]
REAL_KEY = "sk-real-upstream-key-0c9e"


def everything_the_container_sees(container: Any) -> str:
    parts = [json.dumps(container.attrs["Config"]), json.dumps(container.attrs["HostConfig"])]
    for mount in container.attrs["Mounts"]:
        source = Path(mount["Source"])
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        for path in files:
            if path.stat().st_size < 5_000_000:
                parts.append(path.read_bytes().decode(errors="replace"))
    _, output = container.exec_run(
        ["sh", "-c", "cat /proc/1/environ; env; cat /tmp/nanohost-opencode-*/opencode.json"]
    )
    parts.append(output.decode(errors="replace"))
    return "\n".join(parts)


async def test_opencode_answers_through_the_gateway_with_the_key_only_on_the_host(
    tmp_path: Path,
    start_host: Any,
    docker_client: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, openai_api_key=REAL_KEY, model_base_url=model_server.url)
    add_group(
        settings,
        "coders",
        provider="opencode",
        mcp_servers={
            "docs": {"command": "true", "args": [], "env": {}, "instructions": "MCP-DOCS-INSTRUCTIONS-MARKER"}
        },
    )
    (settings.groups_dir / "coders" / "memory" / "index.md").write_text("- MEMORY-INDEX-MARKER")
    host = await start_host(settings)
    model_server.script(Reply.function("nanohost_send_message", text="working on it"), "all done")
    message_id = await host.send("coders", "hello opencode")
    replies = await host.replies_after("coders", message_id, wait=120)
    texts = [r["text"] for r in replies]
    while "all done" not in texts:
        more = await host.replies_after("coders", replies[-1]["id"], wait=60)
        assert more, f"no final reply; got {texts!r}"
        replies += more
        texts = [r["text"] for r in replies]
    assert texts == ["working on it", "all done"]  # the MCP tool's message, then the reply

    request = model_server.requests[0]
    assert request.headers["Authorization"] == f"Bearer {REAL_KEY}"  # injected by the gateway
    for marker in ("Composed by nanohost", "MEMORY-INDEX-MARKER", "MCP-DOCS-INSTRUCTIONS-MARKER"):
        assert request.all_text.count(marker) == 1, marker  # the composed instructions, once
    assert "nanohost_send_message" in {t.get("name") for t in request.body.get("tools", [])}

    (container,) = containers_of(docker_client, settings, "coders")
    seen = everything_the_container_sees(container)
    assert "nh-ph-" in seen and REAL_KEY not in seen
    assert REAL_KEY not in container.logs().decode(errors="replace")
    assert (settings.data_dir / "opencode" / "coders").is_dir()
    assert any((settings.data_dir / "opencode" / "coders").rglob("*")), "OpenCode kept nothing per group"


async def test_killed_container_is_respawned_and_the_session_resumes(
    tmp_path: Path,
    start_host: Any,
    docker_client: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, openai_api_key="sk-x", model_base_url=model_server.url)
    add_group(settings, "phoenix", provider="opencode")
    host = await start_host(settings)
    warm = await host.send("phoenix", "first message")
    assert [r["text"] for r in await host.replies_after("phoenix", warm, wait=120)] == ["echo: first message"]
    hold = asyncio.Event()
    model_server.script(Reply(text="never delivered", hold=hold))
    since = time.time()
    message_id = await host.send("phoenix", "survive this")
    await model_server.wait_streaming(1, timeout=60)
    (container,) = containers_of(docker_client, settings, "phoenix")
    container.kill()
    hold.set()
    await docker_event(docker_client, settings, group="phoenix", action="start", since=since + 0.001)
    replies = await host.replies_after("phoenix", message_id, wait=120)
    assert [r["text"] for r in replies] == ["echo: survive this"]
    history = model_server.requests[-1].user_texts
    assert history[0] == "first message" and history[-1] == "survive this"  # the resumed session
    assert history.count("survive this") == 1


async def test_a_follow_up_during_a_slow_turn_is_not_lost(
    tmp_path: Path,
    start_host: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, openai_api_key=REAL_KEY, model_base_url=model_server.url)
    add_group(settings, "steer", provider="opencode")
    host = await start_host(settings)
    hold = asyncio.Event()
    model_server.script(Reply(text="first part", hold=hold))
    first = await host.send("steer", "start a long job")
    await model_server.wait_streaming(1, timeout=120)
    await host.send("steer", "also do this")
    hold.set()
    # whether the follow-up reaches OpenCode before or after the held reply ends, it is answered
    replies = await host.replies_after("steer", first, wait=60)
    texts = [r["text"] for r in replies]
    while "echo: also do this" not in texts:
        more = await host.replies_after("steer", replies[-1]["id"], wait=60)
        assert more, f"no reply to the follow-up; got {texts!r}"
        replies += more
        texts = [r["text"] for r in replies]
    assert texts in (["echo: also do this"], ["first part", "echo: also do this"])
    assert any("also do this" in r.user_texts for r in model_server.requests[1:])
