"""What every platform adapter does the same way over HTTP: read what platforms answer, stream a
capped download, read a file to send, and wait between reconnects.

Status codes map to delivery's two kinds of failure: ``TransientError`` for 429/5xx (retry
later, honouring retry-after) and ``PermanentError`` for other 4xx (record once, stop).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from nanohost.channels.base import FileTooLarge, PermanentError, TransientError

CHUNK = 64 * 1024


def retry_after(headers: Mapping[str, str], body_seconds: float | None = None) -> float | None:
    """Seconds the platform asked us to wait (``Retry-After`` header or the body's own field)."""
    if body_seconds is not None:
        return max(0.0, float(body_seconds))
    raw = headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def raise_for_status(platform: str, call: str, status: int, detail: str, wait: float | None = None) -> None:
    """Raise ``TransientError`` for 429/5xx and ``PermanentError`` for other 4xx; 2xx/3xx pass."""
    if status == 429 or status >= 500:
        raise TransientError(f"{platform} {call}: HTTP {status} {detail}".strip(), retry_after=wait)
    if status >= 400:
        raise PermanentError(f"{platform} {call}: HTTP {status} {detail}".strip())


async def read_capped(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """Read a body in chunks, raising ``FileTooLarge`` as soon as it passes ``limit`` bytes, so a
    platform's (or a user's) declared size never decides how much we buffer."""
    data = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        data.extend(chunk)
        if len(data) > limit:
            raise FileTooLarge(f"{what} is over the {limit} byte limit")
    return bytes(data)


def read_outgoing(path: Path, limit: int, platform: str) -> bytes:
    """The bytes of a file to send, refusing (permanently) one the platform would refuse anyway.

    Files to send are host-owned copies (see ``runtime.SessionRuntime.host_path``), so reading
    the path is safe; the size is checked on the open file before anything is buffered.
    """
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise PermanentError(
                    f"{platform}: {path.name} is {size / 1024**2:.1f} MiB, over the "
                    f"{limit / 1024**2:.0f} MiB {platform} accepts from a bot"
                )
            return handle.read(limit + 1)
    except OSError as exc:
        raise PermanentError(f"{platform}: cannot read {path.name}: {exc.strerror}") from None


class Backoff:
    """Waits between reconnect attempts: ``first`` seconds, doubling up to ``most``; ``reset()``
    after a success."""

    def __init__(self, first: float = 1.0, most: float = 30.0) -> None:
        self.first = first
        self.most = most
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.most, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first
