"""The router's own logic, without a host: trigger words and a database that stays locked."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from sqlalchemy.exc import OperationalError

from nanohost.channels.base import InboundMessage
from nanohost.router import Router, starts_with_trigger


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
    attempts: list[InboundMessage] = []

    async def flaky(message: InboundMessage) -> None:
        attempts.append(message)
        if len(attempts) < 3:
            raise _locked()

    monkeypatch.setattr(router, "_receive", flaky)
    await router.receive(InboundMessage("telegram", "-1", "alice", "hi", platform_message_id="-1:1"))
    assert len(attempts) == 3


async def test_a_database_that_stays_locked_is_logged_as_lost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("nanohost.router.DB_RETRY_BASE", 0)
    router = Router(cast(Any, None))

    async def locked(message: InboundMessage) -> None:
        raise _locked()

    monkeypatch.setattr(router, "_receive", locked)
    with caplog.at_level(logging.ERROR, logger="nanohost.router"):
        await router.receive(InboundMessage("telegram", "-1", "alice", "hi", platform_message_id="-1:2"))
    assert "telegram chat -1 message -1:2 LOST" in caplog.text
