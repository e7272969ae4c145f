"""This wake's configuration: ``runner.json`` in the session dir, plus paths from the environment.

Paths default to the container layout and can be moved with environment variables, so the same
runner runs in tests outside Docker.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST_AWAY_TIMEOUT = 1800.0
"""Default of runner.json ``host_away_timeout`` (the host passes its idle timeout)."""


PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RUNNER_ENTRY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class ConfigError(ValueError):
    """runner.json is missing or wrong; the message names the field."""


@dataclass(frozen=True)
class Paths:
    session: Path
    workspace: Path
    codex_home: Path

    @classmethod
    def from_env(cls) -> Paths:
        home = Path(os.environ.get("HOME", "/home/agent"))
        return cls(
            session=Path(os.environ.get("NANOHOST_SESSION_DIR", "/workspace/session")),
            workspace=Path(os.environ.get("NANOHOST_WORKSPACE", "/workspace/agent")),
            codex_home=Path(os.environ.get("CODEX_HOME", str(home / ".codex"))),
        )


@dataclass(frozen=True)
class RunnerConfig:
    provider: str
    runner: str
    """The provider's runner side, ``module:callable`` (``agent_runner.registry``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Provider-specific settings from its host side, read only by that provider."""
    model: str | None = None
    reasoning_effort: str | None = None
    mcp_servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    turn_timeout: float = 600.0
    gateway_socket: str | None = None
    egress_socket: str | None = None
    placeholder: str = ""
    codex_bin: str = "codex"
    auth: str = "api-key"
    """``api-key`` or ``chatgpt``: how Codex authenticates to the gateway (``codex/chatgpt.py``)."""
    host_away_timeout: float = HOST_AWAY_TIMEOUT
    """Seconds the host may stay away (its doorbell line down) before the runner stops itself."""

    @classmethod
    def load(cls, path: Path) -> RunnerConfig:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{path} is missing: the host writes it before starting the container"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunnerConfig:
        provider = data.get("provider")
        if not isinstance(provider, str) or not PROVIDER_NAME.match(provider):
            raise ConfigError(f"runner.json: provider must be a provider name, not {provider!r}")
        runner = data.get("runner")
        if not isinstance(runner, str) or not RUNNER_ENTRY.match(runner):
            raise ConfigError(
                f"runner.json: runner must be the provider's runner side ('module:callable'), not {runner!r}"
            )
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError("runner.json: options must be an object")

        def optional_str(name: str) -> str | None:
            value = data.get(name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"runner.json: {name} must be a string or null")
            return value

        servers = data.get("mcp_servers") or {}
        if not isinstance(servers, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("command"), str) for v in servers.values()
        ):
            raise ConfigError("runner.json: mcp_servers must map names to {command, args, env}")
        timeout = data.get("turn_timeout", 600)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError("runner.json: turn_timeout must be a positive number")
        away = data.get("host_away_timeout")
        if away is None:
            away = HOST_AWAY_TIMEOUT
        if isinstance(away, bool) or not isinstance(away, int | float) or away <= 0:
            raise ConfigError("runner.json: host_away_timeout must be a positive number of seconds")
        auth = data.get("auth") or "api-key"
        if auth not in ("api-key", "chatgpt"):
            raise ConfigError(f"runner.json: auth must be 'api-key' or 'chatgpt', not {auth!r}")
        return cls(
            provider=provider,
            auth=auth,
            runner=runner,
            options=options,
            host_away_timeout=float(away),
            model=optional_str("model"),
            reasoning_effort=optional_str("reasoning_effort"),
            mcp_servers=servers,
            turn_timeout=float(timeout),
            gateway_socket=optional_str("gateway_socket"),
            egress_socket=optional_str("egress_socket"),
            placeholder=optional_str("placeholder") or "",
            codex_bin=optional_str("codex_bin") or os.environ.get("NANOHOST_CODEX_BIN", "codex"),
        )
