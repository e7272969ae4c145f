"""The runner side of the ``codex`` provider, as the registry builds it (``runner.json`` names
``agent_runner.codex.runner:build``)."""

from __future__ import annotations

from agent_runner.config import Paths, RunnerConfig
from agent_runner.provider import Provider
from agent_runner.registry import nanohost_mcp


def build(config: RunnerConfig, paths: Paths, base_url: str) -> Provider:
    from agent_runner.codex.provider import CodexProvider  # lazily: the import is the heavy part

    servers = dict(config.mcp_servers)
    servers["nanohost"] = nanohost_mcp(paths)
    return CodexProvider(
        codex_home=paths.codex_home,
        cwd=paths.workspace,
        base_url=base_url,
        placeholder=config.placeholder,
        model=config.model,
        reasoning_effort=config.reasoning_effort,
        mcp_servers=servers,
        turn_timeout=config.turn_timeout,
        codex_bin=config.codex_bin,
        auth=config.auth,
    )
