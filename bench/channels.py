"""What the chat channel layer adds: a chat message in → the mock agent in its container → reply out.

Three figures, with the Telegram adapter against the fake Bot API on 127.0.0.1 (the fake answers
at once, so what is measured is nanohost's own path: long poll → router → session → container →
delivery → sendMessage):
- chat round trip: cold start, then warm p50/p99 over N messages sent one after another;
- the same through the HTTP API (bench/latency.py's path), so the difference is the channel layer;
- router throughput: messages a second through ``Router.receive`` (binding, allow-list, engage
  mode, de-duplication, record, queue), with the agent answering meanwhile.

Needs a Docker engine and the agent image (built here if missing, with the layer cache).
Run: .venv/bin/python bench/channels.py [--messages 200] [--burst 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.latency import add_group, measure, pct, remove_bench_containers, settings_for  # noqa: E402
from nanohost.app import build_app  # noqa: E402
from nanohost.channels.api import ROUTER  # noqa: E402
from nanohost.channels.base import InboundMessage  # noqa: E402
from nanohost.containers.image import build_image  # noqa: E402
from nanohost.db import make_engine, make_session_factory  # noqa: E402
from nanohost.db.engine import transaction  # noqa: E402
from nanohost.groups import bind_chat, get_group  # noqa: E402
from nanohost.settings import Settings  # noqa: E402
from tests.fakes.telegram import TOKEN, FakeTelegram  # noqa: E402

CHAT = -1009999


def bind(settings: Settings, channel: str, chat_id: str, group: str) -> None:
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        bind_chat(db, channel, chat_id, get_group(db, group), "shared")
    engine.dispose()


async def telegram_round_trips(
    settings: Settings, fake: FakeTelegram, messages: int
) -> tuple[float, list[float]]:
    runner = web.AppRunner(build_app(settings))
    await runner.setup()
    try:
        await fake.wait_for("getUpdates", 1, timeout=30)
        times: list[float] = []
        for i in range(messages + 1):
            sent = len(fake.calls_of("sendMessage", CHAT))
            started = time.perf_counter()
            fake.inject_message(CHAT, f"message {i}")
            await fake.wait_for("sendMessage", sent + 1, chat_id=CHAT, timeout=120)
            times.append((time.perf_counter() - started) * 1000)
        return times[0], times[1:]
    finally:
        await runner.cleanup()


async def router_throughput(settings: Settings, burst: int) -> float:
    runner = web.AppRunner(build_app(settings))
    await runner.setup()
    try:
        router = runner.app[ROUTER]
        started = time.perf_counter()
        for i in range(burst):
            await router.receive(
                InboundMessage(
                    "telegram", str(CHAT), "alice", f"burst {i}", platform_message_id=f"{CHAT}:b{i}"
                )
            )
        return burst / (time.perf_counter() - started)
    finally:
        await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args()
    probe = Settings()
    tag = Settings(image_name="nanohost-bench-agent").image_tag  # the tag settings_for() runs
    build_image(tag=tag, codex_version=probe.codex_version, ca_file=probe.image_ca_file)
    fake = await FakeTelegram().start()
    with tempfile.TemporaryDirectory(prefix="nanohost-bench-") as tmp:
        root = Path(tmp)
        try:
            settings = settings_for(root / "tg", telegram_token=TOKEN, telegram_api_base=fake.url)
            add_group(settings, "bench", "mock")
            bind(settings, "telegram", str(CHAT), "bench")
            cold, warm = await telegram_round_trips(settings, fake, args.messages)
            print(
                f"telegram (fake Bot API) → mock agent → reply: cold start {cold:.0f} ms; warm p50 "
                f"{pct(warm, 0.5):.1f} ms, p99 {pct(warm, 0.99):.1f} ms, "
                f"mean {statistics.fmean(warm):.1f} ms over {len(warm)} messages"
            )
            api_settings = settings_for(root / "api")
            add_group(api_settings, "bench", "mock")
            api_cold, api_warm = await measure(api_settings, "bench", args.messages)
            print(
                f"HTTP API → mock agent → reply: cold start {api_cold:.0f} ms; warm p50 "
                f"{pct(api_warm, 0.5):.1f} ms, p99 {pct(api_warm, 0.99):.1f} ms"
            )
            rate = await router_throughput(settings, args.burst)
            print(f"router: {rate:,.0f} messages/s through Router.receive over {args.burst} messages")
        finally:
            await fake.close()
            remove_bench_containers(root)


if __name__ == "__main__":
    asyncio.run(main())
