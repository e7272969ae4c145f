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


def raw_exchange(tmp_path: Path, lines: list[bytes]) -> list[dict[str, object]]:
    """What the server answers to raw lines on stdin (the wire, without an SDK in between)."""
    import subprocess

    env = {
        **os.environ,
        "NANOHOST_SESSION_DIR": str(tmp_path),
        "NANOHOST_WORKSPACE": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "agent_runner.mcp_server"],
        input=b"".join(lines),
        capture_output=True,
        env=env,
        timeout=30,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_codex_protocol_version_is_answered_in_kind(tmp_path: Path) -> None:
    init = {"protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}}, "clientInfo": {"name": "c"}}
    answers = raw_exchange(
        tmp_path,
        [
            json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}).encode() + b"\n",
            b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
            b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"1999-01-01"}}\n',
        ],
    )
    assert [a["result"]["protocolVersion"] for a in answers] == ["2025-06-18", "2025-11-25"]  # type: ignore[index]


def test_bad_requests_get_errors_and_the_server_keeps_serving(tmp_path: Path) -> None:
    from agent_runner.mcp_server import MAX_LINE

    answers = raw_exchange(
        tmp_path,
        [
            b"not json\n",
            b'{"jsonrpc":"2.0","id":1,"method":"resources/list"}\n',
            b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope","arguments":{}}}\n',
            b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"send_message","arguments":{"text":7}}}\n',
            b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"list_tasks","arguments":{"x":"1"}}}\n',
            b"x" * (MAX_LINE + 10) + b"\n",
            b'{"jsonrpc":"2.0","id":5,"method":"ping"}\n',
        ],
    )
    assert [a.get("id") for a in answers] == [None, 1, 2, 3, 4, None, 5]
    errors = [a["error"]["code"] if "error" in a else None for a in answers]  # type: ignore[index]
    assert errors == [-32700, -32601, -32602, None, None, -32600, None]
    assert answers[3]["result"]["isError"] and "must be a string" in json.dumps(answers[3])  # type: ignore[index]
    assert answers[4]["result"]["isError"] and "no argument x" in json.dumps(answers[4])  # type: ignore[index]
    assert answers[6]["result"] == {}
    assert not (tmp_path / "outbound.db").exists() or rows(tmp_path) == []
