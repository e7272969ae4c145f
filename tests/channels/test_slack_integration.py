"""Slack end to end: the fake Slack ↔ the real host ↔ a real agent container (mock provider).

Every test injects Socket Mode events into the fake and asserts what the bot posted back through
the Web API: the echo in the right channel and thread, long replies split under Slack's limit,
a file both ways, mention rules, a 429 retried by delivery, a permanent error recorded once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nanohost.channels.slack import SlackChannel
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, FakeSlack, running
from tests.support.host import add_group, bind, make_settings

pytestmark = pytest.mark.docker

CHANNEL = "C0123"
REPLY_WAIT = 90.0
"""The first message of a test starts a container; that takes a few seconds on a busy machine."""


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with running() as server:
        yield server


async def start(fake: FakeSlack, start_host: Any, tmp_path: Path, **group_config: Any) -> Any:
    """A host with Slack on, group "team" bound to the test channel; returns once it is connected."""
    settings = make_settings(
        tmp_path, slack_app_token=APP_TOKEN, slack_bot_token=BOT_TOKEN, slack_api_base=fake.url
    )
    add_group(settings, "team", **group_config)
    bind(settings, "slack", CHANNEL, "team")
    host = await start_host(settings)
    await fake.wait_connections(1)
    return host


async def test_round_trip_replies_in_the_thread_the_message_came_from(
    fake: FakeSlack, start_host: Any, tmp_path: Path
) -> None:
    await start(fake, start_host, tmp_path)
    thread = fake.ts()
    await fake.inject(fake.message("hello", thread_ts=thread, parent_user_id="U0USER2"))
    (reply,) = [c.params for c in await fake.wait_for("chat.postMessage", 1, REPLY_WAIT)]
    assert reply == {"channel": CHANNEL, "text": "echo: hello", "thread_ts": thread}

    await fake.inject(fake.message("top level"))
    replies = [c.params for c in await fake.wait_for("chat.postMessage", 2, REPLY_WAIT)]
    assert replies[1] == {"channel": CHANNEL, "text": "echo: top level"}  # no thread_ts: the channel
    assert fake.unacked() == []


async def test_a_long_reply_is_split_under_slacks_limit(
    fake: FakeSlack, start_host: Any, tmp_path: Path
) -> None:
    await start(fake, start_host, tmp_path)
    text = " ".join(f"word{i}" for i in range(9_000))  # ~75,000 characters: the echo needs 2+ posts
    await fake.inject(fake.message(text))
    echo = f"echo: {text}"
    pieces: list[str] = []
    while " ".join(pieces).split() != echo.split():
        calls = await fake.wait_for("chat.postMessage", len(pieces) + 1, REPLY_WAIT)
        pieces = [str(c.params["text"]) for c in calls]
        assert len(" ".join(pieces)) <= len(echo) + len(pieces), "more text than the echo"
    assert len(pieces) >= 2
    assert all(len(p) <= SlackChannel.text_limit for p in pieces)


async def test_a_file_goes_both_ways(fake: FakeSlack, start_host: Any, tmp_path: Path) -> None:
    await start(fake, start_host, tmp_path)
    data = b"the numbers: 1, 2, 3\n" * 50
    thread = fake.ts()
    await fake.inject(
        fake.message("[sendback] here", thread_ts=thread, files=[fake.add_file("notes.txt", data)])
    )
    await fake.wait_for("files.completeUploadExternal", 1, REPLY_WAIT)
    (upload,) = fake.uploads
    assert upload.data == data
    assert upload.initial_comment == "back: notes.txt"
    assert (upload.channel_id, upload.thread_ts) == (CHANNEL, thread)
    assert fake.downloads and all(token == BOT_TOKEN for _, token in fake.downloads)


async def test_in_mention_mode_only_the_mentioned_message_is_answered(
    fake: FakeSlack, start_host: Any, tmp_path: Path
) -> None:
    await start(fake, start_host, tmp_path, engage_mode="mention")
    await fake.inject(fake.message("nobody asked you"))
    ts = fake.ts()  # Slack sends a mention twice: as app_mention and as message
    await fake.inject(fake.mention("<@U0BOT> ping", ts=ts))
    await fake.inject(fake.message("<@U0BOT> ping", ts=ts))
    await fake.wait_for("chat.postMessage", 1, REPLY_WAIT)
    reply_to_bot = fake.message("and again", thread_ts=ts, parent_user_id="U0BOT")
    await fake.inject(reply_to_bot)  # a reply in the bot's thread counts as addressing it
    calls = await fake.wait_for("chat.postMessage", 2, REPLY_WAIT)
    assert [c.params["text"] for c in calls] == ["echo: @bot ping", "echo: and again"]


async def test_a_429_is_retried_and_the_reply_arrives_once(
    fake: FakeSlack, start_host: Any, tmp_path: Path
) -> None:
    host = await start(fake, start_host, tmp_path)
    fake.fail_next("chat.postMessage", status=429, retry_after=1)
    await fake.inject(fake.message("hello"))
    calls = await fake.wait_for("chat.postMessage", 2, REPLY_WAIT)
    assert [c.params["text"] for c in calls] == ["echo: hello", "echo: hello"]  # refused, then sent
    await host.wait_outbound(lambda rows: [r.status for r in rows] == ["delivered"])
    assert len(fake.calls_of("chat.postMessage")) == 2


async def test_a_permanent_error_is_recorded_once(fake: FakeSlack, start_host: Any, tmp_path: Path) -> None:
    host = await start(fake, start_host, tmp_path)
    fake.fail_next("chat.postMessage", error="channel_not_found")
    await fake.inject(fake.message("hello"))
    await fake.wait_for("chat.postMessage", 1, REPLY_WAIT)
    await host.wait_outbound(lambda rows: [r.status for r in rows] == ["failed"])
    (row,) = host.outbound_rows()
    assert row.error is not None and "channel_not_found" in row.error
    assert len(fake.calls_of("chat.postMessage")) == 1
