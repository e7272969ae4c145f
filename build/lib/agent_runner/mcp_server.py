"""The `nanohost` MCP tool server: how the agent talks back to the chat beyond its reply.

Codex starts it over stdio (registered in config.toml). Each tool writes one row to the
session's outbound queue and rings the host's doorbell; the host acts on it. Files must resolve
(symlinks followed) to a regular file inside the workspace: ``..`` and symlink escapes are
refused with a clear error, because the host will read whatever path it is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from agent_runner.queues import RunnerQueues

SESSION = Path(os.environ.get("NANOHOST_SESSION_DIR", "/workspace/session"))
WORKSPACE = Path(os.environ.get("NANOHOST_WORKSPACE", "/workspace/agent"))
MAX_MESSAGE = 40_000
_INTERVAL = re.compile(r"^every\s+(\d+)\s*([smhd])$", re.IGNORECASE)

server = MCPServer(
    "nanohost",
    instructions="Send messages and files to the chat, and schedule prompts for later.",
)


def _queue(kind: str, payload: dict[str, Any]) -> int:
    queues = RunnerQueues(SESSION)
    try:
        row_id = queues.add(kind, payload)
    finally:
        queues.close()
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as bell:
        bell.settimeout(1)
        bell.connect(str(SESSION / "doorbell.sock"))
        bell.sendall(b"outbound\n")
    return row_id


def resolve_inside(path: str, root: Path = WORKSPACE) -> Path:
    """The real path of ``path`` (relative to the workspace or absolute) if it is a file inside ``root``."""
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
    text = schedule.strip()
    if _INTERVAL.match(text):
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


@server.tool()
def send_message(text: str) -> str:
    """Post a message to the chat now (for updates while you keep working)."""
    if not text.strip():
        raise ToolError("text is empty")
    if len(text) > MAX_MESSAGE:
        raise ToolError(f"text is longer than {MAX_MESSAGE} characters; send a file instead")
    _queue("message", {"text": text, "in_reply_to": []})
    return "sent"


@server.tool()
def send_file(path: str, caption: str = "") -> str:
    """Send a file from the workspace (/workspace/agent) to the chat, with an optional caption."""
    real = resolve_inside(path)
    _queue("file", {"path": str(real), "caption": caption or None})
    return f"sent {real.name}"


@server.tool()
def schedule_task(prompt: str, schedule: str) -> str:
    """Run ``prompt`` later: cron ("0 9 * * 1-5"), interval ("every 30m") or once (ISO time)."""
    if not prompt.strip():
        raise ToolError("prompt is empty")
    checked = check_schedule(schedule)
    _queue("task", {"op": "schedule", "prompt": prompt, "schedule": checked})
    return f"scheduled ({checked}); it appears in list_tasks once the host has registered it"


@server.tool()
def list_tasks() -> str:
    """The scheduled tasks of this group (as the host last reported them)."""
    try:
        tasks = json.loads((SESSION / "tasks.json").read_text())
    except (OSError, ValueError):
        tasks = []
    return json.dumps(tasks, indent=2) if tasks else "no scheduled tasks"


@server.tool()
def cancel_task(task_id: str) -> str:
    """Cancel a scheduled task by its id (see list_tasks)."""
    if not task_id.strip().isdigit():
        raise ToolError(f"task id {task_id!r} must be a number from list_tasks")
    _queue("task", {"op": "cancel", "task_id": task_id.strip()})
    return f"cancel requested for task {task_id}"


if __name__ == "__main__":
    server.run("stdio")
