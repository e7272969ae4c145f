"""How the host's log lines look: plain text (default) or JSON lines (``NANOHOST_LOG_FORMAT=json``).

A JSON line carries ``time``, ``level``, ``logger``, ``message`` and, when the line is about one,
``session`` and ``group``: taken from the record's ``extra`` when given, else read from the
message's own "session N" / "group NAME" words, which every session-level line of the host has.
An exception's traceback goes in ``exc``.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_SESSION = re.compile(r"\bsession (\d+)\b")
_GROUP = re.compile(r"\bgroup ([A-Za-z0-9][\w.-]*)")


class JsonLines(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        session = getattr(record, "session", None)
        if session is None and (found := _SESSION.search(message)):
            session = int(found.group(1))
        if session is not None:
            line["session"] = session
        group = getattr(record, "group", None)
        if group is None and (named := _GROUP.search(message)):
            group = named.group(1)
        if group is not None:
            line["group"] = group
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, form: str) -> None:
    """Set up the root logger for ``nanohost serve``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if form == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
