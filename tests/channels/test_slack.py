"""The Slack adapter against the fake Slack (no Docker): start, Socket Mode, sending, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nanohost.channels import slack as slack_module
from nanohost.channels.base import (
    ChannelStartError,
    ChatTarget,
    FileTooLarge,
    InboundMessage,
    PermanentError,
    TransientError,
)
from nanohost.channels.chunking import split_to_fit
from nanohost.channels.slack import SlackBot, SlackChannel, escape
from tests.fakes.slack import APP_TOKEN, BOT_ID, BOT_TOKEN, BOT_USER, FakeSlack, running


class Sink:
    """Collects what the adapter reports; ``hold`` makes ``receive`` block (a slow router)."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self.hold: asyncio.Event | None = None

    async def receive(self, message: InboundMessage) -> None:
        if self.hold is not None:
            await self.hold.wait()
        await self.messages.put(message)

    async def chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        raise AssertionError("Slack chats never move")

    async def next(self, timeout: float = 10.0) -> InboundMessage:
        return await asyncio.wait_for(self.messages.get(), timeout)


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with running() as server:
        yield server


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
async def channel(
    fake: FakeSlack, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SlackChannel]:
    monkeypatch.setattr(slack_module, "BACKOFF_START", 0.05)  # reconnect tests need not wait a second
    adapter = SlackChannel(app_token=APP_TOKEN, bot_token=BOT_TOKEN, api_base=fake.url)
    await adapter.start(sink)
    await fake.wait_connections(1)
    yield adapter
    await adapter.stop()


# --- start ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("app", "bot"), [("", BOT_TOKEN), (APP_TOKEN, ""), ("", "")])
async def test_a_missing_token_names_both_variables(fake: FakeSlack, app: str, bot: str) -> None:
    adapter = SlackChannel(app_token=app, bot_token=bot, api_base=fake.url)
    with pytest.raises(ChannelStartError) as refused:
        await adapter.start(Sink())
    assert "NANOHOST_SLACK_APP_TOKEN" in str(refused.value) and "NANOHOST_SLACK_BOT_TOKEN" in str(
        refused.value
    )
    assert fake.calls == []


async def test_a_refused_bot_token_names_its_variable(fake: FakeSlack) -> None:
    adapter = SlackChannel(app_token=APP_TOKEN, bot_token="xoxb-wrong", api_base=fake.url)
    with pytest.raises(ChannelStartError) as refused:
        await adapter.start(Sink())
    assert "NANOHOST_SLACK_BOT_TOKEN" in str(refused.value) and "invalid_auth" in str(refused.value)
    assert "xoxb-wrong" not in str(refused.value)
    assert [c.method for c in fake.calls] == ["auth.test"]


async def test_a_refused_app_token_names_its_variable(fake: FakeSlack) -> None:
    adapter = SlackChannel(app_token="xapp-wrong", bot_token=BOT_TOKEN, api_base=fake.url)
    with pytest.raises(ChannelStartError) as refused:
        await adapter.start(Sink())
    assert "NANOHOST_SLACK_APP_TOKEN" in str(refused.value) and "invalid_auth" in str(refused.value)
    assert "xapp-wrong" not in str(refused.value)
    assert fake.connections == 0


async def test_a_bot_token_given_as_app_token_is_refused(fake: FakeSlack) -> None:
    adapter = SlackChannel(app_token=BOT_TOKEN, bot_token=BOT_TOKEN, api_base=fake.url)
    with pytest.raises(ChannelStartError, match="NANOHOST_SLACK_APP_TOKEN.*not_allowed_token_type"):
        await adapter.start(Sink())


