"""The router's own logic, without a host: trigger words and a database that stays locked."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from sqlalchemy.exc import OperationalError

from nanohost.channels.base import InboundMessage
from nanohost.router import Router, sender_allowed, starts_with_trigger


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@andy hello", True),
        ("  @Andy, what time is it?", True),
        ("@andy", True),
        ("@andyx hello", False),
        ("hello @andy", False),
        ("", False),
    ],
)
def test_trigger_word_must_come_first_as_a_whole_word(text: str, expected: bool) -> None:
    assert starts_with_trigger(text, "@andy") is expected


def _locked() -> OperationalError:
    return OperationalError("INSERT", {}, Exception("database is locked"))


async def test_a_locked_database_is_waited_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nanohost.router.DB_RETRY_BASE", 0)
    router = Router(cast(Any, None))
    attempts: list[int] = []

    def step(value: int) -> int:
        attempts.append(value)
        if len(attempts) < 3:
            raise _locked()
        return value * 2

    assert await router._retrying(step, 21) == 42
    assert attempts == [21, 21, 21]


@pytest.mark.parametrize(
    ("text", "step"),
    [("hi", "_insert_run"), ("/help", "_route_alone")],
)
async def test_a_database_that_stays_locked_is_logged_as_lost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, text: str, step: str
) -> None:
    monkeypatch.setattr("nanohost.router.DB_RETRY_BASE", 0)
    router = Router(cast(Any, None))
    tries: list[object] = []

    def locked(what: object) -> None:
        tries.append(what)
        raise _locked()

    monkeypatch.setattr(router, step, locked)
    with caplog.at_level(logging.ERROR, logger="nanohost.router"):
        await router.receive(InboundMessage("telegram", "-1", "alice", text, platform_message_id="-1:2"))
    assert len(tries) == 3
    assert "telegram chat -1 message -1:2 LOST" in caplog.text


def _from(channel: str, sender_id: str, handle: str | None, display: str = "Someone") -> InboundMessage:
    return InboundMessage(channel, "c", display, "hi", sender_id=sender_id, sender_handle=handle)


@pytest.mark.parametrize(
    ("entries", "message", "allowed"),
    [
        ([], _from("telegram", "1", None), True),
        (["@alice"], _from("telegram", "1", "Alice"), True),
        (["alice"], _from("discord", "2", "alice"), True),
        (["alice"], _from("telegram", "1", "mallory", display="alice"), False),  # display names never match
        (["123456789"], _from("telegram", "123456789", None), True),
        (["123456789"], _from("discord", "5", "123456789"), False),  # an id is not a user name
        (["U012AB3CD"], _from("slack", "U012AB3CD", None), True),
        (["U012AB3CD"], _from("telegram", "9", "u012ab3cd"), False),  # a Slack id is not a Telegram name
        (["telegram:@alice"], _from("telegram", "1", "alice"), True),
        (["telegram:@alice"], _from("discord", "2", "alice"), False),  # scoped to one platform
        (["discord:42"], _from("discord", "42", None), True),
        (["discord:42"], _from("telegram", "42", None), False),
    ],
)
def test_the_allow_list_matches_ids_and_user_names_never_display_names(
    entries: list[str], message: InboundMessage, allowed: bool
) -> None:
    assert sender_allowed(entries, message) is allowed


async def test_a_batch_the_database_refuses_for_good_is_logged_as_lost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("nanohost.router.DB_RETRY_BASE", 0)
    router = Router(cast(Any, None))
    tries: list[object] = []

    def locked(run: object) -> None:
        tries.append(run)
        raise _locked()

    monkeypatch.setattr(router, "_insert_run", locked)
    batch = [InboundMessage("telegram", "-1", "a", f"hi {i}", platform_message_id=f"-1:{i}") for i in "12"]
    with caplog.at_level(logging.ERROR, logger="nanohost.router"):
        await router.receive_many(batch)
    assert len(tries) == 3
    assert "message -1:1 LOST" in caplog.text and "message -1:2 LOST" in caplog.text
