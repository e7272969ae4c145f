"""A real full disk: the data dir on a small tmpfs, filled to the last byte. A message is refused
with 507 (nothing half-stored), /healthz says the disk is full, and once space is freed the host
takes messages again by itself."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from nanohost import app as host_app
from nanohost.app import build_app
from nanohost.db import Message, make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.groups import create_group
from nanohost.settings import Settings, load_settings
from tests.fakes.container_engine import RecordingBackend

pytestmark = pytest.mark.chaos
AUTH = {"Authorization": "Bearer t"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs root and mount privileges; skipped loudly otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("NO SMALL DISK: mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mount)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"NO SMALL DISK: cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system has not one byte left."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as filler:
        while True:
            try:
                filler.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        while True:  # the last few bytes
            try:
                filler.write(b"\0" * 512)
            except OSError:
                break


def inbound(settings: Settings) -> list[tuple[str, str]]:
    engine = make_engine(settings.db_url)
    with make_session_factory(engine)() as db:
        rows = [(m.text, m.status) for m in db.scalars(select(Message).where(Message.direction == "in"))]
    engine.dispose()
    return rows


@pytest.mark.parametrize("precheck", [True, False], ids=["refused-before-writing", "failed-write"])
async def test_a_full_data_disk_answers_507_and_recovers_when_space_frees(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch, precheck: bool
) -> None:
    if not precheck:  # let the write itself fail: SQLite's SQLITE_FULL or ENOSPC from the queue
        monkeypatch.setattr(host_app, "REFUSE_BELOW", 0)
    settings = load_settings(
        data_dir=small_disk / "data",
        groups_dir=tmp_path / "groups",
        api_token="t",
        sweep_interval=3600,
        disk_low_bytes=2 * 1024**2,
    )
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        create_group(db, settings, "team", provider="mock")
    engine.dispose()

    fake = RecordingBackend()
    async with TestClient(TestServer(build_app(settings, backend_factory=lambda: fake))) as client:

        async def post(text: str) -> int:
            response = await client.post("/api/groups/team/messages", json={"text": text}, headers=AUTH)
            if response.status != 201:
                assert response.status == 507, await response.text()
                assert "disk is full" in (await response.json())["error"]
            return response.status

        assert await post("before") == 201
        filler = small_disk / "filler"
        fill(filler)
        assert await post("while full " + "x" * 20_000) == 507
        rows = inbound(settings)
        assert rows[0] == ("before", "queued")
        assert all(status == "refused" for _, status in rows[1:])  # not stored, or taken back
        health = await client.get("/healthz")
        body = await health.json()
        assert health.status == 503
        assert body["disk"].startswith("full:" if precheck else ("full:", "low:"))  # (its floor is 0 here)
        assert body["disk_free_bytes"] < 1024**2

        filler.unlink()  # the operator frees space
        assert await post("after") == 201
        assert inbound(settings)[-1] == ("after", "queued")
        health = await client.get("/healthz")
        assert health.status == 200 and (await health.json())["disk"] == "ok"
