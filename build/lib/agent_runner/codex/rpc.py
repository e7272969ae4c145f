"""JSON-RPC over the stdio of `codex app-server`: one JSON object per line, asyncio, no threads.

Every server→client request is answered (an unanswered one blocks the turn forever); unknown
methods get a JSON-RPC error. Malformed lines are logged and skipped. When the process exits,
every pending request fails at once with the real cause: exit code and the last stderr lines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent_runner.codex.errors import AppServerExited, CodexStartError, RpcError

log = logging.getLogger(__name__)

Notification = Callable[[str, dict[str, Any]], None]
STDERR_TAIL = 20
_HARMLESS_STDERR = (
    "could not find bubblewrap",
    "Refusing to create helper binaries",
    "could not create PATH aliases",
)


def answer_server_request(method: str, params: Mapping[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """The answer to a server→client request: (result, None) or (None, error)."""
    if method in ("item/commandExecution/requestApproval", "item/fileChange/requestApproval"):
        return {"decision": "accept"}, None
    if method in ("execCommandApproval", "applyPatchApproval"):  # v1 names
        return {"decision": "approved"}, None
    if method == "item/permissions/requestApproval":
        return {"permissions": params.get("permissions") or {}, "scope": "turn"}, None
    if method == "item/tool/requestUserInput":
        return {"answers": {}}, None  # nobody is at a terminal: answer empty, never hang
    if method == "mcpServer/elicitation/request":
        meta = params.get("_meta") or {}
        if isinstance(meta, dict) and meta.get("codex_approval_kind") == "mcp_tool_call":
            return {"action": "accept", "content": None, "_meta": None}, None
        return {"action": "cancel", "content": None, "_meta": None}, None
    if method == "item/tool/call":
        return {
            "contentItems": [{"type": "inputText", "text": "dynamic tools are not supported here"}],
            "success": False,
        }, None
    return None, {"code": -32601, "message": f"nanohost does not handle {method}"}


class AppServer:
    """One `codex app-server` process."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        on_notification: Notification,
        on_exit: Callable[[str], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self._on_notification = on_notification
        self._on_exit = on_exit
        self._process: asyncio.subprocess.Process | None = None
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._ids = itertools.count(1)
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._tasks: list[asyncio.Task[None]] = []
        self.exited = asyncio.Event()
        self.exit_cause = ""
        self._closing = False

    async def start(self) -> None:
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                "app-server",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                cwd=self.cwd,
                limit=16 * 1024 * 1024,
                start_new_session=True,  # its own process group: kill/close take its children too
            )
        except FileNotFoundError:
            raise CodexStartError(
                f"codex binary not found: {self.argv[0]!r} (is the Codex CLI installed?)"
            ) from None
        except PermissionError as exc:
            raise CodexStartError(f"codex binary {self.argv[0]!r} cannot run: {exc}") from None
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read_stderr()),
            loop.create_task(self._read_stdout()),
            loop.create_task(self._watch_exit()),
        ]

    @property
    def running(self) -> bool:
        return self._process is not None and not self.exited.is_set()

    def _write(self, message: dict[str, Any]) -> None:
        if self._process is None or self._process.stdin is None or self.exited.is_set():
            raise AppServerExited(self.exit_cause or "codex app-server is not running")
        self._process.stdin.write((json.dumps(message) + "\n").encode())

    async def request(self, method: str, params: dict[str, Any], timeout: float = 30.0) -> Any:
        """Send a request and wait for its answer; RpcError on an error answer."""
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (method, future)
        try:
            self._write({"id": request_id, "method": method, "params": params})
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        self._write(message)

    async def close(self, grace: float = 3.0) -> None:
        if self._process is None:
            return
        self._closing = True  # an exit we asked for is not a crash
        if self._process.stdin is not None and not self._process.stdin.is_closing():
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), grace)
        except TimeoutError:
            self.kill()
            await self._process.wait()
        self._kill_group()  # children (MCP servers) must not outlive it
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def kill(self) -> None:
        """SIGKILL the app-server and everything it started."""
        if self._process is not None and self._process.returncode is None:
            self._kill_group()

    def _kill_group(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)

    async def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if text and not any(noise in text for noise in _HARMLESS_STDERR):
                self._stderr.append(text)
                log.debug("codex stderr: %s", text)

    async def _read_stdout(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
            except ValueError:
                log.warning("codex app-server sent a malformed line; ignored: %r", line[:200])
                continue
            self._dispatch(message)
        await self._process.wait()

    async def _watch_exit(self) -> None:
        """Process exit ends everything at once, even if a child still holds our pipes open."""
        assert self._process is not None
        code = await self._process.wait()
        with contextlib.suppress(TimeoutError):  # let stderr drain briefly so the cause is complete
            await asyncio.wait_for(asyncio.shield(self._tasks[0]), 0.2)
        self._kill_group()
        tail = " | ".join(list(self._stderr)[-3:])
        self.exit_cause = f"codex app-server exited with code {code}" + (f": {tail}" if tail else "")
        self.exited.set()
        for method, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(AppServerExited(f"{self.exit_cause} (during {method})"))
        if self._on_exit is not None and not self._closing:
            self._on_exit(self.exit_cause)

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:
            pending = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if pending is None:
                return
            name, future = pending
            if future.done():
                return
            if "error" in message:
                error = message["error"] or {}
                future.set_exception(RpcError(name, int(error.get("code", 0)), str(error.get("message", ""))))
            else:
                future.set_result(message.get("result"))
            return
        params = message.get("params") or {}
        if "id" in message:  # a server→client request: always answered
            result, error = answer_server_request(str(method), params)
            reply: dict[str, Any] = {"id": message["id"]}
            if error is not None:
                reply["error"] = error
                log.warning("codex asked %s; answered with an error", method)
            else:
                reply["result"] = result
            with contextlib.suppress(AppServerExited):
                self._write(reply)
            return
        self._on_notification(str(method), params if isinstance(params, dict) else {})
