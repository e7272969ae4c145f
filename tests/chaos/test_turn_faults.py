"""Faults in the middle of a turn lose nothing: the host killed (``kill -9``) or stopped (SIGTERM)
while the model streams, the agent's container killed, the model service failing (500s, 429s),
cutting its stream, or hanging.

Real parts throughout: the Docker engine, the agent image with the real Codex, the host (in a
subprocess where it must really die), the scripted model server. Each test sends numbered
messages, one of them under the fault, and checks that every one is answered exactly once, with
the real answer (the hang: with one plain-words error), and archived once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nanohost.settings import Settings
from tests.fakes.model_server import ModelServer, Reply, model_server  # noqa: F401  (fixture)
from tests.support.host import (
    API_TOKEN,
    AUTH,
    TEST_IMAGE_NAME,
    add_group,
    containers_of,
    installation_id,
    make_settings,
    remove_containers,
)

pytestmark = [pytest.mark.chaos, pytest.mark.docker, pytest.mark.codex]
KEY = "sk-chaos-upstream"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HostProcess:
    """`nanohost serve` as a real process, so it can be killed for real."""

    def __init__(self, settings: Settings, model: ModelServer, port: int) -> None:
        self.port = port
        root = settings.data_dir.parent
        env = {k: v for k, v in os.environ.items() if not k.startswith("NANOHOST_") and k != "OPENAI_API_KEY"}
        env.update(
            NANOHOST_DATA_DIR=str(settings.data_dir),
            NANOHOST_GROUPS_DIR=str(settings.groups_dir),
            NANOHOST_IMAGE_NAME=TEST_IMAGE_NAME,
            NANOHOST_API_TOKEN=API_TOKEN,
            NANOHOST_WEB_PORT=str(port),
            NANOHOST_SWEEP_INTERVAL="0.5",
            NANOHOST_MODEL_BASE_URL=model.url,
            OPENAI_API_KEY=KEY,
        )
        self.log = open(root / f"host-{time.time_ns()}.log", "w")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nanohost.cli", "serve"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as client:
            deadline = time.monotonic() + 60
            while True:  # another process binding its port: polled, bounded
                assert self.process.poll() is None, "host exited at start"
                try:
                    async with client.get(f"http://127.0.0.1:{self.port}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "host did not come up"
                await asyncio.sleep(0.1)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with (
            aiohttp.ClientSession() as client,
            client.request(method, f"{self.base}{path}", headers=AUTH, **kwargs) as response,
        ):
            assert response.status < 300, await response.text()
            return await response.json()

    async def send(self, group: str, text: str) -> int:
        return int((await self.call("POST", f"/api/groups/{group}/messages", json={"text": text}))["id"])

    async def messages(self, group: str, after: int = 0, wait: float = 0) -> list[dict[str, Any]]:
        found = await self.call("GET", f"/api/groups/{group}/messages?after={after}&wait={wait}")
        return list(found["messages"])

    async def stop(self, sig: signal.Signals, patience: float = 10) -> float:
        """Send ``sig``; seconds until the process was gone (killed after ``patience`` seconds)."""
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            await asyncio.to_thread(self.process.wait, patience)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait, 10)
        self.log.close()
        return time.monotonic() - started


async def answers(host: Any, group: str, count: int, timeout: float = 120) -> list[str]:
    """The texts of the group's replies, once there are ``count`` of them (long polls, bounded)."""
    async with asyncio.timeout(timeout):
        while True:
            outs = [m["text"] for m in await host.messages(group) if m["direction"] == "out"]
            if len(outs) >= count:
                return outs
            newest = (await host.messages(group))[-1]["id"]
            await host.messages(group, after=newest, wait=30)


def archived(settings: Settings, group: str) -> list[str]:
    return sorted(p.read_text() for p in (settings.groups_dir / group / "conversations").glob("*.md"))


def assert_answered_once_each(settings: Settings, group: str, outs: list[str], texts: list[str]) -> None:
    assert outs == [f"echo: {t}" for t in texts]
    files = archived(settings, group)
    assert len(files) == len(texts)
    for text in texts:
        assert sum(f"echo: {text}" in f for f in files) == 1


