"""A turn survives the host going away, a failing model service and a cut stream: real Codex,
the real runner loop and its loopback forwarder, the scripted model server (no Docker).

``Gateway`` stands in for the host's gateway socket: it splices the runner's connections to the
model server and can be stopped (every live connection cut, as a ``kill -9`` of the host does)
and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_runner.codex.provider import CodexProvider
from agent_runner.forward import LoopbackForward
from agent_runner.provider import Provider
from yarl import URL

from nanohost.transport import Doorbell, SessionQueues
from tests.fakes.model_server import ModelServer, Reply
from tests.runner.conftest import Harness, make_paths

pytestmark = pytest.mark.codex
BACKOFF = (0.2, 0.5, 1.0, 1.0)


class Gateway:
    """A unix socket that splices to the model server, and can go away and come back."""

    def __init__(self, path: Path, upstream: str) -> None:
        self.path = path
        url = URL(upstream)
        self.host, self.port = str(url.host), int(url.port or 80)
        self.server: asyncio.AbstractServer | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        """Gone at once, like a killed host: listening ends, every live connection is cut."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.links.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.links.difference_update((writer, up_writer))


@pytest.fixture
async def gateway(tmp_path: Path, model_server: ModelServer) -> AsyncIterator[Gateway]:
    found = Gateway(tmp_path / "gateway.sock", model_server.url)
    await found.start()
    yield found
    if found.server is not None:
        found.server.close()


@pytest.fixture
async def forward(gateway: Gateway) -> AsyncIterator[LoopbackForward]:
    listener = LoopbackForward(str(gateway.path))
    await listener.start()
    yield listener
    await listener.stop()


@pytest.fixture
def turn_timeout() -> float:
    return 120.0


@pytest.fixture
def provider(tmp_path: Path, forward: LoopbackForward, codex_bin: str, turn_timeout: float) -> Provider:
    (tmp_path / "workspace").mkdir(exist_ok=True)
    return CodexProvider(
        codex_home=tmp_path / "codex",
        cwd=tmp_path / "workspace",
        base_url=f"http://127.0.0.1:{forward.port}/v1",
        placeholder="nh-ph-test",
        codex_bin=codex_bin,
        turn_timeout=turn_timeout,
    )


@pytest.fixture
def runner_options() -> dict[str, Any]:
    return {"backoff": BACKOFF}


def answered_once(harness: Harness, message_id: int, text: str) -> None:
    """One reply, the real one, acked done, archived once."""
    assert harness.replies() == [{"text": text, "in_reply_to": [message_id]}]
    assert {i: a.status for i, a in harness.host.acks([message_id]).items()} == {message_id: "done"}
    archived = [p.read_text() for p in (harness.paths.workspace / "conversations").glob("*.md")]
    assert len(archived) == 1 and text in archived[0]


def asked_once(model_server: ModelServer, text: str) -> None:
    """The model's last request carries the user's message once (a failed try was rolled back)."""
    assert model_server.requests[-1].user_texts.count(text) == 1


async def test_a_host_outage_mid_stream_is_invisible(
    harness: Harness, model_server: ModelServer, gateway: Gateway, forward: LoopbackForward
) -> None:
    hold = asyncio.Event()
    model_server.script(Reply(text="never finished", hold=hold))
    message_id = harness.send("hello through a restart")
    await model_server.wait_streaming(1, timeout=60)
    await gateway.stop()  # the host dies mid-stream
    hold.set()
    await asyncio.wait_for(forward.holding.wait(), 30)  # codex asked again; the request is held
    outage = time.monotonic()
    await asyncio.sleep(2)  # the host stays away a while (the fault itself, not a synchronisation)
    await gateway.start()
    await harness.until(lambda: not harness.host.unconsumed(), limit=60)
    assert time.monotonic() - outage < 30
    answered_once(harness, message_id, "echo: hello through a restart")
    statuses = [r.payload for r in harness.host.outbound_after(0) if r.kind == "status"]
    assert statuses == []  # the turn never failed: nothing to retry, nothing to report


async def test_500s_for_a_while_then_the_real_answer(harness: Harness, model_server: ModelServer) -> None:
    model_server.script(*[Reply(status=500)] * 20)  # more than codex retries by itself (12)
    message_id = harness.send("are you up?")
    await harness.until(lambda: not harness.host.unconsumed(), limit=90)
    answered_once(harness, message_id, "echo: are you up?")
    assert len(model_server.requests) == 21
    asked_once(model_server, "are you up?")


async def test_429_with_retry_after_then_the_real_answer(harness: Harness, model_server: ModelServer) -> None:
    limited = Reply(status=429, headers={"Retry-After": "1"}, error_body='{"error":{"message":"Rate limit"}}')
    model_server.script(*[limited] * 3)  # codex 0.138 does not retry a 429 itself: the runner does
    message_id = harness.send("rate limited?")
    await harness.until(lambda: not harness.host.unconsumed(), limit=60)
    answered_once(harness, message_id, "echo: rate limited?")
    assert len(model_server.requests) == 4
    asked_once(model_server, "rate limited?")


