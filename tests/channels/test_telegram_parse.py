"""``parse_update``: Telegram updates to InboundMessage / ChatMove / None, never an exception."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from nanohost.channels.base import InboundMessage
from nanohost.channels.telegram_parse import (
    ANONYMOUS_ADMIN_ID,
    BotIdentity,
    ChatMove,
    parse_update,
    update_id_of,
    utf16_slice,
)

BOT = BotIdentity(id=7000001, username="Nano_Host_Bot")
GROUP = -1001234
fetched: list[tuple[str, int]] = []


async def fake_fetch(file_id: str, limit: int) -> bytes:
    fetched.append((file_id, limit))
    return b"data:" + file_id.encode()


def update(uid: int = 1, sender: Any = None, **message: Any) -> dict[str, Any]:
    """An update with a message; ``sender`` replaces ``from`` (a keyword in Python)."""
    base: dict[str, Any] = {
        "message_id": 42,
        "from": sender or {"id": 501, "is_bot": False, "first_name": "Alice", "username": "alice"},
        "chat": {"id": GROUP, "type": "supergroup", "title": "Team"},
        "date": 1700000000,
    }
    base.update(message)
    return {"update_id": uid, "message": base}


def parse(payload: object) -> InboundMessage | ChatMove | None:
    return parse_update(payload, BOT, fake_fetch)


def message(payload: object) -> InboundMessage:
    parsed = parse(payload)
    assert isinstance(parsed, InboundMessage), parsed
    return parsed


def test_group_text_message_facts() -> None:
    msg = message(update(text="hello"))
    assert msg.channel == "telegram"
    assert msg.chat_id == "-1001234"
    assert msg.platform_message_id == "-1001234:42"
    assert (msg.sender, msg.sender_id, msg.sender_handle) == ("Alice", "501", "alice")
    assert msg.text == "hello"
    assert not msg.is_direct and not msg.mentions_bot and msg.thread_id is None and msg.files == []


def test_private_chat_is_direct_and_a_user_without_username_has_no_handle() -> None:
    msg = message(
        update(
            text="hi",
            chat={"id": 501, "type": "private", "first_name": "Bob"},
            sender={"id": 501, "is_bot": False, "first_name": "Bob"},
        )
    )
    assert msg.is_direct and msg.chat_id == "501"
    assert (msg.sender, msg.sender_id, msg.sender_handle) == ("Bob", "501", None)


def test_sender_is_the_display_name_and_the_handle_the_username() -> None:
    # Anyone may call themselves "alice"; only the username (and the id) identify the user.
    impostor = {
        "id": 666,
        "is_bot": False,
        "first_name": "alice",
        "last_name": "Admin",
        "username": "mallory",
    }
    msg = message(update(text="let me in", sender=impostor))
    assert (msg.sender, msg.sender_id, msg.sender_handle) == ("alice Admin", "666", "mallory")


@pytest.mark.parametrize("username", ["", 42, None])
def test_an_empty_or_odd_username_is_no_handle(username: object) -> None:
    user = {"id": 501, "is_bot": False, "first_name": "Alice", "username": username}
    msg = message(update(text="hi", sender=user))
    assert (msg.sender, msg.sender_handle) == ("Alice", None)


@pytest.mark.parametrize("chat_type", ["group", "supergroup"])
def test_groups_are_not_direct(chat_type: str) -> None:
    assert not message(update(text="x", chat={"id": -5, "type": chat_type})).is_direct


def test_mention_entity_is_case_insensitive() -> None:
    text = "@nano_host_bot what's up"
    msg = message(update(text=text, entities=[{"type": "mention", "offset": 0, "length": 14}]))
    assert msg.mentions_bot


def test_mention_of_someone_else_is_not_the_bot() -> None:
    text = "@nano_host_bot2 hi"
    msg = message(update(text=text, entities=[{"type": "mention", "offset": 0, "length": 15}]))
    assert not msg.mentions_bot


def test_mention_offsets_are_utf16_code_units() -> None:
    # "👍" is one Python character but two UTF-16 code units: Telegram's offset is 3, not 2.
    text = "👍 @Nano_Host_Bot go"
    entity = {"type": "mention", "offset": 3, "length": 14}
    assert utf16_slice(text, 3, 14) == "@Nano_Host_Bot"
    assert text[3 : 3 + 14] != "@Nano_Host_Bot"  # naive slicing would miss it
    assert message(update(text=text, entities=[entity])).mentions_bot


def test_text_mention_by_user_id() -> None:
    entity = {"type": "text_mention", "offset": 0, "length": 4, "user": {"id": BOT.id, "is_bot": True}}
    assert message(update(text="Nano, help", entities=[entity])).mentions_bot
    other = {**entity, "user": {"id": 99, "is_bot": False}}
    assert not message(update(text="Nano, help", entities=[other])).mentions_bot


def test_bot_command_addressed_to_the_bot() -> None:
    cmd = {"type": "bot_command", "offset": 0, "length": 20}
    assert message(update(text="/start@nano_host_bot now", entities=[cmd])).mentions_bot
    bare = {"type": "bot_command", "offset": 0, "length": 6}
    assert not message(update(text="/start now", entities=[bare])).mentions_bot
    other = {"type": "bot_command", "offset": 0, "length": 16}
    assert not message(update(text="/start@other_bot", entities=[other])).mentions_bot


def test_reply_to_the_bot_counts_as_mention() -> None:
    reply = {"message_id": 1, "from": {"id": BOT.id, "is_bot": True, "first_name": "Nano"}, "chat": {}}
    assert message(update(text="and then?", reply_to_message=reply)).mentions_bot
    to_human = {**reply, "from": {"id": 502, "is_bot": False, "first_name": "Carol"}}
    assert not message(update(text="and then?", reply_to_message=to_human)).mentions_bot


def test_caption_and_caption_entities_are_used_with_files() -> None:
    doc = {"file_id": "DOC1", "file_unique_id": "U1", "file_name": "report.pdf", "file_size": 1234}
    caption = "@nano_host_bot read this"
    msg = message(
        update(
            document=doc, caption=caption, caption_entities=[{"type": "mention", "offset": 0, "length": 14}]
        )
    )
    assert msg.text == caption and msg.mentions_bot
    assert [(f.name, f.size) for f in msg.files] == [("report.pdf", 1234)]


async def test_document_fetch_uses_the_file_id_and_limit() -> None:
    doc = {"file_id": "DOC1", "file_unique_id": "U1", "file_name": "report.pdf"}
    msg = message(update(document=doc))
    assert msg.text == "" and msg.files[0].size is None
    fetched.clear()
    assert await msg.files[0].fetch(99) == b"data:DOC1"
    assert fetched == [("DOC1", 99)]


async def test_photo_takes_the_largest_size() -> None:
    sizes = [
        {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 60, "file_size": 900},
        {"file_id": "big", "file_unique_id": "AQADbig", "width": 1280, "height": 853, "file_size": 90000},
        {"file_id": "mid", "file_unique_id": "m", "width": 320, "height": 213, "file_size": 9000},
    ]
    msg = message(update(photo=sizes, caption="look"))
    assert [(f.name, f.size) for f in msg.files] == [("photo-AQADbig.jpg", 90000)]
    assert await msg.files[0].fetch(10**6) == b"data:big"


def test_voice_without_a_name_gets_one() -> None:
    msg = message(update(voice={"file_id": "V1", "file_unique_id": "vu", "duration": 2}))
    assert [f.name for f in msg.files] == ["voice-vu.ogg"]


def test_forum_topic_is_the_thread() -> None:
    assert message(update(text="x", message_thread_id=77, is_topic_message=True)).thread_id == "77"
    # A reply chain in a non-forum group also has message_thread_id, but it is not a topic.
    assert message(update(text="x", message_thread_id=77)).thread_id is None


def test_migration_service_messages_become_chat_moves() -> None:
    old = update(chat={"id": -4001, "type": "group"}, migrate_to_chat_id=-1004001)
    assert parse(old) == ChatMove("-4001", "-1004001")
    new = update(chat={"id": -1004001, "type": "supergroup"}, migrate_from_chat_id=-4001)
    assert parse(new) == ChatMove("-4001", "-1004001")


def test_messages_from_bots_and_the_bot_itself_are_ignored() -> None:
    assert parse(update(text="beep", sender={"id": 9, "is_bot": True, "first_name": "Other"})) is None
    assert parse(update(text="me", sender={"id": BOT.id, "is_bot": True, "first_name": "Nano"})) is None


def test_anonymous_admin_speaks_for_the_group() -> None:
    msg = message(
        update(
            text="hi",
            sender_chat={"id": GROUP, "type": "supergroup", "title": "Team"},
            sender={
                "id": ANONYMOUS_ADMIN_ID,
                "is_bot": True,
                "first_name": "Group",
                "username": "GroupAnonymousBot",
            },
        )
    )
    assert (msg.sender, msg.sender_id, msg.sender_handle) == ("Team", str(GROUP), None)


def test_non_message_updates_are_ignored() -> None:
    assert parse({"update_id": 3, "edited_message": update()["message"]}) is None
    assert parse({"update_id": 4, "my_chat_member": {}}) is None


def test_messages_with_nothing_to_pass_on_are_ignored() -> None:
    assert parse(update(sticker={"file_id": "S", "file_unique_id": "s"})) is None
    assert parse(update(new_chat_members=[{"id": 1, "is_bot": False, "first_name": "Z"}])) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"update_id": 5, "message": "junk"},
        {"update_id": 6, "message": {"message_id": 1, "text": "no chat"}},
        {"update_id": 7, "message": {"message_id": 1, "chat": {"id": "-1", "type": "group"}, "text": "x"}},
        {"update_id": 8, "message": {"chat": {"id": -1, "type": "group"}, "text": "no id"}},
        update(9, text=["not", "a", "string"]),
        update(10, sender="nobody"),
        update(11, document={"file_name": "no-id.pdf"}),
        update(12, photo="nope"),
        update(13, photo=[]),
        "not even an object",
        None,
        [],
    ],
)
def test_malformed_updates_are_logged_and_skipped(payload: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nanohost.channels.telegram_parse"):
        assert parse(payload) is None
    assert "malformed" in caplog.text
    uid = update_id_of(payload)
    if uid is not None:
        assert f"update {uid} " in caplog.text


def test_unexpected_exceptions_never_leave_the_parser(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: object) -> None:
        raise KeyError("a shape nobody foresaw")

    monkeypatch.setattr("nanohost.channels.telegram_parse._text_and_entities", boom)
    assert parse(update(77, text="hi")) is None
    assert "update 77 could not be parsed" in caplog.text


def test_malformed_entities_do_not_break_the_message() -> None:
    entities = [
        "junk",
        {"type": "mention"},
        {"type": "mention", "offset": -1, "length": 3},
        {"type": "mention", "offset": 0, "length": 99},
    ]
    msg = message(update(text="@someone hi", entities=entities))
    assert not msg.mentions_bot and msg.text == "@someone hi"


def test_update_id_of() -> None:
    assert update_id_of({"update_id": 5}) == 5
    assert update_id_of({"update_id": "5"}) is None
    assert update_id_of({"update_id": True}) is None
    assert update_id_of("x") is None
