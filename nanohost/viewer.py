"""The conversation viewer's archive: a group's turns as the agent lived them, read safely.

The runner appends one JSON line per turn to ``conversations/turns/YYYY-MM-DD.jsonl`` in the
group folder (``agent_runner.items``: the format is there). That folder is the agent's: any name
in it may be a link to a host file, any line may be hostile. So every read here goes through
``safe_fs`` (directory descriptors, ``O_NOFOLLOW``, regular files only, never a FIFO wait), sizes
are capped (a day's file, a line, the whole download), and a line that is not a turn (bad JSON,
wrong shape, over a limit) is skipped, never an error. The viewer never parses the Markdown.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from nanohost.boundary import Count, ItemText, Name, TurnId, Usage, ViewItem
from nanohost.safe_fs import open_root, open_subdir, read_beneath

CONVERSATIONS = "conversations"
TURNS = "turns"
DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.jsonl$")
MAX_DAY_BYTES = 32 * 1024 * 1024
"""Bytes read of one day's file; a larger one is read up to here (its later turns are not shown)."""
MAX_LINE_BYTES = 1024 * 1024
"""A longer line is not parsed (the runner keeps a turn's line under 512 KiB)."""
MAX_DAYS = 3660
"""Day files looked at, newest first (ten years of daily use)."""
MAX_READ_BYTES = 256 * 1024 * 1024
"""Bytes of day files one archive read (a listing, a lookup, a search) reads at most, newest days
first; the answer says when it stopped early."""
MAX_PARSE_BYTES = 32 * 1024 * 1024
"""Bytes of lines one archive read parses as JSON at most (parsing holds the GIL)."""
MAX_DIR_ENTRIES = 10_000
"""Names of one directory looked at (the archive's days, each folder the download walks)."""
PAGE = 50
MAX_QUERY = 200
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
"""Bytes of files one archive download carries; files past it are listed in ``NANOHOST-SKIPPED.txt``."""
MAX_DOWNLOAD_FILE = 64 * 1024 * 1024
MAX_DOWNLOAD_ENTRIES = 100_000
"""Entries one download visits: files, directories and what it leaves out alike."""
MAX_DEPTH = 16


class ArchivedTurn(BaseModel):
    """One line of a day's file, as far as the host believes it."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    v: Annotated[int, Field(strict=True, ge=1, le=1)]
    turn: TurnId
    thread: Name | None = None
    provider: Name | None = None
    model: Name | None = None
    status: Annotated[str, StringConstraints(max_length=32)]
    error: ItemText | None = None
    started_at: Annotated[str, StringConstraints(max_length=40)]
    ended_at: Annotated[str, StringConstraints(max_length=40)] | None = None
    duration_ms: Count | None = None
    prompts: list[ItemText] = Field(default_factory=list, max_length=20)
    reply: ItemText = ""
    usage: Usage | None = None
    items: list[ViewItem] = Field(default_factory=list, max_length=200)
    items_left_out: Count = 0

    def summary(self) -> dict[str, Any]:
        """What the turn list shows."""
        return {
            "turn": self.turn,
            "started_at": self.started_at,
            "status": self.status,
            "model": self.model,
            "duration_ms": self.duration_ms,
            "tokens": self.usage.total if self.usage else None,
            "prompt": (self.prompts[0] if self.prompts else "")[:200],
            "reply": self.reply[:200],
            "steps": len(self.items) + self.items_left_out,
        }

    def searchable(self) -> str:
        parts = [*self.prompts, self.reply, self.error or ""]
        for item in self.items:
            parts += [item.text or "", item.command or "", item.output or "", item.arguments or ""]
            parts += [item.result or "", item.error or "", item.tool or ""]
            parts += [c.path + "\n" + c.diff for c in item.changes or []]
        return "\n".join(parts).casefold()


def _turns_dir(folder: Path) -> int | None:
    """A descriptor of ``folder/conversations/turns``, walked without following a link; None when
    it is missing or not a real directory."""
    try:
        root = open_root(folder)
    except OSError:
        return None
    fd = root
    try:
        for name in (CONVERSATIONS, TURNS):
            child = open_subdir(fd, name, create=False)
            os.close(fd)
            fd = child
        return fd
    except (OSError, ValueError):
        os.close(fd)
        return None


def days(folder: Path) -> list[str]:
    """The day files of the archive, newest first (only names that look like one; at most
    ``MAX_DAYS``, and no more than ``MAX_DIR_ENTRIES`` names of the folder are looked at)."""
    fd = _turns_dir(folder)
    if fd is None:
        return []
    try:
        names = [n for n in _bounded_names(fd) if DAY_FILE.match(n)]
    finally:
        os.close(fd)
    return sorted(names, reverse=True)[:MAX_DAYS]


def _bounded_names(dir_fd: int, limit: int | None = None) -> list[str]:
    """At most ``limit`` names of a directory, in no order (a folder of millions of entries is
    not listed whole)."""
    limit = MAX_DIR_ENTRIES if limit is None else limit
    names: list[str] = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            if len(names) >= limit:
                break
            names.append(entry.name)
    return names


def _lines(data: bytes) -> list[bytes]:
    """The complete lines (a last line without its newline is still being written)."""
    lines = data.split(b"\n")
    return lines[:-1]


TURN_MARKER = re.compile(rb'^\s*\{\s*"v"\s*:\s*1\s*,')
"""How every turn line begins (the runner writes ``v`` first): a line without it is not parsed."""


def parse_line(line: bytes) -> ArchivedTurn | None:
    """One line as a turn, or None when it is not one (bad JSON, wrong shape, over a limit)."""
    if len(line) > MAX_LINE_BYTES or not TURN_MARKER.match(line):  # before any parsing
        return None
    try:
        raw = json.loads(line.decode())
    except (UnicodeError, ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return ArchivedTurn.model_validate(raw)
    except ValidationError:
        return None


def parse_lines(data: bytes) -> Iterator[ArchivedTurn]:
    """The turns in a day's bytes, in file order; bad or unfinished lines are skipped."""
    for line in _lines(data):
        if (turn := parse_line(line)) is not None:
            yield turn


