"""Host side of the Codex provider: composed AGENTS.md, per-group ~/.codex, skill links.

The per-group Codex state dir lives in the host data dir and survives container restarts, so a
respawned container resumes the same thread. It never holds a real credential: ``auth.json`` is
an empty placeholder (the gateway injects the key), and an existing one is never truncated.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nanohost.providers import Contribution, GroupSpec, Mount
from nanohost.providers.agents_md import Section, compose, core_sections, write_atomically
from nanohost.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

CONTAINER_HOME = "/home/agent"
WORKSPACE = "/workspace/agent"
SHARED_SKILLS_TARGET = "/opt/nanohost/skills"
CONTRACT_FILE = PROJECT_ROOT / "container" / "AGENTS.md"
MODULES_DIR = PROJECT_ROOT / "container" / "modules"
SHARED_SKILLS_DIR = PROJECT_ROOT / "container" / "skills"


def module_sections(modules_dir: Path = MODULES_DIR) -> list[Section]:
    """Each runtime module's instruction fragment (``container/modules/<name>.md``), optional."""
    if not modules_dir.is_dir():
        return []
    return [
        Section(f"Module: {path.stem}", path.read_text(encoding="utf-8", errors="replace"), optional=True)
        for path in sorted(modules_dir.glob("*.md"))
    ]


def mcp_sections(servers: dict[str, dict[str, object]]) -> list[Section]:
    """Each MCP server's instructions from the config row, optional."""
    return [
        Section(f"MCP server: {name}", str(spec["instructions"]), optional=True)
        for name, spec in sorted(servers.items())
        if spec.get("instructions")
    ]


def sync_skill_links(folder: Path, selected: list[str], shared_dir: Path = SHARED_SKILLS_DIR) -> None:
    """Make ``.agents/skills/<name>`` link to each selected shared skill; drop deselected links.

    Only links that point into the shared skills mount are ours; anything else in the
    directory (the agent's own files) is left alone.
    """
    skills_dir = folder / ".agents" / "skills"
    skills_dir.mkdir(parents=True, exist_ok=True)
    wanted = {name for name in selected if (shared_dir / name).is_dir()}
    for missing in sorted(set(selected) - wanted):
        log.warning("group folder %s: selected skill %r does not exist in %s", folder, missing, shared_dir)
    for entry in skills_dir.iterdir():
        if entry.is_symlink() and os.readlink(entry).startswith(SHARED_SKILLS_TARGET + "/"):
            if entry.name not in wanted or os.readlink(entry) != f"{SHARED_SKILLS_TARGET}/{entry.name}":
                entry.unlink()
    for name in sorted(wanted):
        link = skills_dir / name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(f"{SHARED_SKILLS_TARGET}/{name}")


def ensure_codex_home(path: Path) -> None:
    """The per-group ~/.codex with an empty auth.json placeholder (never truncating one)."""
    path.mkdir(parents=True, exist_ok=True)
    auth = path / "auth.json"
    if not auth.exists():
        auth.touch()


class CodexContribution:
    """Prepares a Codex group's wake."""

    name = "codex"

    def __init__(
        self,
        data_dir: Path,
        *,
        contract: Path = CONTRACT_FILE,
        modules: Path = MODULES_DIR,
        shared_skills: Path = SHARED_SKILLS_DIR,
    ) -> None:
        self.data_dir = data_dir
        self.contract = contract
        self.modules = modules
        self.shared_skills = shared_skills

    def codex_home(self, group: GroupSpec) -> Path:
        return self.data_dir / "codex" / group.folder

    def agents_md_path(self, group: GroupSpec) -> Path:
        return self.data_dir / "composed" / group.folder / "AGENTS.md"

    def prepare(self, group: GroupSpec) -> Contribution:
        contract = self.contract.read_text(encoding="utf-8") if self.contract.is_file() else ""
        composed = compose(
            core_sections(contract, group.folder_path, list(group.skills)),
            [*module_sections(self.modules), *mcp_sections(group.mcp_servers)],
            group=group.name,
        )
        agents_md = self.agents_md_path(group)
        write_atomically(agents_md, composed.text)
        home = self.codex_home(group)
        ensure_codex_home(home)
        sync_skill_links(group.folder_path, list(group.skills), self.shared_skills)
        mounts = [
            Mount(agents_md, f"{WORKSPACE}/AGENTS.md", read_only=True),
            Mount(home, f"{CONTAINER_HOME}/.codex"),
        ]
        if self.shared_skills.is_dir():
            mounts.append(Mount(self.shared_skills, SHARED_SKILLS_TARGET, read_only=True))
        servers = {
            name: {
                "command": spec["command"],
                "args": list(spec.get("args", [])),
                "env": dict(spec.get("env", {})),
            }
            for name, spec in group.mcp_servers.items()
        }
        runner = {
            "provider": "codex",
            "model": group.model,
            "reasoning_effort": group.reasoning_effort,
            "mcp_servers": servers,
        }
        notes = (
            [f"omitted from AGENTS.md for size: {', '.join(composed.omitted)}"] if composed.omitted else []
        )
        return Contribution(mounts=mounts, runner=runner, notes=notes)
