"""The provider port: what the runner asks of an agent backend (codex, mock).

The runner owns the queues; a provider only turns inputs into events. One
``Query`` is one burst of conversation on one thread: it starts with a first
input, accepts follow-ups while it runs (``push``), and yields events for one or
more turns. Every turn ends with exactly one ``ResultEvent`` that names the
inbound row ids it answered, so the runner acknowledges exactly what was
consumed and nothing a racing follow-up carried is ever lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

ErrorKind = Literal[
    "auth", "quota", "sandbox", "stale_session", "crash", "timeout", "config", "transport", "other"
]
TurnStatus = Literal["completed", "interrupted", "failed"]


@dataclass(frozen=True)
class Input:
    """Text for the agent and the inbound row ids it carries."""

    text: str
    ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class InitEvent:
    """The thread is ready; ``continuation`` resumes it after a restart."""

    continuation: str
    fresh: bool = False  # True when a stale continuation was replaced by a new thread


@dataclass(frozen=True)
class ActivityEvent:
    """The agent is doing something (a command, a tool call); keeps the heartbeat honest."""

    kind: str
    detail: str = ""


@dataclass(frozen=True)
class ProgressEvent:
    """Human-readable progress, e.g. streamed reply text or "Reconnecting... 2/5"."""

    text: str


@dataclass(frozen=True)
class FileEvent:
    """A file the agent produced (e.g. a generated image) to deliver before the result."""

    path: Path
    caption: str | None = None


@dataclass(frozen=True)
class ErrorEvent:
    """A failure, classified so the host can tell transient from permanent."""

    message: str
    kind: ErrorKind = "other"
    retryable: bool = False


@dataclass(frozen=True)
class ResultEvent:
    """The end of one turn: the reply text and the inbound ids it answered.

    A failed turn says what kind of failure it was and whether retrying can help
    (``retryable``: the model was not reached or its answer was cut off on the way). The
    provider has already undone what it could of a retryable turn (codex rolls the turn back),
    so the runner may send the same inputs again."""

    text: str
    status: TurnStatus = "completed"
    ids: tuple[int, ...] = field(default=())
    error: str | None = None
    kind: ErrorKind = "other"
    retryable: bool = False


@dataclass(frozen=True)
class ItemEvent:
    """One step of a turn as the agent lived it, for the conversation viewer and the archive:
    ``item`` is provider-neutral (``agent_runner.items`` describes its shape). The same ``id``
    may come again as the step goes on (started, then completed); the latest version counts."""

    turn: str
    item: dict[str, Any]


@dataclass(frozen=True)
class TurnInfoEvent:
    """A turn began (its first event) or learned its model or token usage."""

    turn: str
    model: str | None = None
    usage: dict[str, int] | None = None


Event = (
    InitEvent
    | ActivityEvent
    | ProgressEvent
    | FileEvent
    | ErrorEvent
    | ResultEvent
    | ItemEvent
    | TurnInfoEvent
)


class Query(Protocol):
    """A running conversation burst. Iterate it for events until it is exhausted."""

    def push(self, item: Input) -> None:
        """Add a follow-up: steered into the active turn, or queued for the next one."""

    def end(self) -> None:
        """No more follow-ups will come; finish the queued turns, then stop iterating."""

    async def abort(self, *, resend: bool = True) -> None:
        """Interrupt the active turn (it ends with status "interrupted") and stop. ``resend``: its
        inputs will be sent again (a restart, a retry), so the provider undoes the interrupted
        turn where it can; False (a user's ``/stop``) keeps it in the thread."""

    def __aiter__(self) -> AsyncIterator[Event]: ...


class Provider(Protocol):
    """An agent backend. ``start`` once per container wake, ``close`` on shutdown."""

    name: str

    async def start(self) -> None: ...

    def query(self, first: Input, continuation: str | None) -> Query: ...

    async def close(self) -> None: ...
