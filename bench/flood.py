"""A container flooding its queue must not slow the host or other groups.

One group's container (mock agent) writes, straight into its outbound queue as a hostile agent
can, three 100 MB rows and a few thousand small ones; meanwhile another group is messaged
repeatedly and /healthz is polled. Prints /healthz and the calm group's reply latency (p50 / max)
before and during the flood, the host's peak RSS, and what was imported of the flood.

Needs a Docker engine and the agent image (built here if missing, with the layer cache).
Run: .venv/bin/python bench/flood.py [--big-mb 100] [--small 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanohost.app import ORCHESTRATOR, build_app  # noqa: E402
from nanohost.containers.image import build_image  # noqa: E402
from nanohost.db import make_engine, make_session_factory, migrate  # noqa: E402
from nanohost.db.engine import transaction  # noqa: E402
from nanohost.groups import create_group  # noqa: E402
from nanohost.settings import load_settings  # noqa: E402

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def flood_script(big_mb: int, small: int) -> str:
    return (
        "import json, socket, sqlite3\n"
        "db = sqlite3.connect('/workspace/session/outbound.db', isolation_level=None)\n"
        "db.execute('PRAGMA journal_mode=PERSIST')\n"
        f"big = json.dumps({{'text': 'x' * {big_mb * 1024 * 1024}, 'in_reply_to': []}})\n"
        "for _ in range(3):\n"
        "    db.execute(\"INSERT INTO outbound VALUES (NULL, 'message', ?, 0)\", (big,))\n"
        "db.execute('BEGIN')\n"
        f"for i in range({small}):\n"
        "    db.execute(\"INSERT INTO outbound VALUES (NULL, 'progress', ?, 0)\","
        " (json.dumps({'text': f'p{i}'}),))\n"
        "db.execute('COMMIT')\n"
        "s = socket.socket(socket.AF_UNIX); s.connect('/workspace/session/doorbell.sock')\n"
        "s.sendall(b'outbound\\n')\n"
    )


async def timed_get(http: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with http.get(url, headers=AUTH) as response:
        await response.read()
        assert response.status == 200, response.status
    return (time.perf_counter() - started) * 1000


async def reply_ms(http: aiohttp.ClientSession, base: str, group: str, text: str) -> float:
    started = time.perf_counter()
    async with http.post(f"{base}/api/groups/{group}/messages", json={"text": text}, headers=AUTH) as r:
        sent = (await r.json())["id"]
    while True:
        async with http.get(
            f"{base}/api/groups/{group}/messages?after={sent}&wait=30", headers=AUTH
        ) as response:
            messages = (await response.json())["messages"]
        if any(m["direction"] == "out" for m in messages):
            return (time.perf_counter() - started) * 1000


async def probe(
    http: aiohttp.ClientSession, base: str, rounds: int, until: asyncio.Future[Any] | None = None
) -> tuple[list[float], list[float]]:
    """``rounds`` probes, or (with ``until``) probes for as long as ``until`` is not done."""
    health: list[float] = []
    calm: list[float] = []
    i = 0
    while (until is not None and not until.done()) or (until is None and i < rounds):
        health.append(await timed_get(http, f"{base}/healthz"))
        calm.append(await reply_ms(http, base, "calm", f"ping {i}"))
        i += 1
    return health, calm


def show(label: str, values: list[float]) -> str:
    return f"{label}: p50 {statistics.median(values):.1f} ms, max {max(values):.1f} ms"


async def main(big_mb: int, small: int, rounds: int) -> None:
    import docker

    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = load_settings(
            data_dir=root / "data",
            groups_dir=root / "groups",
            api_token=TOKEN,
            image_name="nanohost-bench-agent",
        )
        build_image(
            tag=settings.image_tag, codex_version=settings.codex_version, ca_file=settings.image_ca_file
        )
        engine = make_engine(settings.db_url)
        migrate.upgrade(engine)
        with transaction(make_session_factory(engine)) as db:
            create_group(db, settings, "flood")
            create_group(db, settings, "calm")
        engine.dispose()
        app = build_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        try:
            async with aiohttp.ClientSession() as http:
                await reply_ms(http, base, "flood", "wake up")
                await reply_ms(http, base, "calm", "wake up")
                before = await probe(http, base, rounds)
                rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                (container,) = client.containers.list(filters={"label": "nanohost.group=flood"})
                started = time.perf_counter()
                writing = asyncio.to_thread(
                    container.exec_run, ["/opt/venv/bin/python", "-c", flood_script(big_mb, small)]
                )
                orchestrator = app[ORCHESTRATOR]
                runtime = next(r for r in orchestrator.runtimes.values() if r.folder == "flood")

                async def flood_and_import() -> None:
                    code, output = await writing
                    assert code == 0, output
                    await runtime.pump()

                flood_task: asyncio.Future[Any] = asyncio.ensure_future(flood_and_import())
                during = await probe(http, base, rounds, until=flood_task)
                await flood_task
                imported_in = time.perf_counter() - started
                after = await probe(http, base, rounds)
        finally:
            await runner.cleanup()
            for c in client.containers.list(all=True, filters={"label": "nanohost.group"}):
                if any(str(root) in m.get("Source", "") for m in c.attrs.get("Mounts", [])):
                    c.remove(force=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  (host RSS before the flood {rss_before:.0f} MB)")
    print(f"flood: 3 x {big_mb} MB rows + {small} progress rows, 2 cores; {rounds} probes per phase")
    for phase, (health, calm) in (("before", before), ("during", during), ("after", after)):
        print(f"  {phase:6}  {show('/healthz', health)};  {show('calm group reply', calm)}")
    print(f"  flood written and imported in {imported_in:.1f} s; host peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mb", type=int, default=100)
    parser.add_argument("--small", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.big_mb, args.small, args.rounds))
