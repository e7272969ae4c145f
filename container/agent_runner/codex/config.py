"""``$CODEX_HOME/config.toml``, written at every wake.

The config keeps Codex offline except for the model (through the gateway), turns off the
features that phone home, bounds retries so a failing model cannot hang a turn for minutes, and
registers every MCP server. Strings are emitted as TOML basic strings with every special
character escaped; a value with a newline is refused rather than written as a multi-line trap.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
PLACEHOLDER_ENV = "NANOHOST_SESSION_PLACEHOLDER"
"""Env var Codex reads the gateway placeholder from (no _KEY/_TOKEN suffix: nothing secret-looking)."""
# Retries inside codex (CODEX.md §6; the loops nest). Measured on 0.138 against a scripted server:
# a model answering 500 costs 12 requests over ~4 s, a refused connection ~4 s, a stream cut
# mid-response 4 attempts over ~2 s; then the turn fails and the runner's own bounded retries
# (agent_runner.main.TRANSPORT_BACKOFF) take over. A host outage is absorbed below both: the
# runner's loopback forwarder holds each connection until the gateway is back (forward.py).
REQUEST_MAX_RETRIES = 2
STREAM_MAX_RETRIES = 3
STREAM_IDLE_TIMEOUT_MS = 120_000
"""A stream silent this long is a stalled model (each attempt; the turn timeout bounds the total)."""
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class CodexConfigError(ValueError):
    """A value cannot go into config.toml; the message names it."""


def normalize_effort(value: str) -> str:
    """Reasoning effort, case-insensitive, one of Codex's values."""
    effort = value.strip().lower()
    if effort not in REASONING_EFFORTS:
        raise CodexConfigError(
            f"unknown reasoning effort {value!r}; use one of: {', '.join(REASONING_EFFORTS)}"
        )
    return effort


def toml_string(value: str, what: str) -> str:
    """A TOML basic string. Newlines are refused: they are never meant in these values."""
    if "\n" in value or "\r" in value:
        raise CodexConfigError(f"{what} must not contain a newline")
    out = ['"']
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _key(name: str, what: str) -> str:
    if not _BARE_KEY.match(name):
        raise CodexConfigError(f"{what} {name!r} may only use letters, digits, '_' and '-'")
    return name


def render(
    *,
    base_url: str,
    model: str | None = None,
    reasoning_effort: str | None = None,
    mcp_servers: Mapping[str, Mapping[str, Any]] | None = None,
    stream_idle_timeout_ms: int = STREAM_IDLE_TIMEOUT_MS,
    request_max_retries: int = REQUEST_MAX_RETRIES,
    stream_max_retries: int = STREAM_MAX_RETRIES,
    chatgpt: bool = False,
) -> str:
    """The whole config.toml as text (top-level keys before any table, as TOML requires).

    ``chatgpt``: Codex takes its ChatGPT request path (``requires_openai_auth``, the dummy
    ``auth.json`` of ``agent_runner.codex.chatgpt``) instead of the placeholder-as-API-key one."""
    lines = []
    if model:
        lines.append(f"model = {toml_string(model, 'model')}")
    if reasoning_effort:
        lines.append(f"model_reasoning_effort = {toml_string(normalize_effort(reasoning_effort), 'effort')}")
    if chatgpt:  # whatever Codex would ask chatgpt.com goes to the gateway (which refuses it)
        lines.append(f"chatgpt_base_url = {toml_string(base_url + '/chatgpt', 'base_url')}")
    lines += [
        'model_provider = "nanohost"',
        "check_for_update_on_startup = false",
        'web_search = "disabled"',
        'sandbox_mode = "danger-full-access"',
        'approval_policy = "never"',
        "project_doc_max_bytes = 32768",
        "",
        "[features]",
        *(
            f"{name} = false"
            for name in (
                "plugins",
                "apps",
                "multi_agent",
                "goals",
                "image_generation",
                "browser_use",
                "computer_use",
                "tool_suggest",
            )
        ),
        "",
        "[skills]",
        "include_instructions = false",
        "[skills.bundled]",
        "enabled = false",
        "[analytics]",
        "enabled = false",
        "",
        "[model_providers.nanohost]",
        'name = "nanohost"',
        f"base_url = {toml_string(base_url, 'base_url')}",
        'wire_api = "responses"',
        *(["requires_openai_auth = true"] if chatgpt else [f'env_key = "{PLACEHOLDER_ENV}"']),
        f"request_max_retries = {int(request_max_retries)}",
        f"stream_max_retries = {int(stream_max_retries)}",
        f"stream_idle_timeout_ms = {int(stream_idle_timeout_ms)}",
    ]
    for name, server in (mcp_servers or {}).items():
        table = f"mcp_servers.{_key(name, 'MCP server name')}"
        command = server.get("command")
        if not isinstance(command, str) or not command:
            raise CodexConfigError(f"MCP server {name!r} needs a command")
        args = [toml_string(str(a), f"argument of MCP server {name!r}") for a in server.get("args", [])]
        lines += [
            "",
            f"[{table}]",
            f"command = {toml_string(command, f'command of MCP server {name!r}')}",
            f"args = [{', '.join(args)}]",
        ]
        env = server.get("env") or {}
        if env:
            lines.append(f"[{table}.env]")
            for key, value in env.items():
                lines.append(
                    f"{toml_string(str(key), f'env name of MCP server {name!r}')} = "
                    f"{toml_string(str(value), f'env {key} of MCP server {name!r}')}"
                )
    return "\n".join(lines) + "\n"


def write_config(codex_home: Path, text: str) -> Path:
    """Replace config.toml atomically."""
    codex_home.mkdir(parents=True, exist_ok=True)
    target = codex_home / "config.toml"
    fd, tmp = tempfile.mkstemp(dir=codex_home, prefix=".config.", suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
