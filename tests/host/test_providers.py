"""Host side of the providers: AGENTS.md composition, Codex state dir, skill links."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from nanohost.groups import populate_folder
from nanohost.providers import GroupSpec
from nanohost.providers.agents_md import LIMIT_BYTES, Section, compose
from nanohost.providers.codex import SHARED_SKILLS_TARGET, CodexContribution, sync_skill_links
from nanohost.providers.mock import MockContribution


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "groups" / "team"
    populate_folder(folder)
    contract = tmp_path / "contract.md"
    contract.write_text("You run inside nanohost. RUNTIME-CONTRACT-MARKER")
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "scheduling.md").write_text("MODULE-SCHEDULING-MARKER")
    skills = tmp_path / "skills"
    (skills / "pdf").mkdir(parents=True)
    (skills / "pdf" / "SKILL.md").write_text("pdf skill")
    (skills / "web").mkdir()
    return {
        "folder": folder,
        "contract": contract,
        "modules": modules,
        "skills": skills,
        "data": tmp_path / "data",
    }


def spec(layout: dict[str, Path], **kwargs: object) -> GroupSpec:
    return GroupSpec(name="team", folder="team", folder_path=layout["folder"], provider="codex", **kwargs)  # type: ignore[arg-type]


def contribution(layout: dict[str, Path]) -> CodexContribution:
    return CodexContribution(
        layout["data"], contract=layout["contract"], modules=layout["modules"], shared_skills=layout["skills"]
    )


def test_composed_doc_has_every_section(layout: dict[str, Path]) -> None:
    (layout["folder"] / "memory" / "index.md").write_text("- INDEX-ENTRY-MARKER: see memory/people.md")
    (layout["folder"] / "skills" / "mine").mkdir()
    (layout["folder"] / "skills" / "mine" / "SKILL.md").write_text("my skill")
    group = spec(
        layout,
        skills=["pdf"],
        mcp_servers={"fs": {"command": "npx", "args": ["x"], "env": {}, "instructions": "MCP-FS-MARKER"}},
        model="gpt-5.5",
        reasoning_effort="high",
    )
    result = contribution(layout).prepare(group)
    text = (layout["data"] / "composed" / "team" / "AGENTS.md").read_text()
    assert text.startswith("<!-- Composed by nanohost")
    for marker in (
        "RUNTIME-CONTRACT-MARKER",
        "INDEX-ENTRY-MARKER",
        "memory/system/definition.md",
        "`pdf`",
        "`mine`",
        "MODULE-SCHEDULING-MARKER",
        "MCP-FS-MARKER",
    ):
        assert marker in text
    assert "Omitted for size" not in text
    assert result.runner == {
        "provider": "codex",
        "model": "gpt-5.5",
        "reasoning_effort": "high",
        "mcp_servers": {"fs": {"command": "npx", "args": ["x"], "env": {}}},
    }
    targets = {m.target: m for m in result.mounts}
    assert targets["/workspace/agent/AGENTS.md"].read_only
    assert not targets["/home/agent/.codex"].read_only
    assert targets[SHARED_SKILLS_TARGET].read_only


def test_memory_index_changes_show_at_next_wake(layout: dict[str, Path]) -> None:
    contrib = contribution(layout)
    contrib.prepare(spec(layout))
    (layout["folder"] / "memory" / "index.md").write_text("NEW-FACT")
    contrib.prepare(spec(layout))
    assert "NEW-FACT" in (layout["data"] / "composed" / "team" / "AGENTS.md").read_text()


def test_oversized_mcp_instructions_degrade_and_never_throw(
    layout: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    servers = {
        "huge": {"command": "a", "instructions": "H" * 40_000},
        "big": {"command": "b", "instructions": "B" * 25_000},
        "small": {"command": "c", "instructions": "SMALL-MARKER"},
    }
    (layout["folder"] / "memory" / "index.md").write_text("I" * 50_000)  # core, capped not dropped
    with caplog.at_level(logging.ERROR):
        result = contribution(layout).prepare(spec(layout, mcp_servers=servers))
    text = (layout["data"] / "composed" / "team" / "AGENTS.md").read_text()
    assert len(text.encode()) <= LIMIT_BYTES
    assert "## Omitted for size" in text
    assert "- MCP server: huge" in text and "- MCP server: big" in text
    assert "SMALL-MARKER" in text and "RUNTIME-CONTRACT-MARKER" in text
    assert "memory index truncated" in text
    assert any("omitted for size" in r.message for r in caplog.records if r.levelno == logging.ERROR)
    assert result.notes and "huge" in result.notes[0]


def test_compose_warns_near_the_limit(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        composed = compose([Section("Core", "x" * 29_000)], [], group="g")
    assert composed.omitted == ()
    assert any(r.levelno == logging.WARNING and "near" in r.message for r in caplog.records)


def test_codex_home_and_auth_placeholder(layout: dict[str, Path]) -> None:
    contrib = contribution(layout)
    contrib.prepare(spec(layout))
    auth = layout["data"] / "codex" / "team" / "auth.json"
    assert auth.is_file() and auth.read_bytes() == b""
    auth.write_text('{"kept": true}')
    contrib.prepare(spec(layout))
    assert auth.read_text() == '{"kept": true}'


def test_skill_links_follow_the_selection(layout: dict[str, Path]) -> None:
    folder = layout["folder"]
    skills_dir = folder / ".agents" / "skills"
    skills_dir.mkdir(parents=True)
    (skills_dir / "agents-own").mkdir()  # not ours: kept
    sync_skill_links(folder, ["pdf", "web", "ghost"], layout["skills"])
    assert os.readlink(skills_dir / "pdf") == f"{SHARED_SKILLS_TARGET}/pdf"
    assert os.readlink(skills_dir / "web") == f"{SHARED_SKILLS_TARGET}/web"
    assert not (skills_dir / "ghost").is_symlink()
    sync_skill_links(folder, ["web"], layout["skills"])
    assert not (skills_dir / "pdf").is_symlink()
    assert (skills_dir / "web").is_symlink()
    assert (skills_dir / "agents-own").is_dir()


def test_mock_contribution_is_minimal(layout: dict[str, Path]) -> None:
    result = MockContribution().prepare(spec(layout))
    assert result.mounts == [] and result.runner == {}
    assert MockContribution.routes == frozenset()  # it calls no model: no gateway port, no key


def test_links_the_agent_plants_never_steer_a_wake(layout: dict[str, Path], tmp_path: Path) -> None:
    """The agent owns its folder and ~/.codex: a wake reads, creates and links only inside them."""
    victim = tmp_path / "victim"  # stands for any host directory (/root, /etc)
    victim.mkdir()
    (victim / "shadow").write_text("HOST-SECRET-LINE")
    folder = layout["folder"]
    (folder / "memory" / "index.md").unlink()
    (folder / "memory" / "index.md").symlink_to(victim / "shadow")
    (folder / ".agents").symlink_to(victim)
    home = layout["data"] / "codex" / "team"
    home.mkdir(parents=True)
    (home / "auth.json").symlink_to(victim / "created-by-host")
    before = sorted(p.name for p in victim.iterdir())

    contrib = contribution(layout)
    contrib.prepare(spec(layout, skills=["pdf"]))

    assert sorted(p.name for p in victim.iterdir()) == before  # nothing created or linked there
    composed = contrib.agents_md_path(spec(layout)).read_text()
    assert "HOST-SECRET-LINE" not in composed
    assert (folder / ".agents").is_dir() and not (folder / ".agents").is_symlink()
    assert os.readlink(folder / ".agents" / "skills" / "pdf") == f"{SHARED_SKILLS_TARGET}/pdf"


def test_an_adopted_folder_gets_templates_only_where_nothing_is(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    folder = tmp_path / "groups" / "kept"
    (folder / "memory").mkdir(parents=True)
    (folder / "memory" / "index.md").symlink_to(victim / "index.md")  # dangling: a copy would create it
    (folder / "conversations").symlink_to(victim)
    populate_folder(folder)
    assert list(victim.iterdir()) == []
    assert (folder / "memory" / "system" / "definition.md").is_file()
