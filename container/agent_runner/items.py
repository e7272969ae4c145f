"""Turns as the agent lived them: the structured archive and the live feed of the viewer.

A provider reports each step of a turn as an ``ItemEvent`` with a provider-neutral item (a dict):

- every item: ``id`` (str), ``type``, ``status`` (``inProgress``, ``completed``, ``failed``…)
- ``reasoning``: ``text`` (the reasoning summary)
- ``command``: ``command``, ``output`` (stdout and stderr together), ``exit_code``, ``duration_ms``
- ``file_change``: ``changes``: ``[{"path", "kind", "diff"}]``
- ``tool_call``: ``server``, ``tool``, ``arguments`` (JSON text), ``result`` (text), ``error``
- ``message``: ``text`` (what the agent said)
- ``web_search``: ``text`` (the query); ``other``: ``text`` (the provider's own type name)

``TurnLog`` keeps one turn's items (the latest version of each) and, at its end, becomes one JSON
line in ``conversations/turns/YYYY-MM-DD.jsonl`` beside the Markdown archive (``TURN_FORMAT``
below), bounded: long texts are cut in the middle with a marker saying how much was left out,
and a turn with too many items keeps the first ones and says how many more there were.
``LiveFeed`` sends the same items to the host as ``item`` rows while the turn runs, coalesced
(the latest version of each item, at most every ``LIVE_EVERY`` seconds, one transaction each)
and bounded per turn, so a chatty turn cannot flood the queue and a quick one costs nothing extra.

TURN_FORMAT (one line per turn)::

    {"v": 1, "turn", "thread", "provider", "model", "status", "error", "started_at",
     "ended_at", "duration_ms", "prompts": [str], "reply", "usage": {"input", "cached_input",
     "output", "reasoning", "total"}, "items": [item], "items_left_out": int}
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = 1
TURNS_DIR = "turns"
ITEM_TYPES = ("reasoning", "command", "file_change", "tool_call", "message", "web_search", "other")
MAX_ITEMS = 200
"""Items archived per turn; the rest are counted in ``items_left_out``."""
MAX_LINE = 512 * 1024
"""A turn's JSON line above this is cut again with the small limits (``_SMALL``)."""
MAX_CHANGES = 50
_FIELDS = ("text", "command", "output", "arguments", "result", "error")
_LIMITS = {
    "text": 20_000,
    "command": 4_000,
    "output": 16_000,
    "arguments": 8_000,
    "result": 8_000,
    "error": 2_000,
}
_SMALL = {
    "text": 2_000,
    "command": 1_000,
    "output": 2_000,
    "arguments": 1_000,
    "result": 1_000,
    "error": 1_000,
}
_DIFF = 16_000
_LIVE = {
    "text": 4_000,
    "command": 2_000,
    "output": 4_000,
    "arguments": 2_000,
    "result": 2_000,
    "error": 1_000,
}
_LIVE_DIFF = 4_000
MAX_PROMPT = 20_000
MAX_REPLY = 20_000
LIVE_EVERY = 0.25
"""Seconds between two live flushes of a turn's changed items (a turn's end goes with its reply)."""
LIVE_ROWS_PER_TURN = 300
"""Live item rows one turn may send; after that the turn's end row still comes."""


