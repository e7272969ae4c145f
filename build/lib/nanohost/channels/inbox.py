"""Files users send the agent land in the group folder's ``inbox/``, under names that are safe.

A platform's file name is untrusted input: it may carry path components, ``..``, control
characters, a leading dot, or thousands of characters. ``safe_name`` keeps only the last path
component, replaces anything outside a conservative set, bounds the length (keeping the
extension) and never returns an empty or hidden name. ``save_incoming`` never overwrites: a taken
name gets ``-1``, ``-2``, … before its extension, claimed atomically with ``O_EXCL``; it works
on open directory descriptors, so a link the agent swaps in cannot steer the write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import unicodedata
from pathlib import Path, PurePath

from nanohost.containers.backend import container_user

INBOX = "inbox"
MAX_NAME = 100
_UNSAFE = re.compile(r"[^\w.\- ()+,@=]+", re.UNICODE)


def safe_name(name: str) -> str:
    """A file name with no path, no control characters, at most ``MAX_NAME`` characters."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")
    name = name.lstrip("-")
    if not name or set(name) <= {"_", "."}:
        name = "file"
    stem, suffix = _split(name)
    if len(name) > MAX_NAME:
        suffix = suffix[:16]
        name = stem[: MAX_NAME - len(suffix)].rstrip(" .") + suffix
    return name


def _split(name: str) -> tuple[str, str]:
    suffix = PurePath(name).suffix
    if not suffix or suffix == name:
        return name, ""
    return name[: -len(suffix)], suffix


def _open_inbox(folder_fd: int) -> int:
    """Open (creating it when missing) the inbox under the group folder, never through a link:
    the agent owns the folder and may have replaced ``inbox`` with a link to steer host writes."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(3):
        with contextlib.suppress(FileExistsError):
            os.mkdir(INBOX, 0o755, dir_fd=folder_fd)
        try:
            inbox_fd = os.open(INBOX, flags, dir_fd=folder_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            os.unlink(INBOX, dir_fd=folder_fd)  # a link or a file where the inbox belongs
            continue
        _give_to_agent(inbox_fd)
        return inbox_fd
    raise OSError(f"cannot make {INBOX}/ a directory")


def _give_to_agent(fd: int) -> None:
    if os.getuid() == 0:  # a root host hands what the agent may touch to the container user
        uid, gid = container_user()
        os.fchown(fd, uid, gid)


def save_incoming(group_folder: Path, name: str, data: bytes) -> str:
    """Write ``data`` to ``inbox/<safe name>`` (never overwriting); returns the folder-relative path.

    Every step works on open directory descriptors, so no link swapped in by the agent at any
    moment can move the write outside the inbox.
    """
    group_folder.mkdir(parents=True, exist_ok=True)
    folder_fd = os.open(group_folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        inbox_fd = _open_inbox(folder_fd)
    finally:
        os.close(folder_fd)
    try:
        base = safe_name(name)
        stem, suffix = _split(base)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for n in range(10_000):
            candidate = base if n == 0 else f"{stem[: MAX_NAME - len(suffix) - 6]}-{n}{suffix}"
            try:
                fd = os.open(candidate, flags, 0o644, dir_fd=inbox_fd)
            except FileExistsError:
                continue
            _give_to_agent(fd)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return f"{INBOX}/{candidate}"
    finally:
        os.close(inbox_fd)
    raise OSError(f"no free name for {base!r} in {INBOX}/")
