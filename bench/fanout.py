"""A burst wider than the container cap: N groups (mock agent) each send one message at once.

With the default cap of 8 running containers, the groups beyond the first 8 wait for a slot; idle
containers give theirs up at once (see README, "Container slots"), so the burst drains in a few
container lifetimes instead of waiting out the idle timeout. Prints the number answered, the time
from the burst to the last reply (target: within 30 s for 50 groups on 2 cores), reply-time
percentiles, the longest wait for a slot and how many containers were stopped to make room
(both from /healthz).

Needs a Docker engine and the agent image (built here if missing, with the layer cache).
Run: .venv/bin/python bench/fanout.py [--groups 50] [--cap 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.latency import AUTH, add_group, pct, settings_for  # noqa: E402
from nanohost.app import build_app  # noqa: E402
from nanohost.containers.image import build_image  # noqa: E402
from nanohost.settings import Settings  # noqa: E402

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
    runner = web.AppRunner(build_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    try:
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
    finally:
        await runner.cleanup()
    return [a - started for a in arrived], health.get("wake_queue", {})


def remove_containers(root: Path) -> None:
    """The benchmark's containers outlive its host; remove those that mount its temporary dir."""
    import docker

    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": "nanohost.group"}):
        if any(str(root) in m.get("Source", "") for m in container.attrs.get("Mounts", [])):
            container.remove(force=True)
    client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--cap", type=int, default=8, help="NANOHOST_MAX_CONTAINERS")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the replies")
    args = parser.parse_args()
    probe = Settings()
    tag = Settings(image_name="nanohost-bench-agent").image_tag  # the tag settings_for() runs
    started = time.perf_counter()
    build_image(tag=tag, codex_version=probe.codex_version, ca_file=probe.image_ca_file)
    print(f"image {tag} ready in {time.perf_counter() - started:.1f} s (layer cache)")
    with tempfile.TemporaryDirectory(prefix="nanohost-bench-") as tmp:
        root = Path(tmp)
        # the default idle timeout (30 min) and quantum: only making room can drain the burst in time
        settings = settings_for(root, max_containers=args.cap)
        groups = [f"fan{i:02d}" for i in range(args.groups)]
        for group in groups:
            add_group(settings, group, "mock")
        try:
            times, queue = await burst(settings, groups, args.timeout)
        finally:
            remove_containers(root)
    answered = sorted(t for t in times if t == t)  # NaN: no reply in time
    last = answered[-1] if answered else float("nan")
    print(
        f"{len(answered)}/{len(groups)} groups answered with a cap of {args.cap} containers; "
        f"last reply {last:.1f} s after the burst (target ≤ {TARGET:.0f} s: "
        f"{'met' if len(answered) == len(groups) and last <= TARGET else 'MISSED'})"
    )
    if answered:
        print(
            f"reply time p50 {pct(answered, 0.5):.1f} s, p90 {pct(answered, 0.9):.1f} s; "
            f"longest wait for a slot {queue.get('longest_wait_s')} s; "
            f"idle containers stopped to make room {queue.get('evicted_idle')}, "
            f"quantum stops {queue.get('quantum_stops')}"
        )


if __name__ == "__main__":
    asyncio.run(main())
