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

from nanohost.providers import Contribution, GroupSpec, Mount
from nanohost.providers.codex import CONTAINER_HOME, WORKSPACE, ComposedAgent
from nanohost.safe_fs import make_dirs_beneath

INSTRUCTIONS = f"{WORKSPACE}/AGENTS.md"
DATA_TARGET = f"{CONTAINER_HOME}/.local/share/opencode"


class OpenCodeContribution(ComposedAgent):
    """Prepares an OpenCode group's wake (the host side of the ``opencode`` provider)."""

    name = "opencode"
    summary = "OpenCode (opencode serve, HTTP API), same instructions and tools, sessions kept per group"
    runner = "agent_runner.opencode.runner:build"
    routes = frozenset({("POST", "/v1/responses")})
    """OpenCode's OpenAI provider (``@ai-sdk/openai``) calls the Responses API only."""

    def state_dir(self, folder: str) -> Path:
        return self.data_dir / "opencode" / folder

    def prepare(self, group: GroupSpec) -> Contribution:
        instructions, notes = self.compose_agents_md(group)
        state = self.state_dir(group.folder)
        state.parent.mkdir(parents=True, exist_ok=True)
        make_dirs_beneath(state.parent, group.folder)  # never through a link planted there
        mounts = [
            Mount(instructions, INSTRUCTIONS, read_only=True),
            Mount(state, DATA_TARGET),
            *self.skill_mounts(group),
        ]
        return Contribution(
            mounts=mounts,
            runner={
                "model": group.model,
                "reasoning_effort": group.reasoning_effort,
                "mcp_servers": self.mcp_servers(group),
                "options": {"instructions": [INSTRUCTIONS]},
            },
            notes=notes,
        )
