"""Files the agent asks to send are read only from inside its workspace or session dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nanohost.db.models import AgentGroup
from nanohost.runtime import HostContext, SessionRuntime
from nanohost.settings import load_settings


@pytest.fixture
def runtime(host_env: Path) -> SessionRuntime:
    settings = load_settings()
    ctx = HostContext(
        settings=settings,
        db=None,
        backend=None,
        gateway=None,
        contributions={},  # type: ignore[arg-type]
        slots=asyncio.Semaphore(1),
    )
    (settings.groups_dir / "team").mkdir(parents=True)
    return SessionRuntime(ctx, session_id=1, group_id=1, folder="team")


GROUP = AgentGroup(name="team", folder="team", agent_provider="mock")


def test_files_inside_are_mapped_to_the_host(runtime: SessionRuntime, host_env: Path) -> None:
    folder = host_env / "groups" / "team"
    (folder / "out").mkdir()
    (folder / "out" / "a.png").write_bytes(b"x")
    (runtime.dir / "note.txt").write_text("n")
    assert runtime.host_path("/workspace/agent/out/a.png", GROUP) == (folder / "out" / "a.png").resolve()
    assert runtime.host_path("/workspace/session/note.txt", GROUP) == (runtime.dir / "note.txt").resolve()


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/workspace/agent/../../etc/passwd", "outside the workspace"),
        ("/workspace/agent/link", "outside the workspace"),
        ("/etc/passwd", "outside /workspace/agent"),
        ("/workspace/agent", "outside the workspace"),
        ("/workspace/agent/missing.txt", "not a file"),
        ("relative.txt", "outside /workspace/agent"),
    ],
)
def test_escapes_are_refused(runtime: SessionRuntime, host_env: Path, path: str, says: str) -> None:
    secret = host_env / "secret.txt"
    secret.write_text("host secret")
    (host_env / "groups" / "team" / "link").symlink_to(secret)
    with pytest.raises(ValueError, match=says):
        runtime.host_path(path, GROUP)