@pytest.mark.parametrize(
    "how",
    [signal.SIGKILL, signal.SIGTERM],
    ids=["kill -9", "SIGTERM"],
)
async def test_the_host_dies_mid_stream_and_the_answer_arrives_once_after_its_restart(
    tmp_path: Path,
    docker_client: Any,
    agent_image: str,
    model_server: ModelServer,  # noqa: F811
    how: signal.Signals,
) -> None:
    settings = make_settings(tmp_path, openai_api_key=KEY, model_base_url=model_server.url)
    add_group(settings, "steady", provider="codex")
    port = free_port()
    host = HostProcess(settings, model_server, port)
    try:
        await host.ready()
        await host.send("steady", "message 1")
        assert await answers(host, "steady", 1) == ["echo: message 1"]
        (container,) = containers_of(docker_client, settings, "steady")

        hold = asyncio.Event()
        model_server.script(Reply(text="never finished", hold=hold))
        await host.send("steady", "message 2")
        await model_server.wait_streaming(1, timeout=60)
        newest = (await host.messages("steady"))[-1]["id"]
        async with (  # a chat is watching (the web chat's socket)
            aiohttp.ClientSession() as client,
            client.ws_connect(
                f"{host.base}/api/groups/steady/stream?after={newest - 1}", headers=AUTH
            ) as chat,
        ):
            assert (await chat.receive_json(timeout=30))["id"] == newest  # its handler is running
            took = await host.stop(how)  # mid-stream
        assert took < 5, f"the host took {took:.1f} s to go"
        hold.set()
        assert [c.id for c in containers_of(docker_client, settings, "steady")] == [container.id]  # still up

        host = HostProcess(settings, model_server, port)
        await host.ready()
        assert await answers(host, "steady", 2) == ["echo: message 1", "echo: message 2"]
        assert [c.id for c in containers_of(docker_client, settings, "steady")] == [container.id]  # adopted
        await host.send("steady", "message 3")
        outs = await answers(host, "steady", 3)
        assert_answered_once_each(settings, "steady", outs, ["message 1", "message 2", "message 3"])
        assert model_server.requests[-2].user_texts.count("message 2") == 1
    finally:
        if host.process.poll() is None:
            await host.stop(signal.SIGKILL)
        remove_containers(docker_client, installation_id(settings))


async def test_the_container_killed_mid_turn_answers_once_after_its_respawn(
    tmp_path: Path,
    start_host: Any,
    docker_client: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, openai_api_key=KEY, model_base_url=model_server.url)
    add_group(settings, "sturdy", provider="codex")
    host = await start_host(settings)
    await host.send("sturdy", "message 1")
    assert await answers(host_api(host), "sturdy", 1) == ["echo: message 1"]
    hold = asyncio.Event()
    model_server.script(Reply(text="never finished", hold=hold))
    await host.send("sturdy", "message 2")
    await model_server.wait_streaming(1, timeout=60)
    (container,) = containers_of(docker_client, settings, "sturdy")
    container.kill()
    hold.set()
    assert await answers(host_api(host), "sturdy", 2) == ["echo: message 1", "echo: message 2"]
    await host.send("sturdy", "message 3")
    outs = await answers(host_api(host), "sturdy", 3)
    assert_answered_once_each(settings, "sturdy", outs, ["message 1", "message 2", "message 3"])


@pytest.mark.parametrize(
    "fault",
    [
        [Reply(status=500)] * 14 + [Reply(status=429, headers={"Retry-After": "1"})] * 2,
        [Reply(text="partial", drop=True)] * 6,
    ],
    ids=["500s then 429s", "stream cut"],
)
async def test_a_failing_model_service_then_the_real_answer_once(
    tmp_path: Path,
    start_host: Any,
    model_server: ModelServer,  # noqa: F811
    fault: list[Reply],
) -> None:
    settings = make_settings(tmp_path, openai_api_key=KEY, model_base_url=model_server.url)
    add_group(settings, "patient", provider="codex")
    host = await start_host(settings)
    await host.send("patient", "message 1")
    assert await answers(host_api(host), "patient", 1) == ["echo: message 1"]
    model_server.script(*fault)
    await host.send("patient", "message 2")
    assert await answers(host_api(host), "patient", 2) == ["echo: message 1", "echo: message 2"]
    assert not model_server.queue  # the whole fault was served
    assert model_server.requests[-1].user_texts.count("message 2") == 1
    await host.send("patient", "message 3")
    outs = await answers(host_api(host), "patient", 3)
    assert_answered_once_each(settings, "patient", outs, ["message 1", "message 2", "message 3"])


async def test_a_hung_model_ends_at_the_turn_timeout_with_one_plain_error(
    tmp_path: Path,
    start_host: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, openai_api_key=KEY, model_base_url=model_server.url, turn_timeout=5)
    add_group(settings, "hung", provider="codex")
    host = await start_host(settings)
    await host.send("hung", "message 1")
    assert await answers(host_api(host), "hung", 1) == ["echo: message 1"]
    hold = asyncio.Event()
    model_server.script(Reply(text="never", hold=hold))
    await host.send("hung", "message 2")
    outs = await answers(host_api(host), "hung", 2, timeout=60)
    hold.set()
    assert outs[0] == "echo: message 1"
    assert "took too long" in outs[1] and "127.0.0.1" not in outs[1] and "http" not in outs[1]
    await host.send("hung", "message 3")
    outs = await answers(host_api(host), "hung", 3)
    assert outs[2] == "echo: message 3" and len(outs) == 3
    files = archived(settings, "hung")
    assert (
        len(files) == 2
        and "echo: message 1" in files[0] + files[1]
        and "echo: message 3" in files[0] + files[1]
    )


class host_api:  # noqa: N801 - reads as a function at the call site
    """The in-process test host seen through the same calls as ``HostProcess``."""

    def __init__(self, host: Any) -> None:
        self.host = host

    async def messages(self, group: str, after: int = 0, wait: float = 0) -> list[dict[str, Any]]:
        response = await self.host.client.get(
            f"/api/groups/{group}/messages?after={after}&wait={wait}", headers=AUTH
        )
        assert response.status == 200
        return list((await response.json())["messages"])
