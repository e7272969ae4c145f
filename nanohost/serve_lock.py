"""One host per data dir: ``nanohost serve`` holds an exclusive lock on ``<data dir>/serve.lock``.

A second host on the same data dir would adopt the first one's containers, fail to bind its port,
and remove the gateway sockets on its way out, leaving the first one answering "502 gateway
unreachable". So the lock is the very first thing a host takes, before it touches a container or a
socket, and a second host refuses at once. The kernel drops the lock when its holder exits, however
it exits, so a crashed host never leaves a stale lock behind; the file itself stays (it only says
which process held it last).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "serve.lock"


class AlreadyServing(Exception):
    """Another host holds the data dir."""


class DataDirLock:
    """The exclusive lock on a data dir, held from ``acquire`` to ``release``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``AlreadyServing`` naming the holder; never waits."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyServing(
                f"another nanohost is already serving the data dir {self.data_dir}"
                + (f" (pid {holder})" if holder.isdigit() else "")
                + "; stop it first, or give this one its own NANOHOST_DATA_DIR"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # only informative: the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the lock