def clip(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: head and tail kept, the middle replaced by a marker."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = max(limit - head - 60, 0)
    left_out = len(text) - head - tail
    return (
        f"{text[:head]}\n[… {left_out:,} characters left out …]\n{text[len(text) - tail :] if tail else ''}"
    )


def bound_item(
    item: dict[str, Any], limits: dict[str, int] | None = None, diff: int = _DIFF
) -> dict[str, Any]:
    """A copy of a neutral item with every text field within its limit and only known fields."""
    limits = limits or _LIMITS
    kind = item.get("type")
    out: dict[str, Any] = {
        "id": str(item.get("id") or uuid.uuid4().hex)[:128],
        "type": kind if kind in ITEM_TYPES else "other",
        "status": str(item.get("status") or "completed")[:32],
    }
    for name in _FIELDS:
        value = item.get(name)
        if value is not None:
            out[name] = clip(
                value if isinstance(value, str) else json.dumps(value, default=str), limits[name]
            )
    for name in ("server", "tool"):
        if item.get(name) is not None:
            out[name] = str(item[name])[:128]
    for name in ("exit_code", "duration_ms"):
        value = item.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
            out[name] = value
    changes = item.get("changes")
    if isinstance(changes, list):
        out["changes"] = [
            {
                "path": str(change.get("path", ""))[:4096],
                "kind": str(change.get("kind", ""))[:16],
                "diff": clip(str(change.get("diff") or ""), diff),
            }
            for change in changes[:MAX_CHANGES]
            if isinstance(change, dict)
        ]
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TurnLog:
    """One turn's items, model and usage while it runs."""

    def __init__(self, turn: str) -> None:
        self.turn = turn
        self.started_at = _now()
        self.started = time.monotonic()
        self.items: dict[str, dict[str, Any]] = {}
        self.left_out = 0
        self.model: str | None = None
        self.usage: dict[str, int] | None = None

    def add(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """Keep the latest version of ``item``; returns it bounded, or None when over ``MAX_ITEMS``."""
        bounded = bound_item(item)
        if bounded["id"] not in self.items and len(self.items) >= MAX_ITEMS:
            self.left_out += 1
            return None
        self.items[bounded["id"]] = bounded
        return bounded

    def record(
        self,
        *,
        thread: str | None,
        provider: str,
        status: str,
        error: str | None,
        prompts: list[str],
        reply: str,
    ) -> dict[str, Any]:
        """The turn's archive line as a dict (bounded; see ``TURN_FORMAT``)."""
        record: dict[str, Any] = {
            "v": FORMAT,
            "turn": self.turn,
            "thread": thread,
            "provider": provider,
            "model": self.model,
            "status": status,
            "error": clip(error, 2_000) if error else None,
            "started_at": self.started_at,
            "ended_at": _now(),
            "duration_ms": int((time.monotonic() - self.started) * 1000),
            "prompts": [clip(p, MAX_PROMPT) for p in prompts[:20]],
            "reply": clip(reply, MAX_REPLY),
            "usage": self.usage,
            "items": list(self.items.values()),
            "items_left_out": self.left_out,
        }
        if len(json.dumps(record, ensure_ascii=False)) > MAX_LINE:
            record["items"] = [bound_item(i, _SMALL, 1_000) for i in record["items"]]
            record["prompts"] = [clip(p, 2_000) for p in record["prompts"]]
            record["reply"] = clip(record["reply"], 4_000)
        while record["items"] and len(json.dumps(record, ensure_ascii=False)) > MAX_LINE:
            record["items"].pop()
            record["items_left_out"] += 1
        return record


def archive_turn(folder: Path, record: dict[str, Any]) -> Path:
    """Append one turn's line to ``folder/turns/<day>.jsonl`` (one ``write`` of one line, with
    ``O_APPEND``: a reader sees whole lines, or a last line without its newline, which it skips)."""
    directory = folder / TURNS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{datetime.now(UTC):%Y-%m-%d}.jsonl"
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return path


def live_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item as the live feed sends it: the archive's item with smaller limits."""
    return bound_item(item, _LIVE, _LIVE_DIFF)


class LiveFeed:
    """Coalesces a turn's steps into ``item`` rows for the host (see the module docstring).

    Nothing is written at once: the first event of a turn arms a timer, and when it fires (after
    ``every`` seconds) the rows gathered so far (the start, the latest version of each changed
    step) go out in one transaction, one doorbell ring. A turn that ends sooner costs no
    transaction of its own: ``end`` hands its rows back, and the runner commits them with the
    turn's reply. ``send(payloads)`` writes rows and rings; ``schedule(delay, callback)`` runs a
    deferred flush (the runner passes ``loop.call_later``)."""

    def __init__(
        self,
        send: Callable[[list[dict[str, Any]]], None],
        schedule: Callable[[float, Callable[[], None]], Any],
        *,
        every: float = LIVE_EVERY,
        per_turn: int = LIVE_ROWS_PER_TURN,
    ) -> None:
        self._send = send
        self._schedule = schedule
        self.every = every
        self.per_turn = per_turn
        self._head: list[dict[str, Any]] = []
        self._pending: dict[str, dict[str, Any]] = {}
        self._turn: str | None = None
        self._sent = 0
        self._timer: Any = None

    def start(self, turn: str, prompts: list[str] | None = None) -> None:
        """A turn begins; ``prompts``: what it was asked (so far), shown while it runs."""
        self.flush()  # what is left of an earlier turn that never ended
        self._turn, self._sent = turn, 0
        self._head = [
            {"turn": turn, "phase": "start", "prompts": [clip(p, 2_000) for p in (prompts or [])[:5]]}
        ]
        self._arm()

    def item(self, turn: str, item: dict[str, Any]) -> None:
        key = str(item["id"])
        if (
            turn != self._turn
            or key not in self._pending
            and self._sent + len(self._pending) >= self.per_turn
        ):
            return
        self._pending[key] = live_item(item)
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self._schedule(self.every, self.flush)

    def flush(self) -> None:
        if rows := self._take():
            self._send(rows)

    def _take(self) -> list[dict[str, Any]]:
        """The rows gathered since the last flush."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rows, self._head = self._head, []
        if self._turn is not None:
            for item in self._pending.values():
                self._sent += 1
                rows.append({"turn": self._turn, "phase": "item", "item": item})
        self._pending.clear()
        return rows

    def end(self, turn: str, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The turn's last rows (its changed steps and its end), for the runner to commit with
        the turn's reply."""
        rows = self._take()
        rows.append(
            {
                "turn": turn,
                "phase": "end",
                "status": record["status"],
                "model": record["model"],
                "usage": record["usage"],
                "duration_ms": record["duration_ms"],
            }
        )
        self._turn = None
        return rows
