"""Host side of the OpenCode provider: composed instructions, per-group OpenCode data, skill links.

The group's instructions are composed exactly as for Codex (``agents_md``) and mounted read-only
at ``/workspace/agent/AGENTS.md``; OpenCode is given that path through its own ``instructions``
config (and would find it there anyway, so it is one file, read once). OpenCode keeps its
sessions in ``~/.local/share/opencode``: a per-group dir in the host data dir is mounted there,
so a respawned container resumes the same session. No credential is in it: the model is reached
through the gateway with a per-session placeholder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nanohost.providers import Contribution, GroupSpec, Mount
from nanohost.providers.agents_md import compose, core_sections, write_atomically
from nanohost.providers.codex import (
    CONTAINER_HOME,
    CONTRACT_FILE,
    MODULES_DIR,
    SHARED_SKILLS_DIR,
    SHARED_SKILLS_TARGET,
    WORKSPACE,
    mcp_sections,
    module_sections,
    sync_skill_links,
)
from nanohost.safe_fs import make_dirs_beneath

if TYPE_CHECKING:
    from nanohost.settings import Settings

INSTRUCTIONS = f"{WORKSPACE}/AGENTS.md"
DATA_TARGET = f"{CONTAINER_HOME}/.local/share/opencode"


class OpenCodeContribution:
    """Prepares an OpenCode group's wake (the host side of the ``opencode`` provider)."""

    name = "opencode"
    summary = "OpenCode (opencode serve, HTTP API), same instructions and tools, sessions kept per group"
    runner = "agent_runner.opencode.runner:build"
    routes = frozenset({("POST", "/v1/responses")})
    """OpenCode's OpenAI provider (``@ai-sdk/openai``) calls the Responses API only."""

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
    def from_settings(cls, settings: Settings) -> OpenCodeContribution:
        return cls(settings.data_dir)

    def state_dir(self, folder: str) -> Path:
        return self.data_dir / "opencode" / folder

    def prepare(self, group: GroupSpec) -> Contribution:
        contract = self.contract.read_text(encoding="utf-8") if self.contract.is_file() else ""
        composed = compose(
            core_sections(contract, group.folder_path, list(group.skills)),
            [*module_sections(self.modules), *mcp_sections(group.mcp_servers)],
            group=group.name,
        )
        instructions = self.data_dir / "composed" / group.folder / "AGENTS.md"
        write_atomically(instructions, composed.text)
        state = self.state_dir(group.folder)
        state.parent.mkdir(parents=True, exist_ok=True)
        make_dirs_beneath(state.parent, group.folder)  # never through a link planted there
        sync_skill_links(group.folder_path, list(group.skills), self.shared_skills)
        mounts = [Mount(instructions, INSTRUCTIONS, read_only=True), Mount(state, DATA_TARGET)]
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
        notes = (
            [f"omitted from the instructions for size: {', '.join(composed.omitted)}"]
            if composed.omitted
            else []
        )
        return Contribution(
            mounts=mounts,
            runner={
                "model": group.model,
                "reasoning_effort": group.reasoning_effort,
                "mcp_servers": servers,
                "options": {"instructions": [INSTRUCTIONS]},
            },
            notes=notes,
        )
