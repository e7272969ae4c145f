"""The runner side of the ``opencode`` provider, as the registry builds it (``runner.json`` names
``agent_runner.opencode.runner:build``).

``runner.json`` ``options``: ``instructions`` (paths of the composed instructions, given to
OpenCode's own ``instructions``) and optionally ``opencode_bin``. OpenCode keeps its sessions
under ``$HOME/.local/share/opencode``, which the host mounts per group.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent_runner.config import ConfigError, Paths, RunnerConfig
from agent_runner.provider import Provider
from agent_runner.registry import nanohost_mcp


def build(config: RunnerConfig, paths: Paths, base_url: str) -> Provider:
    from agent_runner.opencode.provider import OpenCodeProvider
    from agent_runner.opencode.server import Server, build_config

    options = config.options
    instructions = options.get("instructions") or []
    if not isinstance(instructions, list) or not all(isinstance(p, str) for p in instructions):
        raise ConfigError("runner.json: options.instructions must be a list of paths")
    binary = options.get("opencode_bin") or os.environ.get("NANOHOST_OPENCODE_BIN", "opencode")
    if not isinstance(binary, str):
        raise ConfigError("runner.json: options.opencode_bin must be a string")
    servers = dict(config.mcp_servers)
    servers["nanohost"] = nanohost_mcp(paths)
    settings = build_config(
        base_url=base_url,
        placeholder=config.placeholder,
        model=config.model,
        reasoning_effort=config.reasoning_effort,
        instructions=instructions,
        mcp_servers=servers,
    )
    home = Path(os.environ.get("HOME", "/home/agent"))
    server = Server(binary, cwd=paths.workspace, home=home, config=settings)
    return OpenCodeProvider(server, turn_timeout=config.turn_timeout)
