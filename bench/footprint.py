"""Footprint: the host's memory with many groups, an idle container's CPU and memory.

- Host RSS: ``nanohost serve`` as its own process with ``--configured`` groups (1,000) in its
  database and 8 containers running (7 mock groups and 1 Codex group each answered a message),
  read from /proc (VmRSS), before the messages and after.
- An idle warm container, with Codex (``codex app-server`` and the runner, after one reply): CPU
  over ``--idle`` seconds from its cgroup's CPU time (percent of one core), and memory: the
  cgroup's usage minus its page cache (what the container's processes hold), as the engine
  reports it.

Targets (DESIGN.md): host ≤ 150 MB; idle container ≤ 0.1 % of a core, ≤ 80 MiB with Codex.

Run: python -m bench footprint [--configured 1000] [--idle 20]
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
    free_port,
    remove_containers,
    rss_mib,
    serve_process,
    settings_for,
    wait_ready,
)

HOST_TARGET_MB = 150.0
IDLE_CPU_TARGET = 0.1
CODEX_RSS_TARGET = 80.0
MIB = 1024 * 1024


def container_of(root: Path, group: str) -> Any:
    import docker

    client = docker.from_env()
    for container in client.containers.list(filters={"label": f"nanohost.group={group}"}):
        if any(str(root) in m.get("Source", "") for m in container.attrs.get("Mounts", [])):
            return container
    raise LookupError(group)


def cpu_and_memory(container: Any) -> tuple[int, float]:
    """Cumulative CPU nanoseconds, and memory in MiB without page cache (cgroup v1 or v2)."""
    stats = container.stats(stream=False)
    memory = stats["memory_stats"]
    extra = memory.get("stats", {})
    cache = extra.get("total_inactive_file", extra.get("inactive_file", 0))
    return int(stats["cpu_stats"]["cpu_usage"]["total_usage"]), (memory["usage"] - cache) / MIB


async def run(opts: Any) -> Result:
    from tests.fakes.model_server import ModelServer

    configured, idle = int(getattr(opts, "configured", 1000)), float(getattr(opts, "idle", 20.0))
    cap = int(getattr(opts, "cap", 8))
    result = Result("footprint")
    ensure_image()
    model = ModelServer()
    await model.start()
    with tempfile.TemporaryDirectory(prefix="nanohost-bench-") as tmp:
        root = Path(tmp)
        settings = settings_for(root, max_containers=cap)
        names = [f"g{i:04d}" for i in range(configured)]
        started = time.perf_counter()
        add_groups(settings, names[: configured - 1], "mock")
        add_groups(settings, ["codex"], "codex")
        made = time.perf_counter() - started
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        host = serve_process(
            settings,
            port,
            root / "host.log",
            NANOHOST_MAX_CONTAINERS=str(cap),
            NANOHOST_OPENAI_API_KEY="sk-bench",
            NANOHOST_MODEL_BASE_URL=model.url,
        )
        try:
            await wait_ready(base, host)
            before = rss_mib(host.pid)
            awake = ["codex", *names[: cap - 1]]
            for group in awake:
                async with Chat(base, group) as chat:
                    await chat.round_trip("hello")
            after = rss_mib(host.pid)
            container = await asyncio.to_thread(container_of, root, "codex")
            cpu0, _ = await asyncio.to_thread(cpu_and_memory, container)
            t0 = time.monotonic()
            await asyncio.sleep(idle)  # the measurement window: the container is left idle
            cpu1, memory = await asyncio.to_thread(cpu_and_memory, container)
            idle_cpu = (cpu1 - cpu0) / 1e9 / (time.monotonic() - t0) * 100
        finally:
            host.terminate()
            host.wait(30)
            await model.close()
            remove_containers(root)
    result.figures = {
        "groups_configured": configured,
        "containers_running": len(awake),
        "groups_created_s": made,
        "host_rss_mib_before": before,
        "host_rss_mib_after": after,
        "idle_seconds": idle,
        "codex_container_idle_cpu_pct": idle_cpu,
        "codex_container_mib": memory,
    }
    mb = after * MIB / 1e6
    result.row(f"host RSS, {configured} groups configured, no container", f"{before * MIB / 1e6:.0f} MB")
    result.row(
        f"host RSS, {configured} groups, {len(awake)} containers running",
        f"{mb:.0f} MB",
        f"≤ {HOST_TARGET_MB:g} MB",
        check(mb, HOST_TARGET_MB),
    )
    result.row(
        f"idle warm Codex container: CPU over {idle:g} s",
        f"{idle_cpu:.3f} % of a core",
        f"≤ {IDLE_CPU_TARGET:g} %",
        check(idle_cpu, IDLE_CPU_TARGET),
    )
    result.row(
        "idle warm Codex container: memory (cgroup, without page cache)",
        f"{memory:.1f} MiB",
        f"≤ {CODEX_RSS_TARGET:g} MiB",
        check(memory, CODEX_RSS_TARGET),
    )
    return result