def read_day(folder: Path, name: str) -> bytes:
    """A day's file (its complete lines within ``MAX_DAY_BYTES``), or nothing."""
    if not DAY_FILE.match(name):
        return b""
    data = read_beneath(folder, f"{CONVERSATIONS}/{TURNS}/{name}", MAX_DAY_BYTES)
    if data is None:
        return b""
    if len(data) > MAX_DAY_BYTES:  # too big: the complete lines within the cap
        data = data[: data.rfind(b"\n", 0, MAX_DAY_BYTES) + 1]
    return data


class Budget:
    """What one archive read may cost: bytes read from day files and bytes of lines parsed as
    JSON. Past either, ``Enough`` ends the read (newest days come first, so the newest turns are
    always the ones seen); ``complete`` says whether the read ran out of archive first."""

    def __init__(self) -> None:
        self.read = MAX_READ_BYTES
        self.parse = MAX_PARSE_BYTES
        self.complete = True

    def reading(self, size: int) -> None:
        self.read -= size
        if self.read < 0:
            self.complete = False
            raise Enough

    def parsing(self, size: int) -> None:
        self.parse -= size
        if self.parse < 0:
            self.complete = False
            raise Enough


class Enough(Exception):
    """An archive read has used its budget."""


def newest_first(
    folder: Path, keep: Callable[[bytes], bool] = lambda line: True, budget: Budget | None = None
) -> Iterator[ArchivedTurn]:
    """The archive's turns, newest first, parsed only as far as the caller reads; ``keep`` skips
    lines before they are parsed (a cheap filter on the raw line). Raises ``Enough`` when the
    ``budget`` (a fresh one when not given) is used up."""
    budget = budget or Budget()
    for day in days(folder):
        if budget.read <= 0:
            budget.reading(1)
        for line in reversed(_lines(read_day(folder, day))):  # a day is read whole, newest lines last
            budget.reading(len(line) + 1)
            if len(line) > MAX_LINE_BYTES or not TURN_MARKER.match(line) or not keep(line):
                continue
            budget.parsing(len(line))
            if (turn := parse_line(line)) is not None:
                yield turn


