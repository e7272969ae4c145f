"""The routing rules every chat channel shares, through the real router, host and agent container.

Messages enter through ``Router.receive`` as a channel adapter hands them over (the adapters'
own tests cover each platform's wire format); replies are read back from the database, where
they wait for delivery (no platform is enabled here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nanohost.channels.api import ROUTER
from nanohost.channels.base import FileTooLarge, InboundMessage, IncomingFile
from nanohost.db.engine import transaction
from nanohost.db.models import AgentSession, Message
from nanohost.router import Router
from tests.support.host import Host, add_group, bind, make_settings

pytestmark = pytest.mark.docker

REPLY_WAIT = 60.0


def chat_message(text: str, chat: str = "-100", msg_id: str | None = None, **fields: Any) -> InboundMessage:
    fields.setdefault("sender", "alice")
    fields.setdefault("sender_id", "1001")
    return InboundMessage(
        channel="telegram",
        chat_id=chat,
        text=text,
        platform_message_id=f"{chat}:{msg_id or text}",
        **fields,
    )


def router(host: Host) -> Router:
    return host.app[ROUTER]


def inbound_texts(host: Host) -> list[str]:
    with transaction(host.orchestrator.ctx.db) as db:
        return list(db.scalars(select(Message.text).where(Message.direction == "in").order_by(Message.id)))


def replies(rows: list[Message]) -> list[tuple[str, str]]:
    return [(r.chat_id, r.text) for r in rows]


async def started(tmp_path: Path, start_host: Any, **config: Any) -> Host:
    settings = make_settings(tmp_path, max_attachment_bytes=4096)
    add_group(settings, "team", **config)
    bind(settings, "telegram", "-100", "team")
    return await start_host(settings)  # type: ignore[no-any-return]


async def test_unbound_chats_are_ignored_and_logged_once(
    tmp_path: Path, start_host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    host = await started(tmp_path, start_host)
    with caplog.at_level(logging.INFO, logger="nanohost.router"):
        await router(host).receive(chat_message("one", chat="-999"))
        await router(host).receive(chat_message("two", chat="-999"))
    assert inbound_texts(host) == []
    assert sum("-999 is not bound" in r.getMessage() for r in caplog.records) == 1


async def test_the_allow_list_matches_user_names_and_ids(tmp_path: Path, start_host: Any) -> None:
    host = await started(tmp_path, start_host, allowed_senders=["@alice", "2002"])
    # a display name is anyone's to choose: it never matches the allow-list
    spoof = chat_message("from mallory", sender="alice", sender_handle="mallory", sender_id="3003")
    await router(host).receive(spoof)
    await router(host).receive(chat_message("from alice", sender="Alice Smith", sender_handle="Alice"))
    await router(host).receive(chat_message("from bob", sender="bob", sender_id="2002"))
    assert inbound_texts(host) == ["from alice", "from bob"]
    answered = lambda rows: all(t in " ".join(r.text for r in rows) for t in ("from alice", "from bob"))  # noqa: E731
    await host.wait_outbound(answered, REPLY_WAIT)
    assert "mallory" not in " ".join(r.text for r in host.outbound_rows())


async def test_trigger_mode_answers_only_messages_that_start_with_the_word(
    tmp_path: Path, start_host: Any
) -> None:
    host = await started(tmp_path, start_host, engage_mode="trigger", trigger_word="@Andy")
    for text in ("hello all", "tell @andy hi", "@andyX not me", "@andy what time is it?"):
        await router(host).receive(chat_message(text))
    await router(host).receive(chat_message("in private", is_direct=True))  # a DM is always addressed
    assert inbound_texts(host) == ["@andy what time is it?", "in private"]


async def test_a_platform_message_is_recorded_once(tmp_path: Path, start_host: Any) -> None:
    host = await started(tmp_path, start_host)
    await router(host).receive(chat_message("hello", msg_id="7"))
    await router(host).receive(chat_message("hello again", msg_id="7"))
    assert inbound_texts(host) == ["hello"]
    await host.wait_outbound(lambda rows: replies(rows) == [("-100", "echo: hello")], REPLY_WAIT)


async def test_per_chat_sessions_keep_chats_apart_and_shared_ones_do_not(
    tmp_path: Path, start_host: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "team")
    bind(settings, "telegram", "-1", "team", "per-chat")
    bind(settings, "telegram", "-2", "team", "per-chat")
    bind(settings, "slack", "C1", "team", "shared")
    bind(settings, "slack", "C2", "team", "shared")
    host = await start_host(settings)
    await router(host).receive(chat_message("for one", chat="-1"))
    await router(host).receive(chat_message("for two", chat="-2"))
    await host.wait_outbound(lambda rows: len(rows) == 2, REPLY_WAIT)
    assert sorted(replies(host.outbound_rows())) == [("-1", "echo: for one"), ("-2", "echo: for two")]
    for chat in ("C1", "C2"):
        await router(host).receive(
            InboundMessage("slack", chat, "bob", f"in {chat}", platform_message_id=f"{chat}:1")
        )
        await host.wait_outbound(lambda rows, c=chat: any(r.chat_id == c for r in rows), REPLY_WAIT)
    with transaction(host.orchestrator.ctx.db) as db:
        keys = sorted(str(s.chat_key) for s in db.scalars(select(AgentSession)))
    assert keys == ["None", "telegram:-1", "telegram:-2"]  # the two slack chats share one session


async def test_attachments_are_saved_in_the_inbox_and_named_in_the_prompt(
    tmp_path: Path, start_host: Any
) -> None:
    host = await started(tmp_path, start_host)

    async def fetch(limit: int) -> bytes:
        return b"quarterly numbers"

    upload = IncomingFile("../../report.txt", 17, fetch)
    await router(host).receive(chat_message("see attached", files=[upload]))
    saved = host.settings.groups_dir / "team" / "inbox" / "report.txt"
    assert saved.read_bytes() == b"quarterly numbers"
    await host.wait_outbound(lambda rows: len(rows) == 1, REPLY_WAIT)
    (reply,) = host.outbound_rows()
    assert "(attached file: /workspace/agent/inbox/report.txt)" in reply.text


async def test_oversized_files_and_messages_are_refused_with_a_reply(tmp_path: Path, start_host: Any) -> None:
    host = await started(tmp_path, start_host)

    async def too_big(limit: int) -> bytes:
        raise FileTooLarge(f"more than {limit} bytes")

    lying = IncomingFile("big.bin", 10, too_big)  # declared small, turns out large while streaming
    declared = IncomingFile("huge.iso", 10**9, too_big)
    await router(host).receive(chat_message("", msg_id="1", files=[lying]))
    await router(host).receive(chat_message("x" * 100_001, msg_id="2"))
    await router(host).receive(chat_message("x" * 100_001, msg_id="2"))  # the platform sends it again
    await router(host).receive(chat_message("keep this", msg_id="3", files=[declared]))
    rows = host.outbound_rows()
    notices = [r.text for r in rows if r.sender == "nanohost"]
    assert len(notices) == 3
    assert "'big.bin' is larger than the 4 KiB limit" in notices[0]
    assert "longer than 100,000 characters" in notices[1]
    assert "'huge.iso'" in notices[2]
    assert all(r.status == "pending" and r.chat_id == "-100" for r in rows)  # delivery sends them
    for runtime in host.orchestrator.runtimes.values():
        await runtime.settled()  # routed without waiting for the queue write (group commit)
    with transaction(host.orchestrator.ctx.db) as db:
        inbound = [
            (m.text[:9], m.status) for m in db.scalars(select(Message).where(Message.direction == "in"))
        ]
    # refused whole: recorded as refused (so a repeat is a duplicate); a refused file's text goes on
    assert inbound[:2] == [("", "refused"), ("xxxxxxxxx", "refused")]
    assert inbound[2][0] == "keep this" and inbound[2][1] in ("queued", "answered")
    assert not (host.settings.groups_dir / "team" / "inbox").exists()
