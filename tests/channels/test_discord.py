"""DiscordChannel against the fake Discord (REST + Gateway on 127.0.0.1), no Docker."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from nanohost.channels import discord_parse
from nanohost.channels.base import (
    ChannelStartError,
    ChatTarget,
    FileTooLarge,
    InboundMessage,
    PermanentError,
    TransientError,
)
from nanohost.channels.discord import UPLOAD_LIMIT, USER_AGENT, DiscordChannel, RouteLimits
from nanohost.channels.discord_gateway import INTENTS, GatewayTimings
from tests.fakes.discord import BOT_ID, TOKEN, FakeDiscord

CHAT = "1234567890"
FAST = GatewayTimings(
    backoff_start=0.05, backoff_max=0.2, jitter=lambda: 0.5, reidentify_delay=lambda: 0.05, hello_timeout=5
)


class Sink:
    """Records what the adapter hands the router; ``fail_first`` makes the first receive raise."""

    def __init__(self, fail_first: bool = False) -> None:
        self.messages: list[InboundMessage] = []
        self.fail_first = fail_first
        self._changed = asyncio.Condition()

    async def receive(self, message: InboundMessage) -> None:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("router exploded")

    async def chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        raise AssertionError("Discord never moves chats")

    async def wait(self, count: int, timeout: float = 10.0) -> list[InboundMessage]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.messages) >= count), timeout)
        return self.messages


Start = Callable[..., Awaitable[tuple[DiscordChannel, Sink]]]


@pytest.fixture
async def start(discord_fake: FakeDiscord) -> AsyncIterator[Start]:
    """Start adapters against the fake (stopped at the end, so leaks fail the test)."""
    adapters: list[DiscordChannel] = []

    async def go(
        token: str = TOKEN, sink: Sink | None = None, timings: GatewayTimings = FAST
    ) -> tuple[DiscordChannel, Sink]:
        adapter = DiscordChannel(token, discord_fake.url, timings=timings, ready_timeout=5)
        adapters.append(adapter)
        sink = sink or Sink()
        await adapter.start(sink)
        return adapter, sink

    yield go
    for adapter in adapters:
        await adapter.stop()


# --- start ---------------------------------------------------------------------------------


async def test_refused_token_is_a_start_error_naming_the_env_var(
    discord_fake: FakeDiscord,
    start: Start,
) -> None:
    with pytest.raises(ChannelStartError) as raised:
        await start(token="wrong-token")
    assert "NANOHOST_DISCORD_TOKEN" in str(raised.value) and "401" in str(raised.value)
    assert "wrong-token" not in str(raised.value)
    assert discord_fake.connections == []  # never reached the gateway


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_api_at_start_is_transient_and_a_retry_starts_once_it_answers() -> None:
    port = _free_port()
    adapter = DiscordChannel(TOKEN, f"http://127.0.0.1:{port}/api/v10", timings=FAST, ready_timeout=5)
    sink = Sink()
    fake = FakeDiscord()
    try:
        with pytest.raises(TransientError, match="could not reach Discord"):
            await adapter.start(sink)
        assert adapter.receiver is None and adapter._http is None  # nothing left running or open
        await fake.start(port=port)
        await adapter.start(sink)  # the host's retry, on the same object
        await fake.inject_message(CHAT, "back online")
        assert [m.text for m in await sink.wait(1)] == ["back online"]
    finally:
        await adapter.stop()
        await fake.close()


@pytest.mark.parametrize(
    ("kind", "status", "headers"),
    [("me", 503, {}), ("gateway", 502, {}), ("me", 429, {"Retry-After": "3"})],
)
async def test_5xx_or_429_at_start_is_transient_and_a_retry_starts(
    discord_fake: FakeDiscord,
    kind: str,
    status: int,
    headers: dict[str, str],
) -> None:
    body: dict[str, Any] = {"message": "try later"}
    if status == 429:
        body["retry_after"] = 2.5
    discord_fake.script(kind, status, body, headers)
    adapter = DiscordChannel(TOKEN, discord_fake.url, timings=FAST, ready_timeout=5)
    sink = Sink()
    try:
        with pytest.raises(TransientError) as raised:
            await adapter.start(sink)
        assert str(status) in str(raised.value)
        assert raised.value.retry_after == (2.5 if status == 429 else None)
        assert adapter.receiver is None and adapter._http is None and discord_fake.connections == []
        await adapter.start(sink)
        await discord_fake.inject_message(CHAT, "started")
        assert [m.text for m in await sink.wait(1)] == ["started"]
        assert len(discord_fake.identifies) == 1
    finally:
        await adapter.stop()


async def test_a_start_refused_at_identify_can_be_retried_on_the_same_object(
    discord_fake: FakeDiscord,
) -> None:
    adapter = DiscordChannel(TOKEN, discord_fake.url, timings=FAST, ready_timeout=5)
    sink = Sink()
    discord_fake.identify_close_code = 4014
    try:
        with pytest.raises(ChannelStartError):
            await adapter.start(sink)
        assert adapter.receiver is None and adapter._http is None
        discord_fake.identify_close_code = None  # the operator enabled the intent
        await adapter.start(sink)
        await discord_fake.inject_message(CHAT, "hello")
        assert [m.text for m in await sink.wait(1)] == ["hello"]
    finally:
        await adapter.stop()


async def test_start_identifies_with_intents_and_the_versioned_url(
    discord_fake: FakeDiscord,
    start: Start,
) -> None:
    adapter, _ = await start()
    assert [c.path for c in discord_fake.calls[:2]] == ["/api/v10/users/@me", "/api/v10/gateway/bot"]
    for call in discord_fake.calls:
        assert call.headers["Authorization"] == f"Bot {TOKEN}"
        assert call.headers["User-Agent"] == USER_AGENT
    (identify,) = discord_fake.identifies
    assert identify["token"] == TOKEN
    assert identify["intents"] == INTENTS == 1 | 1 << 9 | 1 << 12 | 1 << 15
    assert identify["properties"]["browser"] == identify["properties"]["device"] == "nanohost"
    (conn,) = discord_fake.connections
    assert (conn.path, conn.request.query["v"], conn.request.query["encoding"]) == ("/gateway", "10", "json")
    assert adapter.gateway is not None and adapter.gateway.session_id == discord_fake.session_id


@pytest.mark.parametrize(
    ("code", "words"),
    [(4004, "NANOHOST_DISCORD_TOKEN was refused"), (4014, "Message Content intent")],
)
async def test_fatal_close_at_identify_is_a_start_error(
    discord_fake: FakeDiscord,
    start: Start,
    code: int,
    words: str,
) -> None:
    discord_fake.identify_close_code = code
    with pytest.raises(ChannelStartError, match=words):
        await start()
    assert len(discord_fake.connections) == 1  # no reconnect loop against a refusal


async def test_4004_while_running_stops_the_channel_with_a_clear_log(
    discord_fake: FakeDiscord,
    start: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter, _ = await start()
    assert adapter.broken() is None
    await discord_fake.close_gateway(4004)
    assert adapter.receiver is not None
    await asyncio.wait_for(asyncio.shield(adapter.receiver), 5)
    assert "NANOHOST_DISCORD_TOKEN was refused" in caplog.text
    assert "NANOHOST_DISCORD_TOKEN was refused" in (adapter.broken() or "")  # /healthz says off
    assert len(discord_fake.connections) == 1 and discord_fake.resumes == []


# --- receiving -----------------------------------------------------------------------------


async def test_guild_message_mention_reply_and_dm_arrive_with_their_facts(
    discord_fake: FakeDiscord,
    start: Start,
) -> None:
    _, sink = await start()
    plain = await discord_fake.inject_message(CHAT, "hello")
    await discord_fake.inject_message(CHAT, "ping", mention=True)
    await discord_fake.inject_message(CHAT, "re", reply_to_bot=True)
    await discord_fake.inject_message("4444444444", "psst", guild=False)
    got = await sink.wait(4)
    assert [(m.chat_id, m.text) for m in got] == [
        (CHAT, "hello"),
        (CHAT, "@nanobot ping"),
        (CHAT, "re"),
        ("4444444444", "psst"),
    ]
    assert got[0].platform_message_id == plain and got[0].sender == "alice"
    assert got[0].sender_handle == "alice"
    assert [m.mentions_bot for m in got] == [False, True, True, False]
    assert [m.is_direct for m in got] == [False, False, False, True]


async def test_bot_messages_are_not_passed_on(discord_fake: FakeDiscord, start: Start) -> None:
    _, sink = await start()
    await discord_fake.inject_message(CHAT, "beep", bot_author=True)
    await discord_fake.inject_message(CHAT, "from me", author_id=BOT_ID, username="nanobot")
    await discord_fake.inject_message(CHAT, "human")
    got = await sink.wait(1)
    await discord_fake.inject_message(CHAT, "marker")
    got = await sink.wait(2)
    assert [m.text for m in got] == ["human", "marker"]


async def test_attachment_is_streamed_from_the_cdn_without_the_token(
    discord_fake: FakeDiscord,
    start: Start,
) -> None:
    _, sink = await start()
    blob = b"x" * 5000
    await discord_fake.inject_message(CHAT, "see file", attachments=[("notes.txt", blob)])
    (msg,) = await sink.wait(1)
    (incoming,) = msg.files
    assert (incoming.name, incoming.size) == ("notes.txt", 5000)
    assert await incoming.fetch(10_000) == blob
    with pytest.raises(FileTooLarge):
        await incoming.fetch(1000)
    cdn = [c for c in discord_fake.calls if c.path.startswith("/cdn/")]
    assert len(cdn) == 2 and all("Authorization" not in c.headers for c in cdn)


async def test_malformed_events_are_skipped_and_the_next_good_one_arrives(
    discord_fake: FakeDiscord,
    start: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, sink = await start()
    await discord_fake.send_raw("{not json")
    await discord_fake.send_raw('["not", "an", "object"]')
    await discord_fake.dispatch("MESSAGE_CREATE", {"id": "31415", "channel_id": CHAT, "author": "nobody"})
    await discord_fake.dispatch("MESSAGE_CREATE", None)
    await discord_fake.inject_message(CHAT, "still here")
    (msg,) = await sink.wait(1)
    assert msg.text == "still here"
    assert "31415" in caplog.text  # the bad event was logged with its id
    assert len(discord_fake.connections) == 1  # and did not cost the connection


async def test_hostile_payloads_do_not_stop_receiving(discord_fake: FakeDiscord, start: Start) -> None:
    """A display name with a backslash once made re.sub raise; a list ``type`` made ``in`` raise."""
    _, sink = await start()
    listy = discord_fake.message_payload(CHAT, "typed")
    listy["type"] = [0]
    hashy = discord_fake.message_payload(CHAT, "typed")
    hashy["type"] = {"kind": 0}
    evil = discord_fake.message_payload(CHAT, "<@424242> hi")
    evil["mentions"] = [{"id": "424242", "username": "evil", "global_name": "evil\\1 \\g<0>"}]
    for data in (listy, hashy, evil):
        await discord_fake.dispatch("MESSAGE_CREATE", data)
    await discord_fake.inject_message(CHAT, "still here")
    got = await sink.wait(2)
    assert [m.text for m in got] == ["@evil\\1 \\g<0> hi", "still here"]
    assert len(discord_fake.connections) == 1


async def test_a_parser_that_raises_anyway_does_not_stop_the_loop(
    discord_fake: FakeDiscord,
    start: Start,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = discord_parse.parse_message
    calls = 0

    def flaky(data: object, bot_id: str, download: Any) -> InboundMessage | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("parser bug")
        return real(data, bot_id, download)

    monkeypatch.setattr("nanohost.channels.discord.parse_message", flaky)
    _, sink = await start()
    bad = await discord_fake.inject_message(CHAT, "first")
    await discord_fake.inject_message(CHAT, "second")
    assert [m.text for m in await sink.wait(1)] == ["second"]
    assert bad in caplog.text and "parser bug" in caplog.text


async def test_a_router_failure_does_not_stop_the_loop(discord_fake: FakeDiscord, start: Start) -> None:
    _, sink = await start(sink=Sink(fail_first=True))
    await discord_fake.inject_message(CHAT, "one")
    await discord_fake.inject_message(CHAT, "two")
    assert [m.text for m in await sink.wait(2)] == ["one", "two"]


# --- heartbeats, zombies, resume ------------------------------------------------------------


async def test_heartbeats_carry_the_last_sequence(discord_fake: FakeDiscord, start: Start) -> None:
    _, sink = await start()
    await discord_fake.wait_heartbeats(1)
    assert discord_fake.heartbeats[0] == 1  # READY was sequence 1
    seq = await discord_fake.dispatch("MESSAGE_CREATE", discord_fake.message_payload(CHAT, "x"))
    await sink.wait(1)
    await discord_fake.wait_until(lambda: seq in discord_fake.heartbeats)
    assert discord_fake.identifies and discord_fake.resumes == []  # ACKed beats: no reconnects


async def test_heartbeat_requested_by_the_server_is_sent_at_once(
    discord_fake: FakeDiscord,
    start: Start,
) -> None:
    discord_fake.heartbeat_interval_ms = 600_000  # no scheduled beat during this test
    slow = GatewayTimings(jitter=lambda: 1.0, hello_timeout=5)
    await start(timings=slow)
    assert discord_fake.heartbeats == []
    await discord_fake.send_op(1)
    await discord_fake.wait_heartbeats(1, timeout=5)
    assert discord_fake.heartbeats == [1]


async def test_missing_heartbeat_ack_closes_the_zombie_and_resumes(
    discord_fake: FakeDiscord,
    start: Start,
) -> None:
    _, sink = await start()
    first = discord_fake.live
    assert first is not None
    discord_fake.stop_acking()
    await discord_fake.wait_resumes(1)
    await discord_fake.wait_until(lambda: first.closed_with is not None)
    assert first.closed_with not in (1000, 1001)  # a close that keeps the session resumable
    (resume,) = discord_fake.resumes
    assert resume == {"token": TOKEN, "session_id": discord_fake.session_id, "seq": 1}
    assert discord_fake.connections[-1].path == "/gateway-resume"  # READY's resume_gateway_url
    assert len(discord_fake.identifies) == 1
    await discord_fake.inject_message(CHAT, "after zombie")
    assert [m.text for m in await sink.wait(1)] == ["after zombie"]


async def test_dropped_socket_resumes_and_replays_what_was_missed_once(
    discord_fake: FakeDiscord,
    start: Start,
) -> None:
    _, sink = await start()
    await discord_fake.inject_message(CHAT, "before")
    await sink.wait(1)
    await discord_fake.drop(hold=True)  # reconnects are refused until release()
    missed = await discord_fake.inject_message(CHAT, "while away")
    await discord_fake.wait_until(lambda: discord_fake.refused_connections >= 2)  # it kept trying
    await discord_fake.release()
    await discord_fake.wait_resumes(1)
    got = await sink.wait(2)
    await discord_fake.inject_message(CHAT, "after")
    got = await sink.wait(3)
    assert [m.text for m in got] == ["before", "while away", "after"]
    assert got[1].platform_message_id == missed
    assert discord_fake.resumes[0] == {"token": TOKEN, "session_id": discord_fake.session_id, "seq": 2}
    replayed = [d for d in discord_fake.delivered if d.replayed]
    assert [d.d["content"] for d in replayed] == ["while away"]
    assert len(discord_fake.identifies) == 1


async def test_op7_reconnect_resumes(discord_fake: FakeDiscord, start: Start) -> None:
    _, sink = await start()
    await discord_fake.send_op(7)
    await discord_fake.wait_resumes(1)
    assert len(discord_fake.identifies) == 1
    await discord_fake.inject_message(CHAT, "after op 7")
    assert [m.text for m in await sink.wait(1)] == ["after op 7"]


async def test_invalid_session_resumable_resumes(discord_fake: FakeDiscord, start: Start) -> None:
    await start()
    await discord_fake.send_op(9, True)
    await discord_fake.wait_resumes(1)
    assert len(discord_fake.identifies) == 1


@pytest.mark.parametrize("how", ["op9-false", "close-4009"])
async def test_ended_session_identifies_anew(
    discord_fake: FakeDiscord,
    start: Start,
    how: str,
) -> None:
    _, sink = await start()
    old_session = discord_fake.session_id
    if how == "op9-false":
        await discord_fake.send_op(9, False)
    else:
        await discord_fake.close_gateway(4009)
    await discord_fake.wait_identifies(2)
    assert discord_fake.resumes == [] and discord_fake.session_id != old_session
    await discord_fake.inject_message(CHAT, "new session")
    assert [m.text for m in await sink.wait(1)] == ["new session"]


async def test_failed_resume_falls_back_to_identify(discord_fake: FakeDiscord, start: Start) -> None:
    await start()
    discord_fake.session_id = "forgotten-by-the-server"
    await discord_fake.drop()
    await discord_fake.wait_identifies(2)
    assert len(discord_fake.resumes) == 1  # tried, was told op 9 false, identified


# --- sending -------------------------------------------------------------------------------


async def test_send_text_posts_json_without_pings(discord_fake: FakeDiscord, start: Start) -> None:
    adapter, _ = await start()
    message_id = await adapter.send_text(ChatTarget(CHAT), "hi @everyone")
    (sent,) = await discord_fake.wait_sent(CHAT)
    assert sent.payload == {"content": "hi @everyone", "allowed_mentions": {"parse": []}}
    assert message_id == sent.id
    call = discord_fake.attempts()[-1]
    assert call.path == f"/api/v10/channels/{CHAT}/messages"
    assert call.headers["Authorization"] == f"Bot {TOKEN}" and call.headers["User-Agent"] == USER_AGENT


async def test_send_file_is_multipart_with_payload_json(
    discord_fake: FakeDiscord,
    start: Start,
    tmp_path: Path,
) -> None:
    adapter, _ = await start()
    path = tmp_path / "chart.png"
    path.write_bytes(b"\x89PNG fake image bytes")
    message_id = await adapter.send_file(ChatTarget(CHAT), path, "here it is")
    (sent,) = await discord_fake.wait_sent(CHAT)
    assert message_id == sent.id
    assert sent.payload == {
        "content": "here it is",
        "allowed_mentions": {"parse": []},
        "attachments": [{"id": 0, "filename": "chart.png"}],
    }
    assert sent.upload is not None
    assert (sent.upload.field, sent.upload.filename) == ("files[0]", "chart.png")
    assert sent.upload.data == b"\x89PNG fake image bytes"
    assert sent.upload.content_type == "image/png"


async def test_a_file_over_the_upload_limit_is_refused_before_any_request(
    discord_fake: FakeDiscord,
    start: Start,
    tmp_path: Path,
) -> None:
    adapter, _ = await start()
    path = tmp_path / "huge.bin"
    with path.open("wb") as handle:
        handle.truncate(UPLOAD_LIMIT + 1)  # sparse: nothing is written
    with pytest.raises(PermanentError, match="huge.bin"):
        await adapter.send_file(ChatTarget(CHAT), path, "too big")
    assert discord_fake.attempts() == []
    assert UPLOAD_LIMIT == 10 * 1024 * 1024


async def test_typing(discord_fake: FakeDiscord, start: Start) -> None:
    adapter, _ = await start()
    await adapter.typing(ChatTarget(CHAT))
    (call,) = discord_fake.attempts("typing")
    assert (call.path, call.status) == (f"/api/v10/channels/{CHAT}/typing", 204)


async def test_429_is_transient_with_retry_after_then_success(
    discord_fake: FakeDiscord,
    start: Start,
) -> None:
    adapter, _ = await start()
    discord_fake.rate_limit_next(retry_after=0.25)
    with pytest.raises(TransientError) as raised:
        await adapter.send_text(ChatTarget(CHAT), "one")
    assert raised.value.retry_after == 0.25  # the body's float, not the rounded header
    assert await adapter.send_text(ChatTarget(CHAT), "one") is not None
    assert [s.content for s in discord_fake.messages(CHAT)] == ["one"]
    assert len(discord_fake.attempts()) == 2  # one attempt per call: no retrying inside


@pytest.mark.parametrize(
    ("script", "words"),
    [
        ("missing_access_next", "Missing Access (code 50001)"),
        ("unknown_channel_next", "Unknown Channel (code 10003)"),
    ],
)
async def test_403_and_404_are_permanent_with_discords_message(
    discord_fake: FakeDiscord,
    start: Start,
    script: str,
    words: str,
) -> None:
    adapter, _ = await start()
    getattr(discord_fake, script)()
    with pytest.raises(PermanentError, match=words.replace("(", r"\(").replace(")", r"\)")):
        await adapter.send_text(ChatTarget(CHAT), "hello")
    assert len(discord_fake.attempts()) == 1 and discord_fake.sent == []


async def test_5xx_and_typing_errors_are_transient(discord_fake: FakeDiscord, start: Start) -> None:
    adapter, _ = await start()
    discord_fake.script("messages", 502, {"message": "Bad Gateway"})
    with pytest.raises(TransientError):
        await adapter.send_text(ChatTarget(CHAT), "hello")
    discord_fake.script("typing", 500, None)
    with pytest.raises(TransientError):
        await adapter.typing(ChatTarget(CHAT))


async def test_exhausted_bucket_waits_before_the_next_call_on_that_route(
    discord_fake: FakeDiscord,
    start: Start,
) -> None:
    adapter, _ = await start()
    discord_fake.exhaust_bucket_next(reset_after=0.4)
    await adapter.send_text(ChatTarget(CHAT), "first")
    await adapter.typing(ChatTarget(CHAT))  # another route: not held back
    await adapter.send_text(ChatTarget(CHAT), "second")
    first, second = discord_fake.attempts()
    (typing,) = discord_fake.attempts("typing")
    assert typing.at - first.at < 0.3
    assert second.at - first.at >= 0.35
    assert [s.content for s in discord_fake.messages(CHAT)] == ["first", "second"]


async def test_network_failure_is_transient(discord_fake: FakeDiscord, start: Start) -> None:
    adapter, _ = await start()
    await discord_fake.close()  # the platform goes away
    with pytest.raises(TransientError):
        await adapter.send_text(ChatTarget(CHAT), "anyone?")


async def test_stop_is_clean_and_idempotent(discord_fake: FakeDiscord, start: Start) -> None:
    adapter, _ = await start()
    await adapter.stop()
    await adapter.stop()
    await discord_fake.wait_until(lambda: discord_fake.connections[0].closed_with is not None)
    with pytest.raises(TransientError):
        await adapter.send_text(ChatTarget(CHAT), "after stop")


def test_platform_limits() -> None:
    assert (DiscordChannel.name, DiscordChannel.text_limit, DiscordChannel.caption_limit) == (
        "discord",
        2000,
        2000,
    )
    assert DiscordChannel.typing_interval == 8.0


async def test_a_long_bucket_wait_is_left_to_delivery() -> None:
    """Past ``max_wait`` the adapter does not sit on the call: delivery retries after reset."""
    limits = RouteLimits(max_wait=1.0)
    limits.update(
        "POST /channels/{id}/messages", CHAT, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "5"}
    )
    with pytest.raises(TransientError) as raised:
        await limits.wait("POST /channels/{id}/messages", CHAT)
    assert raised.value.retry_after is not None and 4 < raised.value.retry_after <= 5
    await limits.wait("POST /channels/{id}/messages", "another-channel")  # other channels are not held