@pytest.mark.parametrize(
    "failure",
    [{"error": code} for code in ("account_inactive", "token_revoked", "not_authed")]
    + [{"status": 401}, {"status": 403}],
)
async def test_every_kind_of_token_refusal_stops_the_channel(
    fake: FakeSlack, failure: dict[str, Any]
) -> None:
    fake.fail_next("auth.test", **failure)
    adapter = SlackChannel(app_token=APP_TOKEN, bot_token=BOT_TOKEN, api_base=fake.url)
    with pytest.raises(ChannelStartError, match="NANOHOST_SLACK_BOT_TOKEN"):
        await adapter.start(Sink())
    assert adapter._session is None and fake.connections == 0


def assert_nothing_running(adapter: SlackChannel) -> None:
    """What a failed start must leave behind: no session, no socket, no tasks."""
    assert adapter._session is None and adapter._ws is None
    assert adapter._loop_task is None and adapter._worker_task is None


async def test_an_unreachable_slack_at_start_is_transient_and_a_retry_works(fake: FakeSlack) -> None:
    sink = Sink()
    adapter = SlackChannel(app_token=APP_TOKEN, bot_token=BOT_TOKEN, api_base="http://127.0.0.1:1/api")
    with pytest.raises(TransientError):
        await adapter.start(sink)
    assert_nothing_running(adapter)
    adapter._api_base = fake.url  # the network is back
    await adapter.start(sink)
    try:
        await fake.wait_connections(1)
        await fake.inject(fake.message("after the retry"))
        assert (await sink.next()).text == "after the retry"
    finally:
        await adapter.stop()


@pytest.mark.parametrize(
    ("method", "failure"),
    [
        ("auth.test", {"status": 503}),
        ("auth.test", {"status": 429, "retry_after": 3}),
        ("auth.test", {"error": "internal_error"}),
        ("apps.connections.open", {"status": 500}),
        ("apps.connections.open", {"error": "service_unavailable"}),
    ],
)
async def test_a_failing_slack_at_start_is_transient_and_a_retry_works(
    fake: FakeSlack, method: str, failure: dict[str, Any]
) -> None:
    fake.fail_next(method, **failure)
    sink = Sink()
    adapter = SlackChannel(app_token=APP_TOKEN, bot_token=BOT_TOKEN, api_base=fake.url)
    with pytest.raises(TransientError):
        await adapter.start(sink)
    assert_nothing_running(adapter)
    await adapter.start(sink)
    try:
        await fake.wait_connections(1)
        await fake.inject(fake.message("started"))
        assert (await sink.next()).text == "started"
    finally:
        await adapter.stop()


async def test_a_refused_websocket_at_start_is_transient_and_a_retry_works(fake: FakeSlack) -> None:
    fake.refuse_next_link(503)
    adapter = SlackChannel(app_token=APP_TOKEN, bot_token=BOT_TOKEN, api_base=fake.url)
    with pytest.raises(TransientError, match="websocket"):
        await adapter.start(Sink())
    assert_nothing_running(adapter)
    await adapter.start(Sink())
    try:
        await fake.wait_connections(1)
    finally:
        await adapter.stop()


async def test_start_checks_both_tokens_and_connects(fake: FakeSlack, channel: SlackChannel) -> None:
    auth, opened = fake.calls[:2]
    assert (auth.method, auth.token) == ("auth.test", BOT_TOKEN)
    assert (opened.method, opened.token) == ("apps.connections.open", APP_TOKEN)
    assert channel.bot is not None
    assert (channel.bot.user_id, channel.bot.bot_id) == (BOT_USER, BOT_ID)
    assert fake.connections == 1


# --- receiving --------------------------------------------------------------------------------


