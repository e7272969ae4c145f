"""Host side of the Codex provider: composed AGENTS.md, per-group ~/.codex, skill links.

The per-group Codex state dir lives in the host data dir and survives container restarts, so a
respawned container resumes the same thread. It never holds a real credential: ``auth.json`` is
an empty placeholder (the gateway injects the key), and an existing one is never truncated.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from nanohost.gateway import CODEX_ROUTES
from nanohost.providers import Contribution, GroupSpec, Mount
from nanohost.providers.agents_md import Section, compose, core_sections, write_atomically
from nanohost.safe_fs import agent_owner, create_beneath, open_root, open_subdir
from nanohost.settings import PROJECT_ROOT
from nanohost.skills import SKILLS_DIR

if TYPE_CHECKING:
    from nanohost.settings import Settings

log = logging.getLogger(__name__)

CONTAINER_HOME = "/home/agent"
WORKSPACE = "/workspace/agent"
SHARED_SKILLS_TARGET = "/opt/nanohost/skills"
CONTRACT_FILE = Path(__file__).resolve().parent / "contract.md"
"""The runtime contract every group's AGENTS.md starts with: the agent's tools, folders and limits.
Package data (pyproject ``[tool.setuptools.package-data]``), so an installed host has it too; not
named AGENTS.md, so coding agents working on this repository never take it as their own."""
MODULES_DIR = PROJECT_ROOT / "container" / "modules"
SHARED_SKILLS_DIR = SKILLS_DIR


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
    directory (the agent's own files) is left alone. The folder is the agent's, so every step
    goes through directory descriptors (``safe_fs``): a ``.agents`` swapped for a link to a host
    directory is replaced, never followed.
    """
    wanted = {name for name in selected if _is_skill_name(name) and (shared_dir / name).is_dir()}
    for missing in sorted(set(selected) - wanted):
        log.warning("group folder %s: selected skill %r does not exist in %s", folder, missing, shared_dir)
    root = open_root(folder)
    try:
        agents = open_subdir(root, ".agents", create=True)
        try:
            skills = open_subdir(agents, "skills", create=True)
        finally:
            os.close(agents)
    finally:
        os.close(root)
    try:
        for name in os.listdir(skills):
            try:
                target = os.readlink(name, dir_fd=skills)
            except OSError:
                continue  # not a link: the agent's own entry
            if target.startswith(SHARED_SKILLS_TARGET + "/") and (
                name not in wanted or target != f"{SHARED_SKILLS_TARGET}/{name}"
            ):
                os.unlink(name, dir_fd=skills)
        for name in sorted(wanted):
            with contextlib.suppress(FileExistsError):  # the agent's own entry of that name stays
                os.symlink(f"{SHARED_SKILLS_TARGET}/{name}", name, dir_fd=skills)
                if (owner := agent_owner()) is not None:
                    os.chown(name, *owner, dir_fd=skills, follow_symlinks=False)
    finally:
        os.close(skills)


def _is_skill_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") and not name.startswith(".")


def ensure_codex_home(path: Path) -> None:
    """The per-group ~/.codex with an empty auth.json placeholder (never truncating one, and
    never creating through a link the agent put there)."""
    path.mkdir(parents=True, exist_ok=True)
    create_beneath(path, "auth.json", b"", mode=0o600)


class ComposedAgent:
    """What every real agent's host side does at a wake the same way: compose the group's
    instructions into ``AGENTS.md`` (host-owned, mounted read-only), link the group's skills and
    mount the shared ones, and pass the group's MCP servers on to runner.json."""

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

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.data_dir)

    def agents_md_path(self, group: GroupSpec) -> Path:
        return self.data_dir / "composed" / group.folder / "AGENTS.md"

    def compose_agents_md(self, group: GroupSpec) -> tuple[Path, list[str]]:
        """Write the group's AGENTS.md; returns its path and the wake's notes (sections left out)."""
        contract = self.contract.read_text(encoding="utf-8") if self.contract.is_file() else ""
        composed = compose(
            core_sections(contract, group.folder_path, list(group.skills)),
            [*module_sections(self.modules), *mcp_sections(group.mcp_servers)],
            group=group.name,
        )
        path = self.agents_md_path(group)
        write_atomically(path, composed.text)
        if not composed.omitted:
            return path, []
        return path, [f"omitted from AGENTS.md for size: {', '.join(composed.omitted)}"]

    def skill_mounts(self, group: GroupSpec) -> list[Mount]:
        """Link the group's selected skills into its folder; the shared skills, read-only."""
        sync_skill_links(group.folder_path, list(group.skills), self.shared_skills)
        if not self.shared_skills.is_dir():
            return []
        return [Mount(self.shared_skills, SHARED_SKILLS_TARGET, read_only=True)]

    @staticmethod
    def mcp_servers(group: GroupSpec) -> dict[str, dict[str, Any]]:
        """The group's MCP servers as runner.json carries them."""
        return {
            name: {
                "command": spec["command"],
                "args": list(spec.get("args", [])),
                "env": dict(spec.get("env", {})),
            }
            for name, spec in group.mcp_servers.items()
        }


class CodexContribution(ComposedAgent):
    """Prepares a Codex group's wake (the host side of the ``codex`` provider)."""

    name = "codex"
    summary = "OpenAI Codex CLI (codex app-server), AGENTS.md, threads in ~/.codex"
    runner = "agent_runner.codex.runner:build"
    routes = CODEX_ROUTES
    auth_modes = ("api-key", "chatgpt")
    """How its model calls may be paid for: a key, or the host's ChatGPT sign-in (``nanohost/auth``)."""

    def state_dir(self, folder: str) -> Path:
        return self.data_dir / "codex" / folder

    def codex_home(self, group: GroupSpec) -> Path:
        return self.state_dir(group.folder)

    def prepare(self, group: GroupSpec) -> Contribution:
        agents_md, notes = self.compose_agents_md(group)
        home = self.codex_home(group)
        ensure_codex_home(home)
        mounts = [
            Mount(agents_md, f"{WORKSPACE}/AGENTS.md", read_only=True),
            Mount(home, f"{CONTAINER_HOME}/.codex"),
            *self.skill_mounts(group),
        ]
        runner = {
            "provider": "codex",
            "model": group.model,
            "reasoning_effort": group.reasoning_effort,
            "mcp_servers": self.mcp_servers(group),
        }
        return Contribution(mounts=mounts, runner=runner, notes=notes)
