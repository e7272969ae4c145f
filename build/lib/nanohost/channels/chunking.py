"""Splitting a long reply into messages a platform accepts, in order, without breaking code.

Each piece is at most ``limit`` characters. Splits prefer, in order: a paragraph break, a line
break, a space, and only then a hard cut. A fenced code block (```) is never left open: when a
split has to fall inside one, the piece closes the fence and the next piece reopens it with the
same info string, so every piece renders on its own. Joining the pieces gives back the text,
apart from those added fence lines and the whitespace at the split points.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FENCE = re.compile(r"^\s*(```+|~~~+)(.*)$")
_BREAKS = ("\n\n", "\n", " ")
MIN_LIMIT = 32


def _open_fence(text: str) -> str | None:
    """The opening line of the fence still open at the end of ``text``, or None."""
    opening: str | None = None
    marker = ""
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if not match:
            continue
        if opening is None:
            opening, marker = line.strip(), match.group(1)
        elif match.group(1).startswith(marker[0]) and len(match.group(1)) >= len(marker):
            if not match.group(2).strip():
                opening = None
    return opening


def _cut(text: str, room: int) -> int:
    """Where to end a piece of at most ``room`` characters: the latest good break point."""
    if len(text) <= room:
        return len(text)
    window = text[: room + 1]
    for separator in _BREAKS:
        at = window.rfind(separator, 0, room + 1)
        if at > room // 4:  # a break too near the start would make tiny pieces
            return at
    return room


def _closing(fence: str) -> str:
    match = _FENCE.match(fence)
    return match.group(1) if match else "```"


def _reopen(fence: str) -> str:
    """The line that reopens a cut code block: its marker and a short language tag, never more,
    so the carried line cannot crowd out the text (a long fence line must not be repeated)."""
    match = _FENCE.match(fence)
    if match is None:
        return "```"
    info = match.group(2).strip()
    return match.group(1) + (info if re.fullmatch(r"[\w+#.-]{1,20}", info) else "")


def _rest(body: str, end: int) -> str:
    """What follows a cut at ``end``, without the break it was made at."""
    if body.startswith("\n", end):
        return body[end:].lstrip("\n")
    if body.startswith(" ", end):
        return body[end + 1 :]
    return body[end:]


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters (see the module docstring)."""
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT} characters")
    pieces: list[str] = []
    carry = ""  # the fence line that reopens a code block cut at the previous split
    rest = text.strip("\n")
    while rest:
        if len(carry) > limit // 4:  # a long reopening line would crowd out the text
            carry = "```\n"
        body = carry + rest
        if len(body) <= limit:
            pieces.append(body)
            break
        end = _cut(body, limit)
        fence = _open_fence(body[:end])
        if fence is not None:  # make room to close the block in this piece
            end = _cut(body, limit - len(_closing(fence)) - 1)
            fence = _open_fence(body[:end])
        if end <= len(carry):  # no break point after the reopened fence: cut hard
            end = limit - (len(_closing(fence)) + 1 if fence else 0)
            if end <= len(carry):  # not even that leaves room: progress wins over the fence
                end, fence = limit, None
        piece = body[:end].rstrip()
        rest = _rest(body, end)
        carry = ""
        if fence is not None:
            piece += "\n" + _closing(fence)
            carry = _reopen(fence) + "\n"
        if piece.strip():
            pieces.append(piece)
    return pieces


def split_to_fit(text: str, limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """``split_message``, for platforms that count length their own way (``measure``: Telegram
    counts UTF-16 code units, Slack counts the escaped text): a piece still too long by that
    measure is split again, smaller, until every piece fits."""
    pieces = split_message(text, limit)
    fitted: list[str] = []
    for piece in pieces:
        room = limit
        parts = [piece]
        while any(measure(part) > limit for part in parts):
            if room == MIN_LIMIT:  # cannot shrink further: cut by the measure itself
                parts = [cut for part in parts for cut in _cut_by_measure(part, limit, measure)]
                break
            longest = max(measure(part) for part in parts)
            room = max(MIN_LIMIT, min(room - 1, room * limit // longest))
            parts = split_message(piece, room)
        fitted.extend(parts)
    return fitted


def _cut_by_measure(text: str, limit: int, measure: Callable[[str], int]) -> list[str]:
    """Character runs that each measure at most ``limit`` (the last resort; no nice breaks)."""
    cuts: list[str] = []
    start = 0
    for end in range(1, len(text) + 1):
        if measure(text[start:end]) > limit:
            cuts.append(text[start : end - 1])
            start = end - 1
    cuts.append(text[start:])
    return [cut for cut in cuts if cut]
