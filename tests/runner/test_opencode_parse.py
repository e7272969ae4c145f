"""OpenCode's answers read by pure functions: error classes and where an unfinished turn starts."""

from __future__ import annotations

from typing import Any

import pytest
from agent_runner.opencode.provider import classify, unanswered_from
from agent_runner.opencode.server import build_config


@pytest.mark.parametrize(
    ("error", "kind", "retryable"),
    [
        ({"name": "ProviderAuthError", "data": {"message": "no key"}}, "auth", False),
        ({"name": "APIError", "data": {"message": "Unauthorized", "statusCode": 401}}, "auth", False),
        ({"name": "APIError", "data": {"message": "slow down", "statusCode": 429}}, "quota", True),
        (
            {"name": "APIError", "data": {"message": "Service Unavailable", "statusCode": 503}},
            "transport",
            True,
        ),
        ({"name": "UnknownError", "data": {"message": "Unable to connect. ECONNREFUSED"}}, "transport", True),
        ({"name": "APIError", "data": {"message": "context too long", "statusCode": 400}}, "other", False),
        ({"name": "MessageOutputLengthError", "data": {}}, "other", False),
        ({"name": "weird", "data": "not a dict"}, "other", False),
    ],
)
def test_errors_are_classified(error: dict[str, Any], kind: str, retryable: bool) -> None:
    message, got_kind, got_retryable = classify(error)
    assert (got_kind, got_retryable) == (kind, retryable) and message


def _m(role: str, id: str, **info: Any) -> dict[str, Any]:
    return {"info": {"role": role, "id": id, **info}, "parts": []}


def test_the_unfinished_turn_is_found() -> None:
    answered = [_m("user", "u1"), _m("assistant", "a1", finish="stop")]
    assert unanswered_from(answered) is None
    assert unanswered_from([]) is None
    killed = [*answered, _m("user", "u2"), _m("assistant", "a2", finish="tool-calls"), _m("assistant", "a3")]
    assert unanswered_from(killed) == "u2"
    steered = [*answered, _m("user", "u2"), _m("user", "u3")]
    assert unanswered_from(steered) == "u2"
    failed = [*answered, _m("user", "u2"), _m("assistant", "a2", error={"name": "APIError"})]
    assert unanswered_from(failed) is None  # answered with its failure: nothing is resent
    assert unanswered_from([{"info": "garbage"}, "nonsense", _m("user", "u9")]) == "u9"  # type: ignore[list-item]


def test_the_config_keeps_opencode_on_the_gateway_and_offline() -> None:
    config = build_config(
        base_url="http://127.0.0.1:5/v1",
        placeholder="nh-ph-x",
        model=None,
        reasoning_effort="high",
        instructions=["/workspace/agent/AGENTS.md"],
        mcp_servers={"nanohost": {"command": "python", "args": ["-m", "x"], "env": {"A": "1"}}},
    )
    provider = config["provider"]["nanohost"]
    assert provider["options"] == {"baseURL": "http://127.0.0.1:5/v1", "apiKey": "nh-ph-x"}
    assert config["enabled_providers"] == ["nanohost"] and config["autoupdate"] is False
    assert config["model"] == "nanohost/gpt-5.5"
    assert provider["models"]["gpt-5.5"]["options"] == {"reasoningEffort": "high"}
    assert config["instructions"] == ["/workspace/agent/AGENTS.md"]
    assert config["mcp"]["nanohost"] == {
        "type": "local",
        "command": ["python", "-m", "x"],
        "environment": {"A": "1"},
        "enabled": True,
    }
