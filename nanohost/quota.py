"""A disk quota per group: an agent that fills the disk is stopped, not the whole host.

What a group's agent can write to disk is exactly what its container can write: the host trees
bound writable into it (its folder, its provider state such as ``~/.codex``, the session's queue
files), and the container's own writable layer (``/tmp``, its home). Docker bind mounts carry no
quota and overlay layers only on some filesystems, so the host measures instead: every sweep
(``NANOHOST_SWEEP_INTERVAL``) it adds up each running group's writable mounts (allocated blocks,
links never followed, hard links counted once) and its layer, and stops a group over
``NANOHOST_GROUP_DISK_QUOTA`` cleanly, at once, even mid-turn. Until it is back under (the operator
deletes files, or raises the group's own quota), its wakes are refused with the figures
in the chat and in ``why``/``status``; its messages wait, nothing is lost. A group can overshoot
by what it writes within one sweep interval; the host's own low-disk guard (``disk.py``) is the
backstop for that.

A group may have its own quota (``nanohost groups config G --disk-quota 50g``, ``0`` for none),
read from its config row at each check, so raising it lets the group start again at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nanohost.limits import parse_size
from nanohost.validation import InvalidInput

log = logging.getLogger(__name__)


class OverQuota(InvalidInput):
    """The group's files are over its disk quota; the message says how far and what to do."""


@dataclass(frozen=True)
class Usage:
    """What one group's container can write, measured now."""

    trees: int
    layer: int | None

    @property
    def total(self) -> int:
        return self.trees + (self.layer or 0)


def tree_bytes(paths: Iterable[Path]) -> int:
    """Allocated bytes under ``paths`` (files or folders): links are never followed, a hard-linked
    file counts once, nested or repeated paths once, and an entry that vanishes meanwhile counts 0.

    Walks by directory descriptors (``os.fwalk``), so a link planted in the tree cannot send the
    walk into a host directory."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def count(st: os.stat_result) -> None:
        nonlocal total
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        total += st.st_blocks * 512

    for path in paths:
        try:
            top = os.lstat(path)
        except OSError:
            continue
        count(top)
        if not stat.S_ISDIR(top.st_mode):
            continue
        for _, dirs, files, dir_fd in os.fwalk(path, follow_symlinks=False):
            for name in (*dirs, *files):
                try:
                    count(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
                except OSError:
                    continue
    return total


MIN_QUOTA = 2**20


def parse_quota(text: str) -> int:
    """A quota as written (``10g``, ``512m``; ``0``: none) in bytes; ``ValueError`` says why not."""
    if text.strip() == "0":
        return 0
    size = parse_size(text)
    if size < MIN_QUOTA:
        raise ValueError(f"{text!r} is too small for a disk quota; use 1m or more, or 0 for none")
    return size


def over_message(folder: str, usage: Usage, quota: int, *, own: bool = False) -> str:
    layer = f" (+ {show_size(usage.layer)} inside its container)" if usage.layer else ""
    source = "the group's own: `nanohost groups config --disk-quota`" if own else "NANOHOST_GROUP_DISK_QUOTA"
    return (
        f"group folder {folder!r} uses {show_size(usage.trees)} on disk{layer}, over its quota of "
        f"{show_size(quota)} ({source}); delete files from it, or raise the quota"
    )


def show_size(size: int) -> str:
    """Bytes for a person, one decimal: "10.3 GiB", "512.0 MiB", "900 bytes"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


class DiskQuota:
    """Measures running groups each sweep and refuses wakes of groups found over their quota.

    ``over`` (folder → the writable host trees measured) is host memory: after a restart a group
    over its quota starts once more and is stopped again by the first sweep."""

    def __init__(self, quota: int) -> None:
        self.quota = quota
        """The host's default (``NANOHOST_GROUP_DISK_QUOTA``); 0: none."""
        self.over: dict[str, tuple[str, ...]] = {}

    def limit(self, own: str | None) -> int:
        """The quota of a group whose config says ``own`` (None: the host's default). A row
        written behind the CLI that cannot be read gets the host's default, and is logged: one
        bad row must not stop the checks of every other group."""
        if own is None:
            return self.quota
        try:
            return parse_quota(own)
        except ValueError as exc:
            log.error("a group's disk quota %r cannot be read (%s); the host's quota applies to it", own, exc)
            return self.quota

    def over_quota(self, folder: str, usage: Usage, limit: int | None = None) -> bool:
        limit = self.quota if limit is None else limit
        return limit > 0 and usage.total > limit

    async def check_wake(self, folder: str, own: Callable[[], str | None] = lambda: None) -> None:
        """Raise ``OverQuota`` when this group was stopped over its quota and still is; a group
        never found over costs nothing here (a wake is the latency path). ``own`` reads the
        group's own quota now (an operator may just have raised it)."""
        trees = self.over.get(folder)
        if trees is None:
            return
        usage = Usage(await asyncio.to_thread(tree_bytes, [Path(t) for t in trees]), None)
        mine = await asyncio.to_thread(own)
        limit = self.limit(mine)
        if self.over_quota(folder, usage, limit):
            raise OverQuota(over_message(folder, usage, limit, own=mine is not None))
        del self.over[folder]
        log.info("group %s: back under its disk quota (%s); it may start", folder, show_size(usage.total))

    def mark(self, folder: str, trees: Iterable[str]) -> None:
        self.over[folder] = tuple(trees)
