"""TelegramChannel against the fake Bot API (no Docker): start, polling, offsets, sending, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nanohost.channels.base import (
    ChannelStartError,
    ChatTarget,
    FileTooLarge,
    InboundMessage,
    PermanentError,
    TransientError,
)
from nanohost.channels.state import ChannelStore
from nanohost.channels.telegram import TelegramChannel
from nanohost.db import make_engine, make_session_factory, migrate
from tests.fakes.telegram import BOT_ID, CHAT_NOT_FOUND, KICKED, TOKEN, UPGRADED, FakeTelegram

GROUP = -1001234
WAIT = 10.0


class Sink:
    """Records what the adapter reports; tests await the next message without sleeping."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self.moves: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self.fail_next_receive = False

    async def receive(self, message: InboundMessage) -> None:
        if self.fail_next_receive:
            self.fail_next_receive = False
            raise RuntimeError("router blew up")
        await self.messages.put(message)

    async def chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        await self.moves.put((channel, old_chat_id, new_chat_id))

    async def next(self) -> InboundMessage:
        return await asyncio.wait_for(self.messages.get(), WAIT)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    yield server
    await server.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChannelStore]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    yield ChannelStore(make_session_factory(engine), "telegram")
    engine.dispose()


@pytest.fixture
def sink() -> Sink:
    return Sink()


Factory = Callable[..., Awaitable[TelegramChannel]]


@pytest.fixture
async def channel(fake: FakeTelegram, store: ChannelStore, sink: Sink) -> AsyncIterator[Factory]:
    """Start channels (stopped at the end); short poll and reconnect times keep tests quick."""
    started: list[TelegramChannel] = []

    async def make(token: str = TOKEN, **kwargs: Any) -> TelegramChannel:
        kwargs = {"poll_timeout": 2.0, "reconnect_delay": 0.05, "max_reconnect_delay": 0.2, **kwargs}
        target = kwargs.pop("sink", sink)
        adapter = TelegramChannel(token, fake.url, kwargs.pop("store", store), **kwargs)
        started.append(adapter)
        await adapter.start(target)
        return adapter

    yield make
    for adapter in started:
        await adapter.stop()


# --- start -----------------------------------------------------------------------------------


async def test_refused_token_is_a_start_error_naming_the_env_var(
    fake: FakeTelegram, store: ChannelStore, sink: Sink
) -> None:
    adapter = TelegramChannel("999:wrong", fake.url, store)
    with pytest.raises(ChannelStartError) as info:
        await adapter.start(sink)
    assert "NANOHOST_TELEGRAM_TOKEN" in str(info.value) and "401" in str(info.value)
    assert "999:wrong" not in str(info.value)
    assert fake.calls_of("getUpdates") == []
    await adapter.stop()  # harmless after a failed start


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_only_a_refused_token_is_a_start_error(
    fake: FakeTelegram, store: ChannelStore, sink: Sink, status: int
) -> None:
    fake.fail_next("getMe", status, "Unauthorized")
    adapter = TelegramChannel(TOKEN, fake.url, store)
    with pytest.raises(ChannelStartError, match="NANOHOST_TELEGRAM_TOKEN"):
        await adapter.start(sink)


async def test_unreachable_api_is_transient_and_hides_the_token(store: ChannelStore, sink: Sink) -> None:
    adapter = TelegramChannel(TOKEN, "http://127.0.0.1:9", store)
    with pytest.raises(TransientError, match="could not be reached") as info:
        await adapter.start(sink)
    assert TOKEN not in str(info.value)
    assert adapter._session is None and adapter._task is None  # nothing left open


async def test_a_retried_start_works_once_the_api_answers(
    fake: FakeTelegram, store: ChannelStore, sink: Sink
) -> None:
    fake.unreachable = True
    adapter = TelegramChannel(TOKEN, fake.url, store, poll_timeout=1.0)
    with pytest.raises(TransientError, match="could not be reached"):
        await adapter.start(sink)
    assert adapter._session is None and adapter._task is None
    fake.unreachable = False
    await adapter.start(sink)  # the same object starts
    try:
        fake.inject_message(GROUP, "after the retry")
        assert (await sink.next()).text == "after the retry"
    finally:
        await adapter.stop()


@pytest.mark.parametrize("status", [429, 500, 502, 400])
async def test_a_failing_getme_is_transient_and_start_can_be_retried(
    fake: FakeTelegram, store: ChannelStore, sink: Sink, status: int
) -> None:
    fake.fail_next("getMe", status, "Something went wrong")
    adapter = TelegramChannel(TOKEN, fake.url, store, poll_timeout=1.0)
    with pytest.raises(TransientError):
        await adapter.start(sink)
    assert fake.calls_of("getUpdates") == [] and adapter._session is None
    await adapter.start(sink)  # the fake answers now
    try:
        fake.inject_message(GROUP, "started on the second try")
        assert (await sink.next()).text == "started on the second try"
    finally:
        await adapter.stop()


