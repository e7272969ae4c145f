"""A channel whose token is refused stays off; one that cannot be reached yet is retried; the
others run regardless."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nanohost.channels.base import (
    ChannelAdapter,
    ChannelSink,
    ChannelStartError,
    ChatTarget,
    InboundMessage,
    TransientError,
)
from nanohost.channels.registry import Channels
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN
from tests.fakes.slack import running as slack_fake
from tests.fakes.telegram import running as telegram_fake
from tests.support.host import add_group, bind, make_settings


class Sink:
    async def receive(self, message: InboundMessage) -> None:
        return None

    async def chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        return None


class Scripted(ChannelAdapter):
    """Starts after raising the given errors, one per call; records starts and stops."""

    text_limit = 100
    caption_limit = 100

    def __init__(self, name: str, errors: list[Exception]) -> None:
        self.name = name  # type: ignore[misc]
        self.errors = errors
        self.starts = 0
        self.stops = 0
        self.started = asyncio.Event()
        self.why: str | None = None

    def broken(self) -> str | None:
        return self.why

    async def start(self, sink: ChannelSink) -> None:
        self.starts += 1
        if self.errors:
            raise self.errors.pop(0)
        self.started.set()

    async def stop(self) -> None:
        self.stops += 1

    async def send_text(self, target: ChatTarget, text: str) -> str | None:
        return None

    async def send_file(self, target: ChatTarget, path: Path, caption: str) -> str | None:
        return None


async def test_refused_stays_off_unreachable_is_retried_and_others_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("nanohost.channels.registry.Backoff", lambda **_: _Immediate())
    refused = Scripted("telegram", [ChannelStartError("NANOHOST_TELEGRAM_TOKEN was refused by Telegram")])
    flaky = Scripted("slack", [TransientError("slack.com unreachable"), TransientError("HTTP 503")])
    fine = Scripted("discord", [])
    channels = Channels([refused, flaky, fine], Sink())
    await channels.start()
    assert set(channels.running) == {"discord"}  # start() never waits for the flaky one
    await asyncio.wait_for(flaky.started.wait(), 5)
    assert set(channels.running) == {"discord", "slack"} and flaky.starts == 3
    assert refused.starts == 1 and refused.stops == 1  # tried once, cleaned up, left off
    assert "NANOHOST_TELEGRAM_TOKEN was refused" in caplog.text
    assert channels.state["telegram"].startswith("off: NANOHOST_TELEGRAM_TOKEN was refused")
    assert channels.state == {**channels.state, "slack": "on", "discord": "on"}
    fine.why = "token revoked while running"
    assert channels.state["discord"] == "off: token revoked while running"
    await channels.stop()
    assert fine.stops == 1 and flaky.stops >= 1


class _Immediate:
    """Backoff without waiting, so the test runs at once."""

    def next(self) -> float:
        return 0.0

    def reset(self) -> None:
        return None


@pytest.mark.docker
async def test_a_wrong_token_leaves_one_channel_off_and_the_others_answer(
    tmp_path: Path, start_host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with telegram_fake() as telegram, slack_fake() as slack:
        settings = make_settings(
            tmp_path,
            telegram_token="999:wrong-token",
            telegram_api_base=telegram.url,
            slack_app_token=APP_TOKEN,
            slack_bot_token=BOT_TOKEN,
            slack_api_base=slack.url,
        )
        add_group(settings, "team")
        bind(settings, "slack", "C0123", "team")
        host = await start_host(settings)
        health = await (await host.client.get("/healthz")).json()
        assert health["channels"]["slack"] == "on"
        assert health["channels"]["telegram"].startswith("off: ")
        assert "NANOHOST_TELEGRAM_TOKEN" in health["channels"]["telegram"]
        assert "wrong-token" not in caplog.text and "wrong-token" not in str(health)
        await slack.inject(slack.message("still here"))
        await host.wait_outbound(lambda rows: [r.status for r in rows] == ["delivered"], 60)
        assert [r.text for r in host.outbound_rows()] == ["echo: still here"]
