"""`nanohost doctor` asks the running host about itself (its /healthz), not only this shell."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from aiohttp import web

from nanohost.doctor import _running_host
from nanohost.settings import load_settings


async def serve_healthz(status: int, body: dict[str, object]) -> tuple[web.AppRunner, int]:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_the_running_hosts_own_state_is_reported(host_env: Path) -> None:
    runner, port = await serve_healthz(
        503,
        {
            "ok": False,
            "database": "ok",
            "containers": "ok",
            "disk": "low: 50 MiB free",
            "wake_queue": {"waiting": 3},
        },
    )
    try:
        check = await asyncio.to_thread(_running_host, load_settings(web_port=port))
    finally:
        await runner.cleanup()
    assert not check.ok and "disk: low: 50 MiB free" in check.detail and "3 waiting" in check.detail

    runner, port = await serve_healthz(200, {"ok": True, "database": "ok", "containers": "ok", "disk": "ok"})
    try:
        check = await asyncio.to_thread(_running_host, load_settings(web_port=port))
    finally:
        await runner.cleanup()
    assert check.ok and "ok" in check.detail


def test_no_host_running_is_said_and_is_not_a_failure(host_env: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    check = _running_host(load_settings(web_port=port))
    assert check.ok and "none answering" in check.detail