async def test_a_stream_cut_again_and_again_then_the_real_answer(
    harness: Harness, model_server: ModelServer
) -> None:
    model_server.script(*[Reply(text="partial", drop=True)] * 6)  # codex tries a stream 4 times
    message_id = harness.send("cut me off")
    await harness.until(lambda: not harness.host.unconsumed(), limit=60)
    answered_once(harness, message_id, "echo: cut me off")
    asked_once(model_server, "cut me off")


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (
            400,
            '{"error":{"message":"Invalid value for input"}}',
            "could not answer this message: Invalid value",
        ),
        (401, '{"error":{"message":"Incorrect API key provided"}}', "refused this host's credentials"),
        (404, '{"error":{"message":"The model does not exist"}}', "could not answer this message"),
    ],
)
async def test_a_refusal_reaches_the_chat_at_once_in_plain_words(
    harness: Harness, model_server: ModelServer, status: int, body: str, says: str
) -> None:
    model_server.script(*[Reply(status=status, error_body=body)] * 10)
    message_id = harness.send("please")
    await harness.until(lambda: not harness.host.unconsumed(), limit=60)
    (reply,) = harness.replies()
    text = str(reply["text"])
    assert says in text and reply["in_reply_to"] == [message_id]
    assert "127.0.0.1" not in text and "http" not in text and "url" not in text
    assert harness.host.acks([message_id])[message_id].status == "failed"
    assert len(model_server.requests) <= 4  # codex's own retries only (a 401: 4): the runner did not retry


@pytest.mark.parametrize("turn_timeout", [3.0])
async def test_a_hung_model_ends_at_the_turn_timeout_in_plain_words(
    harness: Harness, model_server: ModelServer, turn_timeout: float
) -> None:
    hold = asyncio.Event()
    model_server.script(Reply(text="never", hold=hold))
    message_id = harness.send("hang on")
    await harness.until(lambda: not harness.host.unconsumed(), limit=30)
    hold.set()
    (reply,) = harness.replies()
    assert "took too long" in str(reply["text"]) and reply["in_reply_to"] == [message_id]
    assert harness.host.acks([message_id])[message_id].status == "failed"
    assert len(model_server.requests) == 1  # a timeout is final: not retried


def runner_env(paths: Any) -> dict[str, str]:
    return {
        **os.environ,
        "NANOHOST_SESSION_DIR": str(paths.session),
        "NANOHOST_WORKSPACE": str(paths.workspace),
        "CODEX_HOME": str(paths.codex_home),
    }


@pytest.mark.parametrize("moment", ["while the model streams", "while the host is away"])
async def test_sigterm_mid_turn_exits_within_seconds_and_the_next_runner_answers(
    tmp_path: Path, model_server: ModelServer, gateway: Gateway, codex_bin: str, moment: str
) -> None:
    paths = make_paths(tmp_path / "s")
    config = {
        "provider": "codex",
        "runner": "agent_runner.codex.runner:build",
        "codex_bin": codex_bin,
        "gateway_socket": str(gateway.path),
        "placeholder": "x",
    }
    (paths.session / "runner.json").write_text(json.dumps(config))
    host = SessionQueues(paths.session)
    host.append(1, "a long answer please", "alice", [])
    rung = asyncio.Event()
    bell = Doorbell(paths.session / "doorbell.sock", rung.set)
    await bell.start()
    hold = asyncio.Event()
    model_server.script(Reply(text="never", hold=hold))
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_runner", env=runner_env(paths), stderr=subprocess.PIPE
    )
    await model_server.wait_streaming(1, timeout=60)
    if moment == "while the host is away":
        await gateway.stop()
        hold.set()
        assert first.stderr is not None
        async with asyncio.timeout(30):  # until the forwarder holds codex's retry
            while b"holding model requests" not in await first.stderr.readline():
                pass
    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(first.wait(), 30) == 0
    assert time.monotonic() - started < 5
    hold.set()
    if moment == "while the host is away":
        await gateway.start()
    assert host.unconsumed() == [1]  # left queued for the next container
    assert [r for r in host.outbound_after(0) if r.kind == "message"] == []

    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_runner", env=runner_env(paths), stderr=subprocess.DEVNULL
    )
    async with asyncio.timeout(60):
        while host.unconsumed():
            rung.clear()
            if host.unconsumed():
                await rung.wait()
    replies = [r.payload for r in host.outbound_after(0) if r.kind == "message"]
    assert replies == [{"text": "echo: a long answer please", "in_reply_to": [1]}]
    asked_once(model_server, "a long answer please")  # the interrupted turn was rolled back
    second.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(second.wait(), 30) == 0
    await bell.stop()
    host.close()


async def test_a_users_stop_keeps_the_stopped_turn_in_the_thread(
    harness: Harness, model_server: ModelServer
) -> None:
    hold = asyncio.Event()
    model_server.script(Reply(text="never", hold=hold))
    stopped = harness.send("a long job")
    await model_server.wait_streaming(1, timeout=60)
    harness.bell.interrupt()  # /stop: unlike a restart, the turn is not sent again, so it is kept
    await harness.until(lambda: stopped not in harness.host.unconsumed(), limit=30)
    hold.set()
    assert harness.host.acks([stopped])[stopped].status == "failed"
    follow_up = harness.send("what next")
    await harness.until(lambda: not harness.host.unconsumed(), limit=60)
    assert harness.replies()[-1] == {"text": "echo: what next", "in_reply_to": [follow_up]}
    assert "a long job" in model_server.requests[-1].user_texts
