"""The runner side of the provider registry: runner.json names the provider's runner side.

The host writes ``"runner": "package.module:callable"`` (from the provider's registered host side,
``nanohost.providers.registry``) into this wake's ``runner.json``. The runner imports that module
(it must be importable in the agent image: under ``/opt/nanohost`` on ``PYTHONPATH``, or installed
into the image's venv) and calls the callable as ``factory(config, paths, base_url)`` to get the
``Provider`` it drives. Nothing here lists provider names: importing a module path is all a
third-party provider needs. ``runner.json`` is host-written, so the path is trusted only as far as
the container trusts itself (an agent that rewrites it can only run code it could run anyway).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Protocol

from agent_runner.config import RUNNER_ENTRY, ConfigError, Paths, RunnerConfig
from agent_runner.provider import Provider


class Factory(Protocol):
    def __call__(self, config: RunnerConfig, paths: Paths, base_url: str) -> Provider: ...


def load(entry: str) -> Factory:
    """The callable named ``module:attr``; a ``ConfigError`` saying what is missing otherwise."""
    if not RUNNER_ENTRY.match(entry):
        raise ConfigError(f"runner.json: runner must be 'module:callable', not {entry!r}")
    module_name, _, attr = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"provider runner {entry} is not installed in this image ({exc}); "
            "build an image that contains it (`nanohost image build`)"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"provider runner {entry}: {module_name} has no callable {attr!r}")
    found: Factory = factory
    return found


def build(config: RunnerConfig, paths: Paths, base_url: str) -> Provider:
    """The provider this wake's runner.json names."""
    return load(config.runner)(config, paths, base_url)


def nanohost_mcp(paths: Paths) -> dict[str, Any]:
    """The ``nanohost`` MCP tool server (send_message, send_file, schedule_task …) every real
    agent is given, as ``{command, args, env}``."""
    return {
        "command": sys.executable,
        "args": ["-m", "agent_runner.mcp_server"],
        "env": {
            "NANOHOST_SESSION_DIR": str(paths.session),
            "NANOHOST_WORKSPACE": str(paths.workspace),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
    }