def list_turns(folder: Path, before: str | None = None, limit: int = PAGE) -> dict[str, Any]:
    """Summaries of the newest turns (newest first), ``limit`` at most, older than turn ``before``
    when given; ``more`` says whether older ones exist; ``complete`` is False when the read's
    budget ran out first (older turns may exist that the listing did not reach)."""
    found: list[dict[str, Any]] = []
    passed = before is None
    budget = Budget()
    try:
        for turn in newest_first(folder, budget=budget):
            if not passed:
                passed = turn.turn == before
                continue
            if len(found) == limit:
                return {"turns": found, "more": True, "complete": True}
            found.append(turn.summary())
    except Enough:
        return {"turns": found, "more": False, "complete": False}
    return {"turns": found, "more": False, "complete": True}


def find_turn(folder: Path, turn_id: str) -> ArchivedTurn | None:
    """The archived turn with this id (the newest, should the agent have written it twice)."""
    return lookup(folder, turn_id)[0]


def lookup(folder: Path, turn_id: str) -> tuple[ArchivedTurn | None, bool]:
    """(the archived turn with this id or None, whether the whole archive was looked at): only
    lines holding the id's bytes are parsed, within the read's budget."""
    needle = json.dumps(turn_id).encode()
    budget = Budget()
    try:
        for turn in newest_first(folder, lambda line: needle in line, budget):
            if turn.turn == turn_id:
                return turn, True
    except Enough:
        return None, False
    return None, True


def search(folder: Path, query: str, limit: int = PAGE) -> dict[str, Any]:
    """Turns whose prompts, reply or steps contain ``query`` (case-insensitive), newest first.

    A line is parsed only when its raw text contains the query (the runner writes text unescaped,
    ``ensure_ascii=False``; a query with characters JSON escapes is looked for in every line).
    At most ``MAX_READ_BYTES`` of the archive are read; ``complete`` says whether all were."""
    needle = query.strip().casefold()[:MAX_QUERY]
    if not needle:
        return {"turns": [], "complete": True}
    escaped = any(c in needle for c in '"\\') or any(ord(c) < 32 for c in needle)
    ascii_needle = json.dumps(needle)[1:-1]  # as a writer with ensure_ascii would have it

    def keep(line: bytes) -> bool:
        text = line.decode(errors="replace").casefold()
        return escaped or needle in text or ascii_needle in text

    found: list[dict[str, Any]] = []
    try:
        for turn in newest_first(folder, keep):
            if needle in turn.searchable():
                found.append(turn.summary())
                if len(found) == limit:
                    return {"turns": found, "complete": False}
    except Enough:
        return {"turns": found, "complete": False}
    return {"turns": found, "complete": True}


SKIPPED_NAME = "NANOHOST-SKIPPED.txt"
"""The host's list of what a download left out: at the zip's root, beside ``conversations/``,
where no agent file can be (everything the agent wrote is under ``conversations/``)."""
MAX_SKIPPED = 1_000
"""Lines of that list; past it, one line says how many more were left out."""
_WINDOWS_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]|[. ]$')
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)


@dataclass
class Packed:
    files: int = 0
    bytes: int = 0
    entries: int = 0
    """Entries visited (files, directories, and what was left out) against ``MAX_DOWNLOAD_ENTRIES``."""
    skipped: list[str] | None = None
    skipped_more: int = 0
    """Left out past ``MAX_SKIPPED`` lines (counted, not listed)."""

    def skip(self, member: str, why: str) -> None:
        assert self.skipped is not None
        if len(self.skipped) >= MAX_SKIPPED:
            self.skipped_more += 1
        else:
            self.skipped.append(f"{_shown(member)}: {why}")


def _shown(member: str) -> str:
    """A member's name as the skip list shows it: one line, whatever the agent named it."""
    return member if member.isprintable() else ascii(member)


def safe_member_name(name: str) -> bool:
    """Whether one path component extracts as itself everywhere: valid UTF-8, no separator or
    character Windows refuses or reads as a path (``\\``, ``:``, ``*``…), no control character, no
    trailing dot or space, no device name (``CON``, ``NUL.txt``…), not ``.`` or ``..``."""
    try:
        name.encode()
    except UnicodeError:  # a name that is not UTF-8 (read with surrogate escapes)
        return False
    return (
        name not in ("", ".", "..")
        and _WINDOWS_UNSAFE.search(name) is None
        and _WINDOWS_DEVICES.match(name) is None
        and len(name) <= 255
    )


