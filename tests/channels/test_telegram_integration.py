"""Telegram end to end: the fake Bot API ↔ the real host ↔ a real agent container (mock provider).

Every test injects updates into the fake and asserts what the bot sent back through the Bot API:
the echo in the right chat, long replies split under Telegram's limit, a file both ways, mention
rules, a 429 retried by delivery, a permanent error recorded once, and a supergroup migration
that moves the chat's binding, including one a reply learns of (and is resent to the new chat).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nanohost.channels.telegram import TelegramChannel
from tests.fakes.telegram import KICKED, TOKEN, FakeTelegram, running
from tests.support.host import add_group, bind, make_settings

pytestmark = pytest.mark.docker

GROUP = -1001234
REPLY_WAIT = 90.0
"""The first message of a test starts a container; that takes a few seconds on a busy machine."""


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with running() as server:
        yield server


async def start(
    fake: FakeTelegram, start_host: Any, tmp_path: Path, chat_id: int = GROUP, **group_config: Any
) -> Any:
    """A host with Telegram on, group "team" bound to the test chat; returns once it polls."""
    settings = make_settings(tmp_path, telegram_token=TOKEN, telegram_api_base=fake.url)
    add_group(settings, "team", **group_config)
    bind(settings, "telegram", str(chat_id), "team")
    host = await start_host(settings)
    await fake.wait_for("getUpdates", 1, timeout=30)
    return host


async def test_round_trip_echo_in_the_chat(fake: FakeTelegram, start_host: Any, tmp_path: Path) -> None:
    await start(fake, start_host, tmp_path)
    fake.inject_message(GROUP, "hello")
    (reply,) = [c.params for c in await fake.wait_for("sendMessage", 1, timeout=REPLY_WAIT)]
    assert reply == {"chat_id": GROUP, "text": "echo: hello"}


async def test_a_long_reply_is_split_under_telegrams_limit(
    fake: FakeTelegram, start_host: Any, tmp_path: Path
) -> None:
    await start(fake, start_host, tmp_path)
    text = " ".join(f"word{i}" for i in range(1_500))  # ~11,000 characters: the echo needs 3 messages
    fake.inject_message(GROUP, text)
    echo = f"echo: {text}"
    pieces: list[str] = []
    while " ".join(pieces).split() != echo.split():
        calls = await fake.wait_for("sendMessage", len(pieces) + 1, timeout=REPLY_WAIT)
        pieces = [str(c.params["text"]) for c in calls]
        assert len(" ".join(pieces)) <= len(echo) + len(pieces), "more text than the echo"
    assert len(pieces) >= 3
    assert all(len(p) <= TelegramChannel.text_limit for p in pieces)
    assert {c.chat_id for c in fake.calls_of("sendMessage")} == {str(GROUP)}


async def test_a_file_goes_both_ways(fake: FakeTelegram, start_host: Any, tmp_path: Path) -> None:
    await start(fake, start_host, tmp_path)
    data = b"the numbers: 1, 2, 3\n" * 50
    fake.inject_message(GROUP, "[sendback] here", document=("notes.txt", data))
    (upload,) = await fake.wait_for("sendDocument", 1, timeout=REPLY_WAIT)
    assert upload.params == {"chat_id": GROUP, "caption": "back: notes.txt"}
    assert (upload.files["document"].filename, upload.files["document"].data) == ("notes.txt", data)
    assert fake.calls_of("getFile") and fake.downloads == ["documents/notes.txt"]


async def test_in_mention_mode_only_addressed_messages_are_answered(
    fake: FakeTelegram, start_host: Any, tmp_path: Path
) -> None:
    await start(fake, start_host, tmp_path, engage_mode="mention")
    fake.inject_message(GROUP, "nobody asked you")
    fake.inject_message(GROUP, "ping", mention=True)
    await fake.wait_for("sendMessage", 1, timeout=REPLY_WAIT)
    fake.inject_message(GROUP, "and again", reply_to_bot=True)  # a reply to the bot addresses it
    calls = await fake.wait_for("sendMessage", 2, timeout=REPLY_WAIT)
    assert [c.params["text"] for c in calls] == ["echo: @nano_host_bot ping", "echo: and again"]


async def test_a_429_is_retried_and_the_reply_arrives_once(
    fake: FakeTelegram, start_host: Any, tmp_path: Path
) -> None:
    host = await start(fake, start_host, tmp_path)
    fake.fail_next_with_429("sendMessage", retry_after=1)
    fake.inject_message(GROUP, "hello")
    calls = await fake.wait_for("sendMessage", 2, timeout=REPLY_WAIT)
    assert [(c.params["text"], c.status) for c in calls] == [("echo: hello", 429), ("echo: hello", 200)]
    await host.wait_outbound(lambda rows: [r.status for r in rows] == ["delivered"])
    assert fake.texts_to(GROUP) == ["echo: hello"]


async def test_a_permanent_error_is_recorded_once(
    fake: FakeTelegram, start_host: Any, tmp_path: Path
) -> None:
    host = await start(fake, start_host, tmp_path)
    fake.fail_chat(GROUP, *KICKED)
    fake.inject_message(GROUP, "hello")
    await fake.wait_for("sendMessage", 1, timeout=REPLY_WAIT)
    await host.wait_outbound(lambda rows: [r.status for r in rows] == ["failed"])
    (row,) = host.outbound_rows()
    assert row.error is not None and "bot was kicked" in row.error
    assert len(fake.calls_of("sendMessage")) == 1


async def test_a_supergroup_migration_moves_the_binding(
    fake: FakeTelegram, start_host: Any, tmp_path: Path
) -> None:
    await start(fake, start_host, tmp_path, chat_id=-4001)
    fake.migrate_chat(-4001, -1004001)
    fake.inject_message(-1004001, "hello from the supergroup")
    calls = await fake.wait_for("sendMessage", 1, chat_id=-1004001, timeout=REPLY_WAIT)
    assert calls[0].params["text"] == "echo: hello from the supergroup"
    assert fake.calls_of("sendMessage", -4001) == []


async def test_a_reply_to_a_chat_migrated_meanwhile_arrives_in_the_new_chat(
    fake: FakeTelegram, start_host: Any, tmp_path: Path
) -> None:
    host = await start(fake, start_host, tmp_path, chat_id=-4001)
    fake.inject_message(-4001, "hello")
    await fake.wait_until(lambda: fake.updates == [])  # the bot took the message from the old chat
    fake.migrate_chat(-4001, -1004001, notify=False)  # upgraded before the reply: only sends learn of it
    await fake.wait_for("sendMessage", 1, chat_id=-1004001, timeout=REPLY_WAIT)
    await host.wait_outbound(lambda rows: [r.status for r in rows] == ["delivered"])
    assert fake.texts_to(-1004001) == ["echo: hello"]
    # Telegram answered the old id with the migration (to the typing signal or the reply itself).
    refused = [c for c in fake.calls if c.chat_id == "-4001" and c.method != "getUpdates"]
    assert refused and {c.status for c in refused} == {400}
    fake.inject_message(-1004001, "and from the supergroup")  # the binding followed the chat
    await fake.wait_for("sendMessage", 2, chat_id=-1004001, timeout=REPLY_WAIT)
    assert fake.texts_to(-1004001) == ["echo: hello", "echo: and from the supergroup"]