async def test_start_learns_the_bot_and_polls_for_messages_only(fake: FakeTelegram, channel: Factory) -> None:
    adapter = await channel()
    assert adapter.bot is not None and adapter.bot.id == BOT_ID
    (poll,) = (await fake.wait_for("getUpdates"))[:1]
    assert poll.params["allowed_updates"] == ["message"]
    assert poll.params["timeout"] == 2
    assert "offset" not in poll.params  # nothing stored yet


# --- receiving -------------------------------------------------------------------------------


async def test_message_reaches_the_sink(fake: FakeTelegram, channel: Factory, sink: Sink) -> None:
    await channel()
    fake.inject_message(GROUP, "hello", mention=True)
    msg = await sink.next()
    assert (msg.chat_id, msg.text, msg.sender, msg.sender_id, msg.sender_handle, msg.mentions_bot) == (
        str(GROUP),
        "@nano_host_bot hello",
        "Alice",
        "501",
        "alice",
        True,
    )


async def test_offset_is_stored_and_confirms_updates(
    fake: FakeTelegram, channel: Factory, sink: Sink, store: ChannelStore
) -> None:
    await channel()
    update = fake.inject_message(GROUP, "one")
    await sink.next()
    uid = update["update_id"]
    await fake.wait_until(lambda: any(c.params.get("offset") == uid + 1 for c in fake.calls_of("getUpdates")))
    assert store.get("offset") == str(uid + 1)
    assert fake.updates == []  # confirmed, so Telegram would not resend it


async def test_restart_resumes_from_the_stored_offset(
    fake: FakeTelegram, channel: Factory, sink: Sink, store: ChannelStore
) -> None:
    first = await channel()
    update = fake.inject_message(GROUP, "once")
    assert (await sink.next()).text == "once"
    await first.stop()
    # The fake keeps the update until an offset past it arrives; stop may have come first.
    fake.updates = [update]
    polls_before = len(fake.calls_of("getUpdates"))
    second_sink = Sink()
    await channel(sink=second_sink)
    await fake.wait_for("getUpdates", polls_before + 1)
    assert fake.calls_of("getUpdates")[polls_before].params["offset"] == update["update_id"] + 1
    fake.inject_message(GROUP, "twice")
    assert (await second_sink.next()).text == "twice"  # and not "once"
    assert second_sink.messages.empty()


async def test_malformed_updates_are_skipped_and_the_offset_advances(
    fake: FakeTelegram, channel: Factory, sink: Sink, store: ChannelStore, caplog: pytest.LogCaptureFixture
) -> None:
    await channel()
    bad = fake.inject_raw({"message": "junk"})
    no_chat = fake.inject_raw({"message": {"message_id": 3, "text": "where am I"}})
    edited = fake.inject_raw({"edited_message": {"message_id": 1, "chat": {"id": GROUP, "type": "group"}}})
    from_bot = fake.inject_message(GROUP, "beep", is_bot=True, user_id=9)
    good = fake.inject_message(GROUP, "still here")
    msg = await sink.next()
    assert msg.text == "still here"
    assert sink.messages.empty()
    assert f"update {bad['update_id']} is malformed" in caplog.text
    assert f"update {no_chat['update_id']} is malformed" in caplog.text
    assert int(store.get("offset") or 0) == good["update_id"] + 1
    assert edited["update_id"] < from_bot["update_id"] < good["update_id"]


