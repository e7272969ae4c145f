"""The mock provider: a deterministic echo agent for demos and tests.

It follows the provider contract exactly (init, push/end/abort, one ResultEvent per turn naming
the ids it answered). A prompt containing ``[slow]`` holds its turn open until a follow-up is
pushed (steered into the same turn) or the query is aborted, so tests can exercise those paths
without timing tricks. ``[fail]`` makes the turn fail with a classified error. ``[sendback]``
sends every attached file back to the chat, so tests can carry a file both ways. ``[flaky]``
fails on transport (as if the model could not be reached) the first ``FLAKY_FAILURES`` times
a text is tried, then answers; ``[unreachable]`` always fails on transport.

Each turn reports the steps of a real one to the viewer (``ItemEvent``): a reasoning summary, a
command with its output, a small file change, the reply, a model name and token usage.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from agent_runner.config import Paths, RunnerConfig
from agent_runner.provider import (
    ErrorEvent,
    Event,
    FileEvent,
    InitEvent,
    Input,
    ItemEvent,
    ProgressEvent,
    ResultEvent,
    TurnInfoEvent,
)

_ATTACHED = re.compile(r"\(attached file: (?P<path>[^)\n]+)\)")
FLAKY_FAILURES = 2
TRANSPORT_ERROR = "stream disconnected before completion: mock connection reset"
MODEL = "mock-echo"


def _items(turn: str, text: str, reply: str) -> list[Event]:
    """What the mock 'did' in a turn, as a real agent's steps."""
    command = {
        "id": "cmd-1",
        "type": "command",
        "command": "printf '%s' \"$MESSAGE\"",
        "status": "inProgress",
    }
    diff = f"--- /dev/null\n+++ b/echo.txt\n@@ -0,0 +1 @@\n+{text[:200]}\n"
    return [
        ItemEvent(
            turn, {"id": "reasoning-1", "type": "reasoning", "text": "The user wants their words back."}
        ),
        ItemEvent(turn, command),
        ItemEvent(turn, {**command, "status": "completed", "output": text, "exit_code": 0, "duration_ms": 3}),
        ItemEvent(
            turn,
            {
                "id": "patch-1",
                "type": "file_change",
                "changes": [{"path": "echo.txt", "kind": "add", "diff": diff}],
            },
        ),
        ItemEvent(turn, {"id": "message-1", "type": "message", "text": reply}),
        TurnInfoEvent(
            turn, MODEL, {"input": len(text), "output": len(reply), "total": len(text) + len(reply)}
        ),
    ]


class MockQuery:
    def __init__(self, first: Input, continuation: str | None, tries: dict[int, int] | None = None) -> None:
        self._tries = tries if tries is not None else {}
        self._continuation = continuation or f"mock-{uuid.uuid4()}"
        self._queue: list[Input] = [first]
        self._changed = asyncio.Event()
        self._ended = False
        self._aborted = False

    def push(self, item: Input) -> None:
        self._queue.append(item)
        self._changed.set()

    def end(self) -> None:
        self._ended = True
        self._changed.set()

    async def abort(self, *, resend: bool = True) -> None:
        self._aborted = True
        self._changed.set()

    async def _wait(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    def _transport_fails(self, turn: list[Input]) -> bool:
        text = " | ".join(item.text for item in turn)
        if "[unreachable]" in text:
            return True
        flaky = [i for item in turn if "[flaky]" in item.text for i in item.ids]
        if not flaky:
            return False
        key = min(flaky)  # the same message, however it is merged with others on a retry
        self._tries[key] = self._tries.get(key, 0) + 1
        return self._tries[key] <= FLAKY_FAILURES

    async def _events(self) -> AsyncIterator[Event]:
        yield InitEvent(self._continuation)
        while not self._aborted:
            if not self._queue:
                if self._ended:
                    return
                await self._wait()
                continue
            turn = [self._queue.pop(0)]
            turn_id = f"mock-{uuid.uuid4().hex[:12]}"
            yield TurnInfoEvent(turn_id, MODEL)
            if "[slow]" in turn[0].text:
                yield ProgressEvent("thinking…")
                waiting = "Waiting for the rest of the message."
                yield ItemEvent(turn_id, {"id": "reasoning-0", "type": "reasoning", "text": waiting})
                while not self._queue and not self._aborted:
                    await self._wait()
                if self._aborted:
                    yield ResultEvent("", "interrupted", turn[0].ids)
                    return
                turn.append(self._queue.pop(0))  # steered into the running turn
            ids = tuple(i for item in turn for i in item.ids)
            if any("[fail]" in item.text for item in turn):
                yield ErrorEvent("mock failure requested", kind="other")
                yield ResultEvent("", "failed", ids, error="mock failure requested")
                continue
            if self._transport_fails(turn):
                yield ErrorEvent(TRANSPORT_ERROR, kind="transport", retryable=True)
                yield ResultEvent("", "failed", ids, error=TRANSPORT_ERROR, kind="transport", retryable=True)
                continue
            for item in turn:
                if "[sendback]" in item.text:
                    for found in _ATTACHED.finditer(item.text):
                        path = Path(found["path"])
                        yield FileEvent(path, caption=f"back: {path.name}")
            said = " | ".join(item.text for item in turn)
            for event in _items(turn_id, said, "echo: " + said):
                yield event
            yield ResultEvent("echo: " + said, "completed", ids)


class MockProvider:
    name = "mock"

    def __init__(self) -> None:
        self._tries: dict[int, int] = {}

    async def start(self) -> None:
        return None

    def query(self, first: Input, continuation: str | None) -> MockQuery:
        return MockQuery(first, continuation, self._tries)

    async def close(self) -> None:
        return None


def build(config: RunnerConfig, paths: Paths, base_url: str) -> MockProvider:
    """The runner side of the ``mock`` provider (``runner.json``: ``agent_runner.mock:build``)."""
    return MockProvider()
