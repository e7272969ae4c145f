"""Cold start: the container is stopped, the group's state kept (Codex thread, folder) → a message →
its reply. ``--runs`` times for the mock agent and for real Codex (model server on 127.0.0.1
answering at once), p50 and max, broken down by phase; then five Codex groups cold at once.

Phases (wall-clock marks; the host's own, and the runner's from its log, read as hostile input by
nanohost.boot_phases):
- route: the message posted → the host begins the wake (router, database, wake queue);
- compose: group config, AGENTS.md, Codex state dir, runner.json, mounts;
- create+start: the engine's create and start of the container (docker API);
- runner boot: container started → Python reaches the runner's main (process + imports);
- Codex initialize: ``codex app-server`` spawned → ``initialize`` answered;
- thread resume: → ``thread/resume`` answered;  MCP ready: Codex initialized → nanohost's MCP
  server listed its tools (Codex holds the first turn until then);
- turn: ``turn/start`` answered → the runner committed the reply;
- deliver: reply committed → the reply event on the client's websocket.

Run: python -m bench cold_start [--runs 20]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Chat,
    Result,
    add_groups,
    check,
    ensure_image,
    host,
    ms,
    pct,
    remove_containers,
    settings_for,
)
from nanohost.app import ORCHESTRATOR
from nanohost.boot_phases import parse_phases
from nanohost.runtime import SessionRuntime

TARGET_CODEX_P50 = 400.0
TARGET_FIVE = 1000.0
PHASES = (
    ("route", "sent", "wake"),
    ("compose", "wake", "composed"),
    ("create+start", "composed", "started"),
    ("runner boot", "started", "main"),
    ("Codex initialize", "codex_spawn", "codex_initialized"),
    ("thread resume", "codex_initialized", "thread_open"),
    ("MCP ready", "codex_initialized", "mcp_ready_nanohost"),
    ("turn", "turn_started", "replied"),
    ("deliver", "replied", "received"),
)


def runtime_of(app: Any, group: str) -> SessionRuntime:
    for runtime in app[ORCHESTRATOR].runtimes.values():
        if runtime.folder == group:
            return runtime  # type: ignore[no-any-return]
    raise LookupError(group)


async def cold_reply(app: Any, chat: Chat, group: str, text: str) -> dict[str, float]:
    """Stop the group's container, then time one message to its reply; every mark, wall clock."""
    runtime = runtime_of(app, group)
    await runtime.stop("bench: cold start")
    assert runtime.container_id is None
    return await timed_reply(app, chat, group, text)


async def timed_reply(app: Any, chat: Chat, group: str, text: str) -> dict[str, float]:
    """One message to a stopped group → its reply: the host's and the runner's marks."""
    runtime = runtime_of(app, group)
    sent = time.time()
    await chat.send(text)
    await chat.reply()
    marks = {"sent": sent, "received": time.time(), **runtime.boot_marks}
    assert runtime.container_id is not None
    logs = await app[ORCHESTRATOR].ctx.backend.logs(runtime.container_id, tail=200)
    runner = parse_phases(logs[-65536:])
    return {**{k: v for k, v in runner.items() if k not in marks}, **marks}


def breakdown(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    totals = [(m["received"] - m["sent"]) * 1000 for m in runs]
    out["total"] = {"p50": pct(totals, 0.5), "max": max(totals)}
    for label, start, end in PHASES:
        values = [(m[end] - m[start]) * 1000 for m in runs if start in m and end in m]
        if values:
            out[label] = {"p50": pct(values, 0.5), "max": max(values), "n": len(values)}
    return out


async def series(settings: Any, group: str, runs: int) -> tuple[float, list[dict[str, float]]]:
    """The first wake (no thread yet), then ``runs`` cold starts with the state kept."""
    async with host(settings) as (base, app), Chat(base, group) as chat:
        first = await chat.round_trip("first wake")
        await chat.round_trip("warm")
        marks = [await cold_reply(app, chat, group, f"cold {i}") for i in range(runs)]
    return first, marks


async def five_at_once(
    settings: Any, groups: list[str], rounds: int
) -> tuple[list[float], list[dict[str, float]]]:
    """All groups stopped (each warm once before), then one message to each at the same moment:
    milliseconds to the last reply per round, and every group's marks of every round."""
    out: list[float] = []
    marks: list[dict[str, float]] = []
    async with host(settings) as (base, app):
        chats = [Chat(base, g) for g in groups]
        for chat in chats:
            await chat.__aenter__()
        try:
            for chat in chats:
                await chat.round_trip("warm")
            for i in range(rounds):
                await asyncio.gather(*(runtime_of(app, g).stop("bench") for g in groups))
                started = time.perf_counter()
                pairs = zip(chats, groups, strict=True)
                marks += await asyncio.gather(*(timed_reply(app, c, g, f"together {i}") for c, g in pairs))
                out.append((time.perf_counter() - started) * 1000)
        finally:
            for chat in chats:
                await chat.__aexit__(None, None, None)
    return out, marks


def report(
    result: Result, label: str, first: float, marks: list[dict[str, float]], target: float | None
) -> None:
    table = breakdown(marks)
    result.figures[label] = {"first_wake_ms": first, "phases": table, "runs": marks}
    total = table["total"]
    result.row(f"{label}: first wake ever (new thread)", ms(first))
    result.row(
        f"{label}: cold start p50 / max (n={len(marks)})",
        f"{ms(total['p50'])} / {ms(total['max'])}",
        f"p50 ≤ {target:g} ms" if target else "",
        check(total["p50"], target) if target else None,
    )
    parts = [f"{name} {v['p50']:.0f}" for name, v in table.items() if name != "total"]
    result.row(f"{label}: phases p50 (ms)", "; ".join(parts))


async def run(opts: Any) -> Result:
    from tests.fakes.model_server import ModelServer

    runs = int(getattr(opts, "runs", 20))
    result = Result("cold_start")
    ensure_image()
    with tempfile.TemporaryDirectory(prefix="nanohost-bench-") as tmp:
        root = Path(tmp)
        try:
            settings = settings_for(root / "mock")
            add_groups(settings, ["bench"], "mock")
            first, marks = await series(settings, "bench", runs)
            report(result, "mock", first, marks, None)
            model = ModelServer()
            await model.start()
            try:
                settings = settings_for(root / "codex", openai_api_key="sk-bench", model_base_url=model.url)
                five = [f"five{i}" for i in range(5)]
                add_groups(settings, ["bench", *five], "codex")
                first, marks = await series(settings, "bench", runs)
                report(result, "codex", first, marks, TARGET_CODEX_P50)
                together, five_marks = await five_at_once(settings, five, max(1, min(3, runs)))
            finally:
                await model.close()
            result.figures["codex_five_at_once_ms"] = together
            five_table = breakdown(five_marks)
            result.figures["codex_five_at_once_phases"] = five_table
            result.row(
                f"codex: five groups cold at once, to the last reply (worst of {len(together)})",
                ms(max(together)),
                f"≤ {TARGET_FIVE:g} ms",
                check(max(together), TARGET_FIVE),
            )
            parts = [f"{k} {v['p50']:.0f}/{v['max']:.0f}" for k, v in five_table.items() if k != "total"]
            result.row("codex: five at once, phases p50/max (ms)", "; ".join(parts))
        finally:
            remove_containers(root)
    return result
