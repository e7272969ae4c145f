"""Files the agent asks to send are read only from inside its workspace or session dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nanohost.agent_files import keep_copy
from nanohost.runtime import HostContext, SessionRuntime
from nanohost.settings import load_settings
from nanohost.slots import Slots


@pytest.fixture
def runtime(host_env: Path) -> SessionRuntime:
    settings = load_settings()
    ctx = HostContext(
        settings=settings,
        db=None,
        backend=None,
        gateway=None,
        contributions={},  # type: ignore[arg-type]
        slots=Slots(1),
    )
    (settings.groups_dir / "team").mkdir(parents=True)
    return SessionRuntime(ctx, session_id=1, group_id=1, folder="team")


def test_files_inside_are_mapped_to_the_host(runtime: SessionRuntime, host_env: Path) -> None:
    folder = host_env / "groups" / "team"
    (folder / "out").mkdir()
    (folder / "out" / "a.png").write_bytes(b"x")
    assert runtime.host_path("/workspace/agent/out/a.png") == (folder / "out" / "a.png").resolve()


def test_the_session_dir_is_not_a_place_files_are_sent_from(runtime: SessionRuntime) -> None:
    # it holds the host's files (runner.json carries the gateway placeholder): never sent to a chat
    with pytest.raises(ValueError, match="outside /workspace/agent"):
        runtime.host_path("/workspace/session/runner.json")


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
        runtime.host_path(path)


def test_a_sent_file_is_copied_and_later_swaps_do_not_reach_the_host(
    runtime: SessionRuntime, host_env: Path
) -> None:
    folder = host_env / "groups" / "team"
    report = folder / "report.txt"
    report.write_text("the report")
    secret = host_env / "secret.txt"
    secret.write_text("host secret")
    source = runtime.host_path("/workspace/agent/report.txt")
    kept = keep_copy(source, [folder, runtime.dir], runtime.outbox, "7")
    report.unlink()
    report.symlink_to(secret)  # the agent swaps the file after the check
    assert kept.read_text() == "the report"
    assert kept == runtime.outbox / "7" / "report.txt"


def test_the_copy_refuses_what_it_actually_opened(runtime: SessionRuntime, host_env: Path) -> None:
    folder = host_env / "groups" / "team"
    secret = host_env / "secret.txt"
    secret.write_text("host secret")
    roots = [folder, runtime.dir]
    (folder / "link").symlink_to(secret)  # a link swapped in between host_path and the copy
    with pytest.raises(ValueError, match="cannot be opened"):
        keep_copy(folder / "link", roots, runtime.outbox, "1")
    (folder / "sub").symlink_to(host_env)  # a folder above it swapped for a link out
    with pytest.raises(ValueError, match="outside the workspace"):
        keep_copy(folder / "sub" / "secret.txt", roots, runtime.outbox, "2")
    os.mkfifo(folder / "pipe")  # would block a plain open() for ever
    with pytest.raises(ValueError, match="not a regular file"):
        keep_copy(folder / "pipe", roots, runtime.outbox, "3")
    (folder / "big.bin").write_bytes(b"x" * 2048)
    with pytest.raises(ValueError, match="over the"):
        keep_copy(folder / "big.bin", roots, runtime.outbox, "4", limit=1024)
    assert not runtime.outbox.exists() or list(runtime.outbox.iterdir()) == []


def test_a_symlink_loop_is_refused_not_raised_past_the_import(
    runtime: SessionRuntime, host_env: Path
) -> None:
    folder = host_env / "groups" / "team"
    (folder / "x").symlink_to(folder / "y")
    (folder / "y").symlink_to(folder / "x")
    refusal = runtime.keep_file(5, "/workspace/agent/x")  # one bad row must not block later rows
    assert isinstance(refusal, str) and "loop" in refusal.lower()
    (folder / "ok.txt").write_text("fine")
    assert runtime.keep_file(6, "/workspace/agent/ok.txt") == (runtime.outbox / "6" / "ok.txt", "ok.txt")
