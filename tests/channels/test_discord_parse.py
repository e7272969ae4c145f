"""``parse_message``: Discord MESSAGE_CREATE payloads → InboundMessage facts, malformed → None + log."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from nanohost.channels import discord_parse
from nanohost.channels.discord_parse import parse_message

BOT = "999000"
CHANNEL = "1234567890"


def payload(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "2000000000000000001",
        "channel_id": CHANNEL,
        "guild_id": "555000",
        "type": 0,
        "author": {"id": "111222", "username": "alice", "global_name": None},
        "content": "hello there",
        "mentions": [],
        "attachments": [],
    }
    data.update(overrides)
    return data


downloads: list[tuple[str, int]] = []


async def fake_download(url: str, limit: int) -> bytes:
    downloads.append((url, limit))
    return b"data"


def parse(data: object) -> Any:
    return parse_message(data, BOT, fake_download)


def test_guild_message_reports_the_facts() -> None:
    msg = parse(payload())
    assert msg.channel == "discord"
    assert msg.chat_id == CHANNEL
    assert msg.platform_message_id == "2000000000000000001"  # snowflakes are global: no prefix
    assert (msg.sender, msg.sender_id, msg.sender_handle) == ("alice", "111222", "alice")
    assert msg.text == "hello there"
    assert msg.mentions_bot is False and msg.is_direct is False and msg.thread_id is None


def test_global_name_is_the_sender_when_set() -> None:
    msg = parse(payload(author={"id": "111222", "username": "alice", "global_name": "Alice A."}))
    assert msg.sender == "Alice A." and msg.sender_id == "111222"
    assert msg.sender_handle == "alice"  # the unique user name, never the settable display name


def test_display_name_is_never_the_handle() -> None:
    """A display name set to someone's user name does not make the sender that user."""
    msg = parse(payload(author={"id": "111222", "username": "mallory", "global_name": "alice"}))
    assert (msg.sender, msg.sender_handle) == ("alice", "mallory")


def test_mention_in_mentions_list_and_text_made_readable() -> None:
    bot_user = {"id": BOT, "username": "nanobot", "bot": True}
    msg = parse(payload(content=f"<@{BOT}> what's up", mentions=[bot_user]))
    assert msg.mentions_bot is True
    assert msg.text == "@nanobot what's up"


@pytest.mark.parametrize("content", [f"hi <@{BOT}>", f"<@!{BOT}> hi"])
def test_mention_in_content_only(content: str) -> None:
    assert parse(payload(content=content)).mentions_bot is True


def test_mention_of_someone_else_is_not_a_mention() -> None:
    other = {"id": "424242", "username": "bob"}
    msg = parse(payload(content="<@424242> hi", mentions=[other]))
    assert msg.mentions_bot is False
    assert msg.text == "@bob hi"


@pytest.mark.parametrize("name", ["evil\\1", "a\\g<0>b", "back\\", "\\n"])
def test_mentioned_names_with_backslashes_are_inserted_literally(name: str) -> None:
    other = {"id": "424242", "username": "bob", "global_name": name}
    msg = parse(payload(content="<@424242> and <@!424242>", mentions=[other]))
    assert msg.text == f"@{name} and @{name}"


@pytest.mark.parametrize("kind", [[0], {"t": 0}, "0", None, False, 0.0])
def test_a_type_that_is_not_a_user_message_number_is_skipped(kind: Any) -> None:
    assert parse(payload(type=kind)) is None


def test_an_unexpected_error_while_parsing_is_logged_and_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any) -> None:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(discord_parse, "_parse", broken)
    with caplog.at_level(logging.WARNING, logger="nanohost.channels.discord_parse"):
        assert parse(payload()) is None
    assert "2000000000000000001" in caplog.text and "parser bug" in caplog.text


