"""What the host believes of a container's output: typed models, checked at the boundary.

Every row the container wrote (``outbound.db``) is hostile input: the agent can write the file
itself, not only through the runner. A row is read as bytes, decoded, parsed as JSON and checked
against the model of its kind here, before any of it reaches the database or a chat; whatever
fails becomes a ``BadRow`` (recorded once as an error event and skipped), so one poison row never
blocks the rows after it.

The limits on agent output live here, one place, and README's "Limits on agent output" lists
them. They bound what one container can make the host hold or store, so a flood from one group
never slows another.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

MAX_ROW_BYTES = 1024 * 1024
"""A row's payload larger than this is refused unread (a reply's text is capped well below)."""
MAX_IMPORT_BYTES = 8 * 1024 * 1024
"""Payload bytes read in one import transaction; the rest waits for the next one."""
MAX_IMPORT_ROWS = 200
"""Rows read in one import transaction."""
MAX_REPLY_CHARS = 100_000
"""A reply's text above this is cut, with a note saying how much was left out."""
MAX_MESSAGES_PER_TURN = 50
"""Messages (replies and send_message calls) imported between two answered inbound messages."""
MAX_FILES_PER_TURN = 20
MAX_FILE_BYTES_PER_TURN = 200 * 1024 * 1024
"""Files, and their total size, imported between two answered inbound messages."""
MAX_ERROR_CHARS = 2_000
MAX_PATH_CHARS = 4_096
MAX_TASK_PROMPT_CHARS = 10_000
MAX_SCHEDULE_CHARS = 128
MAX_ACK_REASON_CHARS = 2_000
MAX_CONTINUATION_CHARS = 128
SQLITE_MAX_ID = 2**63 - 1

RowId = Annotated[int, Field(strict=True, ge=1, le=SQLITE_MAX_ID)]
Short = Annotated[str, StringConstraints(max_length=MAX_ERROR_CHARS)]
_CONTINUATION = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _Row(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class MessageRow(_Row):
    kind: Literal["message"]
    text: str
    in_reply_to: list[RowId] = Field(default_factory=list, max_length=10_000)


class FileRow(_Row):
    kind: Literal["file"]
    path: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS)]
    caption: Annotated[str, StringConstraints(max_length=MAX_REPLY_CHARS)] | None = None


class ProgressRow(_Row):
    kind: Literal["progress"]
    text: Annotated[str, StringConstraints(max_length=MAX_ERROR_CHARS)] = ""


class StatusRow(_Row):
    kind: Literal["status"]
    state: Annotated[str, StringConstraints(max_length=32)] | None = None
    error: Short | None = None
    error_kind: Annotated[str, StringConstraints(max_length=32)] | None = None


class ScheduleTask(_Row):
    kind: Literal["task"]
    op: Literal["schedule"]
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TASK_PROMPT_CHARS)]
    schedule: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SCHEDULE_CHARS)]
    group: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    """Another group to run it in: only the main group may (the host checks)."""


class CancelTask(_Row):
    kind: Literal["task"]
    op: Literal["cancel"]
    task_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")]

    @property
    def id(self) -> int:
        return int(self.task_id)


MAX_ITEM_TEXT = 20_000
"""Characters of one text field of a live viewer item (the runner sends at most 4,000)."""
MAX_ITEM_CHANGES = 50
TurnId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
ItemText = Annotated[str, StringConstraints(max_length=MAX_ITEM_TEXT)]
Name = Annotated[str, StringConstraints(max_length=128)]
Count = Annotated[int, Field(strict=True, ge=0, le=2**53)]


class Change(_Row):
    path: Annotated[str, StringConstraints(max_length=MAX_PATH_CHARS)]
    kind: Annotated[str, StringConstraints(max_length=16)] = ""
    diff: ItemText = ""


class ViewItem(_Row):
    """One step of a turn as the conversation viewer shows it (``agent_runner.items``)."""

    id: Name
    type: Literal["reasoning", "command", "file_change", "tool_call", "message", "web_search", "other"]
    status: Annotated[str, StringConstraints(max_length=32)] = "completed"
    text: ItemText | None = None
    command: ItemText | None = None
    output: ItemText | None = None
    exit_code: Annotated[int, Field(strict=True, ge=-(2**31), le=2**31)] | None = None
    duration_ms: Count | None = None
    changes: list[Change] | None = Field(default=None, max_length=MAX_ITEM_CHANGES)
    server: Name | None = None
    tool: Name | None = None
    arguments: ItemText | None = None
    result: ItemText | None = None
    error: ItemText | None = None


class Usage(_Row):
    input: Count | None = None
    cached_input: Count | None = None
    output: Count | None = None
    reasoning: Count | None = None
    total: Count | None = None


class ItemRow(_Row):
    """The live feed of a turn: its start, each step, its end (never stored, only shown)."""

    kind: Literal["item"]
    turn: TurnId
    phase: Literal["start", "item", "end"]
    prompts: list[ItemText] = Field(default_factory=list, max_length=20)
    """At the start: what the turn was asked."""
    item: ViewItem | None = None
    status: Annotated[str, StringConstraints(max_length=32)] | None = None
    model: Name | None = None
    usage: Usage | None = None
    duration_ms: Count | None = None


