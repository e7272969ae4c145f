"""Files users send the agent land in the group folder's ``inbox/``, under names that are safe.

A platform's file name is untrusted input: it may carry path components, ``..``, control
characters, a leading dot, or thousands of characters. ``safe_name`` keeps only the last path
component, replaces anything outside a conservative set, bounds the length (keeping the
extension) and never returns an empty or hidden name. ``save_incoming`` never overwrites: a taken
name gets ``-1``, ``-2``, … before its extension, claimed atomically with ``O_EXCL``; it works
on open directory descriptors, so a link the agent swaps in cannot steer the write.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from nanohost.safe_fs import give_to_agent, open_root, open_subdir

if TYPE_CHECKING:
    from nanohost.settings import Settings

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


def save_incoming(group_folder: Path, name: str, data: bytes) -> str:
    """Write ``data`` to ``inbox/<safe name>`` (never overwriting); returns the folder-relative path.

    Every step works on open directory descriptors, so no link swapped in by the agent at any
    moment can move the write outside the inbox.
    """
    group_folder.mkdir(parents=True, exist_ok=True)
    folder_fd = open_root(group_folder)
    try:
        inbox_fd = open_subdir(folder_fd, INBOX, create=True)
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
            give_to_agent(fd)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return f"{INBOX}/{candidate}"
    finally:
        os.close(inbox_fd)
    raise OSError(f"no free name for {base!r} in {INBOX}/")


def save_for_group(settings: Settings, folder: str, name: str, data: bytes) -> str:
    """``save_incoming`` into a group's folder, holding it against a snapshot restore (which
    replaces the folder): a file saved meanwhile would be lost with the old folder. Raises
    ``snapshots.Busy`` when a restore takes longer than ``snapshots.SAVE_WAIT``."""
    from nanohost.snapshots import holding_folder

    with holding_folder(settings, folder):
        return save_incoming(settings.groups_dir / folder, name, data)
