"""The `nanohost` MCP tool server: how the agent talks back to the chat beyond its reply.

Codex starts it over stdio (registered in config.toml) and waits for it before the first turn of a
wake, so its start-up is on the cold-start path. It therefore speaks MCP's stdio transport itself
(newline-delimited JSON-RPC 2.0: ``initialize``, ``tools/list``, ``tools/call``, ``ping``) with the
standard library only: importing the ``mcp`` SDK's server took ~0.9 s of a 1.6 s cold start (see
bench/README or ``python -m bench cold_start``); this starts in the time of a bare interpreter.
tests/runner/test_mcp_server.py drives it with the official SDK client, tests/codex with real Codex.

Each tool writes one row to the session's outbound queue and rings the host's doorbell; the host
acts on it. Files must resolve (symlinks followed) to a regular file inside the workspace: ``..``
and symlink escapes are refused with a clear error, because the host will read whatever path it
is given.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: every module imported here is on the cold-start path
    from collections.abc import Callable
    from pathlib import Path

SESSION = os.environ.get("NANOHOST_SESSION_DIR", "/workspace/session")
WORKSPACE = os.environ.get("NANOHOST_WORKSPACE", "/workspace/agent")
MAX_MESSAGE = 40_000
MAX_LINE = 4 * 1024 * 1024
"""A request longer than this is refused (the tools take short strings)."""
_INTERVAL = r"^every\s+(\d+)\s*([smhd])$"

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
"""MCP versions this server speaks, newest first (Codex 0.138 asks for 2025-06-18). A client asking
for another gets the newest, as the specification says; it may then disconnect."""
INSTRUCTIONS = "Send messages and files to the chat, and schedule prompts for later."
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


class ToolError(Exception):
    """A tool refused its arguments; the message goes back to the model as the tool's result."""


def _queue(kind: str, payload: dict[str, Any]) -> int:
    import socket
    from pathlib import Path

    from agent_runner.queues import RunnerQueues  # sqlite3 only when a tool writes

    queues = RunnerQueues(Path(SESSION))
    try:
        row_id = queues.add(kind, payload)
    finally:
        queues.close()
    try:
        with socket.socket(socket.AF_UNIX) as bell:
            bell.settimeout(1)
            bell.connect(os.path.join(SESSION, "doorbell.sock"))
            bell.sendall(b"outbound\n")
    except OSError:
        pass  # the host's slow poll finds the row
    return row_id


def resolve_inside(path: str, root: Path | str = WORKSPACE) -> Path:
    """The real path of ``path`` (relative to the workspace or absolute) if it is a file inside ``root``."""
    from pathlib import Path

    root = Path(root)
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    real, base = candidate.resolve(), root.resolve()
    if base not in real.parents:
        raise ToolError(f"{path} is outside {root}; write the file inside the workspace first")
    if not real.is_file():
        raise ToolError(f"{path} is not a file")
    return real


def check_schedule(schedule: str) -> str:
    """A cron expression, "every N[smhd]", or one ISO-8601 time."""
    import re
    from datetime import datetime

    text = schedule.strip()
    if re.match(_INTERVAL, text, re.IGNORECASE):
        return text.lower()
    from croniter import croniter

    if croniter.is_valid(text):
        return text
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
        return text
    except ValueError:
        pass
    raise ToolError(
        f"schedule {schedule!r} is not a cron expression (0 9 * * 1-5), an interval (every 30m) "
        "or an ISO time (2026-12-01T09:00:00Z)"
    )


def send_message(text: str) -> str:
    """Post a message to the chat now (for updates while you keep working)."""
    if not text.strip():
        raise ToolError("text is empty")
    if len(text) > MAX_MESSAGE:
        raise ToolError(f"text is longer than {MAX_MESSAGE} characters; send a file instead")
    _queue("message", {"text": text, "in_reply_to": []})
    return "sent"


def send_file(path: str, caption: str = "") -> str:
    """Send a file from the workspace (/workspace/agent) to the chat, with an optional caption."""
    real = resolve_inside(path)
    _queue("file", {"path": str(real), "caption": caption or None})
    return f"sent {real.name}"


def schedule_task(prompt: str, schedule: str) -> str:
    """Run ``prompt`` later: cron ("0 9 * * 1-5"), interval ("every 30m") or once (ISO time)."""
    if not prompt.strip():
        raise ToolError("prompt is empty")
    checked = check_schedule(schedule)
    _queue("task", {"op": "schedule", "prompt": prompt, "schedule": checked})
    return f"scheduled ({checked}); it appears in list_tasks once the host has registered it"


