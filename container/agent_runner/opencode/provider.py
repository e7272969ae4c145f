"""The OpenCode provider: drives ``opencode serve`` through its HTTP API and event stream.
What was observed on the real binary (and the traps) is in ``OPENCODE.md`` beside this file.

- **Thread** = an OpenCode session (its id is the continuation). Sessions live in OpenCode's data
  dir, which the host mounts per group, so a respawned container resumes the same session; an id
  the server no longer knows starts a fresh session (``InitEvent.fresh``).
- **Turn**: ``prompt_async`` with the text, then events until the session is idle again. The
  reply is the text of the turn's last assistant message that has text.
- **Follow-up during a turn**: posted at once; OpenCode's loop takes a user message that arrives
  while it works into the same run. The turn ends only when every posted message has been seen
  as a user message and the session went idle after it, so nothing a follow-up carried is lost.
- **Interrupt**: ``abort``; the turn ends "interrupted". When its inputs will be sent again
  (``resend``), the turn is reverted first, so the thread does not hold them twice.
- **Errors**: an assistant message's error (``APIError`` with its status, ``ProviderAuthError``…)
  is classified; OpenCode retries a retryable model error on its own without a bound, so after
  ``MAX_RETRIES`` retries the turn is aborted and reported as a transport failure (retryable: the
  runner's own backoff takes over, as for Codex).
- **Permissions**: none are expected (``permission: allow``); any asked is answered, never left
  waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agent_runner.opencode.server import ApiError, Server, ServerError
from agent_runner.provider import (
    ActivityEvent,
    ErrorEvent,
    ErrorKind,
    Event,
    InitEvent,
    Input,
    ProgressEvent,
    ResultEvent,
)

log = logging.getLogger(__name__)

MAX_RETRIES = 2
"""OpenCode's own retries of a failing model call before the turn is ended as a transport failure."""
_GONE = {"type": "nanohost.server-gone"}
_ABORTED = {"type": "nanohost.aborted"}
_TRANSPORT = re.compile(
    r"connect|econnrefused|econnreset|socket|network|fetch failed|timed? ?out|stream|unreachable|"
    r"unknown nanohost placeholder",
    re.I,
)


def classify(error: dict[str, Any]) -> tuple[str, ErrorKind, bool]:
    """(message, kind, retryable) of an OpenCode message error."""
    name = str(error.get("name") or "error")
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    assert isinstance(data, dict)
    message = str(data.get("message") or name)
    status = data.get("statusCode")
    if name == "ProviderAuthError" or status in (401, 403):
        return message, "auth", False
    if status == 429:
        return message, "quota", True
    if (isinstance(status, int) and (status >= 500 or status == 408)) or (
        status is None and _TRANSPORT.search(message)
    ):
        return message, "transport", True
    return message, "other", False


@dataclass
class _Turn:
    ids: list[int]
    texts: list[str]
    posted: int = 0
    in_flight: int = 0
    users: list[str] = field(default_factory=list)
    assistants: list[str] = field(default_factory=list)
    idle_after_last_user: bool = False
    error: dict[str, Any] | None = None
    aborted: bool = False
    retries: int = 0

    def done(self) -> bool:
        return self.idle_after_last_user and self.in_flight == 0 and len(self.users) >= self.posted


