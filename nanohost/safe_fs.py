"""The one way the host touches a tree the agent can write: through directory descriptors.

The group folder and the Codex state dir are mounted read-write into the agent's container, so
at any moment any name in them may have been swapped for a link to a host file (``/root/.bashrc``,
another group's queue). A host that reads, writes, chowns or deletes by path there can be steered
anywhere, and it often runs as root. So every such operation here walks the tree one component
at a time with ``O_NOFOLLOW | O_DIRECTORY`` from a descriptor of the tree's root (whose parent is
host-owned), and acts relative to the last descriptor: a link at any level is refused or replaced,
never followed. Nothing else in the host may open a path inside an agent-writable tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
AGENT_UID = 1000


def agent_owner() -> tuple[int, int] | None:
    """The uid:gid files handed to the agent get: the image's ``agent`` user under a root host;
    None when the host is not root (the container then runs as the host user, who owns them)."""
    return (AGENT_UID, AGENT_UID) if os.getuid() == 0 else None


def give_to_agent(fd: int) -> None:
    """Hand an open file or directory the host created to the container user (root host only)."""
    owner = agent_owner()
    if owner is not None:
        os.fchown(fd, *owner)


def open_root(path: Path) -> int:
    """A descriptor of an agent-writable tree's root. Its parent is host-owned, so the root's own
    name cannot be swapped; the final component is still opened without following a link."""
    return os.open(path, DIR_FLAGS)


def open_subdir(dir_fd: int, name: str, *, create: bool) -> int:
    """Open ``name`` under ``dir_fd`` as a real directory (created, and handed to the agent,
    when missing and ``create``). With ``create``, a link, file or FIFO in its place is removed;
    without, it raises ``NotADirectoryError``."""
    _check_name(name)
    for _ in range(3):
        if create:
            try:
                os.mkdir(name, 0o755, dir_fd=dir_fd)
            except FileExistsError:
                pass
            else:
                fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
                give_to_agent(fd)
                return fd
        try:
            return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not create:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotADirectoryError(f"{name} is not a directory") from None
                raise
            os.unlink(name, dir_fd=dir_fd)  # a link or a file where a directory belongs
    raise OSError(f"cannot make {name} a directory")


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a single file name")


def _parts(relative: str | PurePosixPath) -> list[str]:
    parts = list(PurePosixPath(relative).parts)
    if not parts or PurePosixPath(relative).is_absolute() or any(p in (".", "..") for p in parts):
        raise ValueError(f"{relative} must be a relative path without . or ..")
    return parts


@contextlib.contextmanager
def open_parent(root: Path, relative: str | PurePosixPath, *, create: bool) -> Iterator[tuple[int, str]]:
    """(descriptor of the directory holding ``root/relative``, the final name), walked without
    following a link at any level; directories are created on the way when ``create``."""
    *folders, name = _parts(relative)
    fd = open_root(root)
    try:
        for folder in folders:
            child = open_subdir(fd, folder, create=create)
            os.close(fd)
            fd = child
        yield fd, name
    finally:
        os.close(fd)


def read_beneath(root: Path, relative: str | PurePosixPath, limit: int) -> bytes | None:
    """At most ``limit`` + 1 bytes of the regular file ``root/relative``, or None when it is
    missing, a link (at any level), not a regular file, or unreadable. Never blocks on a FIFO."""
    try:
        with open_parent(root, relative, create=False) as (dir_fd, name):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def make_dirs_beneath(root: Path, relative: str | PurePosixPath) -> None:
    """``mkdir -p root/relative`` without following a link at any level (made ones go to the agent)."""
    with open_parent(root, relative, create=True) as (dir_fd, name):
        os.close(open_subdir(dir_fd, name, create=True))


def create_beneath(root: Path, relative: str | PurePosixPath, data: bytes, *, mode: int = 0o644) -> bool:
    """Create ``root/relative`` with ``data`` unless something (anything, a link too) already has
    that name; the file and any directory made on the way go to the agent. True when written."""
    with open_parent(root, relative, create=True) as (dir_fd, name):
        try:
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd
            )
        except FileExistsError:
            return False
        give_to_agent(fd)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True


def hand_tree_to_agent(root: Path) -> None:
    """Under a root host, give every entry of ``root`` to the container user.

    ``os.fwalk`` with ``follow_symlinks=False`` descends through descriptors and checks each
    directory it opens is the one it listed, and each chown is relative to its directory's
    descriptor without following a link: a folder swapped for a link mid-walk leads nowhere.
    """
    owner = agent_owner()
    if owner is None or not root.is_dir() or root.is_symlink():
        return
    uid, gid = owner
    for _dirpath, dirnames, filenames, dir_fd in os.fwalk(root, follow_symlinks=False):
        if os.fstat(dir_fd).st_uid != uid:
            os.fchown(dir_fd, uid, gid)
        for name in (*dirnames, *filenames):
            with contextlib.suppress(FileNotFoundError):
                if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid != uid:
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def replace_file(dir_fd: int, name: str, data: bytes, *, mode: int = 0o644) -> None:
    """Atomically replace ``name`` in the directory ``dir_fd`` with ``data`` (a temporary file
    created exclusively without following a link, then renamed over the name)."""
    _check_name(name)
    tmp = f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
