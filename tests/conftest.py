"""Shared fixtures: an isolated host environment (temp data and groups dirs, no stray env)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Docker, agent image and host fixtures, for every folder that drives the real host.
from tests.support.host import agent_image, docker_client, start_host  # noqa: F401


@pytest.fixture
def host_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean NANOHOST_* environment rooted in tmp_path; cwd moves there so no .env leaks in."""
    for name in list(os.environ):
        if name.startswith("NANOHOST_") or name in {"OPENAI_API_KEY"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NANOHOST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NANOHOST_GROUPS_DIR", str(tmp_path / "groups"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
