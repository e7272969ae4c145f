"""What every benchmark shares: the agent image, a host on a free port, groups, a chat client,
percentiles, the machine's description and the results file.

Each benchmark module has ``async def run(opts) -> Result``; ``python -m bench`` runs them
(see bench/__main__.py). Results go to ``bench/results/<name>.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nanohost.app import build_app  # noqa: E402
from nanohost.db import make_engine, make_session_factory, migrate  # noqa: E402
from nanohost.db.engine import transaction  # noqa: E402
from nanohost.groups import create_group  # noqa: E402
from nanohost.settings import Settings, load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGE_NAME = "nanohost-bench-agent"
_image_ready = False


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ensure_image() -> str:
    """Build the agent image (layer cache) once per run; its tag."""
    global _image_ready
    from nanohost.containers.image import build_image

    probe = Settings(image_name=IMAGE_NAME)
    if not _image_ready:
        started = time.perf_counter()
        build_image(tag=probe.image_tag, codex_version=probe.codex_version, ca_file=probe.image_ca_file)
        print(f"image {probe.image_tag} ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        _image_ready = True
    return probe.image_tag


def settings_for(root: Path, **extra: Any) -> Settings:
    settings = load_settings(
        data_dir=root / "data",
        groups_dir=root / "groups",
        api_token=TOKEN,
        image_name=IMAGE_NAME,
        **extra,
    )
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    engine.dispose()
    return settings


def add_group(settings: Settings, name: str, provider: str) -> None:
    add_groups(settings, [name], provider)


def add_groups(settings: Settings, names: list[str], provider: str) -> None:
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        for name in names:
            create_group(db, settings, name, provider=provider)
    engine.dispose()


@asynccontextmanager
async def host(settings: Settings, **app_args: Any) -> AsyncIterator[tuple[str, web.Application]]:
    """The host in this process on a free port: its base URL and app."""
    runner = web.AppRunner(build_app(settings, **app_args))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", runner.app
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_process(settings: Settings, port: int, log: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    """`nanohost serve` as its own process (so its RSS is the host's alone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOHOST_")}
    env.update(
        NANOHOST_DATA_DIR=str(settings.data_dir),
        NANOHOST_GROUPS_DIR=str(settings.groups_dir),
        NANOHOST_IMAGE_NAME=IMAGE_NAME,
        NANOHOST_API_TOKEN=TOKEN,
        NANOHOST_WEB_PORT=str(port),
        NANOHOST_LOG_LEVEL="WARNING",
        **env_extra,
    )
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "nanohost.cli", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the host exited at start"
            try:
                async with http.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)  # waiting for another process to bind its port
    raise TimeoutError("the host did not come up")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Chat:
    """One group's chat over HTTP + websocket: post a message, wait for its reply.

    ``web=False``: the public API (bearer token, ``/api/groups/G/messages`` + ``/stream``);
    ``web=True``: the web chat (password login cookie, ``/web/groups/G/messages`` + ``/stream``).
    """

    def __init__(self, base: str, group: str, *, web: bool = False, password: str | None = None) -> None:
        self.base, self.group, self.web, self.password = base, group, web, password
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    @property
    def prefix(self) -> str:
        return f"{self.base}/{'web' if self.web else 'api'}/groups/{self.group}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Nanohost": "1"} if self.web else AUTH

    async def __aenter__(self) -> Chat:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # 127.0.0.1
        if self.web:
            async with self.http.post(f"{self.base}/web/login", json={"password": self.password}) as r:
                assert r.status == 200, await r.text()
        self.ws = await self.http.ws_connect(f"{self.prefix}/stream", headers=self.headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()

    async def send(self, text: str) -> None:
        assert self.http is not None
        async with self.http.post(f"{self.prefix}/messages", json={"text": text}, headers=self.headers) as r:
            assert r.status == 201, await r.text()

    async def reply(self, timeout: float = 120) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            event = await asyncio.wait_for(self.ws.receive_json(), timeout)
            if event.get("type") == "message" and event.get("direction") == "out":
                return dict(event)

    async def round_trip(self, text: str) -> float:
        """Milliseconds from sending ``text`` to its reply on the websocket."""
        started = time.perf_counter()
        await self.send(text)
        await self.reply()
        return (time.perf_counter() - started) * 1000


def remove_containers(root: Path) -> None:
    """The benchmark's containers outlive its host; remove those that mount its temporary dir, and
    the network namespaces they joined (nanohost/containers/netns.py)."""
    import docker
    from docker.errors import NotFound

    from nanohost.containers.netns import LABEL_JOINED

    client = docker.from_env()
    try:
        for container in client.containers.list(all=True, filters={"label": "nanohost.group"}):
            if any(str(root) in m.get("Source", "") for m in container.attrs.get("Mounts", [])):
                container.remove(force=True)
                if sandbox := container.labels.get(LABEL_JOINED):
                    with contextlib.suppress(NotFound):
                        client.containers.get(sandbox).remove(force=True)
    finally:
        client.close()


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": list(os.getloadavg()),
    }


@dataclass
class Row:
    """One line of the table: a figure, its target, and whether it was met (None: no target)."""

    metric: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, metric: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.rows.append(Row(metric, value, target, met))


def save(result: Result, started: dt.datetime, load_before: list[float], seconds: float) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": result.name,
        "date": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": {**machine(), "loadavg_before": load_before},
        "rows": [asdict(r) for r in result.rows],
        "figures": result.figures,
        "notes": result.notes,
    }
    path = RESULTS / f"{result.name}.json"
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    return path


def ms(value: float) -> str:
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def check(value: float, limit: float) -> bool:
    return value == value and value <= limit


Runner = Callable[[Any], Any]
