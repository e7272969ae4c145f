"""Container lifecycle under the sweeper, with the real engine: crashes, idling, the cap, adoption."""

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

from nanohost import container_logs
from nanohost.containers.backend import LABEL_INSTALLATION
from nanohost.db import AgentSession, Message, make_engine, make_session_factory
from tests.fakes.model_server import ModelServer, Reply, model_server  # noqa: F401  (fixture)
from tests.integration.conftest import API_TOKEN, AUTH, TEST_IMAGE_NAME, add_group, make_settings
from tests.support.host import containers_of, installation_id, remove_containers

pytestmark = pytest.mark.docker


async def docker_event(
    client: Any, settings: Any, *, group: str, action: str, since: float, timeout: float = 60
) -> dict[str, Any]:
    """The first engine event ``action`` for the group's containers of this test's installation
    since ``since`` (blocks on events)."""
    labels = [f"nanohost.group={group}", f"{LABEL_INSTALLATION}={installation_id(settings)}"]

    def wait() -> dict[str, Any]:
        events = client.events(
            since=int(since),
            until=int(time.time() + timeout),
            decode=True,
            filters={"type": "container", "event": action, "label": labels},
        )
        for event in events:
            return dict(event)
        raise AssertionError(f"no {action} event for {group} within {timeout} s")

    return await asyncio.to_thread(wait)


def session_rows(settings: Any) -> list[AgentSession]:
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        rows = list(db.query(AgentSession).order_by(AgentSession.id))
    engine.dispose()
    return rows


def out_messages(settings: Any) -> list[Message]:
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        rows = list(db.query(Message).filter(Message.direction == "out").order_by(Message.id))
    engine.dispose()
    return rows


