"""Workspace snapshots: a group's folder and its agent state in one archive, and back again.

A snapshot is one compressed tar archive, ``<data dir>/snapshots/<folder>/<id>.tar.zst`` (host
only: no container mounts it; gzip, ``.tar.gz``, when the ``zstandard`` package is missing), and
a ``snapshots`` row saying when, why, how big, and which threads it resumes. Inside the archive:

    snapshot.json   what was taken (group, folder, threads); informational
    workspace/...   the group folder (``<groups dir>/<folder>``), less the group's excludes
    codex/...       its Codex home (``<data dir>/codex/<folder>``: thread rollouts), less auth.json
    opencode/...    its OpenCode data (``<data dir>/opencode/<folder>``: sessions); one part per
                    registered provider with per-group state (``HostProvider.state_dir``)

**Taking** one walks trees the agent can write, so it goes through directory descriptors
(``os.fwalk`` without following links, every file opened ``O_NOFOLLOW`` relative to its
directory): a name swapped for a link mid-walk leads nowhere. Links are stored as links, never
followed; FIFOs, devices and sockets are left out; everything is streamed, never held in memory.

**Restoring** treats the archive as hostile (the agent wrote what is in it). Each entry passes
tarfile's ``data`` filter *and* our own rules: no absolute name, no ``..``, only files,
directories and symlinks whose target stays inside (``..`` only as a leading run no deeper than
the link's own folder); no hard links, devices or FIFOs. Entries are written through directory
descriptors with ``O_NOFOLLOW`` (no earlier entry can steer a later write), into fresh staging
folders beside the targets, handed to the container user. Refused entries are skipped and listed.

A restore is made atomic by a journal, ``<data dir>/snapshots/<folder>/restore.json``:
``staging`` (extracting beside the targets), then ``swapping`` (each target renamed aside, its
staged copy renamed in), then one database commit (fresh sessions resuming the snapshot's
threads, ``restore_token``), then the old copies go and the journal with them. A restore found
half-done (``recover``: at host start, before any container of the group starts, before any
snapshot command) is rolled back when its commit did not happen and completed when it did, so a
host dying mid-restore never leaves a half-restored folder.

**Locking**: one lock file per group (``.lock`` beside the journal, ``flock``). A restore holds it
exclusively; taking a snapshot, and every container start of the group (``start_guard``, from the
runtime), hold it shared. So no container starts while a folder is being swapped, and no snapshot
is taken of a half-swapped one.

**Automatic snapshots** (``snapshot_on``: ``idle`` after each busy spell, once its container has
stopped; ``daily``) are taken by the host (``automatic``), only of a group none of whose sessions
has an unanswered message (so never while a turn is writing), and the oldest automatic ones beyond
``snapshot_keep`` are pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import fnmatch
import io
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tarfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from nanohost.channels.inbox import INBOX
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, ContainerConfig, Message, Snapshot, utcnow
from nanohost.safe_fs import DIR_FLAGS, hand_tree_to_agent, open_parent, open_root, read_beneath, replace_file
from nanohost.session_dir import SessionDir
from nanohost.sessions import current_sessions, start_afresh
from nanohost.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_EXCLUDES = (
    ".cache",
    "node_modules",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".npm",
)
"""Left out of every snapshot unless the group sets its own list: caches and installed packages
(rebuilt from the project's own files; gone from the folder after a restore)."""
CODEX_SKIP = frozenset({"auth.json"})
"""Top-level names of the Codex home never archived (a placeholder the host makes at each wake)."""
AUTO_MODES = ("off", "idle", "daily")
AUTOMATIC = ("idle", "daily")
MAX_KEEP = 1000
MAX_PATTERN = 200
MANIFEST = "snapshot.json"
JOURNAL = "restore.json"
LOCK = ".lock"
LOCK_WAIT = 10.0
SAVE_WAIT = 120.0
"""Seconds a user's file waits for a restore of its group to finish before it is refused."""
"""Seconds a CLI command waits for a group's lock before it says the group is busy."""
START_WAIT = 900.0
"""Seconds a container start waits for a restore of its group to end before the wake fails."""
POLL = 0.1
DAILY = timedelta(days=1)
CHECK_EVERY = 60.0
"""Seconds between the host's looks for automatic snapshots that are due."""
CHUNK = 1 << 20
ZSTD_LEVEL = 3
_ARCHIVE_NAME = re.compile(r"^(\d+)\.tar\.(zst|gz)$")
_PARTIAL = ".partial-"


class SnapshotError(Exception):
    """A refusal or failure with a message for the operator."""


class Busy(SnapshotError):
    """Another restore (or, for a restore, a container start or a snapshot) of the group is under way."""


# --- paths and the group lock ------------------------------------------------------------


def snapshots_root(settings: Settings) -> Path:
    return settings.data_dir / "snapshots"


def group_dir(settings: Settings, folder: str) -> Path:
    """Where a group's archives, lock and journal live (host-only)."""
    return snapshots_root(settings) / folder


def targets(settings: Settings, folder: str) -> dict[str, Path]:
    """What a snapshot holds: the group folder and each registered provider's state for it
    (``codex``: its Codex home; ``opencode``: its sessions), by part name."""
    from nanohost.providers.registry import Providers

    parts = {"workspace": settings.groups_dir / folder}
    for name, path in Providers(settings).state_dirs_by_name(folder).items():
        parts.setdefault(name, path)  # a provider called "workspace" cannot shadow the folder
    return parts


def _journal_targets(settings: Settings, journal: Journal) -> dict[str, Path]:
    """The parts a restore under way covers (a journal lists them; a provider added since is not
    one of them and is left alone)."""
    return {part: path for part, path in targets(settings, journal.folder).items() if part in journal.existed}


def staged_path(target: Path) -> Path:
    """The fresh copy a restore extracts into, beside the target (same file system: one rename)."""
    return target.parent / f".{target.name}.restore"


def aside_path(target: Path) -> Path:
    """Where a restore puts the current copy while it swaps (gone once the restore commits)."""
    return target.parent / f".{target.name}.before-restore"


def archive_path(settings: Settings, folder: str, snapshot: Snapshot) -> Path:
    return group_dir(settings, folder) / snapshot.archive


class GroupLock:
    """The group's ``flock``: exclusive for a restore, shared for a snapshot or a container start.
    The kernel drops it when its holder dies, however it dies, so it is never stale."""

    def __init__(self, settings: Settings, folder: str) -> None:
        self.dir = group_dir(settings, folder)
        self._fd: int | None = None

    def try_acquire(self, *, exclusive: bool) -> bool:
        if self._fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def acquire(self, *, exclusive: bool, wait: float | None = None) -> None:
        """Take the lock within ``wait`` seconds (default ``LOCK_WAIT``), or raise ``Busy``."""
        deadline = time.monotonic() + (LOCK_WAIT if wait is None else wait)
        while not self.try_acquire(exclusive=exclusive):
            if time.monotonic() >= deadline:
                self.release()
                raise Busy(
                    f"group folder {self.dir.name} is busy: "
                    + ("a container start, a snapshot or a restore" if exclusive else "a restore")
                    + " is under way; try again in a moment"
                )
            time.sleep(POLL)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the lock


@contextlib.contextmanager
def locked(settings: Settings, folder: str, *, exclusive: bool, wait: float | None = None) -> Iterator[None]:
    lock = GroupLock(settings, folder)
    lock.acquire(exclusive=exclusive, wait=wait)
    try:
        yield
    finally:
        lock.release()


class RestoreUnderWay(Exception):
    """A container start gave up waiting for a restore of its group."""


@contextlib.asynccontextmanager
async def start_guard(
    settings: Settings, db: sessionmaker[Session], folder: str, *, wait: float = START_WAIT
) -> AsyncIterator[None]:
    """Held around a container start of the group (shared): waits while a restore runs, and first
    finishes or rolls back a restore whose process died (``recover``)."""
    lock = GroupLock(settings, folder)
    journal = group_dir(settings, folder) / JOURNAL
    deadline = time.monotonic() + wait
    try:
        while True:
            if journal.exists():
                if lock.try_acquire(exclusive=True):  # its restorer is gone: finish its work first
                    try:
                        await asyncio.to_thread(_recover_locked, settings, db, folder)
                    finally:
                        lock.release()
                    continue
            elif lock.try_acquire(exclusive=False):
                if not journal.exists():
                    break
                lock.release()  # a restore began and died between the two looks
                continue
            if time.monotonic() >= deadline:
                raise RestoreUnderWay(f"a snapshot restore of group folder {folder} is still under way")
            await asyncio.sleep(POLL)
        yield
    finally:
        lock.release()


# --- settings ----------------------------------------------------------------------------


def excludes_of(group: AgentGroup) -> list[str]:
    stored = group.config.snapshot_excludes
    return list(DEFAULT_EXCLUDES) if stored is None else [str(p) for p in stored]


def check_pattern(pattern: str) -> str:
    """An exclude pattern: a name (``node_modules``, ``*.log``: matches at any depth) or a path
    relative to the folder (``data/big``, ``out/*.bin``)."""
    value = pattern.strip().strip("/")
    if not value or len(value) > MAX_PATTERN or "\0" in value or "\n" in value:
        raise SnapshotError(f"exclude pattern {pattern!r} must be 1 to {MAX_PATTERN} characters on one line")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise SnapshotError(f"exclude pattern {pattern!r} must not contain '.', '..' or '//' parts")
    return value


def check_mode(mode: str) -> str:
    value = mode.strip().lower()
    if value not in AUTO_MODES:
        raise SnapshotError(f"unknown snapshot mode {mode!r}; use one of: {', '.join(AUTO_MODES)}")
    return value


def check_keep(keep: int) -> int:
    if not 1 <= keep <= MAX_KEEP:
        raise SnapshotError(f"keep must be between 1 and {MAX_KEEP}, not {keep}")
    return keep


def _excluded(relative: str, name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(relative if "/" in pattern else name, pattern) for pattern in patterns)


# --- taking a snapshot -------------------------------------------------------------------


@dataclass
class Counts:
    files: int = 0
    content_bytes: int = 0


class _Exactly(io.RawIOBase):
    """Exactly ``size`` bytes of an open file: a file the agent shrinks while it is read is padded
    with zeros, one it grows is cut, so the tar header written before stays true."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.left = fd, size

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = self.left if size is None or size < 0 else min(size, self.left)
        chunks: list[bytes] = []
        got = 0
        while got < want:
            chunk = os.read(self.fd, min(want - got, CHUNK))
            if not chunk:
                chunks.append(b"\0" * (want - got))
                break
            chunks.append(chunk)
            got += len(chunk)
        self.left -= want
        return b"".join(chunks)


def _dir_info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, stat.S_IMODE(st.st_mode), int(st.st_mtime)
    return info


def _add_tree(tar: tarfile.TarFile, root: Path, prefix: str, excludes: list[str], counts: Counts) -> bool:
    """Archive ``root`` under ``prefix`` without following a link; False when it is no directory."""
    try:
        top = open_root(root)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return False  # a link where the tree should be: never followed
        raise
    try:
        tar.addfile(_dir_info(prefix, os.fstat(top)))
        walk = os.fwalk(".", topdown=True, follow_symlinks=False, dir_fd=top)
        for dirpath, dirnames, filenames, dir_fd in walk:
            relative_dir = "" if dirpath == "." else dirpath[2:]
            keep_dirs: list[str] = []
            for name in sorted(dirnames) + sorted(filenames):
                relative = f"{relative_dir}/{name}" if relative_dir else name
                if _excluded(relative, name, excludes) or (prefix == "codex" and relative in CODEX_SKIP):
                    continue
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                member = f"{prefix}/{relative}"
                if stat.S_ISDIR(st.st_mode):
                    tar.addfile(_dir_info(member, st))
                    keep_dirs.append(name)
                elif stat.S_ISLNK(st.st_mode):
                    info = tarfile.TarInfo(member)
                    info.type, info.mtime = tarfile.SYMTYPE, int(st.st_mtime)
                    try:
                        info.linkname = os.readlink(name, dir_fd=dir_fd)
                    except OSError:
                        continue
                    tar.addfile(info)
                elif stat.S_ISREG(st.st_mode):
                    _add_file(tar, dir_fd, name, member, counts)
                # FIFOs, sockets, devices: never archived
            dirnames[:] = [d for d in dirnames if d in keep_dirs]
    finally:
        os.close(top)
    return True


def _add_file(tar: tarfile.TarFile, dir_fd: int, name: str, member: str, counts: Counts) -> None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return  # gone, or swapped for a link or a FIFO since it was listed
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        info = tarfile.TarInfo(member)
        info.size, info.mode, info.mtime = st.st_size, stat.S_IMODE(st.st_mode), int(st.st_mtime)
        tar.addfile(info, _Exactly(fd, st.st_size))
        counts.files += 1
        counts.content_bytes += st.st_size
    finally:
        os.close(fd)


def compression() -> str:
    """``zst`` when the zstandard package is there, else ``gz``."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return "gz"
    return "zst"


@contextlib.contextmanager
def _writer(raw: IO[bytes], kind: str) -> Iterator[tarfile.TarFile]:
    if kind == "zst":
        import zstandard

        with (
            zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(raw, closefd=False) as stream,
            tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            yield tar
    else:
        with tarfile.open(fileobj=raw, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
            yield tar


@contextlib.contextmanager
def _reader(path: Path) -> Iterator[tarfile.TarFile]:
    with open(path, "rb") as raw:
        if path.name.endswith(".zst"):
            import zstandard

            with (
                zstandard.ZstdDecompressor().stream_reader(raw, closefd=False) as stream,
                tarfile.open(fileobj=stream, mode="r|") as tar,
            ):
                yield tar
        else:
            with tarfile.open(fileobj=raw, mode="r|gz") as tar:
                yield tar


def write_archive(
    path: Path, trees: dict[str, Path], excludes: list[str], manifest: dict[str, Any], kind: str
) -> Counts:
    """Stream ``trees`` (part name → folder) into a new archive at ``path``; durable on return."""
    counts = Counts()
    with open(path, "xb") as raw:
        with _writer(raw, kind) as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
            for part, root in trees.items():
                _add_tree(tar, root, part, excludes if part == "workspace" else [], counts)
        raw.flush()
        os.fsync(raw.fileno())
    return counts


@dataclass(frozen=True)
class Taken:
    """A snapshot just taken."""

    id: int
    group: str
    reason: str
    path: Path
    size: int
    content_bytes: int
    files: int
    continuation: str | None


def _threads(db: Session, group_id: int) -> tuple[dict[str, str], str | None]:
    """Each live session's thread by chat key, and the most recently active one's."""
    live = current_sessions(db, group_id)
    threads = {s.chat_key or "": s.continuation for s in live if s.continuation}
    newest = max(
        (s for s in live if s.continuation),
        key=lambda s: (s.last_active_at or s.created_at, s.id),
        default=None,
    )
    return threads, newest.continuation if newest else None


def create(
    settings: Settings,
    db: sessionmaker[Session],
    group_name: str,
    *,
    reason: str = "manual",
    note: str | None = None,
) -> Taken:
    """Take a snapshot of a group (holding its lock shared: never of a half-restored folder)."""
    with transaction(db) as session:
        folder = _group(session, group_name).folder
    with locked(settings, folder, exclusive=False):
        return _create_locked(settings, db, group_name, reason=reason, note=note)


def _group(session: Session, name: str) -> AgentGroup:
    from nanohost.groups import get_group

    return get_group(session, name)


def _create_locked(
    settings: Settings, db: sessionmaker[Session], group_name: str, *, reason: str, note: str | None
) -> Taken:
    with transaction(db) as session:
        group = _group(session, group_name)
        group_id, folder, excludes = group.id, group.folder, excludes_of(group)
        threads, main = _threads(session, group.id)
    trees = targets(settings, folder)
    if not trees["workspace"].is_dir() or trees["workspace"].is_symlink():
        raise SnapshotError(f"group {group_name} has no folder at {trees['workspace']}")
    directory = group_dir(settings, folder)
    directory.mkdir(parents=True, exist_ok=True)
    kind = compression()
    partial = directory / f"{_PARTIAL}{secrets.token_hex(6)}.tar.{kind}"
    manifest = {
        "format": 1,
        "group": group_name,
        "folder": folder,
        "reason": reason,
        "taken_at": utcnow().isoformat(timespec="seconds") + "Z",
        "continuation": main,
        "threads": threads,
        "excludes": excludes,
    }
    final: Path | None = None
    try:
        counts = write_archive(partial, trees, excludes, manifest, kind)
        size = partial.stat().st_size
        with transaction(db) as session:
            row = Snapshot(
                group_id=group_id,
                reason=reason,
                note=note,
                continuation=main,
                threads=threads,
                archive="",
                size=size,
                content_bytes=counts.content_bytes,
                files=counts.files,
            )
            session.add(row)
            session.flush()
            row.archive = f"{row.id}.tar.{kind}"
            final = directory / row.archive
            os.replace(partial, final)  # inside the transaction: a failed commit removes it below
            snapshot_id = row.id
    except BaseException:
        for path in (partial, final):  # a failed commit leaves no archive without its row
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise
    assert final is not None
    _fsync_dir(directory)
    log.info(
        "snapshot %s of group %s (%s): %d files, %d bytes",
        snapshot_id,
        group_name,
        reason,
        counts.files,
        size,
    )
    return Taken(snapshot_id, group_name, reason, final, size, counts.content_bytes, counts.files, main)


# --- listing, pruning, deleting -----------------------------------------------------------


def listing(db: sessionmaker[Session], group_name: str | None = None) -> list[tuple[Snapshot, AgentGroup]]:
    """Snapshots (of one group), newest first."""
    with transaction(db) as session:
        query = select(Snapshot, AgentGroup).join(AgentGroup, Snapshot.group_id == AgentGroup.id)
        if group_name is not None:
            query = query.where(Snapshot.group_id == _group(session, group_name).id)
        rows = [(s, g) for s, g in session.execute(query.order_by(Snapshot.id.desc())).all()]
        session.expunge_all()
        return rows


def prune(
    settings: Settings,
    db: sessionmaker[Session],
    group_name: str,
    keep: int | None = None,
    *,
    reasons: tuple[str, ...] | None = None,
) -> list[int]:
    """Delete the group's oldest snapshots (of ``reasons``, or any) beyond the newest ``keep``
    (default: the group's ``snapshot_keep``); returns the ids deleted."""
    with transaction(db) as session:
        group = _group(session, group_name)
        folder = group.folder
    with locked(settings, folder, exclusive=False):
        return _prune_locked(settings, db, group_name, keep, reasons)


def _prune_locked(
    settings: Settings,
    db: sessionmaker[Session],
    group_name: str,
    keep: int | None,
    reasons: tuple[str, ...] | None,
) -> list[int]:
    with transaction(db) as session:
        group = _group(session, group_name)
        folder = group.folder
        keep = check_keep(keep if keep is not None else group.config.snapshot_keep)
        query = select(Snapshot).where(Snapshot.group_id == group.id)
        if reasons is not None:
            query = query.where(Snapshot.reason.in_(reasons))
        doomed = list(session.scalars(query.order_by(Snapshot.created_at.desc(), Snapshot.id.desc())))[keep:]
        files = [s.archive for s in doomed]
        ids = [s.id for s in doomed]
        for snapshot in doomed:
            session.delete(snapshot)
    _remove_archives(settings, folder, files)
    return sorted(ids)


def delete(settings: Settings, db: sessionmaker[Session], snapshot_id: int) -> Snapshot:
    """Delete one snapshot, its row and its archive."""
    with transaction(db) as session:
        found = session.get(Snapshot, snapshot_id)
        if found is None:
            raise SnapshotError(f"no snapshot {snapshot_id}; see `nanohost snapshots list`")
        group = session.get(AgentGroup, found.group_id)
        assert group is not None
        folder = group.folder
    with locked(settings, folder, exclusive=False), transaction(db) as session:
        row = session.get(Snapshot, snapshot_id)
        if row is None:
            raise SnapshotError(f"no snapshot {snapshot_id}; see `nanohost snapshots list`")
        session.delete(row)
    _remove_archives(settings, folder, [row.archive])
    return row


def _remove_archives(settings: Settings, folder: str, names: list[str]) -> None:
    directory = group_dir(settings, folder)
    for name in names:
        if _ARCHIVE_NAME.match(name):
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()


# --- restoring: hostile archive in, fresh folders out -------------------------------------


@dataclass
class Extracted:
    parts: set[str] = field(default_factory=set)
    files: int = 0
    skipped: list[str] = field(default_factory=list)


def _skip(result: Extracted, name: str, why: str) -> None:
    result.skipped.append(f"{name!r}: {why}")
    log.warning("snapshot restore: entry %r skipped: %s", name, why)


def _link_stays_inside(relative: PurePosixPath, linkname: str) -> bool:
    """Whether a symlink at ``relative`` (inside a root) with target ``linkname`` can only lead
    inside the root: relative, no NUL, and ``..`` only as a leading run no longer than the link's
    own depth. (Then every link resolves inside whatever the others are, so no order of entries
    can make one leave, which a check of the tree as it stands cannot promise.)"""
    if not linkname or "\0" in linkname or linkname.startswith("/"):
        return False
    depth = len(relative.parts) - 1
    ups = 0
    descended = False
    for part in linkname.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if descended:
                return False
            ups += 1
        else:
            descended = True
    return ups <= depth


def extract(archive: Path, roots: dict[str, Path]) -> Extracted:
    """Extract the archive's parts into ``roots`` (fresh empty directories, part name → path)."""
    result = Extracted()
    fds = {part: open_root(path) for part, path in roots.items()}
    dirs: dict[tuple[str, ...], int] = {}
    try:
        with _reader(archive) as tar:
            for member in tar:
                _extract_member(tar, member, roots, fds, dirs, result)
    except (tarfile.TarError, EOFError) as exc:
        raise SnapshotError(f"archive {archive} is damaged: {exc}") from None
    finally:
        for fd in (*dirs.values(), *fds.values()):
            os.close(fd)
    return result


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    roots: dict[str, Path],
    fds: dict[str, int],
    dirs: dict[tuple[str, ...], int],
    result: Extracted,
) -> None:
    name = member.name
    if name == MANIFEST:
        return
    if not name or "\0" in name or name.startswith("/"):
        return _skip(result, name, "absolute or empty path")
    raw_parts = name.split("/")
    if ".." in raw_parts:
        return _skip(result, name, "'..' in its path")
    parts = [p for p in raw_parts if p not in ("", ".")]
    if not parts or parts[0] not in roots:
        return _skip(result, name, "not part of a snapshot")
    part, relative = parts[0], PurePosixPath(*parts[1:]) if len(parts) > 1 else None
    if relative is None:
        if member.isdir():
            result.parts.add(part)
        return None
    if not (member.isreg() or member.isdir() or member.issym()):
        kind = "a hard link" if member.islnk() else "a device, FIFO or other special file"
        return _skip(result, name, f"{kind} (never restored)")
    try:
        checked = tarfile.data_filter(member.replace(name=str(relative), deep=False), str(roots[part]))
    except tarfile.FilterError as exc:
        return _skip(result, name, f"refused by tarfile's data filter: {exc}")
    if member.issym() and not _link_stays_inside(relative, member.linkname):
        return _skip(result, name, f"symlink to {member.linkname!r} leads out of the folder")
    try:
        parent = _parent_fd(fds[part], part, relative.parts[:-1], dirs)
        _write(tar, checked, parent, relative.name, result)
    except OSError as exc:
        if exc.errno not in (errno.ENAMETOOLONG, errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ELOOP):
            raise
        return _skip(result, name, f"cannot be written: {exc.strerror}")
    result.parts.add(part)
    return None


def _parent_fd(root_fd: int, part: str, folders: tuple[str, ...], dirs: dict[tuple[str, ...], int]) -> int:
    """The directory holding an entry, made as real directories from the root down without
    following a link (a file or link in the way is replaced). Directories are never removed or
    renamed during an extraction, so each descriptor stays the one for its path."""
    fd = root_fd
    for depth in range(1, len(folders) + 1):
        key = (part, *folders[:depth])
        found = dirs.get(key)
        if found is None:
            found = _make_dir(fd, folders[depth - 1], 0o755)
            dirs[key] = found
        fd = found
    return fd


def _make_dir(dir_fd: int, name: str, mode: int) -> int:
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=dir_fd)  # an earlier entry's file or link where a folder belongs
            os.mkdir(name, mode, dir_fd=dir_fd)
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def _clear(dir_fd: int, name: str) -> None:
    """Make room for an entry: an earlier file or link of that name goes; a folder stays (EISDIR)."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise OSError(errno.EISDIR, "a folder of that name is already there")
    os.unlink(name, dir_fd=dir_fd)


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, dir_fd: int, name: str, result: Extracted) -> None:
    if member.isdir():
        os.close(_make_dir(dir_fd, name, 0o755))
        return
    _clear(dir_fd, name)
    if member.issym():
        os.symlink(member.linkname, name, dir_fd=dir_fd)
        return
    mode = member.mode if member.mode is not None else 0o644
    fd = os.open(
        name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd
    )
    try:
        source = tar.extractfile(member)
        if source is not None:
            while chunk := source.read(CHUNK):
                _write_all(fd, chunk)
        os.fchmod(fd, mode)
        os.utime(fd, (member.mtime, member.mtime))
    finally:
        os.close(fd)
    result.files += 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- the restore journal -------------------------------------------------------------------


@dataclass
class Journal:
    """What a restore under way has done, so a successor can undo or finish it."""

    folder: str
    snapshot_id: int
    token: str
    phase: str  # "staging" | "swapping"
    existed: dict[str, bool]

    def save(self, settings: Settings) -> None:
        directory = group_dir(settings, self.folder)
        data = json.dumps(
            {
                "folder": self.folder,
                "snapshot": self.snapshot_id,
                "token": self.token,
                "phase": self.phase,
                "existed": self.existed,
            }
        ).encode()
        tmp = directory / f"{JOURNAL}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / JOURNAL)
        _fsync_dir(directory)

    @classmethod
    def load(cls, settings: Settings, folder: str) -> Journal | None:
        path = group_dir(settings, folder) / JOURNAL
        try:
            data = json.loads(path.read_bytes())
            journal = cls(
                folder=str(data["folder"]),
                snapshot_id=int(data["snapshot"]),
                token=str(data["token"]),
                phase=str(data["phase"]),
                existed={str(part): bool(existed) for part, existed in dict(data["existed"]).items()},
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(
                f"the restore journal {path} is unreadable ({exc}); look at it and move it away"
            ) from None
        if journal.folder != folder or journal.phase not in ("staging", "swapping"):
            raise SnapshotError(f"the restore journal {path} is not one this host wrote; move it away")
        return journal

    def remove(self, settings: Settings) -> None:
        directory = group_dir(settings, self.folder)
        (directory / JOURNAL).unlink(missing_ok=True)
        _fsync_dir(directory)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    """Remove a host-made path (its parent is host-owned); links are removed, never followed."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)  # descriptor-based on Linux: a link inside is removed, not followed


def _swap(settings: Settings, journal: Journal) -> None:
    for part, target in _journal_targets(settings, journal).items():
        if journal.existed[part]:
            os.rename(target, aside_path(target))
        os.rename(staged_path(target), target)
    for parent in {t.parent for t in _journal_targets(settings, journal).values()}:
        _fsync_dir(parent)


def _roll_back(settings: Settings, journal: Journal) -> None:
    """Put every target back as it was before the restore began."""
    for part, target in _journal_targets(settings, journal).items():
        aside, staged = aside_path(target), staged_path(target)
        if journal.phase == "swapping":
            if aside.exists() or aside.is_symlink():
                if target.exists() or target.is_symlink():
                    _remove_tree(target)  # the restored copy, already in place
                os.rename(aside, target)
            elif not journal.existed[part] and (target.exists() or target.is_symlink()):
                _remove_tree(target)
        _remove_tree(staged)
    journal.remove(settings)


def _finish(settings: Settings, journal: Journal) -> None:
    for target in _journal_targets(settings, journal).values():
        _remove_tree(aside_path(target))
        _remove_tree(staged_path(target))
    journal.remove(settings)


def _committed(db: sessionmaker[Session], journal: Journal) -> bool:
    with transaction(db) as session:
        row = session.get(Snapshot, journal.snapshot_id)
        return row is not None and row.restore_token == journal.token


def _recover_locked(settings: Settings, db: sessionmaker[Session], folder: str) -> str | None:
    """Finish or roll back the folder's interrupted restore (the caller holds the lock
    exclusively); returns what was done, or None when nothing was pending."""
    directory = group_dir(settings, folder)
    if directory.is_dir():
        for stale in directory.glob(f"{_PARTIAL}*"):  # a snapshot whose taker died
            stale.unlink(missing_ok=True)
    journal = Journal.load(settings, folder)
    if journal is None:
        return None
    if journal.phase == "swapping" and _committed(db, journal):
        _seed_unstarted(settings, db, folder)
        _finish(settings, journal)
        log.warning(
            "group folder %s: an interrupted restore of snapshot %s was completed",
            folder,
            journal.snapshot_id,
        )
        return f"completed the interrupted restore of snapshot {journal.snapshot_id}"
    _roll_back(settings, journal)
    log.warning(
        "group folder %s: an interrupted restore of snapshot %s was rolled back", folder, journal.snapshot_id
    )
    return f"rolled back the interrupted restore of snapshot {journal.snapshot_id}"


def recover(settings: Settings, db: sessionmaker[Session], folder: str | None = None) -> list[str]:
    """Finish or roll back interrupted restores (of one folder, or all); a restore still running
    (its lock held) is left to its owner. Returns one line per restore dealt with."""
    root = snapshots_root(settings)
    folders = [folder] if folder is not None else sorted(p.parent.name for p in root.glob(f"*/{JOURNAL}"))
    done: list[str] = []
    for name in folders:
        lock = GroupLock(settings, name)
        if not (group_dir(settings, name) / JOURNAL).exists() or not lock.try_acquire(exclusive=True):
            lock.release()
            continue
        try:
            outcome = _recover_locked(settings, db, name)
        finally:
            lock.release()
        if outcome:
            done.append(f"{name}: {outcome}")
    return done


# --- restoring: the whole operation --------------------------------------------------------


class Containers(Protocol):
    """The group's containers, as a restore needs them."""

    def running(self, folder: str) -> list[str]:
        """Ids of the group's running containers."""
        ...

    def stop(self, folder: str) -> list[str]:
        """Stop every running container of the group cleanly; the ids it found running."""
        ...


@dataclass(frozen=True)
class Restored:
    snapshot_id: int
    group: str
    before: Taken
    continuation: str | None
    sessions: list[int]
    """The fresh sessions that resume a thread of the snapshot."""
    stopped: list[str]
    files: int
    skipped: list[str]


def restore(
    settings: Settings,
    db: sessionmaker[Session],
    group_name: str,
    snapshot_id: int,
    containers: Containers,
    *,
    progress: Callable[[str], None] = lambda _line: None,
) -> Restored:
    """Put a group's folder and agent state back as snapshot ``snapshot_id`` had them; the next
    message resumes its thread in a fresh session. The current state is snapshotted first."""
    with transaction(db) as session:
        group = _group(session, group_name)
        group_id, folder = group.id, group.folder
        row = session.get(Snapshot, snapshot_id)
        if row is None or row.group_id != group_id:
            raise SnapshotError(
                f"group {group_name} has no snapshot {snapshot_id}; "
                f"see `nanohost snapshots list {group_name}`"
            )
        archive = archive_path(settings, folder, row)
    if not archive.is_file():
        raise SnapshotError(f"the archive of snapshot {snapshot_id} is missing ({archive})")
    lock = GroupLock(settings, folder)
    lock.acquire(exclusive=True)  # from here no container of the group starts
    try:
        if done := _recover_locked(settings, db, folder):
            progress(done)
        stopped: list[str] = []
        if containers.running(folder):
            with transaction(db) as session:  # a running host stops them cleanly when asked
                for live in current_sessions(session, group_id):
                    live.restart_requested = True
            stopped = containers.stop(folder)
            progress(f"stopped {len(stopped)} container(s) of group {group_name}")
        still = containers.running(folder)
        if still:
            raise SnapshotError(
                f"container {still[0][:12]} of group {group_name} still runs after the stop; nothing was "
                "restored: stop it (`docker stop`) and try again"
            )
        before = _create_locked(
            settings, db, group_name, reason="before-restore", note=f"before restoring snapshot {snapshot_id}"
        )
        progress(f"snapshot {before.id} keeps the current state ({_size(before.content_bytes)})")
        return _restore_locked(settings, db, group_name, folder, snapshot_id, archive, before, stopped)
    finally:
        lock.release()


def _restore_locked(
    settings: Settings,
    db: sessionmaker[Session],
    group_name: str,
    folder: str,
    snapshot_id: int,
    archive: Path,
    before: Taken,
    stopped: list[str],
) -> Restored:
    trees = targets(settings, folder)
    journal = Journal(
        folder=folder,
        snapshot_id=snapshot_id,
        token=secrets.token_hex(16),
        phase="staging",
        existed={part: os.path.lexists(path) for part, path in trees.items()},
    )
    journal.save(settings)
    try:
        roots, made = {}, {}
        for part, target in trees.items():
            if not target.parent.exists():
                made[part] = target.parent
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = staged_path(target)
            _remove_tree(staged)
            staged.mkdir(mode=0o755)
            roots[part] = staged
        extracted = extract(archive, roots)
        if "workspace" not in extracted.parts:
            raise SnapshotError(
                f"the archive of snapshot {snapshot_id} holds no group folder; nothing was restored"
            )
        for part in [p for p in roots if p not in extracted.parts and not journal.existed[p]]:
            _remove_tree(roots.pop(part))  # nothing to restore where nothing was: no empty dir
            del journal.existed[part]
            if part in made:
                with contextlib.suppress(OSError):
                    made[part].rmdir()
        carry_waiting_attachments(settings, db, folder, trees["workspace"], roots["workspace"])
        for staged in roots.values():
            hand_tree_to_agent(staged)
        journal.phase = "swapping"
        journal.save(settings)
        _swap(settings, journal)
        fresh, main = _commit(db, journal)
    except Exception:
        with contextlib.suppress(Exception):
            _recover_locked(settings, db, folder)  # rolls back (completes, had the commit happened)
        raise
    # committed: from here on the restore is done, whatever happens; recovery would finish it
    _seed(settings, fresh)
    _finish(settings, journal)
    return Restored(
        snapshot_id=snapshot_id,
        group=group_name,
        before=before,
        continuation=main,
        sessions=[session_id for session_id, _ in fresh],
        stopped=stopped,
        files=extracted.files,
        skipped=extracted.skipped,
    )


def carry_waiting_attachments(
    settings: Settings, db: sessionmaker[Session], folder: str, current: Path, staged: Path
) -> list[str]:
    """Copy the files of messages not answered yet from the folder being replaced into the staged
    one (theirs win over a restored file of the same name): a restore rolls back the agent's
    work, not what the chat sent and still waits for. Read without following links (the folder
    is the agent's), each at most ``max_attachment_bytes``. Saves wait for a restore
    (``holding_folder``), so no new one lands in the folder being replaced meanwhile."""
    with transaction(db) as session:
        rows = session.scalars(
            select(Message.attachments)
            .join(AgentGroup, AgentGroup.id == Message.group_id)
            .where(
                AgentGroup.folder == folder,
                Message.direction == "in",
                Message.status.in_(("pending", "queued")),
            )
        ).all()
    carried: list[str] = []
    limit = settings.max_attachment_bytes
    for paths in rows:
        for relative in paths or []:
            if not isinstance(relative, str) or not relative.startswith(f"{INBOX}/"):
                continue
            data = read_beneath(current, relative, limit)
            if data is None or len(data) > limit:
                log.warning("restore of %s: waiting attachment %r is gone or too large", folder, relative)
                continue
            try:
                with open_parent(staged, relative, create=True) as (dir_fd, name):
                    replace_file(dir_fd, name, data)
            except (OSError, ValueError) as exc:
                log.warning("restore of %s: could not keep waiting attachment %r: %s", folder, relative, exc)
                continue
            carried.append(relative)
    return carried


@contextlib.contextmanager
def holding_folder(settings: Settings, folder: str) -> Iterator[None]:
    """Hold the group's folder against a restore (shared, like a container start) while a user's
    file is saved into it, waiting up to ``SAVE_WAIT`` for a restore under way to finish."""
    with locked(settings, folder, exclusive=False, wait=SAVE_WAIT):
        yield


def _commit(db: sessionmaker[Session], journal: Journal) -> tuple[list[tuple[int, str]], str | None]:
    """The restore's one commit: each live session is replaced by a fresh one resuming the
    snapshot's thread for its chat (waiting messages move with it; the old containers stay
    stopped), and the snapshot row records the restore. Returns (session id, thread) to seed."""
    with transaction(db) as session:
        row = session.get(Snapshot, journal.snapshot_id)
        if row is None:
            raise SnapshotError(f"snapshot {journal.snapshot_id} was deleted during its restore")
        threads = {str(k): str(v) for k, v in (row.threads or {}).items() if v}
        if not threads and row.continuation:
            threads[""] = row.continuation
        fresh: list[AgentSession] = []
        for old in current_sessions(session, row.group_id):
            new = start_afresh(session, old)
            new.continuation = threads.pop(old.chat_key or "", None)
            fresh.append(new)
        for chat_key, thread in threads.items():  # a chat with no session now gets its thread back too
            new = AgentSession(group_id=row.group_id, chat_key=chat_key or None, continuation=thread)
            session.add(new)
            fresh.append(new)
        row.restored_at, row.restore_token = utcnow(), journal.token
        session.flush()
        return [(s.id, s.continuation) for s in fresh if s.continuation], row.continuation


def seed_continuation(session_dir: Path, thread: str) -> None:
    """Before a session's first container starts: its runner is to resume ``thread`` (the runner
    reads it from its ``outbound.db`` state, docs/TRANSPORT.md)."""
    from agent_runner.queues import OUTBOUND_SCHEMA, connect, create_tables

    SessionDir(session_dir).prepare()
    connection = connect(session_dir / "outbound.db", journal="PERSIST")
    try:
        create_tables(connection, OUTBOUND_SCHEMA)
        connection.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('continuation', ?)", (thread,))
    finally:
        connection.close()


def _seed(settings: Settings, fresh: list[tuple[int, str]]) -> None:
    for session_id, thread in fresh:
        seed_continuation(settings.sessions_dir / str(session_id), thread)


def _seed_unstarted(settings: Settings, db: sessionmaker[Session], folder: str) -> None:
    """After a restore committed and its process died: seed the sessions it made (the group's live
    sessions with a thread that never had a container), as it would have."""
    with transaction(db) as session:
        group = session.scalar(select(AgentGroup).where(AgentGroup.folder == folder))
        if group is None:
            return
        fresh = [
            (s.id, s.continuation)
            for s in current_sessions(session, group.id)
            if s.continuation and s.started_at is None and s.container_id is None
        ]
    _seed(settings, fresh)


class DockerContainers:
    """``Containers`` on the Docker engine, for the CLI: only this installation's containers."""

    HOST_STOP_WAIT = 20.0

    def __init__(self, installation: str, data_dir: Path, ask_host: Callable[[], bool]) -> None:
        from nanohost.containers.backend import DockerBackend

        self.backend = DockerBackend(installation=installation, data_dir=data_dir)
        self.ask_host = ask_host

    def close(self) -> None:
        self.backend.close()

    def running(self, folder: str) -> list[str]:
        from nanohost.containers.backend import LABEL_GROUP

        states = asyncio.run(self.backend.list_managed())
        return [s.id for s in states if s.running and s.labels.get(LABEL_GROUP) == folder]

    def stop(self, folder: str) -> list[str]:
        """The running host stops them cleanly (``restart_requested``, told now); what still runs
        after a while is stopped from here (SIGTERM: the runner checkpoints and exits 0)."""
        found = self.running(folder)
        if found and self.ask_host():
            deadline = time.monotonic() + self.HOST_STOP_WAIT
            while self.running(folder) and time.monotonic() < deadline:
                time.sleep(0.2)
        for container_id in self.running(folder):
            asyncio.run(self.backend.stop(container_id))
        return found


# --- automatic snapshots ---------------------------------------------------------------------


def due(db: Session, now: datetime) -> list[tuple[str, str]]:
    """(group name, reason) of each automatic snapshot due now: a group with ``snapshot_on`` set
    that changed since its newest snapshot (a session active after it) and none of whose sessions
    has an unanswered message (so no turn is writing); ``idle`` also waits until no container of
    the group runs, ``daily`` until its newest snapshot is a day old."""
    found: list[tuple[str, str]] = []
    chosen = (
        select(AgentGroup, ContainerConfig.snapshot_on)
        .join(ContainerConfig, ContainerConfig.group_id == AgentGroup.id)
        .where(ContainerConfig.snapshot_on.in_(AUTOMATIC))
        .order_by(AgentGroup.name)
    )
    for group, mode in db.execute(chosen).all():
        sessions = list(db.scalars(select(AgentSession).where(AgentSession.group_id == group.id)))
        active = max((s.last_active_at for s in sessions if s.last_active_at), default=None)
        newest = db.scalar(select(func.max(Snapshot.created_at)).where(Snapshot.group_id == group.id))
        if active is None or (newest is not None and active <= newest):
            continue  # nothing changed since the newest snapshot
        waiting = db.scalar(
            select(Message.id)
            .where(
                Message.group_id == group.id,
                Message.direction == "in",
                Message.status.in_(("pending", "queued")),
            )
            .limit(1)
        )
        if waiting is not None:
            continue
        if mode == "idle" and any(s.status in ("starting", "running") for s in sessions):
            continue
        if mode == "daily" and newest is not None and now - newest < DAILY:
            continue
        found.append((group.name, mode))
    return found


def take_due(settings: Settings, db: sessionmaker[Session]) -> list[Taken]:
    """Take each automatic snapshot due now and prune the group's automatic ones beyond its
    ``snapshot_keep``. A group that is busy (a restore) or fails is skipped until the next look."""
    with transaction(db) as session:
        wanted = due(session, utcnow())
        folders = {name: _group(session, name).folder for name, _ in wanted}
    taken: list[Taken] = []
    for name, reason in wanted:
        lock = GroupLock(settings, folders[name])
        try:
            if not lock.try_acquire(exclusive=False):
                continue
            taken.append(_create_locked(settings, db, name, reason=reason, note=None))
            _prune_locked(settings, db, name, None, AUTOMATIC)
        except Exception:
            log.exception("automatic snapshot of group %s failed; trying again later", name)
        finally:
            lock.release()
    return taken


async def automatic(settings: Settings, db: sessionmaker[Session], every: float = CHECK_EVERY) -> None:
    """The host's loop: finish or roll back interrupted restores, then take automatic snapshots
    as they come due, until cancelled."""
    try:
        for line in await asyncio.to_thread(recover, settings, db):
            log.warning("snapshots: %s", line)
    except Exception:
        log.exception("snapshots: recovering interrupted restores failed")
    while True:
        try:
            await asyncio.to_thread(take_due, settings, db)
        except Exception:
            log.exception("snapshots: looking for automatic snapshots failed")
        await asyncio.sleep(every)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def human_size(count: int) -> str:
    """Bytes as operators read them (``3.1 MiB``)."""
    return _size(count)
