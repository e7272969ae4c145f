"""`nanohost tasks …`: operators list, add, pause, resume and delete scheduled prompts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nanohost.control import ControlSocket
from nanohost.settings import load_settings
from tests.test_cli import Run, cli, engine_asked, ready  # noqa: F401  (fixtures)


def test_tasks_round_trip(ready: Run) -> None:  # noqa: F811
    added = ready("tasks", "add", "main", "--every", "30m", "--prompt", "check the inbox", "--json").json()
    assert isinstance(added, dict) and added["schedule"] == "every 30m" and added["status"] == "active"
    assert added["next_run_utc"] is not None
    ready("tasks", "add", "main", "--cron", "0 9 * * 1-5", "--prompt", "standup")
    listed = ready("tasks", "list", "main", "--json").json()
    assert isinstance(listed, list) and sorted(t["prompt"] for t in listed) == ["check the inbox", "standup"]
    task_id = str(added["id"])
    ready("tasks", "pause", task_id)
    assert {t["id"]: t["status"] for t in ready("tasks", "list", "--json").json()}[added["id"]] == "paused"  # type: ignore[union-attr,index]
    ready("tasks", "resume", task_id)
    ready("tasks", "delete", task_id)
    remaining = ready("tasks", "list", "--json").json()
    assert [t["prompt"] for t in remaining] == ["standup"]  # type: ignore[union-attr,index]


def test_bad_schedules_are_refused_with_what_is_accepted(ready: Run) -> None:  # noqa: F811
    result = ready("tasks", "add", "main", "--every", "5s", "--prompt", "x", ok=False)
    assert result.code != 0 and "at least 1 minute" in result.stderr
    result = ready("tasks", "add", "main", "--cron", "every day", "--prompt", "x", ok=False)
    assert result.code != 0 and "not a cron expression" in result.stderr
    result = ready("tasks", "add", "main", "--prompt", "x", ok=False)
    assert "exactly one of" in result.stderr
    assert ready("tasks", "pause", "999", ok=False).code != 0


async def test_a_running_host_is_told_at_once(ready: Run, host_env: Path) -> None:  # noqa: F811
    heard: list[str] = []
    control = ControlSocket(load_settings().data_dir, heard.append)
    await control.start()
    try:
        result = await asyncio.to_thread(ready, "tasks", "add", "main", "--every", "1h", "--prompt", "p")
    finally:
        await control.stop()
    assert heard == ["tasks"]
    assert "no running host" not in result.stderr
