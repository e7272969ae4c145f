"""Codex failures classified in one place: what is retried, what reaches the chat, and how it reads.

The messages are the ones the real codex 0.138 sends (``error`` / ``turn/completed`` with
``codexErrorInfo``), observed against the scripted model server.
"""

from __future__ import annotations

from typing import Any

import pytest
from agent_runner.codex.errors import failure, plain_words, scrub

URL = "http://127.0.0.1:41235/v1/responses"


@pytest.mark.parametrize(
    ("message", "info", "details", "kind", "retryable"),
    [
        # the host restarting, the forwarder's answer after its wait, a connection cut or refused
        (
            "stream disconnected before completion: error sending request for url (http://127.0.0.1:9/v1/responses)",
            "other",
            None,
            "transport",
            True,
        ),
        (
            "stream disconnected before completion: Transport error: network error: "
            "error decoding response body",
            "other",
            None,
            "transport",
            True,
        ),
        (
            "unexpected status 502 Bad Gateway: nanohost gateway unreachable: the host has been away "
            f"for 90 s (Connection refused), url: {URL}",
            "other",
            None,
            "transport",
            True,
        ),
        (
            f"unexpected status 502 Bad Gateway: upstream unreachable: timeout, url: {URL}",
            "other",
            None,
            "transport",
            True,
        ),
        (
            f"unexpected status 401 Unauthorized: unknown nanohost placeholder, url: {URL}",
            "other",
            None,
            "transport",
            True,
        ),
        # the model service failing for a while
        (
            "We're currently experiencing high demand, which may cause temporary errors.",
            "internalServerError",
            None,
            "transport",
            True,
        ),
        (
            f"unexpected status 503 Service Unavailable: overloaded, url: {URL}",
            "other",
            None,
            "transport",
            True,
        ),
        (f"unexpected status 504 Gateway Timeout: x, url: {URL}", "other", None, "transport", True),
        (
            "exceeded retry limit, last status: 429 Too Many Requests",
            {"responseTooManyFailedAttempts": {"httpStatusCode": 429}},
            None,
            "quota",
            True,
        ),
        (
            "Reconnecting... 1/3",
            {"responseStreamDisconnected": {"httpStatusCode": 502}},
            None,
            "transport",
            True,
        ),
        # refusals and a stalled model: final
        ('{"error":{"message":"Invalid value for input"}}', "other", None, "other", False),
        (
            f"unexpected status 401 Unauthorized: Incorrect API key provided, url: {URL}",
            "other",
            None,
            "auth",
            False,
        ),
        (f"unexpected status 403 Forbidden: no access, url: {URL}", "other", None, "auth", False),
        (f"unexpected status 404 Not Found: model not found, url: {URL}", "other", None, "other", False),
        (
            "stream disconnected before completion: idle timeout waiting for SSE",
            "other",
            None,
            "timeout",
            False,
        ),
        ("turn timed out after 600 s", None, None, "timeout", False),
        ("Your input exceeds the context window", "contextWindowExceeded", None, "other", False),
        ("You've hit your usage limit", "usageLimitExceeded", None, "quota", False),
        ("no rollout found for thread id 0190", None, None, "stale_session", False),
        ("something nobody has seen", None, None, "other", False),
    ],
)
def test_failures_are_classified(
    message: str, info: Any, details: str | None, kind: str, retryable: bool
) -> None:
    found = failure(message, info, details)
    assert (found.kind, found.retryable) == (kind, retryable)


def test_the_status_in_the_details_counts_too() -> None:
    found = failure("Reconnecting... 1/3", None, f"unexpected status 503 Service Unavailable: x, url: {URL}")
    assert (found.kind, found.retryable, found.status) == ("transport", True, 503)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"unexpected status 404 Not Found: model not found, url: {URL}",
            "unexpected status 404 Not Found: model not found",
        ),
        ("error sending request for url (http://127.0.0.1:9/v1/responses)", "error sending request for url"),
        ("cannot connect to /run/nanohost/gateway.sock: refused", "cannot connect to : refused"),
        ("talking to 127.0.0.1:8080 and localhost:9 failed", "talking to and failed"),
        ('{"error":{"message":"Invalid value for input"}}', "Invalid value for input"),
        ("x" * 500, "x" * 299 + "…"),
    ],
)
def test_scrub_removes_internal_addresses(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("kind", ["transport", "quota", "auth", "timeout", "config", "other", "crash"])
def test_plain_words_never_carry_an_internal_address(kind: str) -> None:
    text = plain_words(kind, f"unexpected status 500: boom, url: {URL} via /run/nanohost/gateway.sock")
    assert text.startswith("Sorry")
    for leak in ("127.0.0.1", "http", "/run/", "gateway.sock", "41235"):
        assert leak not in text