def list_tasks() -> str:
    """The scheduled tasks of this group (as the host last reported them)."""
    try:
        with open(os.path.join(SESSION, "tasks.json"), encoding="utf-8") as handle:
            tasks = json.load(handle)
    except (OSError, ValueError):
        tasks = []
    return json.dumps(tasks, indent=2) if tasks else "no scheduled tasks"


def cancel_task(task_id: str) -> str:
    """Cancel a scheduled task by its id (see list_tasks)."""
    if not task_id.strip().isdigit():
        raise ToolError(f"task id {task_id!r} must be a number from list_tasks")
    _queue("task", {"op": "cancel", "task_id": task_id.strip()})
    return f"cancel requested for task {task_id}"


class Tool:
    """One tool: its function and its string parameters (name → default, ``None`` if required)."""

    def __init__(self, function: Callable[..., str], params: dict[str, str | None]) -> None:
        self.function = function
        self.params = params

    @property
    def name(self) -> str:
        return self.function.__name__

    def describe(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for param, default in self.params.items():
            properties[param] = {"type": "string", "title": param.replace("_", " ").title()}
            if default is not None:
                properties[param]["default"] = default
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        required = [p for p, default in self.params.items() if default is None]
        if required:
            schema["required"] = required
        return {
            "name": self.name,
            "description": (self.function.__doc__ or "").strip(),
            "inputSchema": schema,
        }

    def call(self, arguments: dict[str, Any]) -> str:
        unknown = sorted(set(arguments) - set(self.params))
        if unknown:
            raise ToolError(f"{self.name} takes no argument {', '.join(unknown)}")
        values: dict[str, str] = {}
        for param, default in self.params.items():
            value = arguments.get(param, default)
            if value is None:
                raise ToolError(f"{self.name} needs the argument {param}")
            if not isinstance(value, str):
                raise ToolError(f"{self.name}: {param} must be a string")
            values[param] = value
        return self.function(**values)


TOOLS = {
    tool.name: tool
    for tool in (
        Tool(send_message, {"text": None}),
        Tool(send_file, {"path": None, "caption": ""}),
        Tool(schedule_task, {"prompt": None, "schedule": None}),
        Tool(list_tasks, {}),
        Tool(cancel_task, {"task_id": None}),
    )
}


class RequestError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def handle(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The result of one request (a JSON-RPC error is raised as RequestError)."""
    if method == "initialize":
        asked = params.get("protocolVersion")
        return {
            "protocolVersion": asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0],
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "nanohost", "version": "1"},
            "instructions": INSTRUCTIONS,
        }
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": [tool.describe() for tool in TOOLS.values()]}
    if method == "tools/call":
        tool = TOOLS.get(str(params.get("name")))
        if tool is None:
            raise RequestError(INVALID_PARAMS, f"unknown tool: {params.get('name')}")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise RequestError(INVALID_PARAMS, "arguments must be an object")
        try:
            text, failed = tool.call(arguments), False
        except ToolError as exc:
            text, failed = str(exc), True
        return {"content": [{"type": "text", "text": text}], "isError": failed}
    raise RequestError(METHOD_NOT_FOUND, f"method not found: {method}")


def answer(line: bytes) -> dict[str, Any] | None:
    """The response to one line from the client, or None (a notification, a response)."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        return {"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": str(exc)}}
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        if isinstance(message, dict) and ("result" in message or "error" in message):
            return None  # a response to a request we never send: nothing to do
        return {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": "not a request"}}
    if "id" not in message:
        return None  # notifications (initialized, cancelled) need no answer
    params = message.get("params")
    try:
        if params is not None and not isinstance(params, dict):
            raise RequestError(INVALID_PARAMS, "params must be an object")
        result = handle(message["method"], params or {})
    except RequestError as exc:
        return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": exc.code, "message": str(exc)}}
    except Exception as exc:  # a tool's bug must not end the server: the model sees the error
        result = {"content": [{"type": "text", "text": f"internal error: {exc}"}], "isError": True}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def serve(reader: IO[bytes], writer: IO[bytes]) -> None:
    """Answer requests one line at a time until the client closes stdin."""
    while line := reader.readline(MAX_LINE + 1):
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while (rest := reader.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass  # skip the rest of the oversized line
            response: dict[str, Any] | None = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": INVALID_REQUEST, "message": "request too large"},
            }
        elif not line.strip():
            continue
        else:
            response = answer(line)
        if response is not None:
            writer.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
            writer.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
