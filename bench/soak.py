"""Soak: many messages through one group (mock agent, real container); nothing may grow with history.

Runs `nanohost serve` as its own process (so its RSS is the host's alone) with one mock group,
sends ``--messages`` messages through the HTTP API one after another (each waits for its reply on
the websocket), and measures at the start (after a warm-up) and at the end:

- warm round-trip latency p50 / p99 over ``--sample`` messages,
- the host's resident memory (VmRSS),
- the container's CPU while idle for ``--idle`` seconds (its cgroup's CPU time, via the engine),
- the session's queue files (``inbound.db``, ``outbound.db`` and their journals).

Targets: every queue file under 1 MiB; RSS and latency p50 at the end within 20 % of the start.
Both sides prune (``nanohost.transport.SessionQueues.prune`` / ``mark_imported`` after each
import, ``agent_runner.queues.RunnerQueues.prune`` after each turn).

Needs a Docker engine and the agent image (built here if missing, with the layer cache).
Run: .venv/bin/python bench/soak.py [--messages 20000] [--sample 200] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import IMAGE_NAME, remove_containers, serve_process, wait_ready  # noqa: E402
from bench.latency import AUTH, add_group, pct, settings_for  # noqa: E402
from nanohost.containers.image import build_image  # noqa: E402
from nanohost.settings import Settings  # noqa: E402

GROUP = "soak"
MIB = 1024 * 1024


@dataclass
class Snapshot:
    label: str
    messages: int
    p50: float
    p99: float
    rss_mib: float
    idle_cpu_pct: float
    files: dict[str, int]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def queue_files(settings: Settings) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for path in sorted(settings.sessions_dir.glob("*/*")):
        if path.name.startswith(("inbound.db", "outbound.db")):
            sizes[f"{path.parent.name}/{path.name}"] = path.stat().st_size
    return sizes


def container_cpu_ns(container: Any) -> int:
    stats = container.stats(stream=False, one_shot=True)
    return int(stats["cpu_stats"]["cpu_usage"]["total_usage"])


async def idle_cpu(settings: Settings, seconds: float) -> float:
    """The group's container's CPU use while idle, in percent of one core."""
    import docker

    client = docker.from_env()
    try:
        (container,) = client.containers.list(filters={"label": f"nanohost.group={GROUP}"})
        before, started = await asyncio.to_thread(container_cpu_ns, container), time.monotonic()
        await asyncio.sleep(seconds)  # the measurement window: nothing is sent meanwhile
        after, ended = await asyncio.to_thread(container_cpu_ns, container), time.monotonic()
    finally:
        client.close()
    return (after - before) / 1e9 / (ended - started) * 100


class Chat:
    """One websocket and one HTTP session: post a message, wait for its reply."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(f"{self.base}/api/groups/{GROUP}/stream", headers=AUTH)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()

    async def round_trip(self, text: str) -> float:
        assert self.http is not None and self.ws is not None
        started = time.perf_counter()
        async with self.http.post(
            f"{self.base}/api/groups/{GROUP}/messages", json={"text": text}, headers=AUTH
        ) as response:
            assert response.status == 201, await response.text()
        while True:
            event = await asyncio.wait_for(self.ws.receive_json(), 120)
            if event.get("type") == "message" and event.get("direction") == "out":
                return (time.perf_counter() - started) * 1000


async def snapshot(
    label: str, chat: Chat, host: subprocess.Popen[bytes], settings: Settings, args: Any, sent: int
) -> Snapshot:
    times = [await chat.round_trip(f"{label} sample {i}") for i in range(args.sample)]
    return Snapshot(
        label=label,
        messages=sent + args.sample,
        p50=pct(times, 0.5),
        p99=pct(times, 0.99),
        rss_mib=rss_mib(host.pid),
        idle_cpu_pct=await idle_cpu(settings, args.idle),
        files=queue_files(settings),
    )


def report(start: Snapshot, end: Snapshot, took: float, total: int) -> bool:
    print(f"\n{total} messages through one group in {took:.0f} s ({total / took:.0f} messages/s)")
    print(f"{'':12}{'messages':>10}{'p50 ms':>9}{'p99 ms':>9}{'RSS MiB':>9}{'idle CPU %':>12}")
    for s in (start, end):
        print(
            f"{s.label:12}{s.messages:>10}{s.p50:>9.1f}{s.p99:>9.1f}{s.rss_mib:>9.1f}{s.idle_cpu_pct:>12.2f}"
        )
    print("queue files at the end:")
    for name, size in end.files.items():
        print(f"  {name:32}{size / 1024:>10.1f} KiB (start: {start.files.get(name, 0) / 1024:.1f} KiB)")
    checks = {
        "queue files under 1 MiB": all(size < MIB for size in end.files.values()),
        "RSS at the end within 20 % of the start": end.rss_mib <= start.rss_mib * 1.2,
        "latency p50 at the end within 20 % of the start": end.p50 <= start.p50 * 1.2,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return all(checks.values())


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sample", type=int, default=200, help="round trips per latency sample")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    args = parser.parse_args()
    probe = Settings(image_name=IMAGE_NAME)
    started = time.perf_counter()
    build_image(tag=probe.image_tag, codex_version=probe.codex_version, ca_file=probe.image_ca_file)
    print(f"image {probe.image_tag} ready in {time.perf_counter() - started:.1f} s (layer cache)")
    with tempfile.TemporaryDirectory(prefix="nanohost-soak-") as tmp:
        root = Path(tmp)
        settings = settings_for(root)  # the bench image (IMAGE_NAME)
        add_group(settings, GROUP, "mock")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        host = serve_process(settings, port, root / "host.log")
        chat = Chat(base)
        try:
            await wait_ready(base, host)
            await chat.open()
            began = time.perf_counter()
            for i in range(args.warmup):
                await chat.round_trip(f"warm-up {i}")
            start = await snapshot("start", chat, host, settings, args, args.warmup)
            bulk = args.messages - args.warmup - 2 * args.sample
            for i in range(bulk):
                await chat.round_trip(f"message {i}: " + "lorem ipsum dolor sit amet " * 4)
                if (i + 1) % 2000 == 0:
                    files = queue_files(settings)
                    biggest = max(files.values(), default=0) / 1024
                    rss = rss_mib(host.pid)
                    print(
                        f"  {i + 1} sent, host RSS {rss:.1f} MiB, largest queue file {biggest:.0f} KiB",
                        flush=True,
                    )
            end = await snapshot("end", chat, host, settings, args, start.messages + bulk)
            took = time.perf_counter() - began
        finally:
            await chat.close()
            host.terminate()
            host.wait(30)
            remove_containers(root)
    return 0 if report(start, end, took, end.messages) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
