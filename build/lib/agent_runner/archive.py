"""The exchange archive: every completed exchange as one markdown file under ``conversations/``.

Names sort by time and stay unique within a second; writes are atomic, so a reader (or the
agent searching its own history) never sees half a file. An empty reply writes nothing.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

MAX_TEXT = 20_000


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]}\n\n[… truncated: {len(text) - MAX_TEXT} more characters …]"


def archive_exchange(
    folder: Path,
    *,
    provider: str,
    thread: str | None,
    status: str,
    prompts: list[str],
    reply: str,
    now: datetime | None = None,
) -> Path | None:
    """Write one exchange; returns the file, or None for an empty reply."""
    if not reply.strip():
        return None
    now = now or datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{now.strftime('%Y-%m-%dT%H-%M-%SZ')}-{uuid.uuid4().hex[:8]}.md"
    asked = "\n\n---\n\n".join(_clip(p) for p in prompts)
    text = (
        f"# Exchange {now.isoformat(timespec='seconds')}\n\n"
        f"- provider: {provider}\n- thread: {thread or '-'}\n- status: {status}\n\n"
        f"## User\n\n{asked}\n\n## Agent\n\n{_clip(reply)}\n"
    )
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".md")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / name
