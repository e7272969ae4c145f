"""config.toml rendering and the app-server's environment (no binary needed)."""

from __future__ import annotations

import tomllib

import pytest
from agent_runner.codex.config import CodexConfigError, normalize_effort, render
from agent_runner.codex.env import codex_env
from agent_runner.codex.errors import classify, is_stale_thread

NASTY = 'quote " backslash \\ tab \t unicode é ☃ bell \x07 del \x7f'


def test_config_parses_and_carries_every_setting() -> None:
    text = render(
        base_url="http://127.0.0.1:4321/v1",
        model="gpt-5.5",
        reasoning_effort="HIGH",
        mcp_servers={
            "fs": {"command": "npx", "args": ["-y", NASTY], "env": {"MODE": NASTY}},
            "nanohost": {"command": "/opt/venv/bin/python", "args": ["-m", "agent_runner.mcp_server"]},
        },
    )
    config = tomllib.loads(text)
    assert config["model"] == "gpt-5.5" and config["model_reasoning_effort"] == "high"
    assert config["sandbox_mode"] == "danger-full-access" and config["approval_policy"] == "never"
    assert config["project_doc_max_bytes"] == 32768
    assert config["model_provider"] == "nanohost"
    provider = config["model_providers"]["nanohost"]
    assert provider["base_url"] == "http://127.0.0.1:4321/v1" and provider["wire_api"] == "responses"
    assert provider["env_key"] == "NANOHOST_SESSION_PLACEHOLDER"
    assert provider["request_max_retries"] == 2 and provider["stream_max_retries"] == 3  # CODEX.md §6
    assert provider["stream_idle_timeout_ms"] == 120_000
    assert config["features"]["plugins"] is False
    assert config["mcp_servers"]["fs"]["args"] == ["-y", NASTY]
    assert config["mcp_servers"]["fs"]["env"] == {"MODE": NASTY}
    assert config["mcp_servers"]["nanohost"]["command"] == "/opt/venv/bin/python"


def test_model_and_effort_are_left_out_when_unset() -> None:
    config = tomllib.loads(render(base_url="http://127.0.0.1:1/v1"))
    assert "model" not in config and "model_reasoning_effort" not in config


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"model": "a\nb"}, "model must not contain a newline"),
        ({"mcp_servers": {"fs": {"command": "x", "args": ["a\rb"]}}}, "argument of MCP server 'fs'"),
        ({"mcp_servers": {"fs": {"command": "x", "env": {"K": "1\n2"}}}}, "env K of MCP server 'fs'"),
        ({"mcp_servers": {"bad name": {"command": "x"}}}, "MCP server name 'bad name'"),
        ({"mcp_servers": {"fs": {"args": []}}}, "needs a command"),
        ({"reasoning_effort": "turbo"}, "unknown reasoning effort"),
    ],
)
def test_unsafe_values_are_refused(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(CodexConfigError, match=says):
        render(base_url="http://127.0.0.1:1/v1", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["none", "Minimal", "LOW", "medium", "high", "xHigh"])
def test_efforts(value: str) -> None:
    assert normalize_effort(value) == value.lower()


def test_environment_passes_the_containers_through_less_the_runners_own() -> None:
    source = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "TZ": "Europe/Paris",
        "https_proxy": "http://p",
        "GREETING": "bonjour",  # set with `groups config --env`: it must reach the agent
        "REPORT_DIR": "/workspace/agent/reports",
        "NANOHOST_SESSION_DIR": "/workspace/session",  # the runner's own
        "NANOHOST_LOG_LEVEL": "DEBUG",
        "CODEX_HOME": "/elsewhere",  # set explicitly below
        "codex_sandbox": "off",
        "OPENAI_BASE_URL": "http://elsewhere",  # the model only through the gateway
        "LD_PRELOAD": "/tmp/x.so",
        "DYLD_INSERT_LIBRARIES": "/tmp/x.dylib",
    }
    env = codex_env(source, codex_home="/h/.codex", home="/h", placeholder="nh-ph-1")
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "TZ": "Europe/Paris",
        "https_proxy": "http://p",
        "GREETING": "bonjour",
        "REPORT_DIR": "/workspace/agent/reports",
        "HOME": "/h",
        "CODEX_HOME": "/h/.codex",
        "NANOHOST_SESSION_PLACEHOLDER": "nh-ph-1",
    }


def test_every_env_name_the_host_accepts_reaches_codex() -> None:
    """The host's rule (check_env_name) is the one filter: what it lets into a container, the
    runner passes on; what the runner drops, the host never lets in."""
    from agent_runner.codex.env import passes

    from nanohost.validation import InvalidInput, check_env_name

    for name in ["TZ", "GREETING", "GIT_AUTHOR_NAME", "MONKEY", "REPORT_DIR", "lang", "x"]:
        check_env_name(name)
        assert passes(name), name
    for name in ["NANOHOST_X", "CODEX_SANDBOX", "OPENAI_BASE_URL", "LD_PRELOAD", "DYLD_X", "codex_x"]:
        assert not passes(name), name
        with pytest.raises(InvalidInput):
            check_env_name(name)


@pytest.mark.parametrize(
    "message",
    ["no rollout found for thread id 123", "thread not found: abc", "invalid session id: x"],
)
def test_stale_thread_errors(message: str) -> None:
    assert is_stale_thread(message) and classify(message) == "stale_session"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("unexpected status 401 Unauthorized: bad key", "auth"),
        ("exceeded retry limit, last status: 429 Too Many Requests", "quota"),
        ("You exceeded your current quota", "quota"),
        ("sandbox denied", "sandbox"),
        ("something else", "other"),
    ],
)
def test_classification(message: str, kind: str) -> None:
    assert classify(message) == kind
