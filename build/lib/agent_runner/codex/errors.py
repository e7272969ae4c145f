"""Codex error messages, classified in one place (CODEX.md §4 and §6)."""

from __future__ import annotations

import re

from agent_runner.provider import ErrorKind

STALE_THREAD = re.compile(
    r"no rollout found for thread id|thread not found:|invalid session id", re.IGNORECASE
)
"""Errors that mean "this thread id is unusable: start a fresh thread"."""

_KINDS: list[tuple[ErrorKind, re.Pattern[str]]] = [
    ("stale_session", STALE_THREAD),
    ("auth", re.compile(r"\b401\b|unauthori[sz]ed|invalid api key|incorrect api key|authentication", re.I)),
    (
        "quota",
        re.compile(r"\b429\b|quota|rate.?limit|too many requests|insufficient_quota|usage limit", re.I),
    ),
    ("sandbox", re.compile(r"sandbox|bubblewrap|seccomp|landlock", re.I)),
    ("timeout", re.compile(r"timed out|timeout", re.I)),
]


class RpcError(Exception):
    """A JSON-RPC error answer from the app-server."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.message = message


class AppServerExited(Exception):
    """The app-server process is gone; the message carries its exit code and last stderr lines."""


class CodexStartError(RuntimeError):
    """Codex could not be started (missing binary, bad config); the message names the problem."""


def is_stale_thread(message: str) -> bool:
    return bool(STALE_THREAD.search(message))


def classify(message: str) -> ErrorKind:
    for kind, pattern in _KINDS:
        if pattern.search(message):
            return kind
    return "other"
