"""Discord end to end: the fake Discord ↔ the real host ↔ a real agent container (mock provider).

Each test injects MESSAGE_CREATE dispatches through the fake gateway and asserts what the bot
posted back through REST: the echo in the right channel, a long reply split under 2000
characters, a file both ways, mention rules, a 429 retried by delivery, a permanent error
recorded once, and a message sent while the gateway was down replayed on resume and answered once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nanohost.channels.discord import DiscordChannel
from tests.fakes.discord import TOKEN, FakeDiscord
from tests.support.host import add_group, bind, make_settings

pytestmark = pytest.mark.docker

CHAT = "1234567890"
REPLY_WAIT = 90.0
"""The first message of a test starts a container; that takes a few seconds on a busy machine."""


async def start(fake: FakeDiscord, start_host: Any, tmp_path: Path, **group_config: Any) -> Any:
    """A host with Discord on, group "team" bound to the test channel; returns once identified."""
    settings = make_settings(tmp_path, discord_token=TOKEN, discord_api_base=fake.url)
    add_group(settings, "team", **group_config)
    bind(settings, "discord", CHAT, "team")
    host = await start_host(settings)
    await fake.wait_identifies(1)
    return host


async def test_round_trip_replies_in_the_channel(
    discord_fake: FakeDiscord, start_host: Any, tmp_path: Path
) -> None:
    await start(discord_fake, start_host, tmp_path)
    await discord_fake.inject_message(CHAT, "hello")
    (reply,) = await discord_fake.wait_sent(CHAT, 1, REPLY_WAIT)
    assert reply.payload == {"content": "echo: hello", "allowed_mentions": {"parse": []}}
    assert discord_fake.attempts("typing"), "no typing indicator while the agent worked"


async def test_a_long_reply_is_split_under_discords_limit(
    discord_fake: FakeDiscord, start_host: Any, tmp_path: Path
) -> None:
    await start(discord_fake, start_host, tmp_path)
    text = " ".join(f"word{i}" for i in range(800))  # ~6,300 characters: the echo needs 4+ messages
    await discord_fake.inject_message(CHAT, text)
    echo = f"echo: {text}"
    pieces: list[str] = []
    while " ".join(pieces).split() != echo.split():
        sent = await discord_fake.wait_sent(CHAT, len(pieces) + 1, REPLY_WAIT)
        pieces = [s.content for s in sent]
        assert len(" ".join(pieces)) <= len(echo) + len(pieces), "more text than the echo"
    assert len(pieces) >= 4
    assert all(len(p) <= DiscordChannel.text_limit for p in pieces)


async def test_a_file_goes_both_ways(discord_fake: FakeDiscord, start_host: Any, tmp_path: Path) -> None:
    await start(discord_fake, start_host, tmp_path)
    data = b"the numbers: 1, 2, 3\n" * 50
    await discord_fake.inject_message(CHAT, "[sendback] here", attachments=[("notes.txt", data)])
    await discord_fake.wait_until(lambda: any(s.upload for s in discord_fake.messages(CHAT)), REPLY_WAIT)
    (upload,) = [s for s in discord_fake.messages(CHAT) if s.upload]
    assert upload.upload is not None and upload.upload.data == data
    assert upload.upload.filename == "notes.txt"
    assert upload.content == "back: notes.txt"
    assert upload.payload["attachments"] == [{"id": 0, "filename": "notes.txt"}]
    downloads = [c for c in discord_fake.calls if c.path.startswith("/cdn/")]
    assert len(downloads) == 1 and "Authorization" not in downloads[0].headers


async def test_in_mention_mode_only_addressed_messages_are_answered(
    discord_fake: FakeDiscord, start_host: Any, tmp_path: Path
) -> None:
    await start(discord_fake, start_host, tmp_path, engage_mode="mention")
    await discord_fake.inject_message(CHAT, "nobody asked you")
    await discord_fake.inject_message(CHAT, "ping", mention=True)
    await discord_fake.wait_sent(CHAT, 1, REPLY_WAIT)
    await discord_fake.inject_message(CHAT, "and again", reply_to_bot=True)  # a reply to the bot counts
    sent = await discord_fake.wait_sent(CHAT, 2, REPLY_WAIT)
    assert [s.content for s in sent] == ["echo: @nanobot ping", "echo: and again"]


async def test_a_429_is_retried_and_the_reply_arrives_once(
    discord_fake: FakeDiscord, start_host: Any, tmp_path: Path
) -> None:
    host = await start(discord_fake, start_host, tmp_path)
    discord_fake.rate_limit_next("messages", retry_after=1.0)
    await discord_fake.inject_message(CHAT, "hello")
    await discord_fake.wait_sent(CHAT, 1, REPLY_WAIT)
    attempts = discord_fake.attempts("messages")
    assert [(a.status, a.payload["content"]) for a in attempts] == [
        (429, "echo: hello"),
        (200, "echo: hello"),
    ]
    assert attempts[1].at - attempts[0].at >= 0.9  # delivery honoured retry_after
    await host.wait_outbound(lambda rows: [r.status for r in rows] == ["delivered"])
    assert [s.content for s in discord_fake.messages(CHAT)] == ["echo: hello"]


async def test_a_permanent_error_is_recorded_once(
    discord_fake: FakeDiscord, start_host: Any, tmp_path: Path
) -> None:
    host = await start(discord_fake, start_host, tmp_path)
    discord_fake.missing_access_next("messages")
    await discord_fake.inject_message(CHAT, "hello")
    await discord_fake.wait_until(lambda: discord_fake.attempts("messages"), REPLY_WAIT)
    await host.wait_outbound(lambda rows: [r.status for r in rows] == ["failed"])
    (row,) = host.outbound_rows()
    assert row.error is not None and "Missing Access" in row.error and "50001" in row.error
    assert len(discord_fake.attempts("messages")) == 1 and discord_fake.sent == []


async def test_a_message_sent_while_disconnected_is_replayed_on_resume_and_answered_once(
    discord_fake: FakeDiscord, start_host: Any, tmp_path: Path
) -> None:
    await start(discord_fake, start_host, tmp_path)
    await discord_fake.inject_message(CHAT, "before")
    await discord_fake.wait_sent(CHAT, 1, REPLY_WAIT)
    seq_before_drop = len(discord_fake.events)
    session = discord_fake.session_id
    await discord_fake.drop(hold=True)
    await discord_fake.inject_message(CHAT, "while away")
    await discord_fake.wait_until(lambda: discord_fake.refused_connections >= 1, 30)
    await discord_fake.release()
    await discord_fake.wait_resumes(1, 30)
    assert discord_fake.resumes[0] == {"token": TOKEN, "session_id": session, "seq": seq_before_drop}
    await discord_fake.wait_sent(CHAT, 2, REPLY_WAIT)
    await discord_fake.inject_message(CHAT, "after")
    sent = await discord_fake.wait_sent(CHAT, 3, REPLY_WAIT)
    assert [s.content for s in discord_fake.messages(CHAT)] == [
        "echo: before",
        "echo: while away",
        "echo: after",
    ]
    assert [s.content for s in sent] == ["echo: before", "echo: while away", "echo: after"]
    assert len(discord_fake.identifies) == 1
    assert [d.d["content"] for d in discord_fake.delivered if d.replayed] == ["while away"]