class OpenCodeQuery:
    def __init__(self, provider: OpenCodeProvider, first: Input, continuation: str | None) -> None:
        self._provider = provider
        self._continuation = continuation
        self._queue: list[Input] = [first]
        self._changed = asyncio.Event()
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ended = False
        self._aborted = False
        self._resend = True
        self._session: str | None = None
        self._turn: _Turn | None = None
        self._posts: set[asyncio.Task[None]] = set()

    # --- the port -------------------------------------------------------------------------

    def push(self, item: Input) -> None:
        turn = self._turn
        if turn is not None and not turn.aborted and self._session is not None:
            turn.ids.extend(item.ids)
            turn.texts.append(item.text)
            self._post(turn, item)  # steered: OpenCode's running loop takes it in
        else:
            self._queue.append(item)
            self._changed.set()

    def end(self) -> None:
        self._ended = True
        self._changed.set()

    async def abort(self, *, resend: bool = True) -> None:
        self._aborted = True
        self._resend = resend
        self._changed.set()
        if self._turn is not None and self._session is not None:
            self._turn.aborted = True
            with contextlib.suppress(Exception):
                await self._provider.server.call("POST", f"/session/{self._session}/abort")
        self._events.put_nowait(_ABORTED)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._run()

    # --- the work -------------------------------------------------------------------------

    async def _open(self) -> tuple[str, bool]:
        server = self._provider.server
        if self._continuation:
            try:
                await server.call("GET", f"/session/{self._continuation}")
                await self._drop_unanswered(self._continuation)
                return self._continuation, False
            except ApiError as exc:
                if exc.status not in (400, 404):
                    raise
                log.warning("opencode session %s is gone (%s): starting a new one", self._continuation, exc)
        created = await server.call("POST", "/session", {})
        return str(created["id"]), bool(self._continuation)

    async def _drop_unanswered(self, session: str) -> None:
        """A container killed mid-turn leaves its user messages in the session, unanswered; the
        runner sends them again (they were never acknowledged), so the session drops them first."""
        messages = await self._provider.server.call("GET", f"/session/{session}/message")
        dangling = unanswered_from(messages if isinstance(messages, list) else [])
        if dangling is not None:
            log.info("opencode session %s: dropping the turn a stopped container left unanswered", session)
            await self._provider.server.call("POST", f"/session/{session}/revert", {"messageID": dangling})

    async def _run(self) -> AsyncIterator[Event]:
        session, fresh = await self._open()
        self._session = session
        self._provider.listeners[session] = self._events
        try:
            yield InitEvent(session, fresh=fresh)
            while not self._aborted:
                if not self._queue:
                    if self._ended:
                        return
                    await self._changed.wait()
                    self._changed.clear()
                    continue
                batch, self._queue = self._queue, []
                async for event in self._turn_events(batch):
                    yield event
        finally:
            self._provider.listeners.pop(session, None)
            for task in self._posts:
                task.cancel()

    def _post(self, turn: _Turn, item: Input) -> None:
        turn.posted += 1
        turn.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._prompt(turn, item))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _prompt(self, turn: _Turn, item: Input) -> None:
        assert self._session is not None
        body = {"parts": [{"type": "text", "text": item.text}]}
        try:
            await self._provider.server.call("POST", f"/session/{self._session}/prompt_async", body)
        except Exception as exc:
            log.warning("opencode refused a prompt (%s); it waits for the next turn", exc)
            turn.posted -= 1
            for i in item.ids:
                turn.ids.remove(i)
            self._queue.append(item)
        finally:
            turn.in_flight -= 1
            self._events.put_nowait({"type": "nanohost.posted"})

    async def _turn_events(self, batch: list[Input]) -> AsyncIterator[Event]:
        server = self._provider.server
        session = self._session
        assert session is not None
        first = Input("\n\n".join(i.text for i in batch), tuple(x for i in batch for x in i.ids))
        turn = _Turn(ids=[], texts=[])
        self._turn = turn
        turn.ids.extend(first.ids)
        turn.texts.append(first.text)
        turn.posted = 1  # a refused first prompt fails the query: the runner counts the try
        await server.call(
            "POST", f"/session/{session}/prompt_async", {"parts": [{"type": "text", "text": first.text}]}
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._provider.turn_timeout
        timed_out = False
        try:
            while not turn.done():
                left = deadline - loop.time()
                if left <= 0 and not timed_out:
                    timed_out = True
                    turn.aborted = True
                    deadline = loop.time() + 10  # the abort itself gets a few seconds
                    with contextlib.suppress(Exception):
                        await server.call("POST", f"/session/{session}/abort")
                    continue
                if left <= 0:
                    raise ServerError("opencode did not end an aborted turn")
                try:
                    event = await asyncio.wait_for(self._events.get(), left)
                except TimeoutError:
                    continue
                if event is _GONE:
                    raise ServerError("the opencode server stopped: " + " | ".join(server.output))
                for out in await self._handle(turn, event):
                    yield out
        finally:
            self._turn = None
        text, error = await self._outcome(turn)
        ids = tuple(turn.ids)
        if timed_out:
            message = f"the turn took longer than {self._provider.turn_timeout:g} s and was ended"
            yield ErrorEvent(message, kind="timeout")
            yield ResultEvent(text, "failed", ids, error=message, kind="timeout")
            return
        aborted = turn.aborted or (error or {}).get("name") == "MessageAbortedError"
        if aborted and (self._aborted or turn.retries <= MAX_RETRIES):
            if self._resend:
                await self._revert(turn)
            yield ResultEvent("", "interrupted", ids)
            return
        if error is not None or turn.retries > MAX_RETRIES:
            message, kind, retryable = classify(error or {"name": "APIError", "data": {}})
            if turn.retries > MAX_RETRIES:
                message, kind, retryable = turn_retry_message(turn), "transport", True
            retryable = retryable and not text.strip()
            if retryable:
                await self._revert(turn)  # the runner sends the same inputs again
            yield ErrorEvent(message, kind=kind, retryable=retryable)
            yield ResultEvent(text, "failed", ids, error=message, kind=kind, retryable=retryable)
            return
        yield ResultEvent(text, "completed", ids)

    async def _handle(self, turn: _Turn, event: dict[str, Any]) -> list[Event]:
        kind = event.get("type")
        props = event.get("properties")
        props = props if isinstance(props, dict) else {}
        out: list[Event] = []
        if kind == "message.updated":
            info = props.get("info") if isinstance(props.get("info"), dict) else {}
            assert isinstance(info, dict)
            message_id = str(info.get("id", ""))
            if info.get("role") == "user" and message_id not in turn.users:
                turn.users.append(message_id)
                turn.idle_after_last_user = False
            elif info.get("role") == "assistant":
                if message_id not in turn.assistants:
                    turn.assistants.append(message_id)
                if isinstance(info.get("error"), dict):
                    turn.error = info["error"]
        elif kind == "message.part.updated":
            part = props.get("part") if isinstance(props.get("part"), dict) else {}
            assert isinstance(part, dict)
            if part.get("type") == "tool":
                out.append(ActivityEvent("tool", str(part.get("tool", ""))))
            elif part.get("type") == "text" and part.get("messageID") in turn.assistants:
                out.append(ProgressEvent(str(part.get("text", ""))))
        elif kind == "session.status":
            status = props.get("status") if isinstance(props.get("status"), dict) else {}
            assert isinstance(status, dict)
            if status.get("type") == "idle":
                turn.idle_after_last_user = True
            elif status.get("type") == "retry":
                turn.retries += 1
                turn.error = {"name": "APIError", "data": {"message": str(status.get("message", ""))}}
                out.append(ProgressEvent(f"The AI model service did not answer; retrying ({turn.retries})."))
                if turn.retries > MAX_RETRIES and not turn.aborted:
                    turn.aborted = True
                    with contextlib.suppress(Exception):
                        await self._provider.server.call("POST", f"/session/{self._session}/abort")
        elif kind == "session.idle":
            turn.idle_after_last_user = True
        elif kind == "session.error":
            if isinstance(props.get("error"), dict):
                turn.error = props["error"]
        elif kind in ("permission.asked", "permission.updated"):
            await self._allow(props)
        return out

    async def _allow(self, props: dict[str, Any]) -> None:
        permission = props.get("id")
        if not isinstance(permission, str):
            return
        log.info("opencode asked for permission %s: allowed", props.get("permission") or props.get("type"))
        with contextlib.suppress(Exception):
            await self._provider.server.call(
                "POST", f"/session/{self._session}/permissions/{permission}", {"response": "always"}
            )

    async def _outcome(self, turn: _Turn) -> tuple[str, dict[str, Any] | None]:
        """The reply text and the error of the turn, read back from the session's messages."""
        messages = await self._provider.server.call("GET", f"/session/{self._session}/message")
        text, error = "", turn.error
        for message in messages if isinstance(messages, list) else []:
            info = message.get("info") or {}
            if info.get("role") != "assistant" or info.get("id") not in turn.assistants:
                continue
            parts = [
                str(p.get("text", ""))
                for p in message.get("parts") or []
                if p.get("type") == "text" and not p.get("synthetic") and not p.get("ignored")
            ]
            if "".join(parts).strip():
                text = "".join(parts)
            if isinstance(info.get("error"), dict):
                error = info["error"]
        return text, error

    async def _revert(self, turn: _Turn) -> None:
        """Undo the turn in the session (its messages go), so resent inputs are not there twice."""
        if not turn.users:
            return
        with contextlib.suppress(Exception):
            await self._provider.server.call(
                "POST", f"/session/{self._session}/revert", {"messageID": turn.users[0]}
            )


def unanswered_from(messages: list[dict[str, Any]]) -> str | None:
    """The first user message after the last finished answer (an assistant message that ended for
    a reason other than calling tools, or with an error), if any: where an unfinished turn starts."""
    start: str | None = None
    for message in messages:
        info = message.get("info") if isinstance(message, dict) else None
        if not isinstance(info, dict):
            continue
        if info.get("role") == "user" and start is None:
            start = str(info.get("id"))
        elif info.get("role") == "assistant":
            finish = info.get("finish")
            if info.get("error") or (isinstance(finish, str) and finish not in ("tool-calls", "unknown")):
                start = None
    return start


def turn_retry_message(turn: _Turn) -> str:
    detail = classify(turn.error)[0] if turn.error else "no answer"
    return f"the model could not be reached after {turn.retries} tries: {detail}"


class OpenCodeProvider:
    """An agent backend over one ``opencode serve`` process."""

    name = "opencode"

    def __init__(self, server: Server, *, turn_timeout: float = 600.0) -> None:
        self.server = server
        self.turn_timeout = turn_timeout
        self.listeners: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._pump: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        await self.server.start()
        self._pump = asyncio.get_running_loop().create_task(self._read_events())
        try:
            async with asyncio.timeout(30):  # the first event says the stream is live
                await self._subscribed.wait()
        except TimeoutError:
            raise ServerError("opencode's event stream did not open") from None

    async def _read_events(self) -> None:
        try:
            async for event in self.server.events():
                if event.get("type") == "server.connected":
                    self._subscribed.set()
                    continue
                props = event.get("properties")
                session = props.get("sessionID") if isinstance(props, dict) else None
                if isinstance(session, str) and session in self.listeners:
                    self.listeners[session].put_nowait(event)
        except Exception as exc:
            log.warning("opencode event stream ended: %s", exc)
        finally:
            for queue in self.listeners.values():
                queue.put_nowait(_GONE)

    def query(self, first: Input, continuation: str | None) -> OpenCodeQuery:
        return OpenCodeQuery(self, first, continuation)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self.server.stop()
