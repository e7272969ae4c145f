"""Files the agent sends are copied, at import, into a host-owned outbox.

The agent owns its workspace: after the host has checked a path, the agent could swap the file
(or a folder above it) for a symlink to a host file, and delivery, which may wait minutes in a
rate-limit backoff, or a download link, which lives for ever, would then read that host file.
So the host opens the file once, without following a final symlink and without blocking on a
FIFO, checks what it actually opened (its real path, via ``/proc/self/fd``, must lie inside the
workspace, and it must be a regular file under the size cap), and copies those bytes into
``<data dir>/outbox/<session>/<row>/``, which no container mounts. Everything after the import reads
only the copy.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nanohost.channels.inbox import safe_name

MAX_FILE_BYTES = 50 * 1024**2
"""Largest file the agent may send (Telegram's bot upload limit; the strictest platform's)."""


def open_inside(path: Path, roots: list[Path]) -> int:
    """Open ``path`` for reading as the regular file it is now, inside one of ``roots`` (real
    paths), or raise ``ValueError`` saying why not.

    The final component is opened without following a link and without waiting on a FIFO, and
    what was actually opened is checked (its real path, read from ``/proc/self/fd``), so no link
    the agent planted anywhere on the way can lead outside. The caller closes the descriptor.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(f"{path.name} cannot be opened: {exc.strerror}") from None
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not any(root in real.parents for root in roots):
            raise ValueError(f"{path.name} resolves outside the workspace")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def keep_copy(source: Path, roots: list[Path], outbox: Path, key: str, limit: int = MAX_FILE_BYTES) -> Path:
    """Copy ``source`` to ``outbox/<key>/<name>``; raises ``ValueError`` saying why not."""
    fd = open_inside(source, [root.resolve() for root in roots])
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise ValueError(
                f"{source.name} is {size / 1024**2:.1f} MiB, over the {limit / 1024**2:.0f} MiB limit"
            )
        target = outbox / key / safe_name(source.name)  # the file keeps its name on the platform
        target.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.dup(fd), "rb") as reader, target.open("wb") as writer:
            data = reader.read(limit + 1)
            if len(data) > limit:  # it grew after the check
                raise ValueError(f"{source.name} is over the {limit / 1024**2:.0f} MiB limit")
            writer.write(data)
        return target
    finally:
        os.close(fd)


def kept_copy(path: Path, outbox_root: Path) -> Path | None:
    """``path`` when it is one of the host's kept copies (under ``outbox_root``), else None.

    Delivery and downloads read only kept copies: a row from before copies were kept (or any
    other path) could name a file the agent has since swapped for a link to a host file.
    """
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if outbox_root.resolve() in real.parents and real.is_file() else None
