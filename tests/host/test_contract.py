"""The runtime contract that ships with nanohost (``nanohost/providers/contract.md``).

Read as shipped, not injected: it must exist, be package data, reach every composed AGENTS.md,
and agree with the code it describes (the MCP tools the runner offers, the workspace folders,
the output limits the host enforces).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from agent_runner import mcp_server

from nanohost import boundary
from nanohost.agent_files import MAX_FILE_BYTES
from nanohost.groups import populate_folder
from nanohost.providers import GroupSpec
from nanohost.providers.codex import CONTRACT_FILE, CodexContribution
from nanohost.settings import PROJECT_ROOT

CONTRACT = CONTRACT_FILE.read_text(encoding="utf-8") if CONTRACT_FILE.is_file() else ""


def test_the_contract_ships_as_package_data() -> None:
    assert CONTRACT_FILE.is_file() and CONTRACT.strip(), f"{CONTRACT_FILE} is missing or empty"
    package = PROJECT_ROOT / "nanohost"
    assert CONTRACT_FILE.is_relative_to(package)
    patterns = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["nanohost"]
    relative = CONTRACT_FILE.relative_to(package).as_posix()
    assert any(fnmatch.fnmatch(relative, p) for p in patterns), (relative, patterns)
    assert CONTRACT_FILE.name != "AGENTS.md"  # coding agents on this repo must not take it as theirs


def test_a_composed_agents_md_carries_the_shipped_contract(tmp_path: Path) -> None:
    folder = tmp_path / "groups" / "team"
    populate_folder(folder)
    group = GroupSpec(name="team", folder="team", folder_path=folder, provider="codex")
    contribution = CodexContribution(tmp_path / "data")  # the defaults: the shipped files
    contribution.prepare(group)
    text = contribution.agents_md_path(group).read_text()
    contract = text.split("## Runtime contract\n", 1)[1].split("\n## Memory\n", 1)[0]
    assert CONTRACT.strip() and contract.strip() == CONTRACT.strip()
    assert "`send_file(path, caption)`" in contract


def test_the_contract_names_every_tool_the_runner_offers() -> None:
    tools = list(mcp_server.TOOLS)
    assert sorted(tools) == ["cancel_task", "list_tasks", "schedule_task", "send_file", "send_message"]
    for name in tools:
        assert f"`{name}(" in CONTRACT, name
    assert f"{mcp_server.MAX_MESSAGE:,} characters" in CONTRACT


def test_the_contract_names_the_workspace_folders() -> None:
    for folder in (
        "/workspace/agent",
        "`memory/`",
        "`conversations/`",
        "`inbox/",
        "`skills/",
        ".agents/skills",
    ):
        assert folder in CONTRACT, folder


def test_the_contract_states_the_limits_the_host_enforces() -> None:
    def mib(value: int) -> str:
        return f"{value // 1024**2} MiB"

    limits = {
        "reply": f"{boundary.MAX_REPLY_CHARS:,} characters",
        "messages": f"at most {boundary.MAX_MESSAGES_PER_TURN}",
        "files": (
            f"at most {boundary.MAX_FILES_PER_TURN}, together at most {mib(boundary.MAX_FILE_BYTES_PER_TURN)}"
        ),
        "file": f"one file at most {mib(MAX_FILE_BYTES)}",
    }
    section = CONTRACT.split("### Limits", 1)[-1]
    for what, text in limits.items():
        assert text in section, (what, text)
    assert not re.search(r"\{|\}", CONTRACT)  # no unfilled template
