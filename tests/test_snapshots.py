"""Workspace snapshots on temp dirs: take, restore (files and thread back), a restore killed
half-way, hostile archives, excludes, links, retention, automatic snapshots and the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
import stat
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from nanohost import snapshots
from nanohost.cli import app
from nanohost.db import make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, Message, Snapshot, utcnow
from nanohost.groups import create_group, get_group
from nanohost.sessions import start_afresh
from nanohost.settings import Settings, load_settings

AGENT = (1000, 1000) if os.getuid() == 0 else (os.getuid(), os.getgid())


class Killed(BaseException):
    """Stands for the host process dying: nothing in the restore may catch it."""


class FakeContainers:
    """The group's containers: ``stubborn`` ones keep running whatever is done to them."""

    def __init__(self, running: list[str] | None = None, stubborn: bool = False) -> None:
        self.ids = list(running or [])
        self.stubborn = stubborn
        self.stops: list[str] = []

    def running(self, folder: str) -> list[str]:
        return list(self.ids)

    def stop(self, folder: str) -> list[str]:
        found = list(self.ids)
        self.stops.extend(found)
        if not self.stubborn:
            self.ids.clear()
        return found

    def close(self) -> None:
        pass


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", groups_dir=tmp_path / "groups")


@pytest.fixture
def db(cfg: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(cfg.db_url)
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def group(cfg: Settings, db: sessionmaker[Session]) -> Path:
    """Group ``g`` with a thread, a folder the agent has worked in, and a Codex home."""
    with transaction(db) as session:
        made = create_group(session, cfg, "g")
        session.add(AgentSession(group_id=made.id, continuation="thread-A", last_active_at=utcnow()))
    folder = cfg.groups_dir / "g"
    (folder / "notes.txt").write_text("version 1")
    (folder / "src").mkdir()
    (folder / "src" / "main.py").write_text("print('one')")
    (folder / "src" / "run.sh").write_text("#!/bin/sh\n")
    (folder / "src" / "run.sh").chmod(0o755)
    os.symlink("../notes.txt", folder / "src" / "notes-link")
    codex = cfg.codex_homes_dir / "g"
    (codex / "sessions" / "2026").mkdir(parents=True)
    (codex / "sessions" / "2026" / "rollout-A.jsonl").write_text('{"thread": "A"}\n')
    (codex / "config.toml").write_text("model = 'x'\n")
    (codex / "auth.json").write_text("")
    return folder


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: file contents, link targets, folders (never following a link)."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            found[relative] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[relative] = "/"
        else:
            found[relative] = path.read_text()
    return found


def state_of(session_dir: Path) -> dict[str, str]:
    connection = sqlite3.connect(session_dir / "outbound.db")
    try:
        return dict(connection.execute("SELECT key, value FROM state").fetchall())
    finally:
        connection.close()


def sessions_of(db: sessionmaker[Session]) -> list[tuple[int, str | None, bool]]:
    with transaction(db) as session:
        return [
            (s.id, s.continuation, s.restart_requested)
            for s in session.scalars(select(AgentSession).order_by(AgentSession.id))
        ]


def new_thread(db: sessionmaker[Session], thread: str) -> None:
    """The conversation moved on: a fresh session on another thread (as `sessions reset` does)."""
    with transaction(db) as session:
        old = session.scalars(select(AgentSession).order_by(AgentSession.id.desc())).first()
        assert old is not None
        fresh = start_afresh(session, old)
        fresh.continuation, fresh.last_active_at = thread, utcnow()


def agent_works(cfg: Settings, folder: Path) -> None:
    """What the agent does after the snapshot: edits, adds, deletes, a new rollout."""
    (folder / "notes.txt").write_text("version 2")
    (folder / "junk.txt").write_text("junk")
    (folder / "src" / "main.py").unlink()
    (cfg.codex_homes_dir / "g" / "sessions" / "2026" / "rollout-B.jsonl").write_text('{"thread": "B"}\n')


def leftovers(cfg: Settings) -> list[str]:
    """Staging, set-aside and journal files a finished (or undone) restore must not leave."""
    names = [p.name for p in (*cfg.groups_dir.iterdir(), *cfg.codex_homes_dir.iterdir())]
    names += [p.name for p in (cfg.data_dir / "snapshots" / "g").iterdir()]
    return sorted(n for n in names if n.startswith(".g.") or n.startswith(snapshots.JOURNAL))


# --- take and restore --------------------------------------------------------------------


def test_restore_brings_back_the_files_and_the_thread(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    before_files, before_codex = tree(group), tree(cfg.codex_homes_dir / "g")
    taken = snapshots.create(cfg, db, "g", note="before the refactor")
    assert taken.path == cfg.data_dir / "snapshots" / "g" / f"{taken.id}.tar.zst"
    assert taken.continuation == "thread-A"
    assert taken.files == 7  # 5 in the folder (2 from the template), 2 Codex files: auth.json is not kept
    assert taken.content_bytes == sum(
        p.stat().st_size
        for root in (group, cfg.codex_homes_dir / "g")
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != "auth.json"
    )
    assert taken.size == taken.path.stat().st_size > 0

    agent_works(cfg, group)
    new_thread(db, "thread-B")
    changed_files = tree(group)
    containers = FakeContainers(running=["c0ffee"])
    done = snapshots.restore(cfg, db, "g", taken.id, containers)

    assert containers.stops == ["c0ffee"]
    assert tree(group) == before_files
    restored_codex = tree(cfg.codex_homes_dir / "g")
    assert restored_codex == {k: v for k, v in before_codex.items() if k != "auth.json"}
    assert os.stat(group / "src" / "run.sh").st_mode & 0o777 == 0o755
    assert done.skipped == [] and done.continuation == "thread-A"
    # the next message resumes the snapshot's thread: a fresh session, seeded for its runner
    (fresh,) = done.sessions
    assert sessions_of(db) == [(1, "thread-A", True), (2, "thread-B", True), (fresh, "thread-A", False)]
    assert state_of(cfg.sessions_dir / str(fresh)) == {"continuation": "thread-A"}
    assert leftovers(cfg) == []
    # the state before the restore was kept, and restores too
    assert done.before.reason == "before-restore" and done.before.continuation == "thread-B"
    again = snapshots.restore(cfg, db, "g", done.before.id, FakeContainers())
    assert tree(group) == changed_files
    assert state_of(cfg.sessions_dir / str(again.sessions[0])) == {"continuation": "thread-B"}


def waiting_message(db: sessionmaker[Session], attachments: list[str], status: str = "queued") -> None:
    with transaction(db) as session:
        row = session.scalars(select(AgentSession).order_by(AgentSession.id.desc())).first()
        assert row is not None
        session.add(
            Message(
                group_id=row.group_id,
                session_id=row.id,
                direction="in",
                channel="web",
                chat_id="g",
                sender="alice",
                text="look at this",
                attachments=attachments,
                status=status,
            )
        )


def test_files_of_messages_still_waiting_survive_a_restore(
    cfg: Settings, db: sessionmaker[Session], group: Path, tmp_path: Path
) -> None:
    taken = snapshots.create(cfg, db, "g")
    inbox = group / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "photo.png").write_bytes(b"PNG waiting")  # sent after the snapshot, not answered yet
    (inbox / "old.txt").write_text("answered long ago")
    (tmp_path / "host-secret").write_text("HOST")
    os.symlink(tmp_path / "host-secret", inbox / "evil.txt")  # the agent's link: never read
    waiting_message(db, ["inbox/photo.png", "inbox/evil.txt", "../../etc/passwd"])
    waiting_message(db, ["inbox/old.txt"], status="answered")

    snapshots.restore(cfg, db, "g", taken.id, FakeContainers())

    assert (inbox / "photo.png").read_bytes() == b"PNG waiting"
    assert not (inbox / "old.txt").exists()  # the restore rolled that back, as it should
    assert not (inbox / "evil.txt").exists() and not (inbox / "evil.txt").is_symlink()
    assert leftovers(cfg) == []


def test_a_file_saved_during_a_restore_waits_for_it(
    cfg: Settings, db: sessionmaker[Session], group: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanohost.channels.inbox import save_for_group

    monkeypatch.setattr(snapshots, "SAVE_WAIT", 0.2)
    with snapshots.locked(cfg, "g", exclusive=True):  # what a restore holds while it swaps
        with pytest.raises(snapshots.Busy):
            save_for_group(cfg, "g", "photo.png", b"PNG")
        assert not (group / "inbox" / "photo.png").exists()
    with snapshots.locked(cfg, "g", exclusive=False):  # a container start or a snapshot: no wait
        assert save_for_group(cfg, "g", "photo.png", b"PNG") == "inbox/photo.png"
    assert (group / "inbox" / "photo.png").read_bytes() == b"PNG"


def test_restored_files_belong_to_the_container_user(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    taken = snapshots.create(cfg, db, "g")
    snapshots.restore(cfg, db, "g", taken.id, FakeContainers())
    for root in (group, cfg.codex_homes_dir / "g"):
        for path in (root, *root.rglob("*")):
            info = path.lstat()
            assert (info.st_uid, info.st_gid) == AGENT, path


def test_default_excludes_and_the_groups_own(cfg: Settings, db: sessionmaker[Session], group: Path) -> None:
    for name in ("node_modules", ".venv", "__pycache__", ".cache"):
        (group / "src" / name).mkdir()
        (group / "src" / name / "big.bin").write_bytes(b"x" * 1000)
    (group / "build.log").write_text("log")
    (group / "data").mkdir()
    (group / "data" / "huge").write_text("huge")
    (group / "data" / "small").write_text("small")
    first = snapshots.create(cfg, db, "g")
    with transaction(db) as session:
        get_group(session, "g").config.snapshot_excludes = ["*.log", "data/huge"]
    second = snapshots.create(cfg, db, "g")

    def names(taken: snapshots.Taken) -> set[str]:
        with snapshots._reader(taken.path) as tar:
            return {m.name for m in tar}

    assert not {
        n for n in names(first) if any(x in n for x in ("node_modules", ".venv", "__pycache__", ".cache"))
    }
    assert {"workspace/build.log", "workspace/data/huge", "workspace/data/small"} <= names(first)
    assert "workspace/src/node_modules/big.bin" in names(second)  # the group's list replaces the default
    assert "workspace/build.log" not in names(second) and "workspace/data/huge" not in names(second)
    assert "workspace/data/small" in names(second)


def test_taking_a_snapshot_never_follows_a_link_or_opens_a_fifo(
    cfg: Settings, db: sessionmaker[Session], group: Path, tmp_path: Path
) -> None:
    secret_dir = tmp_path / "host-secrets"
    secret_dir.mkdir()
    (secret_dir / "key").write_text("HOST-SECRET-BYTES")
    os.symlink(secret_dir / "key", group / "stolen")
    os.symlink(secret_dir, group / "stolen-dir")
    os.symlink(secret_dir, cfg.codex_homes_dir / "g" / "sessions" / "linked")
    os.mkfifo(group / "pipe")  # opening it to read would block for ever
    taken = snapshots.create(cfg, db, "g")

    with open(taken.path, "rb") as raw:
        content = zstandard.ZstdDecompressor().stream_reader(raw).read()
    assert b"HOST-SECRET-BYTES" not in content
    with snapshots._reader(taken.path) as tar:
        members = {m.name: m for m in tar}
    assert members["workspace/stolen"].issym() and members["workspace/stolen"].linkname == str(
        secret_dir / "key"
    )
    assert members["workspace/stolen-dir"].issym()
    assert members["codex/sessions/linked"].issym()
    assert not [n for n in members if n.startswith("workspace/stolen-dir/") or n == "workspace/pipe"]


def test_a_group_folder_that_is_a_link_is_refused(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    elsewhere = group.parent / "elsewhere"
    group.rename(elsewhere)
    os.symlink(elsewhere, group)
    with pytest.raises(snapshots.SnapshotError, match="has no folder"):
        snapshots.create(cfg, db, "g")
    assert list((cfg.data_dir / "snapshots" / "g").glob("*.tar.*")) == []


# --- refusals and interruptions ----------------------------------------------------------


def test_restore_refuses_while_a_container_still_runs(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    taken = snapshots.create(cfg, db, "g")
    agent_works(cfg, group)
    changed = tree(group)
    stubborn = FakeContainers(running=["deadbeef0000"], stubborn=True)
    with pytest.raises(snapshots.SnapshotError, match="deadbeef0000 of group g still runs"):
        snapshots.restore(cfg, db, "g", taken.id, stubborn)
    assert tree(group) == changed
    with transaction(db) as session:
        assert session.scalar(select(Snapshot.id).where(Snapshot.id != taken.id)) is None
    assert [s[1] for s in sessions_of(db)] == ["thread-A"]
    assert leftovers(cfg) == []


def test_a_restore_of_another_groups_snapshot_is_refused(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    taken = snapshots.create(cfg, db, "g")
    with transaction(db) as session:
        create_group(session, cfg, "other")
    with pytest.raises(snapshots.SnapshotError, match="group other has no snapshot"):
        snapshots.restore(cfg, db, "other", taken.id, FakeContainers())


@pytest.mark.parametrize("dies_at", [1, 2, 3, 4])
def test_a_host_killed_mid_swap_leaves_the_old_state_after_recovery(
    cfg: Settings, db: sessionmaker[Session], group: Path, monkeypatch: pytest.MonkeyPatch, dies_at: int
) -> None:
    taken = snapshots.create(cfg, db, "g")
    agent_works(cfg, group)
    new_thread(db, "thread-B")
    old_files, old_codex, old_sessions = tree(group), tree(cfg.codex_homes_dir / "g"), sessions_of(db)
    renames: list[tuple[str, str]] = []
    real_rename = os.rename

    def dying_rename(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        if len(renames) + 1 == dies_at:
            raise Killed(f"killed at rename {dies_at}")
        renames.append((Path(source).name, Path(target).name))
        real_rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", dying_rename)
    with pytest.raises(Killed):
        snapshots.restore(cfg, db, "g", taken.id, FakeContainers())
    monkeypatch.setattr(os, "rename", real_rename)
    # what a dead host leaves: the journal, and a swap stopped after ``dies_at - 1`` renames
    assert (cfg.data_dir / "snapshots" / "g" / snapshots.JOURNAL).exists()
    assert len(renames) == dies_at - 1
    if dies_at == 2:
        assert not group.exists()  # the folder is set aside and its copy not yet in place

    assert snapshots.recover(cfg, db) == ["g: rolled back the interrupted restore of snapshot 1"]
    assert tree(group) == old_files
    assert tree(cfg.codex_homes_dir / "g") == old_codex
    assert sessions_of(db) == old_sessions
    assert leftovers(cfg) == []
    assert snapshots.recover(cfg, db) == []  # nothing left to do


def test_a_host_killed_after_the_commit_finishes_the_restore_on_recovery(
    cfg: Settings, db: sessionmaker[Session], group: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tree(group)
    taken = snapshots.create(cfg, db, "g")
    agent_works(cfg, group)
    new_thread(db, "thread-B")

    def die(*_args: Any) -> None:
        raise Killed("killed after the commit")

    monkeypatch.setattr(snapshots, "_seed", die)
    with pytest.raises(Killed):
        snapshots.restore(cfg, db, "g", taken.id, FakeContainers())
    monkeypatch.undo()
    fresh = sessions_of(db)[-1]
    assert fresh[1:] == ("thread-A", False)
    assert not (cfg.sessions_dir / str(fresh[0]) / "outbound.db").exists()

    assert snapshots.recover(cfg, db) == ["g: completed the interrupted restore of snapshot 1"]
    assert tree(group) == before
    assert state_of(cfg.sessions_dir / str(fresh[0])) == {"continuation": "thread-A"}
    assert leftovers(cfg) == []


async def test_a_container_start_finishes_a_dead_restore_first(
    cfg: Settings, db: sessionmaker[Session], group: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = snapshots.create(cfg, db, "g")
    agent_works(cfg, group)
    changed = tree(group)

    def die(*_args: Any) -> None:
        raise Killed("killed before the swap")

    monkeypatch.setattr(snapshots, "_swap", die)
    with pytest.raises(Killed):
        snapshots.restore(cfg, db, "g", taken.id, FakeContainers())
    monkeypatch.undo()
    assert leftovers(cfg) == [".g.restore", ".g.restore", snapshots.JOURNAL]

    async with snapshots.start_guard(cfg, db, "g", wait=5):
        assert tree(group) == changed
        assert leftovers(cfg) == []


async def test_no_container_starts_while_a_restore_holds_the_group(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    restore = snapshots.GroupLock(cfg, "g")
    restore.acquire(exclusive=True, wait=0)
    try:
        with pytest.raises(snapshots.RestoreUnderWay):
            async with snapshots.start_guard(cfg, db, "g", wait=0):
                pytest.fail("a container started during a restore")
        entered = asyncio.Event()

        async def start() -> None:
            async with snapshots.start_guard(cfg, db, "g", wait=30):
                entered.set()

        waiting = asyncio.create_task(start())
        await asyncio.sleep(0)  # let it look once: the lock is held, so it waits
        assert not entered.is_set()
    finally:
        restore.release()
    await asyncio.wait_for(waiting, 10)
    assert entered.is_set()


def test_no_restore_begins_while_a_container_starts(
    cfg: Settings, db: sessionmaker[Session], group: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = snapshots.create(cfg, db, "g")
    monkeypatch.setattr(snapshots, "LOCK_WAIT", 0.0)
    containers = FakeContainers(running=["c0ffee"])
    with snapshots.locked(cfg, "g", exclusive=False), pytest.raises(snapshots.Busy, match="is busy"):
        snapshots.restore(cfg, db, "g", taken.id, containers)
    assert containers.stops == []
    assert [s.id for s, _ in snapshots.listing(db, "g")] == [taken.id]


# --- hostile archives ----------------------------------------------------------------------


def crafted(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with (
        open(path, "wb") as raw,
        zstandard.ZstdCompressor().stream_writer(raw, closefd=False) as stream,
        tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def register(db: sessionmaker[Session], archive: str) -> int:
    with transaction(db) as session:
        group = get_group(session, "g")
        row = Snapshot(group_id=group.id, reason="manual", archive=archive, threads={"": "thread-X"})
        row.continuation = "thread-X"
        session.add(row)
        session.flush()
        return row.id


def test_a_crafted_archive_cannot_write_outside_the_folder(
    cfg: Settings, db: sessionmaker[Session], group: Path, tmp_path: Path
) -> None:
    passwd = Path("/etc/passwd").read_bytes()
    before = outside_view(cfg, tmp_path)
    path = cfg.data_dir / "snapshots" / "g" / "99.tar.zst"
    path.parent.mkdir(parents=True, exist_ok=True)
    crafted(
        path,
        [
            (entry("workspace", tarfile.DIRTYPE, mode=0o755), None),
            (entry("workspace/ok.txt"), b"fine"),
            (entry(f"{tmp_path}/absolute.txt"), b"absolute"),
            (entry("/workspace/rooted.txt"), b"rooted"),
            (entry("workspace/../../escape.txt"), b"escape"),
            (entry("codex/../../codex-escape.txt"), b"escape"),
            (entry("workspace/etc", tarfile.SYMTYPE, "/etc"), None),
            (entry("workspace/etc/passwd"), b"root::0:0::/:/bin/sh\n"),
            (entry("workspace/up", tarfile.SYMTYPE, "../../.."), None),
            (entry("workspace/up/escape-through-link.txt"), b"escape"),
            (entry("workspace/self", tarfile.SYMTYPE, "."), None),
            (entry("workspace/sneaky", tarfile.SYMTYPE, "self/.."), None),
            # passes tarfile's filter (``later`` does not exist yet), but would lead out once it does
            (entry("workspace/early", tarfile.SYMTYPE, "later/.."), None),
            (entry("workspace/later", tarfile.SYMTYPE, "."), None),
            (entry("workspace/sub", tarfile.DIRTYPE, mode=0o755), None),
            (entry("workspace/sub/back", tarfile.SYMTYPE, "../ok.txt"), None),
            (entry("workspace/hard", tarfile.LNKTYPE, "/etc/passwd"), None),
            (entry("workspace/hard-inside", tarfile.LNKTYPE, "workspace/ok.txt"), None),
            (entry("workspace/null", tarfile.CHRTYPE, mode=0o666), None),
            (entry("workspace/disk", tarfile.BLKTYPE, mode=0o666), None),
            (entry("workspace/fifo", tarfile.FIFOTYPE), None),
            (entry("workspace/setuid", mode=0o4755), b"#!/bin/sh\n"),
            (entry("elsewhere/file.txt"), b"not a snapshot part"),
        ],
    )
    snapshot_id = register(db, path.name)
    done = snapshots.restore(cfg, db, "g", snapshot_id, FakeContainers())

    assert tree(group) == {
        "etc": "/",  # the link was refused, so the folder entry made a real folder inside
        "etc/passwd": "root::0:0::/:/bin/sh\n",
        "later": "-> .",
        "ok.txt": "fine",
        "self": "-> .",
        "setuid": "#!/bin/sh\n",
        "sub": "/",
        "sub/back": "-> ../ok.txt",
        "up": "/",
        "up/escape-through-link.txt": "escape",
    }
    assert stat.S_IMODE((group / "setuid").stat().st_mode) == 0o755  # no set-uid bit
    skipped = "\n".join(done.skipped)
    for name in (
        "absolute.txt",
        "rooted.txt",
        "../../escape.txt",
        "../../codex-escape.txt",
        "'workspace/etc'",
        "'workspace/up'",
        "'workspace/sneaky'",
        "'workspace/early'",
        "'workspace/hard'",
        "'workspace/hard-inside'",
        "'workspace/null'",
        "'workspace/disk'",
        "'workspace/fifo'",
        "elsewhere/file.txt",
    ):
        assert name in skipped, name
    assert len(done.skipped) == 14
    assert outside_view(cfg, tmp_path) == before
    for escaped in (
        tmp_path / "escape.txt",
        cfg.data_dir / "codex-escape.txt",
        tmp_path.parent / "escape-through-link.txt",
    ):
        assert not escaped.exists()
    assert not Path("/workspace/rooted.txt").exists()
    assert Path("/etc/passwd").read_bytes() == passwd
    assert state_of(cfg.sessions_dir / str(done.sessions[0])) == {"continuation": "thread-X"}


def outside_view(cfg: Settings, tmp_path: Path) -> list[str]:
    """Every path under tmp_path but those a restore may change (its targets, the archives, the
    session dirs, the database)."""
    allowed = (cfg.groups_dir / "g", cfg.codex_homes_dir / "g", cfg.data_dir / "snapshots", cfg.sessions_dir)
    return sorted(
        str(p)
        for p in tmp_path.rglob("*")
        if not any(p.is_relative_to(a) for a in allowed) and not p.name.startswith("nanohost.db")
    )


@pytest.mark.parametrize(
    ("where", "target", "inside"),
    [
        ("a", "b", True),
        ("a", "./b/c", True),
        ("d/a", "../b", True),
        ("d/e/a", "../../b/../c", False),
        ("a", "../b", False),
        ("d/a", "../../b", False),
        ("a", "/etc", False),
        ("a", "x/..", False),
        ("a", "", False),
    ],
)
def test_which_links_stay_inside(where: str, target: str, inside: bool) -> None:
    from pathlib import PurePosixPath

    assert snapshots._link_stays_inside(PurePosixPath(where), target) is inside


def test_an_archive_without_a_group_folder_restores_nothing(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    before = tree(group)
    path = cfg.data_dir / "snapshots" / "g" / "98.tar.zst"
    path.parent.mkdir(parents=True, exist_ok=True)
    crafted(path, [(entry("codex", tarfile.DIRTYPE, mode=0o755), None)])
    with pytest.raises(snapshots.SnapshotError, match="holds no group folder"):
        snapshots.restore(cfg, db, "g", register(db, path.name), FakeContainers())
    assert tree(group) == before
    assert leftovers(cfg) == []


def test_a_damaged_archive_restores_nothing(cfg: Settings, db: sessionmaker[Session], group: Path) -> None:
    taken = snapshots.create(cfg, db, "g")
    data = taken.path.read_bytes()
    taken.path.write_bytes(data[: len(data) // 2])
    agent_works(cfg, group)
    changed = tree(group)
    with pytest.raises(snapshots.SnapshotError, match="damaged"):
        snapshots.restore(cfg, db, "g", taken.id, FakeContainers())
    assert tree(group) == changed
    assert leftovers(cfg) == []


# --- retention and automatic snapshots ------------------------------------------------------


def test_prune_keeps_exactly_the_newest_n(cfg: Settings, db: sessionmaker[Session], group: Path) -> None:
    ids = [snapshots.create(cfg, db, "g").id for _ in range(5)]
    assert snapshots.prune(cfg, db, "g", keep=3) == ids[:2]
    assert [s.id for s, _ in snapshots.listing(db, "g")] == ids[:1:-1]
    archives = sorted(p.name for p in (cfg.data_dir / "snapshots" / "g").glob("*.tar.zst"))
    assert archives == sorted(f"{i}.tar.zst" for i in ids[2:])
    assert snapshots.prune(cfg, db, "g", keep=3) == []


def test_delete_removes_the_row_and_the_archive(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    first, second = snapshots.create(cfg, db, "g"), snapshots.create(cfg, db, "g")
    snapshots.delete(cfg, db, first.id)
    assert not first.path.exists() and second.path.exists()
    assert [s.id for s, _ in snapshots.listing(db)] == [second.id]
    with pytest.raises(snapshots.SnapshotError, match=f"no snapshot {first.id}"):
        snapshots.delete(cfg, db, first.id)


def _activity(db: sessionmaker[Session], *, ago: timedelta = timedelta(0)) -> None:
    with transaction(db) as session:
        for live in session.scalars(select(AgentSession)):
            live.last_active_at = utcnow() - ago
            live.status = "stopped"


def test_automatic_snapshots_wait_for_answers_and_keep_n(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    manual = snapshots.create(cfg, db, "g")
    with transaction(db) as session:
        config = get_group(session, "g").config
        config.snapshot_on, config.snapshot_keep = "idle", 2
    _activity(db)
    with transaction(db) as session:
        group_id = get_group(session, "g").id
        waiting = Message(
            group_id=group_id, session_id=1, direction="in", channel="web", chat_id="c", text="hi"
        )
        session.add(waiting)
    assert snapshots.take_due(cfg, db) == []  # a turn has a message to answer: it may be writing
    with transaction(db) as session:
        session.scalars(select(Message)).one().status = "done"
        session.scalars(select(AgentSession)).one().status = "running"
    assert snapshots.take_due(cfg, db) == []  # idle: not while its container runs
    automatic = []
    for _ in range(4):
        _activity(db)
        (taken,) = snapshots.take_due(cfg, db)
        assert taken.reason == "idle"
        automatic.append(taken.id)
        assert snapshots.take_due(cfg, db) == []  # nothing changed since
    kept = [(s.id, s.reason) for s, _ in snapshots.listing(db, "g")]
    assert kept == [(automatic[3], "idle"), (automatic[2], "idle"), (manual.id, "manual")]


def test_daily_snapshots_come_a_day_apart(cfg: Settings, db: sessionmaker[Session], group: Path) -> None:
    _activity(db)
    with transaction(db) as session:
        get_group(session, "g").config.snapshot_on = "daily"
        session.scalars(select(AgentSession)).one().status = "running"  # daily does not wait for idle
    (first,) = snapshots.take_due(cfg, db)
    assert first.reason == "daily"
    _activity(db)
    with transaction(db) as session:
        assert snapshots.due(session, utcnow()) == []
        assert snapshots.due(session, utcnow() + timedelta(days=1, minutes=1)) == [("g", "daily")]
        get_group(session, "g").config.snapshot_on = "off"
    with transaction(db) as session:
        assert snapshots.due(session, utcnow() + timedelta(days=2)) == []


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli(host_env: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("COLUMNS", "200")
    containers = FakeContainers()
    monkeypatch.setattr(snapshots, "DockerContainers", lambda *_args: containers)
    runner = CliRunner()

    def run(*args: str, ok: bool = True) -> Any:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, f"{args}: {result.stdout}{result.stderr}"
        return result

    run("setup")
    return run


def test_cli_create_list_restore_prune_delete(cli: Any, host_env: Path) -> None:
    notes = host_env / "groups" / "main" / "notes.txt"
    notes.write_text("one")
    created = cli("snapshots", "create", "main", "--note", "first")
    assert "snapshot 1 of group main: 3 files" in created.stdout and "→ archive" in created.stdout
    notes.write_text("two")
    listed = json.loads(cli("snapshots", "list", "main", "--json").stdout)
    assert [(r["id"], r["reason"], r["note"]) for r in listed] == [(1, "manual", "first")]

    restored = cli("snapshots", "restore", "main", "1")
    assert "restored snapshot 1 of group main" in restored.stdout
    assert "the state before is snapshot 2" in restored.stdout
    assert notes.read_text() == "one"
    listed = json.loads(cli("snapshots", "list", "--json").stdout)
    assert [(r["id"], r["reason"]) for r in listed] == [(2, "before-restore"), (1, "manual")]
    assert listed[1]["restored_utc"] is not None

    cli("snapshots", "create", "main")
    assert "deleted 1 snapshot(s) of group main: 1" in cli("snapshots", "prune", "main", "--keep", "2").stdout
    assert "deleted snapshot 3" in cli("snapshots", "delete", "3").stdout
    assert [r["id"] for r in json.loads(cli("snapshots", "list", "--json").stdout)] == [2]


def test_cli_refusals_are_one_line(cli: Any) -> None:
    for args, says in [
        (("snapshots", "restore", "main", "7"), "group main has no snapshot 7"),
        (("snapshots", "create", "nope"), "no group named 'nope'"),
        (("snapshots", "delete", "5"), "no snapshot 5"),
        (("snapshots", "config", "main", "--on", "hourly"), "unknown snapshot mode 'hourly'"),
        (("snapshots", "config", "main", "--keep", "0"), "keep must be between 1 and 1000"),
        (("snapshots", "config", "main", "--exclude", "../up"), "must not contain"),
        (("snapshots", "config", "main", "--no-exclude", "nothing-like-it"), "is not excluded"),
    ]:
        result = cli(*args, ok=False)
        assert result.exit_code == 1, args
        assert says in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)


def test_cli_config_sets_automatic_snapshots_and_excludes(cli: Any) -> None:
    shown = json.loads(cli("snapshots", "config", "main", "--json").stdout)
    assert shown == {"snapshot_on": "off", "snapshot_keep": 10, "excludes": list(snapshots.DEFAULT_EXCLUDES)}
    changed = cli(
        "snapshots",
        "config",
        "main",
        "--on",
        "idle",
        "--keep",
        "3",
        "--exclude",
        "*.log",
        "--no-exclude",
        ".venv",
        "--json",
    )
    data = json.loads(changed.stdout)
    assert data["snapshot_on"] == "idle" and data["snapshot_keep"] == 3
    assert "*.log" in data["excludes"] and ".venv" not in data["excludes"]
    reset = json.loads(cli("snapshots", "config", "main", "--default-excludes", "--json").stdout)
    assert reset["excludes"] == list(snapshots.DEFAULT_EXCLUDES)
    engine = make_engine(load_settings().db_url)
    with transaction(make_session_factory(engine)) as session:
        group = session.scalars(select(AgentGroup)).one()
        assert (group.config.snapshot_on, group.config.snapshot_keep) == ("idle", 3)
        assert group.config.snapshot_excludes is None
    engine.dispose()


def test_groups_delete_removes_its_snapshots(cli: Any, host_env: Path) -> None:
    cli("snapshots", "create", "main")
    assert (host_env / "data" / "snapshots" / "main" / "1.tar.zst").exists()
    cli("groups", "delete", "main")
    assert not (host_env / "data" / "snapshots" / "main").exists()


def test_each_providers_state_is_a_part_of_the_snapshot(
    cfg: Settings, db: sessionmaker[Session], group: Path
) -> None:
    """The group switched to OpenCode: its sessions (``<data dir>/opencode/<folder>``) are
    archived under ``opencode/`` and come back with the restore; the Codex home too."""
    opencode = cfg.data_dir / "opencode" / "g"
    (opencode / "storage").mkdir(parents=True)
    (opencode / "opencode.db").write_text("sessions as of the snapshot")
    taken = snapshots.create(cfg, db, "g")
    (opencode / "opencode.db").write_text("sessions moved on")
    (opencode / "storage" / "later").write_text("later")
    snapshots.restore(cfg, db, "g", taken.id, FakeContainers())
    assert tree(opencode) == {"opencode.db": "sessions as of the snapshot", "storage": "/"}
    assert "sessions/2026/rollout-A.jsonl" in tree(cfg.codex_homes_dir / "g")
    assert leftovers(cfg) == [] and [p.name for p in opencode.parent.iterdir()] == ["g"]
