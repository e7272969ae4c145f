"""Reply latency through the whole host: API message in → agent in its real container → reply out.

Prints, for the mock agent (pure nanohost plumbing) and for real Codex with a model server that
answers instantly: warm round trip p50/p99 over N messages, and cold start (no container → reply).
For Codex, "overhead" subtracts the time Codex itself spends on a turn, measured the same way
with Codex driven directly (no host, no container): what remains is nanohost's own cost.

Needs a Docker engine and the agent image (built here if missing, with the layer cache).
Run: .venv/bin/python bench/latency.py [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
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

from nanohost.app import build_app  # noqa: E402
from nanohost.containers.image import build_image  # noqa: E402
from nanohost.db import make_engine, make_session_factory, migrate  # noqa: E402
from nanohost.db.engine import transaction  # noqa: E402
from nanohost.groups import create_group  # noqa: E402
from nanohost.settings import Settings, load_settings  # noqa: E402
from tests.fakes.model_server import ModelServer  # noqa: E402

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def round_trip(
    http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, base: str, group: str, text: str
) -> float:
    started = time.perf_counter()
    async with http.post(
        f"{base}/api/groups/{group}/messages", json={"text": text}, headers=AUTH
    ) as response:
        assert response.status == 201, await response.text()
    while True:
        event = await asyncio.wait_for(ws.receive_json(), 120)
        if event.get("type") == "message" and event.get("direction") == "out":
            return (time.perf_counter() - started) * 1000


async def measure(settings: Settings, group: str, messages: int) -> tuple[float, list[float]]:
    app = build_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{base}/api/groups/{group}/stream", headers=AUTH) as ws,
        ):
            cold = await round_trip(http, ws, base, group, "cold start")
            warm = [await round_trip(http, ws, base, group, f"message {i}") for i in range(messages)]
    finally:
        await runner.cleanup()
    return cold, warm


async def codex_turn_times(model: ModelServer, root: Path, messages: int) -> list[float]:
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


def settings_for(root: Path, **extra: Any) -> Settings:
    settings = load_settings(
        data_dir=root / "data",
        groups_dir=root / "groups",
        api_token=TOKEN,
        image_name="nanohost-bench-agent",
        **extra,
    )
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    engine.dispose()
    return settings


def add_group(settings: Settings, name: str, provider: str) -> None:
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        create_group(db, settings, name, provider=provider)
    engine.dispose()


def report(label: str, cold: float, warm: list[float], subtract: float = 0.0) -> None:
    print(
        f"{label}: cold start {cold:.0f} ms; warm round trip p50 {pct(warm, 0.5):.1f} ms, "
        f"p99 {pct(warm, 0.99):.1f} ms, mean {statistics.fmean(warm):.1f} ms over {len(warm)} messages"
    )
    if subtract:
        over = [w - subtract for w in warm]
        print(
            f"{label}: overhead beyond Codex's own turn time ({subtract:.1f} ms median): "
            f"p50 {pct(over, 0.5):.1f} ms, p99 {pct(over, 0.99):.1f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    probe = Settings()
    tag = Settings(image_name="nanohost-bench-agent").image_tag  # the tag settings_for() runs
    started = time.perf_counter()
    build_image(tag=tag, codex_version=probe.codex_version, ca_file=probe.image_ca_file)
    print(f"image {tag} ready in {time.perf_counter() - started:.1f} s (layer cache)")
    with tempfile.TemporaryDirectory(prefix="nanohost-bench-") as tmp:
        root = Path(tmp)
        settings = settings_for(root / "mock")
        add_group(settings, "bench", "mock")
        cold, warm = await measure(settings, "bench", args.messages)
        report("mock agent (plumbing only)", cold, warm)

        model = ModelServer()
        await model.start()
        try:
            settings = settings_for(root / "codex", openai_api_key="sk-bench", model_base_url=model.url)
            add_group(settings, "bench", "codex")
            cold, warm = await measure(settings, "bench", args.messages)
            direct = await codex_turn_times(model, root, min(args.messages, 50))
            report("codex agent", cold, warm, subtract=statistics.median(direct))
        finally:
            await model.close()
        remove_bench_containers()


def remove_bench_containers() -> None:
    """The benchmark's containers outlive its host; remove them."""
    import docker

    client = docker.from_env()
    for container in client.containers.list(all=True, filters={"label": "nanohost.group=bench"}):
        container.remove(force=True)
    client.close()


if __name__ == "__main__":
    asyncio.run(main())