async def test_a_failing_sink_does_not_stop_the_loop(
    fake: FakeTelegram, channel: Factory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    await channel()
    sink.fail_next_receive = True
    boom = fake.inject_message(GROUP, "boom")
    fake.inject_message(GROUP, "after")
    assert (await sink.next()).text == "after"
    assert f"update {boom['update_id']}: handling failed" in caplog.text


async def test_reconnects_after_the_connection_drops(
    fake: FakeTelegram, channel: Factory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    await channel()
    await fake.wait_for("getUpdates")
    polls = len(fake.calls_of("getUpdates"))
    fake.drop_polls()
    await fake.wait_for("getUpdates", polls + 1)  # a new poll after the dropped one
    fake.inject_message(GROUP, "after the drop")
    assert (await sink.next()).text == "after the drop"
    assert "getUpdates failed" in caplog.text  # the drop really reached the adapter


async def test_conflict_is_logged_and_polling_continues(
    fake: FakeTelegram, channel: Factory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    fake.conflict_next_poll()
    await channel()
    fake.inject_message(GROUP, "got through")
    assert (await sink.next()).text == "got through"
    assert "getUpdates conflict" in caplog.text and "deleteWebhook" in caplog.text
    assert [c.status for c in fake.calls_of("getUpdates")][0] == 409


async def test_migration_message_reports_the_move(fake: FakeTelegram, channel: Factory, sink: Sink) -> None:
    await channel()
    fake.migrate_chat(-4001, -1004001)
    move = await asyncio.wait_for(sink.moves.get(), WAIT)
    assert move == ("telegram", "-4001", "-1004001")


async def test_files_are_fetched_with_getfile_and_download(
    fake: FakeTelegram, channel: Factory, sink: Sink
) -> None:
    await channel()
    fake.inject_message(GROUP, "see attached", document=("notes.txt", b"some notes"))
    fake.inject_message(GROUP, None, photo=b"\xff\xd8jpeg-bytes")
    doc = await sink.next()
    assert doc.text == "see attached" and [(f.name, f.size) for f in doc.files] == [("notes.txt", 10)]
    assert await doc.files[0].fetch(1000) == b"some notes"
    assert fake.calls_of("getFile")[0].params["file_id"].startswith("FILEID")
    photo = await sink.next()
    (incoming,) = photo.files
    assert incoming.name.startswith("photo-") and incoming.name.endswith(".jpg")
    assert await incoming.fetch(1000) == b"\xff\xd8jpeg-bytes"


async def test_file_over_the_limit_is_refused_while_streaming(
    fake: FakeTelegram, channel: Factory, sink: Sink
) -> None:
    await channel()
    fake.inject_message(GROUP, "big", document=("big.bin", b"x" * 200_000))
    (incoming,) = (await sink.next()).files
    with pytest.raises(FileTooLarge):
        await incoming.fetch(100_000)


async def test_file_getfile_declared_size_over_limit_is_refused_without_download(
    fake: FakeTelegram, channel: Factory, sink: Sink
) -> None:
    await channel()
    fake.inject_message(GROUP, "big", document=("big.bin", b"x" * 5000))
    (incoming,) = (await sink.next()).files
    with pytest.raises(FileTooLarge):
        await incoming.fetch(10)
    assert fake.downloads == []


async def test_file_too_big_for_the_bot_api_is_too_large(
    fake: FakeTelegram, channel: Factory, sink: Sink
) -> None:
    await channel()
    fake.inject_message(GROUP, "huge", document=("huge.bin", b"x"))
    (incoming,) = (await sink.next()).files
    fake.fail_next("getFile", 400, "Bad Request: file is too big")
    with pytest.raises(FileTooLarge):
        await incoming.fetch(10**9)


# --- sending ---------------------------------------------------------------------------------


async def test_send_text(fake: FakeTelegram, channel: Factory) -> None:
    adapter = await channel()
    ref = await adapter.send_text(ChatTarget(str(GROUP)), "hi there")
    (call,) = fake.calls_of("sendMessage")
    assert call.params == {"chat_id": GROUP, "text": "hi there"}
    assert ref is not None and ref.startswith(f"{GROUP}:")


async def test_send_text_to_a_forum_topic(fake: FakeTelegram, channel: Factory) -> None:
    adapter = await channel()
    await adapter.send_text(ChatTarget(str(GROUP), thread_id="77"), "in the topic")
    assert fake.calls_of("sendMessage")[0].params["message_thread_id"] == 77


async def test_send_document_multipart(fake: FakeTelegram, channel: Factory, tmp_path: Path) -> None:
    adapter = await channel()
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4 fake")
    await adapter.send_file(ChatTarget(str(GROUP)), path, "back: report.pdf")
    (call,) = fake.calls_of("sendDocument")
    assert call.params == {"chat_id": GROUP, "caption": "back: report.pdf"}
    upload = call.files["document"]
    assert (upload.filename, upload.data, upload.content_type) == (
        "report.pdf",
        b"%PDF-1.4 fake",
        "application/pdf",
    )


async def test_images_go_as_photos(fake: FakeTelegram, channel: Factory, tmp_path: Path) -> None:
    adapter = await channel()
    path = tmp_path / "chart.PNG"
    path.write_bytes(b"\x89PNG fake")
    await adapter.send_file(ChatTarget(str(GROUP)), path, "")
    (call,) = fake.calls_of("sendPhoto")
    assert call.files["photo"].data == b"\x89PNG fake" and "caption" not in call.params
    assert fake.calls_of("sendDocument") == []


async def test_refused_photo_falls_back_to_document(
    fake: FakeTelegram, channel: Factory, tmp_path: Path
) -> None:
    adapter = await channel()
    path = tmp_path / "wide.png"
    path.write_bytes(b"\x89PNG wide")
    fake.fail_next("sendPhoto", 400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
    await adapter.send_file(ChatTarget(str(GROUP)), path, "wide")
    assert fake.calls_of("sendDocument")[0].files["document"].data == b"\x89PNG wide"


async def test_large_images_go_as_documents(fake: FakeTelegram, channel: Factory, tmp_path: Path) -> None:
    adapter = await channel()
    path = tmp_path / "huge.jpg"
    path.write_bytes(b"\xff" * (10 * 1024**2 + 1))
    await adapter.send_file(ChatTarget(str(GROUP)), path, "")
    assert fake.calls_of("sendPhoto") == [] and len(fake.calls_of("sendDocument")) == 1


async def test_typing(fake: FakeTelegram, channel: Factory) -> None:
    adapter = await channel()
    await adapter.typing(ChatTarget("501"))
    (call,) = fake.calls_of("sendChatAction")
    assert call.params == {"chat_id": 501, "action": "typing"}


async def test_429_is_transient_with_retry_after(fake: FakeTelegram, channel: Factory) -> None:
    adapter = await channel()
    fake.fail_next_with_429("sendMessage", retry_after=7)
    with pytest.raises(TransientError) as info:
        await adapter.send_text(ChatTarget(str(GROUP)), "x")
    assert info.value.retry_after == 7
    await adapter.send_text(ChatTarget(str(GROUP)), "x")
    assert [c.status for c in fake.calls_of("sendMessage")] == [429, 200]


async def test_5xx_is_transient(fake: FakeTelegram, channel: Factory) -> None:
    adapter = await channel()
    fake.fail_next("sendMessage", 502, "Bad Gateway")
    with pytest.raises(TransientError):
        await adapter.send_text(ChatTarget(str(GROUP)), "x")


async def test_connection_error_is_transient_and_hides_the_token(
    fake: FakeTelegram, channel: Factory
) -> None:
    adapter = await channel()
    await fake.close()
    with pytest.raises(TransientError) as info:
        await adapter.send_text(ChatTarget(str(GROUP)), "x")
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("failure", [KICKED, CHAT_NOT_FOUND])
async def test_kicked_or_missing_chat_is_permanent(
    fake: FakeTelegram, channel: Factory, failure: tuple[int, str], tmp_path: Path
) -> None:
    adapter = await channel()
    fake.fail_chat(GROUP, *failure)
    with pytest.raises(PermanentError) as info:
        await adapter.send_text(ChatTarget(str(GROUP)), "x")
    assert failure[1] in str(info.value) and TOKEN not in str(info.value)
    path = tmp_path / "a.txt"
    path.write_text("a")
    with pytest.raises(PermanentError):
        await adapter.send_file(ChatTarget(str(GROUP)), path, "")
    with pytest.raises(PermanentError):
        await adapter.typing(ChatTarget(str(GROUP)))


async def test_a_reply_to_a_migrated_chat_arrives_in_the_new_chat(
    fake: FakeTelegram, channel: Factory, sink: Sink
) -> None:
    adapter = await channel()
    fake.migrate_chat(-4001, -1004001, notify=False)
    ref = await adapter.send_text(ChatTarget("-4001"), "the reply")
    assert sink.moves.get_nowait() == ("telegram", "-4001", "-1004001")  # moved before the resend
    assert [(c.chat_id, c.status) for c in fake.calls_of("sendMessage")] == [
        ("-4001", 400),
        ("-1004001", 200),
    ]
    assert fake.texts_to(-1004001) == ["the reply"]
    assert ref is not None and ref.startswith("-1004001:")
    # Later sends still addressed to the old id (the rest of a split reply) go straight there.
    await adapter.send_text(ChatTarget("-4001"), "the rest")
    await adapter.typing(ChatTarget("-4001"))
    assert fake.texts_to(-1004001) == ["the reply", "the rest"]
    assert len(fake.calls_of("sendMessage", -4001)) == 1 and fake.calls_of("sendChatAction", -4001) == []
    assert sink.moves.empty()


@pytest.mark.parametrize("name", ["report.pdf", "chart.png"])
async def test_a_file_to_a_migrated_chat_is_uploaded_again_to_the_new_chat(
    fake: FakeTelegram, channel: Factory, sink: Sink, tmp_path: Path, name: str
) -> None:
    adapter = await channel()
    fake.migrate_chat(-4001, -1004001, notify=False)
    path = tmp_path / name
    path.write_bytes(b"file body")
    await adapter.send_file(ChatTarget("-4001"), path, "here")
    method, field = ("sendPhoto", "photo") if name.endswith(".png") else ("sendDocument", "document")
    first, resent = fake.calls_of(method)
    assert (first.chat_id, first.status, resent.chat_id, resent.status) == ("-4001", 400, "-1004001", 200)
    assert resent.params["caption"] == "here" and resent.files[field].data == b"file body"
    assert sink.moves.get_nowait() == ("telegram", "-4001", "-1004001")


async def test_a_failing_resend_to_the_migrated_chat_raises_its_error(
    fake: FakeTelegram, channel: Factory, sink: Sink
) -> None:
    adapter = await channel()
    fake.migrate_chat(-4001, -1004001, notify=False)
    fake.fail_chat(-1004001, *KICKED)
    with pytest.raises(PermanentError, match="kicked"):
        await adapter.send_text(ChatTarget("-4001"), "x")
    assert sink.moves.get_nowait() == ("telegram", "-4001", "-1004001")
    assert [c.chat_id for c in fake.calls_of("sendMessage")] == ["-4001", "-1004001"]  # resent once only


async def test_a_resend_that_is_rate_limited_is_transient(
    fake: FakeTelegram, channel: Factory, sink: Sink
) -> None:
    adapter = await channel()
    fake.fail_next("sendMessage", *UPGRADED, {"migrate_to_chat_id": -1004001})
    fake.fail_next_with_429("sendMessage", retry_after=3)
    with pytest.raises(TransientError) as info:
        await adapter.send_text(ChatTarget("-4001"), "x")
    assert info.value.retry_after == 3
    await adapter.send_text(ChatTarget("-4001"), "x")  # delivery's retry goes to the new chat
    assert fake.texts_to(-1004001) == ["x"]


async def test_a_migration_without_a_sink_still_resends(fake: FakeTelegram, store: ChannelStore) -> None:
    adapter = TelegramChannel(TOKEN, fake.url, store)
    adapter._session = aiohttp.ClientSession()  # sending without start(): no sink to tell
    try:
        fake.migrate_chat(-4001, -1004001, notify=False)
        await adapter.send_text(ChatTarget("-4001"), "x")
        assert fake.texts_to(-1004001) == ["x"]
    finally:
        await adapter.stop()


async def test_a_file_over_the_upload_limit_is_refused_before_reading(
    fake: FakeTelegram, channel: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nanohost.channels.telegram.UPLOAD_MAX_BYTES", 1000)
    adapter = await channel()
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 1001)
    with pytest.raises(PermanentError, match="big.bin"):
        await adapter.send_file(ChatTarget(str(GROUP)), path, "")
    with pytest.raises(PermanentError, match="cannot read"):
        await adapter.send_file(ChatTarget(str(GROUP)), tmp_path / "missing.bin", "")
    assert fake.calls_of("sendDocument") == []


async def test_the_token_is_never_logged(
    fake: FakeTelegram, channel: Factory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        adapter = await channel()
        fake.fail_next("getUpdates", 500, "Internal Server Error")
        fake.inject_message(GROUP, "hi")
        await sink.next()
        await adapter.stop()
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("nanohost")]
    assert any("getUpdates failed" in line for line in ours)
    assert not any(TOKEN in line for line in ours)


class BatchSink(Sink):
    """A sink that routes a poll's batch at once (as the router's ``receive_many`` does)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.fail = fail

    async def receive_many(self, messages: list[InboundMessage]) -> None:
        self.batches.append([m.text for m in messages])
        if self.fail:
            raise RuntimeError("router blew up")
        for message in messages:
            await self.messages.put(message)


@pytest.mark.parametrize("fail", [False, True])
async def test_a_poll_of_several_updates_is_routed_as_one_batch(
    fake: FakeTelegram, channel: Factory, store: ChannelStore, fail: bool
) -> None:
    """Updates waiting before the first poll come back together; a sink that routes batches
    gets them in one call, in order, and the stored offset moves past the last. If the batch
    fails, each message is handed over on its own."""
    batch_sink = BatchSink(fail=fail)
    sent = [fake.inject_message(GROUP, text) for text in ("one", "two", "three")]
    await channel(sink=batch_sink)
    assert [(await batch_sink.next()).text for _ in sent] == ["one", "two", "three"]
    assert batch_sink.batches == [["one", "two", "three"]]
    assert store.get("offset") == str(sent[-1]["update_id"] + 1)
