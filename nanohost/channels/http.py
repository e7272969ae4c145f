"""What every platform's HTTP answers mean to delivery: retry later, or give up and say so."""

from __future__ import annotations

from collections.abc import Mapping

from nanohost.channels.base import PermanentError, TransientError


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