def write_zip(folder: Path, out: IO[bytes]) -> Packed:
    """The group's ``conversations/`` (Markdown and JSON lines) as a zip written to ``out``.

    Walked by directory descriptors without following a link: links, FIFOs, devices, names
    unsafe to extract, and anything past the caps are left out and listed in
    ``NANOHOST-SKIPPED.txt`` at the zip's root; what is read is what was opened."""
    packed = Packed(skipped=[])
    try:
        root = open_root(folder)
    except OSError:
        root = -1
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        if root >= 0:
            try:
                fd = open_subdir(root, CONVERSATIONS, create=False)
            except (OSError, ValueError):
                fd = -1
            finally:
                os.close(root)
            if fd >= 0:
                try:
                    _pack(archive, fd, CONVERSATIONS, 0, packed)
                finally:
                    os.close(fd)
        assert packed.skipped is not None
        if packed.skipped:
            lines = packed.skipped + (
                [f"… and {packed.skipped_more:,} more left out"] if packed.skipped_more else []
            )
            archive.writestr(SKIPPED_NAME, "\n".join(lines) + "\n")
    return packed


def _pack(archive: zipfile.ZipFile, dir_fd: int, prefix: str, depth: int, packed: Packed) -> None:
    if packed.entries >= MAX_DOWNLOAD_ENTRIES:
        return
    names = _bounded_names(dir_fd, MAX_DIR_ENTRIES + 1)
    if len(names) > MAX_DIR_ENTRIES:
        names = names[:MAX_DIR_ENTRIES]
        packed.skip(f"{prefix}/", f"more than {MAX_DIR_ENTRIES:,} entries: the rest left out")
    for name in sorted(names):
        member = f"{prefix}/{name}"
        packed.entries += 1
        if packed.entries > MAX_DOWNLOAD_ENTRIES:
            packed.skip(
                f"{prefix}/", f"more than {MAX_DOWNLOAD_ENTRIES:,} entries in the download: the rest left out"
            )
            return
        if not safe_member_name(name):
            packed.skip(member, "a name unsafe to extract, left out")
            continue
        try:  # look before opening: only directories and regular files are ever opened
            kind = stat.S_IFMT(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            if kind == stat.S_IFLNK:
                raise OSError(errno.ELOOP, "a link")
            if kind not in (stat.S_IFDIR, stat.S_IFREG):
                packed.skip(member, "not a regular file, left out")
                continue
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            why = "a link" if exc.errno == errno.ELOOP else os.strerror(exc.errno or 0)
            packed.skip(member, f"{why}, left out")
            continue
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                if depth >= MAX_DEPTH:
                    packed.skip(member, "nested too deep")
                    continue
                _pack(archive, fd, member, depth + 1, packed)  # the directory opened, not a new lookup
                if packed.entries > MAX_DOWNLOAD_ENTRIES:
                    return
            elif not stat.S_ISREG(info.st_mode):
                packed.skip(member, "not a regular file, left out")
            elif info.st_size > MAX_DOWNLOAD_FILE or packed.bytes + info.st_size > MAX_DOWNLOAD_BYTES:
                packed.skip(member, f"{info.st_size:,} bytes, over the download's limits")
            else:
                _copy(archive, fd, member, info, packed)
        finally:
            os.close(fd)


def _copy(archive: zipfile.ZipFile, fd: int, member: str, info: os.stat_result, packed: Packed) -> None:
    os.set_blocking(fd, True)
    entry = zipfile.ZipInfo(member, date_time=_zip_time(info.st_mtime))
    entry.compress_type = zipfile.ZIP_DEFLATED
    left = info.st_size  # a file the agent grows meanwhile is cut at its size when opened
    with archive.open(entry, "w", force_zip64=True) as target:
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            target.write(chunk)
            left -= len(chunk)
    packed.files += 1
    packed.bytes += info.st_size - left


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    import time

    moment = time.gmtime(min(max(mtime, 315532800), 4102444800))  # zip says 1980 to 2107
    return (moment.tm_year, moment.tm_mon, moment.tm_mday, moment.tm_hour, moment.tm_min, moment.tm_sec)
