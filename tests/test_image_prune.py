"""`nanohost image prune`: older agent image tags go, the current one and any a container uses stay.

Runs against the real Docker engine with throwaway tags of the local base image under a name
of this test's own, so nothing another test or installation uses is touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nanohost.cli import app

pytestmark = pytest.mark.docker
BASE = "debian:bookworm-slim"


@pytest.fixture
def engine() -> Iterator[Any]:
    import docker

    try:
        client = docker.from_env()
        client.images.get(BASE)
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"NO DOCKER ENGINE or no {BASE}: {exc}")
    yield client
    client.close()


def tags_of(engine: Any, name: str) -> set[str]:
    """This test's tags only (the tagged image also carries the base image's own tag)."""
    return {t for image in engine.images.list(name=name) for t in image.tags if t.startswith(f"{name}:")}


def test_prune_removes_only_unused_older_tags(
    host_env: Path, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanohost.settings import load_settings

    name = f"nanohost-prune-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("NANOHOST_IMAGE_NAME", name)
    current = load_settings().image_tag
    base = engine.images.get(BASE)
    for tag in ("0.1.0-old", "0.1.0-used", current.split(":", 1)[1]):
        base.tag(name, tag)
    user = engine.containers.create(f"{name}:0.1.0-used", command=["true"], labels={"test": name})
    runner = CliRunner()
    try:
        dry = runner.invoke(app, ["image", "prune", "--dry-run"], catch_exceptions=False)
        assert dry.exit_code == 0, dry.output
        assert "would remove 1 unused image(s)" in dry.stdout and f"{name}:0.1.0-old" in dry.stdout
        assert tags_of(engine, name) == {f"{name}:0.1.0-old", f"{name}:0.1.0-used", current}

        done = runner.invoke(app, ["image", "prune"], catch_exceptions=False)
        assert done.exit_code == 0, done.output
        assert tags_of(engine, name) == {f"{name}:0.1.0-used", current}
        assert engine.images.get(BASE).id == base.id  # the tagged image itself is untouched

        again = runner.invoke(app, ["image", "prune"], catch_exceptions=False)
        assert again.exit_code == 0 and "nothing to prune" in again.stdout
    finally:
        user.remove(force=True)
        for tag in tags_of(engine, name):
            engine.images.remove(tag)
