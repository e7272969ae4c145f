"""``parse_event``: Slack events → ``InboundMessage`` facts, and malformed payloads → None + a log line."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from nanohost.channels import slack as slack_module
from nanohost.channels.base import InboundMessage
from nanohost.channels.slack import SlackBot, escape, parse_event

BOT = SlackBot(user_id="U0BOT", bot_id="B0BOT")


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "message",
        "channel": "C0123",
        "user": "U0USER1",
        "text": "hello",
        "ts": "1700000000.000100",
        "channel_type": "channel",
    }
    base.update(fields)
    return {"event_id": "Ev1", "type": "event_callback", "event": base}


def parsed(**fields: Any) -> InboundMessage:
    message = parse_event(event(**fields), BOT, lambda url: _never)
    assert message is not None
    return message


async def _never(limit: int) -> bytes:
    raise AssertionError("parsing must not download")


def test_a_channel_message_reports_the_facts() -> None:
    message = parsed()
    assert message.channel == "slack"
    assert message.chat_id == "C0123"
    assert message.sender == message.sender_id == "U0USER1"
    assert message.sender_handle is None  # Slack events name the sender only by user id
    assert message.text == "hello"
    assert message.platform_message_id == "C0123:1700000000.000100"
    assert message.thread_id is None  # not in a thread: the reply goes to the channel
    assert not message.mentions_bot and not message.is_direct and message.files == []


def test_a_mention_in_the_text_counts_and_is_rewritten() -> None:
    message = parsed(text="<@U0BOT> what's up?")
    assert message.mentions_bot
    assert message.text == "@bot what's up?"
    assert parsed(text="hey <@U0BOT|nanohost>").mentions_bot  # older form with a label


def test_someone_elses_mention_does_not_count() -> None:
    message = parsed(text="<@U0OTHER> look")
    assert not message.mentions_bot
    assert message.text == "<@U0OTHER> look"


def test_app_mention_and_its_message_event_share_the_platform_id() -> None:
    as_mention = parsed(type="app_mention", text="<@U0BOT> hi", channel_type=None)
    as_message = parsed(text="<@U0BOT> hi")
    assert as_mention.platform_message_id == as_message.platform_message_id == "C0123:1700000000.000100"
    assert as_mention.mentions_bot and as_message.mentions_bot
    assert as_mention.text == as_message.text == "@bot hi"


def test_an_app_mention_counts_even_without_the_tag_in_the_text() -> None:
    assert parsed(type="app_mention", text="hi").mentions_bot


def test_a_thread_reply_keeps_its_thread_and_a_reply_to_the_bot_counts() -> None:
    to_bot = parsed(ts="1700000000.000200", thread_ts="1700000000.000100", parent_user_id="U0BOT")
    assert to_bot.thread_id == "1700000000.000100"
    assert to_bot.mentions_bot
    to_person = parsed(ts="1700000000.000200", thread_ts="1700000000.000100", parent_user_id="U0USER2")
    assert to_person.thread_id == "1700000000.000100"
    assert not to_person.mentions_bot


def test_a_dm_is_direct_and_a_group_dm_is_not() -> None:
    assert parsed(channel="D0DM", channel_type="im").is_direct
    assert not parsed(channel="G0MP", channel_type="mpim").is_direct
    assert not parsed(channel="G0PRIV", channel_type="group").is_direct


def test_html_entities_are_decoded() -> None:
    assert parsed(text="a &lt; b &amp;&amp; c &gt; d").text == "a < b && c > d"


def test_outgoing_text_is_escaped() -> None:
    assert escape("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"


@pytest.mark.parametrize(
    "fields",
    [
        {"bot_id": "B0OTHER"},  # another bot
        {"bot_id": "B0BOT", "user": "U0BOT"},  # our own post
        {"user": "U0BOT"},  # the bot user, without bot_id
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"subtype": "bot_message"},
        {"type": "reaction_added"},
    ],
)
def test_bots_own_posts_edits_and_other_events_are_ignored(fields: dict[str, Any]) -> None:
    assert parse_event(event(**fields), BOT) is None


@pytest.mark.parametrize("subtype", ["file_share", "thread_broadcast"])
def test_person_written_subtypes_are_kept(subtype: str) -> None:
    assert parsed(subtype=subtype).text == "hello"


def test_files_become_incoming_files_with_a_fetch_per_url() -> None:
    urls: list[str] = []

    def fetcher(url: str) -> Any:
        urls.append(url)
        return _never

    files = [
        {"id": "F1", "name": "a.txt", "size": 5, "url_private_download": "https://files.slack.com/a?d=1"},
        {"id": "F2", "name": "b.png", "size": 7, "url_private": "https://files.slack.com/b"},
        {"id": "F3", "name": "no-url.txt", "size": 1},  # skipped: nothing to download
        "not an object",  # skipped
        {"id": "F4", "name": "c.bin", "size": "big", "url_private": "https://files.slack.com/c"},
    ]
    message = parse_event(event(subtype="file_share", text="", files=files), BOT, fetcher)
    assert message is not None
    assert [(f.name, f.size) for f in message.files] == [("a.txt", 5), ("b.png", 7), ("c.bin", None)]
    assert urls == [
        "https://files.slack.com/a?d=1",  # the download URL is preferred
        "https://files.slack.com/b",
        "https://files.slack.com/c",
    ]


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "text",
        [],
        {},
        {"event": "not an object"},
        event(user=None),
        event(user=42),
        event(channel=None),
        event(ts=1700000000.1),
        event(text=["not", "text"]),
        event(thread_ts=17),
        event(files="not a list"),
    ],
)
def test_malformed_payloads_are_skipped_with_a_log_line(
    payload: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="nanohost.channels.slack"):
        assert parse_event(payload, BOT) is None
    assert caplog.records, "a malformed payload must be logged"


def test_an_unexpected_parser_failure_is_logged_and_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(slack_module, "_parse_files", broken)
    with caplog.at_level(logging.WARNING, logger="nanohost.channels.slack"):
        assert parse_event(event(), BOT) is None
    assert any("Ev1" in record.getMessage() for record in caplog.records)


def test_a_message_without_text_is_kept_as_empty() -> None:
    assert parsed(text=None).text == ""
