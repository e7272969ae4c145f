"""The viewer's side of the runner: turn steps archived as JSON lines, and the live feed.

Bounds are tested on the functions (huge outputs and diffs cut with a marker, item count, the line
cap); the plumbing through the real queues with the mock provider (items arrive as ``item`` rows
the host's boundary model accepts, and the turn's line lands beside the Markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent_runner.codex.items import neutral
from agent_runner.items import (
    MAX_ITEMS,
    MAX_LINE,
    LiveFeed,
    TurnLog,
    archive_turn,
    bound_item,
    clip,
)

from nanohost.boundary import BadRow, ItemRow, parse_row
from nanohost.viewer import parse_lines
from tests.runner.conftest import Harness


def test_clip_keeps_head_and_tail_and_says_how_much_was_left_out() -> None:
    text = "A" * 50_000 + "Z" * 50_000
    cut = clip(text, 10_000)
    assert len(cut) <= 10_000
    assert cut.startswith("A" * 6_000) and cut.endswith("Z" * 3_000)
    assert "characters left out" in cut
    assert clip("short", 10) == "short"


def test_a_huge_command_output_and_diff_are_cut_with_a_marker() -> None:
    item = {
        "id": "c1",
        "type": "command",
        "command": "yes",
        "output": "y\n" * 1_000_000,
        "exit_code": 0,
        "changes": [{"path": "a", "kind": "add", "diff": "+x\n" * 100_000}] * 500,
        "surprise": "x" * 10,
    }
    bounded = bound_item(item)
    assert len(bounded["output"]) <= 16_000 and "characters left out" in bounded["output"]
    assert len(bounded["changes"]) == 50 and all(len(c["diff"]) <= 16_000 for c in bounded["changes"])
    assert "surprise" not in bounded
    assert bound_item({"id": "x", "type": "nonsense"})["type"] == "other"


def test_a_turn_keeps_the_latest_version_of_each_item_and_bounds_its_line(tmp_path: Path) -> None:
    log = TurnLog("turn-1")
    log.add({"id": "c1", "type": "command", "command": "ls", "status": "inProgress"})
    log.add({"id": "c1", "type": "command", "command": "ls", "status": "completed", "output": "a\nb"})
    for i in range(MAX_ITEMS + 10):
        log.add({"id": f"o{i}", "type": "command", "command": "cat big", "output": "x" * 20_000})
    record = log.record(
        thread="t", provider="mock", status="completed", error=None, prompts=["hi"], reply="done"
    )
    assert record["items"][0] == {
        "id": "c1",
        "type": "command",
        "status": "completed",
        "command": "ls",
        "output": "a\nb",
    }
    assert len(json.dumps(record)) <= MAX_LINE
    assert record["items_left_out"] >= 11  # 11 over the count, more dropped for the line's size
    path = archive_turn(tmp_path, record)
    archive_turn(tmp_path, {**record, "turn": "turn-2"})
    assert path.parent == tmp_path / "turns" and path.suffix == ".jsonl"
    turns = list(parse_lines(path.read_bytes()))  # the host's model accepts what the runner writes
    assert [t.turn for t in turns] == ["turn-1", "turn-2"]
    assert turns[0].items[0].output == "a\nb"


def test_the_live_feed_coalesces_and_is_bounded_per_turn() -> None:
    batches: list[list[dict[str, Any]]] = []
    timers: list[Any] = []

    class Timer:
        def __init__(self, callback: Any) -> None:
            self.callback, self.cancelled = callback, False

        def cancel(self) -> None:
            self.cancelled = True

    def schedule(delay: float, callback: Any) -> Timer:
        timers.append(Timer(callback))
        return timers[-1]

    def fire() -> None:
        (armed,) = [t for t in timers if not t.cancelled]
        armed.cancelled = True
        armed.callback()

    feed = LiveFeed(batches.append, schedule, every=3600, per_turn=5)
    feed.start("t1", ["the question"])
    feed.item("t1", {"id": "a", "type": "command", "command": "x", "status": "inProgress"})
    for n in range(100):  # a chatty step: only its latest version goes out
        feed.item("t1", {"id": "b", "type": "command", "command": "y", "output": str(n)})
    assert batches == [] and len(timers) == 1  # nothing written until the timer fires
    fire()
    (first,) = batches
    assert [r["phase"] for r in first] == ["start", "item", "item"]
    assert first[0]["prompts"] == ["the question"] and first[2]["item"]["output"] == "99"
    for n in range(20):
        feed.item("t1", {"id": f"c{n}", "type": "reasoning", "text": "hm"})
    fire()
    assert [r["item"]["id"] for r in batches[1]] == ["c0", "c1", "c2"]  # 5 steps a turn at most
    feed.item("t1", {"id": "c3", "type": "reasoning", "text": "over the cap"})
    feed.item("other", {"id": "z", "type": "reasoning", "text": "not this turn"})
    assert [t for t in timers if not t.cancelled] == []
    last = feed.end("t1", {"status": "completed", "model": "m", "usage": {"total": 3}, "duration_ms": 7})
    assert last == [
        {
            "turn": "t1",
            "phase": "end",
            "status": "completed",
            "model": "m",
            "usage": {"total": 3},
            "duration_ms": 7,
        }
    ]
    assert len(batches) == 2  # the end is the runner's to commit, with the reply

    feed.start("t2")  # a quick turn: all of it comes back at its end, nothing written before
    feed.item("t2", {"id": "q", "type": "message", "text": "hi"})
    rows = feed.end("t2", {"status": "completed", "model": None, "usage": None, "duration_ms": 1})
    assert [r["phase"] for r in rows] == ["start", "item", "end"] and len(batches) == 2


def test_codex_items_become_neutral_items() -> None:
    command = {
        "type": "commandExecution",
        "id": "call_1",
        "command": "/bin/bash -lc 'echo hi'",
        "status": "completed",
        "aggregatedOutput": "hi\n",
        "exitCode": 0,
        "durationMs": 12,
    }
    assert neutral(command) == {
        "id": "call_1",
        "status": "completed",
        "type": "command",
        "command": "/bin/bash -lc 'echo hi'",
        "output": "hi\n",
        "exit_code": 0,
        "duration_ms": 12,
    }
    started = {**command, "status": "inProgress", "aggregatedOutput": None}
    assert neutral(started, "streamed so far")["output"] == "streamed so far"  # type: ignore[index]
    patch = {
        "type": "fileChange",
        "id": "p",
        "status": "completed",
        "changes": [{"path": "a.txt", "kind": {"type": "update", "move_path": None}, "diff": "@@\n-a\n+b"}],
    }
    assert neutral(patch)["changes"] == [{"path": "a.txt", "kind": "update", "diff": "@@\n-a\n+b"}]  # type: ignore[index]
    tool = {
        "type": "mcpToolCall",
        "id": "m",
        "server": "db",
        "tool": "read_query",
        "status": "completed",
        "arguments": {"sql": "select 1"},
        "result": {"content": [{"type": "text", "text": "1"}]},
    }
    shown = neutral(tool)
    assert (
        shown is not None and shown["result"] == "1" and json.loads(shown["arguments"]) == {"sql": "select 1"}
    )
    assert (
        neutral({"type": "reasoning", "id": "r", "summary": ["first", "second"]})["text"] == "first\n\nsecond"
    )  # type: ignore[index]
    assert neutral({"type": "userMessage", "id": "u", "content": []}) is None


async def test_a_mock_turn_streams_its_items_and_archives_a_line(harness: Harness) -> None:
    harness.send("show me the steps")
    await harness.until(lambda: harness.replies(), limit=10)
    rows = [r for r in harness.host.outbound_after(0) if r.kind == "item"]
    phases = [r.payload["phase"] for r in rows]
    assert phases[0] == "start" and phases[-1] == "end" and "item" in phases
    for row in rows:  # each passes the host's boundary model
        parsed = row.row
        assert isinstance(parsed, ItemRow), parsed
    commands = [
        r.payload["item"]
        for r in rows
        if r.payload["phase"] == "item" and r.payload["item"]["type"] == "command"
    ]
    assert commands[-1]["output"] == "show me the steps" and commands[-1]["status"] == "completed"
    end = rows[-1].payload
    assert end["model"] == "mock-echo" and end["usage"]["total"] > 0 and end["duration_ms"] >= 0
    days = list((harness.paths.workspace / "conversations" / "turns").glob("*.jsonl"))
    assert len(days) == 1
    (turn,) = parse_lines(days[0].read_bytes())
    assert turn.turn == rows[0].payload["turn"] and turn.prompts == ["show me the steps"]
    assert turn.reply == "echo: show me the steps" and turn.model == "mock-echo"
    assert {i.type for i in turn.items} == {"reasoning", "command", "file_change", "message"}
    assert list((harness.paths.workspace / "conversations").glob("*.md")), "the Markdown archive stays"


def test_hostile_item_rows_are_refused_at_the_boundary() -> None:
    def row(payload: dict[str, Any]) -> object:
        raw = json.dumps(payload).encode()
        return parse_row("item", raw, len(raw))

    good = {"turn": "t-1", "phase": "item", "item": {"id": "c", "type": "command", "output": "ok"}}
    assert isinstance(row(good), ItemRow)
    for bad in (
        {**good, "turn": "../../etc/passwd"},
        {**good, "turn": "x" * 129},
        {**good, "phase": "explode"},
        {**good, "item": {"id": "c", "type": "shell"}},
        {**good, "item": {"id": "c", "type": "command", "output": "x" * 20_001}},
        {**good, "item": {"id": "c", "type": "command", "exit_code": "0"}},
        {**good, "item": {"id": "c", "type": "file_change", "changes": [{"path": "a"}] * 51}},
        {**good, "phase": "end", "usage": {"total": -1}},
        {**good, "phase": "end", "duration_ms": 1.5},
    ):
        assert isinstance(row(bad), BadRow), bad


def test_a_running_commands_output_is_shown_on_its_first_output_then_per_kib() -> None:
    from agent_runner.codex.items import MAX_GATHERED, CommandSteps

    steps = CommandSteps()
    started = {"type": "commandExecution", "id": "c1", "command": "seq", "status": "inProgress"}
    first = steps.item("item/started", started)
    assert first is not None and (first["status"], first["output"]) == ("inProgress", "")

    shown = steps.delta("c1", "1\n2\n")
    assert shown is not None and (shown["status"], shown["output"]) == ("inProgress", "1\n2\n")
    assert steps.delta("c1", "x" * 100) is None  # still within the first KiB: no new look
    grown = steps.delta("c1", "y" * 1024)
    assert grown is not None and grown["output"] == "1\n2\n" + "x" * 100 + "y" * 1024
    assert steps.delta("other", "output of a command never started") is None

    steps.delta("c1", "z" * (2 * MAX_GATHERED))  # bounded however much comes
    assert len(steps.gathered["c1"]) == MAX_GATHERED
    assert steps.delta("c1", "more") is None

    assert list(steps.open) == ["c1"]  # still open when the turn ends: shown completed as it was
    late = steps.completed({**started, "status": "completed"})
    assert late is not None and late["status"] == "completed" and len(late["output"]) == MAX_GATHERED

    done = steps.item(
        "item/completed", {**started, "status": "completed", "aggregatedOutput": "all", "exitCode": 0}
    )
    assert done is not None and (done["output"], done["exit_code"]) == ("all", 0) and steps.open == {}