@pytest.mark.codex
async def test_killed_container_is_respawned_and_the_thread_resumes(
    tmp_path: Path,
    start_host: Any,
    docker_client: Any,
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings = make_settings(tmp_path, openai_api_key="sk-x", model_base_url=model_server.url)
    add_group(settings, "phoenix", provider="codex")
    host = await start_host(settings)
    warm = await host.send("phoenix", "first message")
    assert [r["text"] for r in await host.replies_after("phoenix", warm, wait=120)] == ["echo: first message"]
    hold = asyncio.Event()
    model_server.script(Reply(text="never delivered", hold=hold))
    since = time.time()
    message_id = await host.send("phoenix", "survive this")
    await model_server.wait_for_requests(2, timeout=60)
    (container,) = containers_of(docker_client, settings, "phoenix")
    container.kill()
    hold.set()
    await docker_event(docker_client, settings, group="phoenix", action="start", since=since + 0.001)
    replies = await host.replies_after("phoenix", message_id, wait=120)
    assert [r["text"] for r in replies] == ["echo: survive this"]
    threads = {r.headers.get("x-client-request-id") for r in model_server.requests}
    assert len(threads) == 1, threads  # every request, before and after the crash, on the same thread
    assert "first message" in model_server.requests[-1].user_texts  # the resumed history
    (session,) = session_rows(settings)
    # the crash is on record (kept output, the crash counter); the error cleared once it answered
    assert "exited (exit code 137" in container_logs.kept(settings.data_dir, session.id)
    assert host.orchestrator.ctx.metrics.registry.get_sample_value("nanohost_crashes_total") == 1.0
    assert session.last_error is None and session.crash_count == 0
    assert [m.text for m in out_messages(settings)].count("echo: survive this") == 1


async def test_idle_container_stops_and_the_next_message_resumes(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path, idle_timeout="1")
    add_group(settings, "sleepy")
    host = await start_host(settings)
    since = time.time()
    first = await host.send("sleepy", "one")
    assert [r["text"] for r in await host.replies_after("sleepy", first)] == ["echo: one"]
    died = await docker_event(docker_client, settings, group="sleepy", action="die", since=since)
    assert died["Actor"]["Attributes"]["exitCode"] == "0"  # the runner handled SIGTERM: a clean stop
    (before,) = session_rows(settings)
    assert before.continuation
    restart = time.time()
    second = await host.send("sleepy", "two")
    assert [r["text"] for r in await host.replies_after("sleepy", second)] == ["echo: two"]
    started = await docker_event(docker_client, settings, group="sleepy", action="start", since=restart)
    assert started["id"] != died["id"] or started["timeNano"] > died["timeNano"]  # woken again
    (after,) = session_rows(settings)
    assert after.continuation == before.continuation  # the same thread carried on


async def test_container_cap_queues_wakes(tmp_path: Path, start_host: Any, docker_client: Any) -> None:
    settings = make_settings(tmp_path, idle_timeout="1", max_containers="1")
    add_group(settings, "alpha")
    add_group(settings, "beta")
    host = await start_host(settings)
    since = time.time()
    a, b = await asyncio.gather(host.send("alpha", "a"), host.send("beta", "b"))
    replies_a, replies_b = await asyncio.gather(host.replies_after("alpha", a), host.replies_after("beta", b))
    assert [r["text"] for r in replies_a] == ["echo: a"] and [r["text"] for r in replies_b] == ["echo: b"]
    starts = {
        g: await docker_event(docker_client, settings, group=g, action="start", since=since)
        for g in ("alpha", "beta")
    }
    first, second = sorted(starts, key=lambda g: starts[g]["timeNano"])
    died = await docker_event(docker_client, settings, group=first, action="die", since=since)
    assert died["timeNano"] <= starts[second]["timeNano"]  # never two running at once


async def test_disallowed_mount_is_refused_and_said_once(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    allowed = tmp_path / "shared"
    allowed.mkdir()
    (tmp_path / ".ssh").mkdir()
    settings = make_settings(tmp_path, allowed_mounts=[tmp_path])
    add_group(settings, "nosy", additional_mounts=[{"source": str(tmp_path / ".ssh"), "name": "keys"}])
    host = await start_host(settings)
    message_id = await host.send("nosy", "hi")
    replies = await host.replies_after("nosy", message_id)
    assert len(replies) == 1 and "'.ssh' holds credentials" in replies[0]["text"]
    (session,) = session_rows(settings)
    assert session.status == "failed" and "refused" in (session.last_error or "")
    assert containers_of(docker_client, settings, "nosy", all=True) == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HostProcess:
    """`nanohost serve` as a real process, so it can be killed with SIGKILL."""

    def __init__(self, root: Path, port: int) -> None:
        self.port = port
        self.env = {
            **os.environ,
            "NANOHOST_DATA_DIR": str(root / "data"),
            "NANOHOST_GROUPS_DIR": str(root / "groups"),
            "NANOHOST_IMAGE_NAME": TEST_IMAGE_NAME,
            "NANOHOST_API_TOKEN": API_TOKEN,
            "NANOHOST_WEB_PORT": str(port),
            "NANOHOST_SWEEP_INTERVAL": "0.5",
        }
        self.log = open(root / f"host-{time.time_ns()}.log", "w")  # noqa: SIM115 - closed in kill()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nanohost.cli", "serve"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as client:
            deadline = time.monotonic() + 30
            while True:  # waiting for another process to bind its port
                assert self.process.poll() is None, "host exited at start"
                try:
                    async with client.get(f"http://127.0.0.1:{self.port}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "host did not come up"
                await asyncio.sleep(0.1)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with (
            aiohttp.ClientSession() as client,
            client.request(method, f"http://127.0.0.1:{self.port}{path}", headers=AUTH, **kwargs) as response,
        ):
            assert response.status < 300, await response.text()
            return await response.json()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.log.close()


async def test_host_killed_mid_turn_adopts_the_container_and_delivers_once(
    tmp_path: Path, docker_client: Any, agent_image: str
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "steady")
    port = free_port()
    host = HostProcess(tmp_path, port)
    try:
        await host.ready()
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(f"http://127.0.0.1:{port}/api/groups/steady/stream", headers=AUTH) as stream,
        ):
            first = (
                await host.call("POST", "/api/groups/steady/messages", json={"text": "[slow] long job"})
            )["id"]
            async with asyncio.timeout(60):
                while (await stream.receive_json()).get("type") != "progress":
                    pass  # the agent is mid-turn once it reports progress
        (container,) = containers_of(docker_client, settings, "steady")
        host.kill()  # mid-turn, without a chance to clean up

        host = HostProcess(tmp_path, port)
        await host.ready()
        (adopted,) = containers_of(docker_client, settings, "steady")
        assert adopted.id == container.id  # adopted, not restarted
        await host.call("POST", "/api/groups/steady/messages", json={"text": "and finish"})
        answer = await host.call("GET", f"/api/groups/steady/messages?after={first}&wait=60")
        outs = [m["text"] for m in answer["messages"] if m["direction"] == "out"]
        while not outs:
            answer = await host.call(
                "GET", f"/api/groups/steady/messages?after={answer['messages'][-1]['id']}&wait=60"
            )
            outs = [m["text"] for m in answer["messages"] if m["direction"] == "out"]
        assert outs == ["echo: [slow] long job | and finish"]
        host.kill()

        host = HostProcess(tmp_path, port)  # a third start imports nothing twice
        await host.ready()
        everything = await host.call("GET", "/api/groups/steady/messages?after=0")
        assert [m["text"] for m in everything["messages"] if m["direction"] == "out"] == outs
    finally:
        host.kill()
        remove_containers(docker_client, installation_id(settings))  # its own, never another's
