"""A burst wider than the container cap: N groups (mock agent) each send one message at once.

With the default cap of 8 running containers, the groups beyond the first 8 wait for a slot; idle
containers give theirs up at once (see README, "Container slots"), so the burst drains in a few
container lifetimes instead of waiting out the idle timeout. Prints the number answered, the time
from the burst to the last reply (target: within 30 s for 50 groups on 2 cores), reply-time
percentiles, the longest wait for a slot and how many containers were stopped to make room
(both from /healthz).

Run: python -m bench fanout [--groups 50] [--cap 8]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    AUTH,
    Result,
    add_groups,
    check,
    ensure_image,
    host,
    pct,
    remove_containers,
    settings_for,
)
from nanohost.settings import Settings

TARGET = 30.0


async def reply_after(
    http: aiohttp.ClientSession, base: str, group: str, after: int, deadline: float
) -> float:
    """Long-poll until the group's first reply; the time it arrived (perf_counter), or NaN."""
    cursor = after
    while (left := deadline - time.perf_counter()) > 0:
        url = f"{base}/api/groups/{group}/messages?after={cursor}&wait={min(left, 60):.1f}"
        async with http.get(url, headers=AUTH) as response:
            messages = (await response.json())["messages"]
        if any(m["direction"] == "out" for m in messages):
            return time.perf_counter()
        if messages:
            cursor = messages[-1]["id"]
    return float("nan")


async def burst(settings: Settings, groups: list[str], timeout: float) -> tuple[list[float], dict[str, Any]]:
    async with host(settings) as (base, _app):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            async def send(group: str) -> int:
                async with http.post(
                    f"{base}/api/groups/{group}/messages", json={"text": f"hello {group}"}, headers=AUTH
                ) as response:
                    assert response.status == 201, await response.text()
                    return int((await response.json())["id"])

            started = time.perf_counter()
            ids = await asyncio.gather(*(send(g) for g in groups))
            deadline = started + timeout
            arrived = await asyncio.gather(
                *(reply_after(http, base, g, i, deadline) for g, i in zip(groups, ids, strict=True))
            )
            async with http.get(f"{base}/healthz") as response:
                health = await response.json()
    return [a - started for a in arrived], health.get("wake_queue", {})


async def run(opts: Any) -> Result:
    count, cap = int(getattr(opts, "groups", 50)), int(getattr(opts, "cap", 8))
    timeout = float(getattr(opts, "timeout", 180.0))
    result = Result("fanout")
    ensure_image()
    with tempfile.TemporaryDirectory(prefix="nanohost-bench-") as tmp:
        root = Path(tmp)
        # the default idle timeout (30 min) and quantum: only making room can drain the burst in time
        settings = settings_for(root, max_containers=cap)
        groups = [f"fan{i:02d}" for i in range(count)]
        add_groups(settings, groups, "mock")
        try:
            times, queue = await burst(settings, groups, timeout)
        finally:
            remove_containers(root)
    answered = sorted(t for t in times if t == t)  # NaN: no reply in time
    last = answered[-1] if answered else float("nan")
    result.figures = {
        "groups": count,
        "cap": cap,
        "answered": len(answered),
        "last_reply_s": last,
        "reply_p50_s": pct(answered, 0.5),
        "reply_p90_s": pct(answered, 0.9),
        "wake_queue": queue,
    }
    result.row(
        f"{count} groups at once, cap {cap}: answered",
        f"{len(answered)}/{count}",
        "all",
        len(answered) == count,
    )
    result.row("wall time to the last reply", f"{last:.1f} s", f"≤ {TARGET:g} s", check(last, TARGET))
    result.row("reply time p50 / p90", f"{pct(answered, 0.5):.1f} s / {pct(answered, 0.9):.1f} s")
    result.row(
        "queue: longest wait for a slot; idle stopped to make room; quantum stops",
        f"{queue.get('longest_wait_s')} s; {queue.get('evicted_idle')}; {queue.get('quantum_stops')}",
    )
    return result
