"""Codex errors, classified in one place (CODEX.md §4 and §6).

A failed turn is one of two things, and everything downstream depends on telling them apart:

- **transport**: the model could not be reached or the answer was cut off on the way: the host
  (and its gateway) was restarting, a connection was refused or reset, the stream disconnected,
  the gateway or the model service answered 5xx, or the model service is rate-limiting (429).
  The runner retries these (bounded, with backoff) and the user never sees them unless they last.
- **final**: the model service refused the request itself (400/401/403/404, a bad key, a context
  that is too long), the model stopped answering (stream idle timeout, the turn timeout), a
  sandbox or config error. These reach the chat at once, in plain words (``plain_words``).

What reaches the chat never carries an internal address: URLs, ``127.0.0.1:<port>`` and socket
paths are removed (``scrub``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

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

_STATUS = re.compile(r"(?:unexpected status|last status:?|status code:?|HTTP/1\.[01])\s*(\d{3})\b", re.I)
_STALLED = re.compile(r"idle timeout waiting for SSE", re.I)
"""The model sent nothing for ``stream_idle_timeout_ms``: it hangs (final, not the wire)."""
_TRANSPORT = re.compile(
    r"stream disconnected before completion|stream closed before response\.completed"
    r"|error sending request|connection (?:refused|reset|closed|aborted)|broken pipe"
    r"|transport error|network error|gateway unreachable|upstream unreachable"
    r"|unknown nanohost placeholder"  # the host restarted and has not restored the grant yet
    r"|experiencing high demand",  # what codex says after retrying a 500
    re.I,
)
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_RETRY_INFO = frozenset({"internalServerError", "serverOverloaded"})
_FINAL_INFO: dict[str, ErrorKind] = {
    "unauthorized": "auth",
    "usageLimitExceeded": "quota",
    "contextWindowExceeded": "other",
    "badRequest": "other",
    "sandboxError": "sandbox",
    "cyberPolicy": "other",
}


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


@dataclass(frozen=True)
class Failure:
    """What a failed turn means: its kind, whether retrying can help, the HTTP status if any."""

    kind: ErrorKind
    retryable: bool = False
    status: int | None = None


def is_stale_thread(message: str) -> bool:
    return bool(STALE_THREAD.search(message))


def classify(message: str) -> ErrorKind:
    """The kind of a failure from its message alone (see ``failure`` for the full rule)."""
    return failure(message).kind


def _info_status(info: Any) -> int | None:
    """``httpStatusCode`` from a codexErrorInfo object such as
    ``{"responseStreamDisconnected": {"httpStatusCode": 502}}``."""
    if isinstance(info, dict):
        for value in info.values():
            if isinstance(value, dict) and isinstance(value.get("httpStatusCode"), int):
                return int(value["httpStatusCode"])
    return None


def failure(message: str, info: Any = None, details: str | None = None) -> Failure:
    """Classify a failed turn from codex's error message, its ``codexErrorInfo`` and
    ``additionalDetails`` (the ``error`` notification and ``turn/completed.turn.error``)."""
    text = f"{message}\n{details or ''}"
    if STALE_THREAD.search(text):
        return Failure("stale_session")
    if _STALLED.search(text):
        return Failure("timeout")
    found = _STATUS.search(text)
    status = int(found.group(1)) if found else _info_status(info)
    if status is not None:
        if status == 401 and "nanohost placeholder" in text:
            return Failure("transport", True, status)
        if status == 429:
            return Failure("quota", True, status)
        if status in _RETRY_STATUS or status >= 500:
            return Failure("transport", True, status)
        if status in (401, 403):
            return Failure("auth", False, status)
        return Failure("other", False, status)
    if isinstance(info, str):
        if info in _RETRY_INFO:
            return Failure("transport", True)
        if info in _FINAL_INFO:
            return Failure(_FINAL_INFO[info])
    if _TRANSPORT.search(text):
        return Failure("transport", True)
    for kind, pattern in _KINDS:
        if pattern.search(text):
            return Failure(kind)
    return Failure("other")


_URL = re.compile(r",?\s*url:\s*\S+|\(?\bhttps?://[^\s)]+\)?", re.I)
_ADDRESS = re.compile(r"\b(?:127\.\d+\.\d+\.\d+|localhost|\[::1\])(?::\d+)?\b", re.I)
_PATH = re.compile(r"(?<![\w.])/(?:run|workspace|home|tmp|var|opt)/[^\s:,;)]*", re.I)
MAX_PLAIN = 300


def _json_message(text: str) -> str:
    """The ``error.message`` of a JSON error body (codex passes a 400's body on as its message)."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else text


def scrub(text: str) -> str:
    """``text`` without URLs, loopback addresses or socket and file paths, on one short line."""
    text = _URL.sub("", _json_message(text.strip()))
    text = _ADDRESS.sub("", text)
    text = _PATH.sub("", text)
    text = " ".join(text.split()).strip(" :,;")
    return text if len(text) <= MAX_PLAIN else text[: MAX_PLAIN - 1] + "…"


def plain_words(kind: str, error: str | None) -> str:
    """What the chat is told when a turn cannot be answered: what happened and what to do,
    without internal addresses."""
    detail = scrub(error or "")
    if kind == "transport":
        return (
            "Sorry, I could not reach the AI model service, even after retrying for a while, "
            "so this message was not answered. Please send it again in a few minutes."
        )
    if kind == "quota":
        return (
            "Sorry, the AI model service is rate-limiting or out of quota right now, so I could not "
            "answer. Please try again later."
        )
    if kind == "auth":
        return (
            "Sorry, the AI model service refused this host's credentials, so I could not answer. "
            "An operator needs to check the API key."
        )
    if kind == "timeout":
        return (
            "Sorry, the AI model took too long to answer, so I stopped waiting"
            + (f" ({detail})" if detail else "")
            + ". Please try again, perhaps with a smaller request."
        )
    if kind == "config":
        return "Sorry, the agent is misconfigured" + (f": {detail}" if detail else "") + "."
    return "Sorry, I could not answer this message" + (f": {detail}" if detail else "") + "."
