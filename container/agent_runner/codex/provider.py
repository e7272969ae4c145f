"""CodexProvider: the provider port over one long-lived `codex app-server`.

Traps this module is built around (CODEX.md §5): ``turn/start`` during an active turn returns a
phantom turn that never completes, so turns are strictly serialised per thread and follow-ups
are steered (``turn/steer``) into the active turn, or queued for the next one when steering
fails. A steer racing the turn's completion is settled by the order of the app-server's output:
the completion is processed only after every steer sent before it has its answer, so each
follow-up lands in exactly one turn. ``turn/interrupt`` on a finished turn never answers, so it
always has a timeout. If the process dies mid-turn, the turn ends at once with the exit cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from agent_runner import phases
from agent_runner.codex.chatgpt import REFRESH_URL_ENV, write_auth_json
from agent_runner.codex.config import render, write_config
from agent_runner.codex.env import codex_env
from agent_runner.codex.errors import (
    AppServerExited,
    CodexStartError,
    RpcError,
    classify,
    failure,
    is_stale_thread,
)
from agent_runner.codex.items import CommandSteps
from agent_runner.codex.rpc import AppServer
from agent_runner.provider import (
    ActivityEvent,
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

log = logging.getLogger(__name__)

INTERRUPT_TIMEOUT = 5.0
ABORT_TIMEOUT = 1.5
"""``turn/interrupt`` when the container is stopping: the runner must be gone within a few seconds."""
ROLLBACK_TIMEOUT = 2.0
CLOSE_GRACE = 1.0
"""Seconds the app-server gets to exit after its stdin closes (it takes ~20 ms), then SIGKILL."""
REQUEST_TIMEOUT = 30.0
_TOOL_ITEMS = ("commandExecution", "mcpToolCall", "fileChange", "webSearch")
_CRASH = "__crash__"


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    """Codex's ``TokenUsageBreakdown`` as the viewer's usage."""
    names = {
        "input": "inputTokens",
        "cached_input": "cachedInputTokens",
        "output": "outputTokens",
        "reasoning": "reasoningOutputTokens",
        "total": "totalTokens",
    }
    return {
        ours: value
        for ours, theirs in names.items()
        if isinstance(value := usage.get(theirs), int) and not isinstance(value, bool)
    }


def _text_input(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "text_elements": []}]


LATE_ITEMS = 0.5
"""Seconds to wait after a turn for the ``item/completed`` of commands still open (see
``CodexQuery._late_completions``)."""


class CodexProvider:
    """One app-server per container wake, kept across turns and queries; respawned after a crash."""

    name = "codex"

    def __init__(
        self,
        *,
        codex_home: Path,
        cwd: Path,
        base_url: str,
        placeholder: str,
        model: str | None = None,
        reasoning_effort: str | None = None,
        mcp_servers: Mapping[str, Mapping[str, Any]] | None = None,
        turn_timeout: float = 600.0,
        codex_bin: str = "codex",
        auth: str = "api-key",
    ) -> None:
        self.codex_home = codex_home
        self.cwd = cwd
        self.turn_timeout = turn_timeout
        self.codex_bin = codex_bin
        self._chatgpt = placeholder if auth == "chatgpt" else None  # chatgpt.py: the dummy sign-in
        self.model = model
        self._config = render(
            base_url=base_url,
            model=model,
            reasoning_effort=reasoning_effort,
            mcp_servers=mcp_servers,
            chatgpt=self._chatgpt is not None,
        )
        self._env = codex_env(
            os.environ,
            codex_home=str(codex_home),
            home=os.environ.get("HOME", str(codex_home)),
            placeholder=placeholder,
        )
        if self._chatgpt is not None:
            self._env[REFRESH_URL_ENV] = f"{base_url}/oauth/token"  # the gateway, never the issuer
        self._server: AppServer | None = None
        self._loaded: set[str] = set()
        self._routes: dict[str, asyncio.Queue[tuple[str, dict[str, Any]]]] = {}

    async def start(self) -> None:
        write_config(self.codex_home, self._config)
        write_auth_json(self.codex_home, self._chatgpt)
        await self._ensure_server()

    async def _ensure_server(self) -> AppServer:
        if self._server is not None and self._server.running:
            return self._server
        started = time.monotonic()
        phases.mark("codex_spawn")
        server = AppServer([self.codex_bin], self._env, str(self.cwd), self._route, self._exited)
        await server.start()
        try:
            await server.request(
                "initialize",
                {
                    "clientInfo": {"name": "nanohost", "title": "nanohost", "version": "0.1.0"},
                    "capabilities": {"experimentalApi": True},
                },
            )
            server.notify("initialized")
            phases.mark("codex_initialized")
        except (AppServerExited, RpcError, TimeoutError) as exc:
            await server.close(grace=1)
            raise CodexStartError(f"codex app-server did not start: {server.exit_cause or exc}") from None
        self._server = server
        self._loaded.clear()
        log.info("codex app-server ready in %.0f ms", (time.monotonic() - started) * 1000)
        return server

    def _route(self, method: str, params: dict[str, Any]) -> None:
        if method == "mcpServer/startupStatus/updated" and params.get("status") == "ready":
            phases.mark(f"mcp_ready_{params.get('name')}")
        thread = params.get("threadId") or (params.get("thread") or {}).get("id")
        queue = self._routes.get(str(thread)) if thread else None
        if queue is not None:
            queue.put_nowait((method, params))

    def _exited(self, cause: str) -> None:
        log.error("%s", cause)
        for queue in self._routes.values():
            queue.put_nowait((_CRASH, {"cause": cause}))

    def query(self, first: Input, continuation: str | None) -> CodexQuery:
        return CodexQuery(self, first, continuation)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close(grace=CLOSE_GRACE)
            self._server = None

    def kill_for_tests(self) -> None:
        """Kill the app-server process (tests exercise the mid-turn death path with it)."""
        if self._server is not None:
            self._server.kill()


class CodexQuery:
    """One burst on one thread; see the module docstring for the turn discipline."""

    def __init__(self, provider: CodexProvider, first: Input, continuation: str | None) -> None:
        self.p = provider
        self.continuation = continuation
        self.queue: list[Input] = [first]
        self.thread_id: str | None = None
        self.active_turn: str | None = None
        self.turn_inputs: list[Input] = []
        self.notes: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._steers: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._ended = False
        self._aborted = False
        self._resend = True
        """When aborted: the inputs will be sent again, so an interrupted turn is rolled back."""
        self._interrupt_sent = False
        self.model: str | None = provider.model

    # --- the port -------------------------------------------------------------------------

    def push(self, item: Input) -> None:
        if self.active_turn is not None and self.thread_id is not None and not self._aborted:
            self._steers.append(asyncio.get_running_loop().create_task(self._steer(self.active_turn, item)))
        else:
            self.queue.append(item)
            self._changed.set()

    def end(self) -> None:
        self._ended = True
        self._changed.set()

    async def abort(self, *, resend: bool = True) -> None:
        self._aborted = True
        self._resend = resend
        self._changed.set()
        await self._interrupt(ABORT_TIMEOUT)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    # --- internals ------------------------------------------------------------------------

    async def _steer(self, turn_id: str, item: Input) -> None:
        assert self.p._server is not None and self.thread_id is not None
        try:
            await self.p._server.request(
                "turn/steer",
                {
                    "threadId": self.thread_id,
                    "expectedTurnId": turn_id,
                    "input": _text_input(item.text),
                },
                timeout=REQUEST_TIMEOUT,
            )
        except (RpcError, AppServerExited, TimeoutError) as exc:
            log.info("steer not accepted (%s); queued for the next turn", exc)
            self.queue.append(item)
            self._changed.set()
        else:
            self.turn_inputs.append(item)

    async def _interrupt(self, timeout: float = INTERRUPT_TIMEOUT) -> None:
        server, turn = self.p._server, self.active_turn
        if server is None or turn is None or self.thread_id is None or self._interrupt_sent:
            return
        self._interrupt_sent = True
        with contextlib.suppress(RpcError, AppServerExited, TimeoutError):
            await server.request(
                "turn/interrupt", {"threadId": self.thread_id, "turnId": turn}, timeout=timeout
            )

    async def _rollback(self, server: AppServer, tools_ran: bool) -> None:
        """Undo the turn that just ended unanswered, so sending its inputs again does not show
        the model the same message twice. A turn that ran tools is kept: the model must see what
        they already did (and the retry then repeats the message once)."""
        if tools_ran or self.thread_id is None:
            return
        try:
            await server.request(
                "thread/rollback", {"threadId": self.thread_id, "numTurns": 1}, timeout=ROLLBACK_TIMEOUT
            )
        except (RpcError, AppServerExited, TimeoutError) as exc:
            log.warning("could not roll back the unanswered turn (%s); it stays in the thread", exc)

    async def _open_thread(self, server: AppServer) -> tuple[str, bool]:
        params = {"cwd": str(self.p.cwd), "approvalPolicy": "never", "sandbox": "danger-full-access"}
        if self.continuation:
            if self.continuation in self.p._loaded:
                return self.continuation, False
            try:
                result = await server.request("thread/resume", {"threadId": self.continuation, **params})
                self._learn_model(result)
                return str(result["thread"]["id"]), False
            except RpcError as exc:
                if not is_stale_thread(exc.message):
                    raise
                log.warning(
                    "thread %s cannot be resumed (%s); starting a fresh one", self.continuation, exc.message
                )
                result = await server.request("thread/start", params)
                self._learn_model(result)
                return str(result["thread"]["id"]), True
        result = await server.request("thread/start", params)
        self._learn_model(result)
        return str(result["thread"]["id"]), False

    def _learn_model(self, result: Any) -> None:
        if isinstance(result, dict) and isinstance(result.get("model"), str):
            self.model = result["model"][:128]

    async def _events(self) -> AsyncIterator[Event]:
        try:
            server = await self.p._ensure_server()
            thread_id, fresh = await self._open_thread(server)
            phases.mark("thread_open")
        except CodexStartError as exc:
            yield ErrorEvent(str(exc), kind="config")
            return
        except (RpcError, AppServerExited, TimeoutError) as exc:
            message = str(exc) or "codex did not answer"
            yield ErrorEvent(message, kind="crash" if isinstance(exc, AppServerExited) else classify(message))
            return
        self.thread_id = thread_id
        self.p._loaded.add(thread_id)
        self.p._routes[thread_id] = self.notes
        try:
            yield InitEvent(thread_id, fresh=fresh)
            while not self._aborted:
                if not self.queue:
                    if self._ended:
                        return
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                turn = self.queue
                self.queue = []
                async for event in self._turn(server, turn):
                    yield event
                    if isinstance(event, ErrorEvent) and event.kind == "crash":
                        return
        finally:
            self.p._routes.pop(thread_id, None)
            for task in self._steers:
                task.cancel()

    async def _late_completions(
        self, open_commands: dict[str, dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        """The commands still open when the turn completed, completed: Codex 0.138 may send a
        command's ``item/completed`` (with its exit code and output) just after ``turn/completed``,
        so wait for those a moment (``LATE_ITEMS``); one that does not come is shown completed as
        it was. Other notes seen meanwhile are kept, in order, for whoever reads next."""
        deadline = time.monotonic() + LATE_ITEMS
        kept: list[tuple[str, dict[str, Any]]] = []
        while open_commands and (left := deadline - time.monotonic()) > 0:
            try:
                method, params = await asyncio.wait_for(self.notes.get(), left)
            except TimeoutError:
                break
            item = params.get("item") or {}
            item_id = str(item.get("id") or "")
            if method == "item/completed" and item_id in open_commands:
                open_commands.pop(item_id)
                yield item
            else:
                kept.append((method, params))
        for note in kept:
            self.notes.put_nowait(note)
        for item in open_commands.values():
            yield {**item, "status": "completed"}

    async def _turn(self, server: AppServer, inputs: list[Input]) -> AsyncIterator[Event]:
        self.turn_inputs = list(inputs)
        self._interrupt_sent = False
        images = self.p.codex_home / "generated_images" / str(self.thread_id)
        before = set(images.glob("*")) if images.is_dir() else set()
        text = "\n\n".join(i.text for i in inputs)
        try:
            result = await server.request(
                "turn/start", {"threadId": self.thread_id, "input": _text_input(text)}
            )
        except AppServerExited as exc:
            self.queue = inputs + self.queue
            yield ErrorEvent(str(exc), kind="crash")
            return
        except (RpcError, TimeoutError) as exc:
            message = str(exc) or "turn/start timed out"
            kind = classify(message)
            yield ErrorEvent(message, kind=kind)
            yield ResultEvent("", "failed", self._ids(), error=message, kind=kind)
            return
        self.active_turn = str(result["turn"]["id"])
        phases.mark("turn_started")
        yield TurnInfoEvent(self.active_turn, model=self.model)
        commands = CommandSteps()
        turn_usage: dict[str, int] = {}  # the turn's model calls, summed
        replies: list[str] = []
        status, error = "failed", None
        info: Any = None  # codexErrorInfo of the final error
        details: str | None = None
        tools_ran = False
        deadline = time.monotonic() + self.p.turn_timeout
        try:
            while True:
                left = deadline - time.monotonic()
                try:
                    method, params = await asyncio.wait_for(self.notes.get(), max(left, 0.001))
                except TimeoutError:
                    yield ErrorEvent(
                        f"the turn took longer than {self.p.turn_timeout:g} s; interrupted", kind="timeout"
                    )
                    await self._interrupt()
                    status, error = "failed", f"turn timed out after {self.p.turn_timeout:g} s"
                    break
                if method == _CRASH:
                    self.queue = self.turn_inputs + self.queue
                    yield ErrorEvent(str(params["cause"]), kind="crash")
                    return
                if params.get("turnId") not in (None, self.active_turn) and method != "turn/completed":
                    continue
                if method in ("item/started", "item/completed"):
                    shown = commands.item(method, params.get("item") or {})
                    if shown is not None:
                        yield ItemEvent(self.active_turn, shown)
                if method == "item/completed":
                    item = params.get("item") or {}
                    if item.get("type") == "agentMessage" and item.get("text"):
                        replies.append(str(item["text"]))
                elif method == "item/commandExecution/outputDelta":
                    shown = commands.delta(str(params.get("itemId") or ""), str(params.get("delta") or ""))
                    if shown is not None:
                        yield ItemEvent(self.active_turn, shown)
                elif method == "thread/tokenUsage/updated":  # after each model call: "last" is its usage
                    usage = (params.get("tokenUsage") or {}).get("last") or {}
                    if isinstance(usage, dict):
                        for name, count in _usage(usage).items():
                            turn_usage[name] = turn_usage.get(name, 0) + count
                        yield TurnInfoEvent(self.active_turn, model=self.model, usage=dict(turn_usage))
                elif method == "item/started":
                    item = params.get("item") or {}
                    if item.get("type") in _TOOL_ITEMS:
                        tools_ran = True
                        yield ActivityEvent(
                            str(item.get("type")), str(item.get("command") or item.get("tool") or "")
                        )
                elif method == "item/agentMessage/delta":
                    yield ProgressEvent("".join(replies) + str(params.get("delta", "")))
                elif method == "error":
                    found = params.get("error") or {}
                    if params.get("willRetry"):
                        yield ProgressEvent(str(found.get("message", "")))
                    else:
                        error = str(found.get("message", ""))
                        info, details = found.get("codexErrorInfo"), found.get("additionalDetails")
                elif method == "turn/completed":
                    turn = params.get("turn") or {}
                    if turn.get("id") != self.active_turn:
                        continue
                    status = str(turn.get("status") or "completed")
                    turn_error = turn.get("error")
                    if isinstance(turn_error, dict):
                        error = str(turn_error.get("message") or error or "")
                        info = turn_error.get("codexErrorInfo", info)
                        details = turn_error.get("additionalDetails") or details
                    break
            async for completed in self._late_completions(commands.open):  # 0.138: after the turn
                shown = commands.completed(completed)
                if shown is not None and self.active_turn is not None:
                    yield ItemEvent(self.active_turn, shown)
        finally:
            self.active_turn = None
        if self._steers:  # steers sent before completion already have answers: settle them
            await asyncio.gather(*self._steers, return_exceptions=True)
            self._steers = []
        for path in sorted(set(images.glob("*")) - before) if images.is_dir() else []:
            copy = self.p.cwd / "generated" / path.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            yield FileEvent(copy, caption=None)
        if status == "interrupted":
            if self._aborted:  # stopping, or a user's /stop
                if self._resend:  # the inputs are sent again after the restart: undo the turn
                    await self._rollback(server, tools_ran)
                yield ResultEvent("", "interrupted", self._ids())
            else:
                yield ErrorEvent(error or "the turn was interrupted", kind="timeout")
                yield ResultEvent("", "failed", self._ids(), error=error or "interrupted", kind="timeout")
            return
        if status == "failed" or error and not replies:
            message = error or "the turn failed"
            found = failure(message, info, details if isinstance(details, str) else None)
            if found.retryable:
                await self._rollback(server, tools_ran)
            yield ErrorEvent(message, kind=found.kind, retryable=found.retryable)
            yield ResultEvent(
                "", "failed", self._ids(), error=message, kind=found.kind, retryable=found.retryable
            )
            return
        yield ResultEvent("\n\n".join(replies), "completed", self._ids())

    def _ids(self) -> tuple[int, ...]:
        return tuple(i for item in self.turn_inputs for i in item.ids)