MAX_LIVE_TEXT = 4_000
"""Characters of one text of a live event (the runner sends at most that; the archive keeps the
turn's full, bounded text, and the viewer reads it from there)."""
MAX_LIVE_LIST = 10
"""Prompts or file changes of one live event."""
MAX_LIVE_EVENT_BYTES = 32 * 1024
"""A live event larger than this, once its texts are cut, keeps only its headline."""
MAX_LIVE_BATCH_BYTES = 256 * 1024
"""Live event bytes published per import batch (the newest steps; the last start and end)."""
_HEADLINE = ("id", "type", "status", "exit_code", "duration_ms", "server", "tool")


def live_event(row: ItemRow) -> dict[str, Any]:
    """The live feed's event for an ``item`` row: texts cut to ``MAX_LIVE_TEXT``, lists to
    ``MAX_LIVE_LIST`` (then smaller), at most ``MAX_LIVE_EVENT_BYTES`` (else only its headline);
    ``cut`` says something was left out (the archive has it once the turn ends)."""
    cut = [False]

    def shrink(value: Any, text: int, items: int) -> Any:
        if isinstance(value, str) and len(value) > text:
            cut[0] = True
            return value[:text] + "…"
        if isinstance(value, list):
            if len(value) > items:
                cut[0] = True
            return [shrink(v, text, items) for v in value[:items]]
        if isinstance(value, dict):
            return {k: shrink(v, text, items) for k, v in value.items()}
        return value

    full = row.model_dump(exclude={"kind"}, exclude_none=True)
    event: dict[str, Any] = {"type": "item", **shrink(full, MAX_LIVE_TEXT, MAX_LIVE_LIST)}
    if live_bytes(event) > MAX_LIVE_EVENT_BYTES:
        event = {"type": "item", **shrink(full, MAX_LIVE_TEXT // 4, MAX_LIVE_LIST // 2)}
    if live_bytes(event) > MAX_LIVE_EVENT_BYTES:
        cut[0] = True
        event["prompts"] = [p[:200] for p in event.get("prompts", [])[:1]]
        if "item" in event:
            event["item"] = {k: v for k, v in event["item"].items() if k in _HEADLINE}
    if cut[0]:
        event["cut"] = True
    return event


def live_bytes(event: dict[str, Any]) -> int:
    """An event's size as a websocket sends it."""
    return len(json.dumps(event))


Row = MessageRow | FileRow | ProgressRow | StatusRow | ScheduleTask | CancelTask | ItemRow
_TASK = TypeAdapter(Annotated[ScheduleTask | CancelTask, Field(discriminator="op")])
_BY_KIND: dict[str, TypeAdapter[Any]] = {
    "message": TypeAdapter(MessageRow),
    "file": TypeAdapter(FileRow),
    "progress": TypeAdapter(ProgressRow),
    "status": TypeAdapter(StatusRow),
    "task": _TASK,
    "item": TypeAdapter(ItemRow),
}


@dataclass(frozen=True)
class BadRow:
    """A row that is not what the runner writes: why, for the error event."""

    reason: str


def parse_row(kind: bytes | str | None, payload: bytes | None, size: int) -> Row | BadRow:
    """One outbound row as its model, or why it is refused. ``payload`` is None when the row
    was too large to read (``size`` bytes)."""
    if payload is None:
        return BadRow(f"payload is {size:,} bytes, over the {MAX_ROW_BYTES:,}-byte limit")
    try:
        kind_text = kind.decode() if isinstance(kind, bytes) else kind
        data = json.loads(payload.decode())
        json.dumps(data, ensure_ascii=False).encode()  # lone surrogates ("\ud800") cannot be stored
    except UnicodeError:
        return BadRow("not valid UTF-8")
    except ValueError as exc:
        return BadRow(f"payload is not JSON: {str(exc)[:200]}")
    adapter = _BY_KIND.get(kind_text) if isinstance(kind_text, str) else None
    if adapter is None:
        return BadRow(f"unknown kind {str(kind_text)[:40]!r}")
    if not isinstance(data, dict):
        return BadRow("payload is not a JSON object")
    try:
        row: Row = adapter.validate_python({**data, "kind": kind_text})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        return BadRow(f"{kind_text} row: {where}: {first['msg']}")
    return row


class Ack(_Row):
    inbound_id: RowId
    status: Literal["done", "failed"]
    reason: Annotated[str, StringConstraints(max_length=MAX_ACK_REASON_CHARS)] | None = None


def parse_ack(inbound_id: Any, status: Any, reason: Any) -> Ack | None:
    """An ack row as its model; None for a row that is not one (ignored, as if absent)."""
    if isinstance(reason, bytes):
        reason = reason.decode(errors="replace")
    if isinstance(status, bytes):
        status = status.decode(errors="replace")
    if isinstance(reason, str):
        reason = reason[:MAX_ACK_REASON_CHARS]
    try:
        return Ack(inbound_id=inbound_id, status=status, reason=reason)
    except ValidationError:
        return None


def parse_continuation(value: Any) -> str | None:
    """The provider thread id the runner stored, if it looks like one."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) and _CONTINUATION.match(value) else None


def cap_text(text: str, limit: int = MAX_REPLY_CHARS) -> str:
    """``text`` cut to ``limit`` characters with a note of how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n[… reply cut: {len(text) - limit:,} more characters over the {limit:,} limit]"
