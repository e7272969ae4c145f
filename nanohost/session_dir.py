"""A session's directory on the host: what the host writes there, the agent can only read.

``<data dir>/sessions/<id>/`` holds the host's side of the session (``inbound.db``,
``runner.json``, ``tasks.json``, the doorbell socket) and is mounted into the container
**read-only** at ``/workspace/session``. The runner writes exactly three files, and each is bound
read-write on its own over its name: ``outbound.db``, its rollback journal (kept in SQLite's
PERSIST mode, so SQLite never has to create or delete a file in the directory) and
``heartbeat``. The agent can change those files' bytes, never what a name in the directory
points at, so no link it makes can steer a host write; and the host opens only these fixed
names, in a directory only it can change.

A directory from an older layout (mounted read-write as a whole, and handed to the agent) is
taken back when the host opens it: owner and mode reset, and anything at a fixed name that is
not what the host expects (a link, a FIFO, a folder) moved out of the way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from pathlib import Path

from nanohost.providers import Mount
from nanohost.safe_fs import DIR_FLAGS, give_to_agent, replace_file

log = logging.getLogger(__name__)

CONTAINER_DIR = "/workspace/session"
AGENT_FILES = ("outbound.db", "outbound.db-journal", "heartbeat")
"""The only files the runner writes, each bound read-write into the container by itself."""
HOST_FILES = ("inbound.db", "inbound.db-journal", "runner.json", "tasks.json")
DOORBELL = "doorbell.sock"
LAYOUT = "2"
"""Containers carry this in a label; one started with another layout is not adopted."""


class SessionDir:
    """The host-owned directory of one session."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def prepare(self) -> None:
        """Make the directory ready for a container: host-owned, read-only to others, each agent
        file present as a regular file the container user may write."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, DIR_FLAGS)
        try:
            info = os.fstat(fd)
            if os.getuid() == 0 and (info.st_uid, info.st_gid) != (0, 0):
                os.fchown(fd, 0, 0)  # an older layout handed it to the agent
            os.fchmod(fd, 0o755)
            for name in (*AGENT_FILES, *HOST_FILES, DOORBELL):
                self._clear_odd(fd, name)
            for name in AGENT_FILES:
                agent_fd = os.open(
                    name,
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    0o644,
                    dir_fd=fd,
                )
                give_to_agent(agent_fd)
                os.close(agent_fd)
        finally:
            os.close(fd)

    @staticmethod
    def _clear_odd(dir_fd: int, name: str) -> None:
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        expected = stat.S_ISSOCK(mode) if name == DOORBELL else stat.S_ISREG(mode)
        if expected:
            return
        aside = f"{name}.odd-{time.time_ns()}"
        log.warning("session dir %s: %s was not a plain file; moved to %s", dir_fd, name, aside)
        os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def write(self, name: str, text: str) -> None:
        """Replace one of the host's files atomically (the agent can read it, never change it)."""
        if name not in HOST_FILES:
            raise ValueError(f"{name} is not a host file of the session dir")
        fd = os.open(self.path, DIR_FLAGS)
        try:
            replace_file(fd, name, text.encode())
        finally:
            os.close(fd)

    def mounts(self) -> list[Mount]:
        """The directory read-only, then each agent file read-write over its own name."""
        return [
            Mount(self.path, CONTAINER_DIR, read_only=True),
            *(Mount(self.path / name, f"{CONTAINER_DIR}/{name}") for name in AGENT_FILES),
        ]

    def move_aside(self, quarantine_root: Path) -> Path:
        """Move the whole directory under ``quarantine_root`` (kept for the operator)."""
        quarantine_root.mkdir(parents=True, exist_ok=True)
        target = quarantine_root / f"session-{self.path.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        with contextlib.suppress(FileExistsError):
            target.mkdir()
        target = target / "files"
        os.rename(self.path, target)
        return target
