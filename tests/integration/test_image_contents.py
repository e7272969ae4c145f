"""The built agent image against what the host believes about it (nanohost/containers/image.py):
the commands `--mcp-add` accepts are there, the shared skills ship, the bundled SQLite MCP server
speaks MCP inside it, and its label carries the content hash its tag names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from nanohost.containers.image import HASH_LABEL, IMAGE_COMMANDS, IMAGE_PATHS, content_hash, image_status
from nanohost.settings import Settings
from nanohost.skills import shared_skills
from tests.support.host import TEST_IMAGE_NAME

pytestmark = pytest.mark.docker


def run_in_image(docker_client: Any, image: str, script: str) -> str:
    output = docker_client.containers.run(
        image, ["-c", script], entrypoint="sh", network_mode="none", remove=True, stderr=True
    )
    return str(output.decode())


def test_every_command_the_host_accepts_is_in_the_image(docker_client: Any, agent_image: str) -> None:
    names = " ".join(sorted(IMAGE_COMMANDS))
    found = run_in_image(docker_client, agent_image, f'for c in {names}; do echo "$c $(command -v $c)"; done')
    assert dict(line.split(" ", 1) for line in found.splitlines()) == IMAGE_COMMANDS
    paths = " ".join(sorted(IMAGE_PATHS))
    executable = run_in_image(docker_client, agent_image, f"for p in {paths}; do [ -x $p ] && echo $p; done")
    assert sorted(executable.split()) == sorted(IMAGE_PATHS)
    assert run_in_image(docker_client, agent_image, "command -v npx node uv || echo none").strip() == "none"


def test_the_shared_skills_ship_in_the_image(docker_client: Any, agent_image: str) -> None:
    skills = shared_skills()
    assert len(skills) >= 3
    for skill in skills:
        inside = run_in_image(docker_client, agent_image, f"cat /opt/nanohost/skills/{skill.name}/SKILL.md")
        assert inside == skill.path.read_text()


def test_the_image_is_labelled_with_the_hash_its_tag_names(docker_client: Any, agent_image: str) -> None:
    settings = Settings(image_name=TEST_IMAGE_NAME)
    assert agent_image == settings.image_tag
    state = image_status(docker_client, agent_image)
    assert state.present and state.codex_version == settings.codex_version
    assert state.content_hash == content_hash(settings.codex_version)
    assert agent_image.endswith(f"-{state.content_hash}")
    labels = docker_client.images.get(agent_image).attrs["Config"]["Labels"]
    assert labels[HASH_LABEL] == state.content_hash


async def test_the_sqlite_mcp_server_speaks_mcp_in_the_image(agent_image: str, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command="docker",
        args=["run", "-i", "--rm", "--network", "none", "--entrypoint", "nanohost-mcp-sqlite", agent_image],
        env=dict(os.environ),
    )
    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - opening /dev/null does not block
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = {t.name for t in (await session.list_tools()).tools}
            assert tools == {"list_tables", "describe_table", "read_query", "write_query"}
            result = await session.call_tool("write_query", {"sql": "CREATE TABLE t (x)"})
            assert not result.is_error and "done" in str(result.content)


def test_every_registered_providers_runner_side_loads_in_the_image(
    docker_client: Any, agent_image: str
) -> None:
    from nanohost.providers import registry

    for name in registry.names():
        entry = registry.get(name).runner
        code = f"from agent_runner.registry import load; load('{entry}'); print('ok')"
        script = f'/opt/venv/bin/python -c "{code}"'
        assert run_in_image(docker_client, agent_image, script).strip() == "ok", name


def test_the_pinned_opencode_runs_in_the_image(docker_client: Any, agent_image: str) -> None:
    from tests.support.opencode_bin import pinned_version

    assert run_in_image(docker_client, agent_image, "opencode --version").strip() == pinned_version()
