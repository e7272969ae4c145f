"""One host per data dir: a second `nanohost serve` on it refuses at once and touches nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from nanohost.app import build_app
from nanohost.gateway import SOCKET_NAME
from nanohost.serve_lock import AlreadyServing, DataDirLock
from nanohost.settings import load_settings
from tests.fakes.container_engine import RecordingBackend


def test_the_lock_is_exclusive_names_its_holder_and_is_released(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path / "data")
    first.acquire()
    with pytest.raises(AlreadyServing, match=rf"already serving the data dir .*data \(pid {os.getpid()}\)"):
        DataDirLock(tmp_path / "data").acquire()
    first.release()
    again = DataDirLock(tmp_path / "data")
    again.acquire()  # free again once released
    again.release()


async def test_a_second_host_on_the_same_data_dir_refuses_and_the_first_keeps_its_gateway(
    host_env: Path,
) -> None:
    settings = load_settings()
    gateway_socket = settings.data_dir / "gateway" / SOCKET_NAME
    async with TestClient(TestServer(build_app(settings, backend_factory=RecordingBackend))) as first:
        assert gateway_socket.is_socket()
        second = TestServer(build_app(settings, backend_factory=RecordingBackend))
        with pytest.raises(AlreadyServing):
            await second.start_server()
        await second.close()
        assert gateway_socket.is_socket()  # the refused host removed nothing of the first's
        assert (await first.get("/healthz")).status == 200
        assert await gateway_answers(gateway_socket)


async def gateway_answers(path: Path) -> bool:
    """Whether an HTTP request on the gateway's unix socket gets an HTTP answer (any status)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session,
        session.get("http://gateway/v1/models") as response,
    ):
        return 400 <= response.status < 500  # refused: no placeholder key; but it answers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(root: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NANOHOST_")},
        "NANOHOST_DATA_DIR": str(root / "data"),
        "NANOHOST_GROUPS_DIR": str(root / "groups"),
        "NANOHOST_WEB_PORT": str(port),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "nanohost.cli", "serve"],
        env=env,
        cwd=root,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_until_serving(process: subprocess.Popen[str]) -> list[str]:
    """Read the host's log until it says it serves; the rest of the log is drained into the returned
    list in the background (so the host never blocks on a full pipe)."""
    assert process.stderr is not None
    lines: list[str] = []
    for line in process.stderr:
        lines.append(line)
        if "Running on" in line:
            threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True).start()
            return lines
    raise AssertionError(f"the host exited at start: {''.join(lines)}")


async def test_two_serve_processes_on_one_data_dir(host_env: Path) -> None:
    first_port, second_port = free_port(), free_port()
    first = serve(host_env, first_port)
    try:
        await asyncio.wait_for(asyncio.to_thread(wait_until_serving, first), 60)
        gateway_socket = host_env / "data" / "gateway" / SOCKET_NAME
        assert gateway_socket.is_socket()

        second = serve(host_env, second_port)
        _, stderr = await asyncio.to_thread(second.communicate, timeout=60)
        assert second.returncode == 1, stderr
        assert "already serving the data dir" in stderr
        assert f"(pid {first.pid})" in stderr

        assert gateway_socket.is_socket()  # still there, and the first host's gateway answers
        assert await gateway_answers(gateway_socket)
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{first_port}/healthz") as response,
        ):
            assert (await response.json())["database"] == "ok"
    finally:
        first.send_signal(signal.SIGINT)
        await asyncio.to_thread(first.communicate, timeout=60)
    assert not (host_env / "data" / "gateway" / SOCKET_NAME).exists()  # its own stop cleans up