def test_reply_to_the_bot_counts_as_mention() -> None:
    ref = {"id": "3", "channel_id": CHANNEL, "author": {"id": BOT, "username": "nanobot", "bot": True}}
    msg = parse(payload(type=19, message_reference={"message_id": "3"}, referenced_message=ref))
    assert msg.mentions_bot is True


def test_reply_to_someone_else_or_to_a_deleted_message_is_not() -> None:
    ref = {"id": "3", "channel_id": CHANNEL, "author": {"id": "424242", "username": "bob"}}
    other = parse(payload(type=19, message_reference={"message_id": "3"}, referenced_message=ref))
    deleted = parse(payload(type=19, message_reference={"message_id": "3"}, referenced_message=None))
    assert other.mentions_bot is False and deleted.mentions_bot is False


def test_dm_has_no_guild_id() -> None:
    data = payload()
    del data["guild_id"]
    msg = parse(data)
    assert msg.is_direct is True and msg.chat_id == CHANNEL


def test_thread_message_is_its_own_chat() -> None:
    """A Discord thread is a channel: its id is the chat, replies go there, no thread_id needed."""
    msg = parse(payload(channel_id="7777777777"))
    assert msg.chat_id == "7777777777" and msg.thread_id is None


@pytest.mark.parametrize(
    "author",
    [
        {"id": BOT, "username": "nanobot"},  # the bot itself (even without the bot flag)
        {"id": "31337", "username": "otherbot", "bot": True},  # another bot
    ],
)
def test_bot_messages_are_ignored(author: dict[str, Any]) -> None:
    assert parse(payload(author=author)) is None


def test_system_messages_are_ignored() -> None:
    assert parse(payload(type=7)) is None  # member join


async def test_attachments_become_incoming_files_fetched_from_their_url() -> None:
    downloads.clear()
    url = "https://cdn.discordapp.com/attachments/1/2/report.pdf"
    msg = parse(payload(attachments=[{"id": "2", "filename": "report.pdf", "size": 4, "url": url}]))
    (incoming,) = msg.files
    assert (incoming.name, incoming.size) == ("report.pdf", 4)
    assert downloads == []  # nothing fetched while parsing
    assert await incoming.fetch(100) == b"data"
    assert downloads == [(url, 100)]


def test_attachment_with_bad_size_keeps_size_unknown() -> None:
    attachment = {"id": "2", "filename": "a.txt", "size": "big", "url": "https://cdn/x"}
    (incoming,) = parse(payload(attachments=[attachment])).files
    assert incoming.size is None


def test_missing_content_is_empty_text() -> None:
    data = payload()
    del data["content"]
    assert parse(data).text == ""


MALFORMED: list[tuple[str, Any]] = [
    ("not an object", ["MESSAGE_CREATE"]),
    ("no id", {"id": None}),
    ("channel_id is a number", {"channel_id": 1234567890}),
    ("no author", {"author": None}),
    ("author is a string", {"author": "alice"}),
    ("author without id", {"author": {"username": "alice"}}),
    ("author without name", {"author": {"id": "111222"}}),
    ("content is a number", {"content": 5}),
    ("guild_id is a number", {"guild_id": 555}),
    ("mentions is an object", {"mentions": {"id": BOT}}),
    ("attachments is a string", {"attachments": "file"}),
    ("attachment without url", {"attachments": [{"id": "2", "filename": "a.txt"}]}),
    ("attachment not an object", {"attachments": ["a.txt"]}),
]


@pytest.mark.parametrize(("case", "change"), MALFORMED, ids=[c for c, _ in MALFORMED])
def test_malformed_payloads_are_logged_and_skipped(
    case: str, change: Any, caplog: pytest.LogCaptureFixture
) -> None:
    data: object = change if isinstance(change, list) else {**copy.deepcopy(payload()), **change}
    with caplog.at_level(logging.WARNING, logger="nanohost.channels.discord_parse"):
        assert parse(data) is None
    assert caplog.records, f"{case}: nothing logged"
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        assert "2000000000000000001" in caplog.text and CHANNEL in caplog.text