async def test_a_message_arrives_and_its_envelope_is_acked_quickly(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    envelope = await fake.inject(fake.message("hello", ts="1700000000.000001"))
    message = await sink.next()
    assert (message.chat_id, message.text, message.sender_id) == ("C0123", "hello", "U0USER1")
    assert message.platform_message_id == "C0123:1700000000.000001"
    assert await fake.wait_acked(envelope) < 3.0
    assert fake.unacked() == []


async def test_envelopes_are_acked_before_a_slow_sink_finishes_and_order_is_kept(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    sink.hold = asyncio.Event()
    first = await fake.inject(fake.message("one"))
    second = await fake.inject(fake.message("two"))
    await fake.wait_acked(first)
    await fake.wait_acked(second)  # both acked while the sink is still stuck on the first
    assert sink.messages.empty()
    sink.hold.set()
    assert [(await sink.next()).text for _ in range(2)] == ["one", "two"]


async def test_a_mention_is_reported_twice_with_one_platform_id(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    ts = fake.ts()
    await fake.inject(fake.mention("<@U0BOT> hi", ts=ts))
    await fake.inject(fake.message("<@U0BOT> hi", ts=ts))
    first, second = await sink.next(), await sink.next()
    assert first.platform_message_id == second.platform_message_id == f"C0123:{ts}"
    assert first.mentions_bot and second.mentions_bot
    assert first.text == second.text == "@bot hi"


async def test_the_bots_own_messages_are_not_reported(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    own = await fake.inject(fake.message("echo: hi", user=BOT_USER, bot_id=BOT_ID))
    await fake.inject(fake.message("after"))
    assert (await sink.next()).text == "after"
    assert own in fake.acks


async def test_slash_commands_and_interactive_envelopes_are_acked_and_ignored(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    slash = await fake.send_envelope({"type": "slash_commands", "payload": {"command": "/x", "text": ""}})
    interactive = await fake.send_envelope({"type": "interactive", "payload": {"type": "block_actions"}})
    await fake.inject(fake.message("after"))
    assert (await sink.next()).text == "after"
    await fake.wait_acked(slash)
    await fake.wait_acked(interactive)


async def test_malformed_frames_and_events_are_skipped(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    await fake.send_raw("this is not json")
    await fake.send_raw('["a", "list"]')
    broken = await fake.send_envelope({"type": "events_api", "payload": "not an object"})
    no_user = await fake.inject({"type": "message", "channel": "C0123", "text": "x", "ts": "1.2"})
    await fake.inject(fake.message("still here"))
    assert (await sink.next()).text == "still here"
    assert broken in fake.acks and no_user in fake.acks
    assert sink.messages.empty()


async def test_a_payload_that_breaks_the_parser_is_skipped_and_the_loop_lives_on(
    fake: FakeSlack,
    channel: SlackChannel,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = slack_module.parse_event

    def fragile(payload: Any, bot: SlackBot, fetcher: Any = None) -> InboundMessage | None:
        if "boom" in str(payload):
            raise RuntimeError("parser bug")
        return real(payload, bot, fetcher)

    monkeypatch.setattr(slack_module, "parse_event", fragile)
    with caplog.at_level(logging.ERROR, logger="nanohost.channels.slack"):
        hostile = await fake.inject(fake.message("boom"))
        await fake.inject(fake.message("still here"))
        assert (await sink.next()).text == "still here"
    assert hostile in fake.acks
    assert any(hostile in record.getMessage() for record in caplog.records)  # logged with its ids
    assert sink.messages.empty()


async def test_a_dm_and_a_thread_reply_to_the_bot(fake: FakeSlack, channel: SlackChannel, sink: Sink) -> None:
    await fake.inject(fake.message("psst", channel="D0DM", channel_type="im"))
    await fake.inject(fake.message("and?", thread_ts="1700000000.000001", parent_user_id=BOT_USER))
    dm, reply = await sink.next(), await sink.next()
    assert dm.is_direct and dm.chat_id == "D0DM"
    assert reply.mentions_bot and reply.thread_id == "1700000000.000001"


async def test_a_dropped_socket_reconnects_and_later_messages_arrive(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    await fake.drop()
    await fake.wait_connections(2)
    await fake.inject(fake.message("after the drop"))
    assert (await sink.next()).text == "after the drop"
    assert len(fake.calls_of("apps.connections.open")) == 2  # a fresh URL: tickets are single-use


@pytest.mark.parametrize("reason", ["refresh_requested", "warning", "link_disabled"])
async def test_a_disconnect_envelope_opens_a_new_connection(
    fake: FakeSlack, channel: SlackChannel, sink: Sink, reason: str
) -> None:
    await fake.disconnect(reason)
    await fake.wait_connections(2)
    await fake.inject(fake.message("on the new link"))
    assert (await sink.next()).text == "on the new link"
    assert len(fake.calls_of("apps.connections.open")) == 2


async def test_reconnecting_survives_a_failing_connections_open(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    fake.fail_next("apps.connections.open", status=503)
    await fake.drop()
    await fake.wait_connections(2)
    await fake.inject(fake.message("back"))
    assert (await sink.next()).text == "back"
    assert len(fake.calls_of("apps.connections.open")) == 3


# --- files in ---------------------------------------------------------------------------------


async def test_an_attached_file_downloads_with_the_bot_token(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    data = b"quarterly numbers\n" * 100
    await fake.inject(fake.message("see file", files=[fake.add_file("report.txt", data)]))
    message = await sink.next()
    (incoming,) = message.files
    assert (incoming.name, incoming.size) == ("report.txt", len(data))
    assert await incoming.fetch(10_000) == data
    assert fake.downloads[-1][1] == BOT_TOKEN
    with pytest.raises(FileTooLarge):
        await incoming.fetch(len(data) - 1)


async def test_the_token_is_not_sent_to_a_foreign_file_host(
    fake: FakeSlack, channel: SlackChannel, sink: Sink
) -> None:
    entry = fake.add_file("x.txt", b"x")
    entry["url_private_download"] = "http://attacker.example/x.txt"
    await fake.inject(fake.message("file", files=[entry]))
    (incoming,) = (await sink.next()).files
    with pytest.raises(PermanentError):
        await incoming.fetch(100)


# --- sending ----------------------------------------------------------------------------------


async def test_send_text_posts_to_the_channel_and_the_thread(fake: FakeSlack, channel: SlackChannel) -> None:
    plain = await channel.send_text(ChatTarget("C0123"), "hello <world> & co")
    threaded = await channel.send_text(ChatTarget("C0123", "1700000000.000001"), "in thread")
    first, second = fake.calls_of("chat.postMessage")
    assert first.token == BOT_TOKEN and first.content_type == "application/json"
    assert first.params == {"channel": "C0123", "text": "hello &lt;world&gt; &amp; co"}
    assert second.params == {"channel": "C0123", "text": "in thread", "thread_ts": "1700000000.000001"}
    assert plain is not None and plain.startswith("C0123:") and threaded != plain


async def test_text_is_measured_escaped_so_delivery_splits_it_to_fit(
    fake: FakeSlack, channel: SlackChannel
) -> None:
    text = ("a&b<c>" * 10_000)[: SlackChannel.text_limit]  # fits raw; escaped it is ~2.3x longer
    assert channel.measure(text) == len(escape(text)) > SlackChannel.text_limit
    pieces = split_to_fit(text, SlackChannel.text_limit, channel.measure)  # what delivery sends
    for piece in pieces:
        await channel.send_text(ChatTarget("C0123", "1700000000.000001"), piece)
    posts = fake.posted  # all accepted: none was refused as msg_too_long
    assert len(posts) == len(pieces) >= 3
    assert all(len(p["text"]) <= SlackChannel.text_limit for p in posts)
    assert all(p["thread_ts"] == "1700000000.000001" for p in posts)
    assert slack_module._unescape("".join(p["text"] for p in posts)) == text  # in order, nothing lost


async def test_text_that_fits_once_escaped_is_one_post(fake: FakeSlack, channel: SlackChannel) -> None:
    text = "&" * (SlackChannel.text_limit // 5)
    await channel.send_text(ChatTarget("C0123"), text)
    (post,) = fake.posted
    assert post["text"] == "&amp;" * len(text)


async def test_a_file_over_the_upload_limit_is_refused_before_reading(
    fake: FakeSlack, channel: SlackChannel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slack_module, "UPLOAD_LIMIT", 1024)
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 2048)
    with pytest.raises(PermanentError, match="slack"):
        await channel.send_file(ChatTarget("C0123"), path, "")
    with pytest.raises(PermanentError, match="cannot read"):
        await channel.send_file(ChatTarget("C0123"), tmp_path / "missing.bin", "")
    assert fake.calls_of("files.getUploadURLExternal") == []


async def test_send_file_uses_the_external_upload_flow(
    fake: FakeSlack, channel: SlackChannel, tmp_path: Path
) -> None:
    path = tmp_path / "chart.png"
    path.write_bytes(b"\x89PNG fake image bytes")
    file_id = await channel.send_file(ChatTarget("C0123", "1700000000.000001"), path, "here it is")
    (reserve,) = fake.calls_of("files.getUploadURLExternal")
    assert reserve.content_type == "application/x-www-form-urlencoded"
    assert reserve.params == {"filename": "chart.png", "length": str(path.stat().st_size)}
    (upload,) = fake.uploads
    assert upload.file_id == file_id
    assert upload.data == path.read_bytes()
    assert upload.upload_content_type.startswith("multipart/form-data")
    assert (upload.title, upload.channel_id, upload.initial_comment, upload.thread_ts) == (
        "chart.png",
        "C0123",
        "here it is",
        "1700000000.000001",
    )


async def test_typing_is_a_no_op(fake: FakeSlack, channel: SlackChannel) -> None:
    before = len(fake.calls)
    await channel.typing(ChatTarget("C0123"))
    assert len(fake.calls) == before
    assert SlackChannel.typing_interval is None


async def test_429_is_transient_with_retry_after(fake: FakeSlack, channel: SlackChannel) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(TransientError) as limited:
        await channel.send_text(ChatTarget("C0123"), "hi")
    assert limited.value.retry_after == 7.0
    assert len(fake.calls_of("chat.postMessage")) == 1  # one attempt: delivery does the retrying
    assert await channel.send_text(ChatTarget("C0123"), "hi") is not None


@pytest.mark.parametrize(
    ("failure", "expected"),
    [({"status": 503}, TransientError), ({"error": "ratelimited"}, TransientError)]
    + [({"error": code}, PermanentError) for code in ("channel_not_found", "not_in_channel", "is_archived")]
    + [({"error": code}, PermanentError) for code in ("invalid_auth", "account_inactive", "msg_too_long")],
)
async def test_errors_are_classified(
    fake: FakeSlack, channel: SlackChannel, failure: dict[str, object], expected: type[Exception]
) -> None:
    fake.fail_next("chat.postMessage", **failure)  # type: ignore[arg-type]
    with pytest.raises(expected) as raised:
        await channel.send_text(ChatTarget("C0123"), "hi")
    if "error" in failure:
        assert str(failure["error"]) in str(raised.value)
    assert len(fake.calls_of("chat.postMessage")) == 1


async def test_a_permanent_error_while_sharing_a_file(
    fake: FakeSlack, channel: SlackChannel, tmp_path: Path
) -> None:
    path = tmp_path / "a.txt"
    path.write_text("a")
    fake.fail_next("files.completeUploadExternal", error="not_in_channel")
    with pytest.raises(PermanentError, match="not_in_channel"):
        await channel.send_file(ChatTarget("C0123"), path, "")


async def test_a_connection_failure_is_transient(fake: FakeSlack, channel: SlackChannel) -> None:
    channel._api_base = "http://127.0.0.1:1/api"  # nothing listens on port 1
    with pytest.raises(TransientError):
        await channel.send_text(ChatTarget("C0123"), "hi")
