"""Warm reply latency through the whole host: message in → agent in its real container → reply out.

For the mock agent (pure nanohost plumbing) and for real Codex with a model server on 127.0.0.1
that answers at once: the warm round trip over ``--messages`` messages, through the public API
(bearer token, ``POST /api/groups/G/messages``, reply on ``/api/groups/G/stream``) and through the
web chat (login cookie, ``POST /web/groups/G/messages``, reply on its websocket): p50/p95/p99.
"Plumbing" is what nanohost adds: the round trip minus the model server's own time (for Codex:
minus Codex's own turn time, measured by driving the same binary directly, no host, no container).
Only Codex's median is subtracted, so a Codex plumbing p99 also holds Codex's own tail: the row
"Codex alone" shows its p95/p99 beside it.

Run: python -m bench latency [--messages 500]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    AUTH,
    ROOT,
    TOKEN,
    Chat,
    Result,
    add_group,
    check,
    ensure_image,
    host,
    ms,
    pct,
    remove_containers,
    settings_for,
)
from nanohost.settings import Settings

__all__ = ["AUTH", "TOKEN", "add_group", "measure", "pct", "remove_bench_containers", "settings_for"]
PASSWORD = "bench-password"
PLUMBING_P50, PLUMBING_P99 = 20.0, 60.0


async def measure(settings: Settings, group: str, messages: int) -> tuple[float, list[float]]:
    """Cold start then ``messages`` warm round trips through the API (used by bench/channels.py)."""
    async with host(settings) as (base, _app), Chat(base, group) as chat:
        cold = await chat.round_trip("cold start")
        warm = [await chat.round_trip(f"message {i}") for i in range(messages)]
    return cold, warm


def remove_bench_containers(root: Path) -> None:
    """Kept for the extra benchmarks: removes the containers that mount ``root``."""
    remove_containers(root)


def open_web_chat(settings: Settings, group: str, password: str) -> None:
    """Bind ``group`` to the web chat and set the web chat's password."""
    from nanohost.channels.state import ChannelStore
    from nanohost.channels.web_auth import CHANNEL, WebAuth
    from nanohost.db import make_engine, make_session_factory
    from nanohost.db.engine import transaction
    from nanohost.groups import bind_chat, get_group

    engine = make_engine(settings.db_url)
    try:
        with transaction(make_session_factory(engine)) as db:
            bind_chat(db, CHANNEL, group, get_group(db, group), "shared")
        WebAuth(ChannelStore(make_session_factory(engine), CHANNEL)).set_password(password)
    finally:
        engine.dispose()


async def both_paths(settings: Settings, provider: str, messages: int) -> dict[str, list[float]]:
    """Warm round trips through the API and the web chat (after a few warm-ups each), each path
    in a group of its own: one conversation shared by both would make the second path's turns
    the longer thread's (Codex's own turn grows with the thread: ~56 ms at 100 turns, ~68 at
    600, measured), charging that to the path."""
    groups = {"api": "bench", "web": "bench-web"}
    for group in groups.values():
        add_group(settings, group, provider)
    open_web_chat(settings, groups["web"], PASSWORD)
    out: dict[str, list[float]] = {}
    async with host(settings) as (base, _app):
        for path, web in (("api", False), ("web", True)):
            async with Chat(base, groups[path], web=web, password=PASSWORD) as chat:
                for i in range(3):
                    await chat.round_trip(f"warm-up {i}")
                out[path] = [await chat.round_trip(f"{path} message {i}") for i in range(messages)]
    return out


async def codex_turn_times(model: Any, root: Path, messages: int) -> list[float]:
    """The time Codex alone takes per trivial turn (same binary, no host, no container)."""
    sys.path.insert(0, str(ROOT / "container"))
    from agent_runner.codex.provider import CodexProvider
    from agent_runner.provider import Input, ResultEvent

    from tests.support.codex_bin import ensure_codex

    provider = CodexProvider(
        codex_home=root / "direct-codex",
        cwd=root,
        base_url=model.url,
        placeholder="x",
        codex_bin=ensure_codex(),
    )
    await provider.start()
    times: list[float] = []
    thread = None
    try:
        for i in range(messages + 1):
            started = time.perf_counter()
            query = provider.query(Input(f"direct {i}", (i,)), thread)
            async for event in query:
                if isinstance(event, ResultEvent):
                    query.end()
                elif hasattr(event, "continuation"):
                    thread = event.continuation
            if i:  # the first includes thread start
                times.append((time.perf_counter() - started) * 1000)
    finally:
        await provider.close()
    return times


def summarise(result: Result, label: str, times: list[float], subtract: float, targets: bool) -> None:
    key = label.replace(" ", "_")
    result.figures[key] = {
        "n": len(times),
        "p50": pct(times, 0.5),
        "p95": pct(times, 0.95),
        "p99": pct(times, 0.99),
        "mean": statistics.fmean(times),
        "subtracted": subtract,
    }
    result.row(
        f"{label}: round trip p50/p95/p99 (n={len(times)})",
        f"{ms(pct(times, 0.5))} / {ms(pct(times, 0.95))} / {ms(pct(times, 0.99))}",
    )
    over = [t - subtract for t in times]
    p50, p99 = pct(over, 0.5), pct(over, 0.99)
    result.figures[key]["plumbing_p50"], result.figures[key]["plumbing_p99"] = p50, p99
    what = f"minus {subtract:.1f} ms of Codex's own turn" if subtract else "nothing subtracted: mock"
    result.row(
        f"{label}: plumbing p50 / p99 ({what})",
        f"{ms(p50)} / {ms(p99)}",
        f"≤ {PLUMBING_P50:g} / ≤ {PLUMBING_P99:g} ms" if targets else "",
        check(p50, PLUMBING_P50) and check(p99, PLUMBING_P99) if targets else None,
    )


async def run(opts: Any) -> Result:
    from tests.fakes.model_server import ModelServer

    messages = int(getattr(opts, "messages", 500))
    result = Result("latency")
    ensure_image()
    with tempfile.TemporaryDirectory(prefix="nanohost-bench-") as tmp:
        root = Path(tmp)
        try:
            settings = settings_for(root / "mock")
            for path, times in (await both_paths(settings, "mock", messages)).items():
                summarise(result, f"mock via {path}", times, 0.0, targets=True)
            model = ModelServer(record=False)  # a bench of 500 turns must not keep 500 threads
            await model.start()
            try:
                settings = settings_for(root / "codex", openai_api_key="sk-bench", model_base_url=model.url)
                paths = await both_paths(settings, "codex", messages)
                direct = await codex_turn_times(model, root, messages)  # a thread as long as each path's
            finally:
                await model.close()
            codex_own = statistics.median(direct)
            result.figures["codex_direct_turn_p50"] = codex_own
            result.figures["codex_direct_turn_p95"] = pct(direct, 0.95)
            result.figures["codex_direct_turn_p99"] = pct(direct, 0.99)
            result.row(
                "Codex alone (no host, no container): trivial turn p50/p95/p99",
                f"{ms(codex_own)} / {ms(pct(direct, 0.95))} / {ms(pct(direct, 0.99))}",
            )
            for path, times in paths.items():
                summarise(result, f"codex via {path}", times, codex_own, targets=True)
        finally:
            remove_containers(root)
    return result
