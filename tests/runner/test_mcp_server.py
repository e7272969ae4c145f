"""The nanohost MCP tool server through a real MCP stdio client session (official SDK)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from nanohost.transport import SessionQueues


@asynccontextmanager
async def open_tools(tmp_path: Path) -> AsyncIterator[tuple[ClientSession, Path, Path]]:
    """A client session to a fresh server (a context manager, not a fixture: anyio scopes need one task)."""
    session_dir, workspace = tmp_path / "session", tmp_path / "workspace"
    session_dir.mkdir()
    workspace.mkdir()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agent_runner.mcp_server"],
        env={
            "NANOHOST_SESSION_DIR": str(session_dir),
            "NANOHOST_WORKSPACE": str(workspace),
            "PYTHONPATH": os.pathsep.join(sys.path),
        },
    )
    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - opening /dev/null does not block
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session, session_dir, workspace


def rows(session_dir: Path) -> list[tuple[str, dict[str, object]]]:
    queues = SessionQueues(session_dir)
    try:
        return [(r.kind, r.payload) for r in queues.outbound_after(0)]
    finally:
        queues.close()


async def call(session: ClientSession, tool: str, **arguments: object) -> tuple[bool, str]:
    result = await session.call_tool(tool, arguments)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    return bool(result.is_error), text


async def test_tools_are_listed(tmp_path: Path) -> None:
    async with open_tools(tmp_path) as (session, _, _):
        names = {t.name for t in (await session.list_tools()).tools}
        assert names == {"send_message", "send_file", "schedule_task", "list_tasks", "cancel_task"}


async def test_send_message_reaches_the_outbound_queue(tmp_path: Path) -> None:
    async with open_tools(tmp_path) as (session, session_dir, _):
        assert await call(session, "send_message", text="working on it") == (False, "sent")
        assert rows(session_dir) == [("message", {"text": "working on it", "in_reply_to": []})]


async def test_send_file_inside_the_workspace(tmp_path: Path) -> None:
    async with open_tools(tmp_path) as (session, session_dir, workspace):
        (workspace / "out").mkdir()
        (workspace / "out" / "chart.png").write_bytes(b"png")
        error, text = await call(session, "send_file", path="out/chart.png", caption="the chart")
        assert not error and "chart.png" in text
        assert rows(session_dir) == [
            ("file", {"path": str((workspace / "out" / "chart.png").resolve()), "caption": "the chart"})
        ]


@pytest.mark.parametrize("make", ["dotdot", "absolute", "symlink", "directory", "missing"])
async def test_send_file_escapes_are_refused(tmp_path: Path, make: str) -> None:
    async with open_tools(tmp_path) as (session, session_dir, workspace):
        secret = workspace.parent / "secret.txt"
        secret.write_text("host secret")
        path = {
            "dotdot": "../secret.txt",
            "absolute": str(secret),
            "symlink": "link.txt",
            "directory": ".",
            "missing": "nope.txt",
        }[make]
        if make == "symlink":
            (workspace / "link.txt").symlink_to(secret)
        error, text = await call(session, "send_file", path=path)
        assert error and ("outside" in text or "not a file" in text), text
        assert rows(session_dir) == []


async def test_schedule_list_and_cancel(tmp_path: Path) -> None:
    async with open_tools(tmp_path) as (session, session_dir, _):
        for schedule in ("0 9 * * 1-5", "every 30m", "2026-12-01T09:00:00Z"):
            error, _ = await call(session, "schedule_task", prompt="standup", schedule=schedule)
            assert not error
        error, text = await call(session, "schedule_task", prompt="x", schedule="whenever")
        assert error and "not a cron expression" in text
        assert await call(session, "list_tasks") == (False, "no scheduled tasks")
        (session_dir / "tasks.json").write_text(
            json.dumps([{"id": 4, "prompt": "standup", "schedule": "every 30m"}])
        )
        assert "standup" in (await call(session, "list_tasks"))[1]
        assert not (await call(session, "cancel_task", task_id="4"))[0]
        assert (await call(session, "cancel_task", task_id="four"))[0]
        kinds = [(k, p["op"]) for k, p in rows(session_dir)]
        assert kinds == [("task", "schedule")] * 3 + [("task", "cancel")]
