"""JSON-lines logs carry the session and group a line is about."""

from __future__ import annotations

import json
import logging

from nanohost.log_format import JsonLines


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("nanohost.runtime", logging.WARNING, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_session_and_group_come_from_the_line_or_its_extra() -> None:
    line = json.loads(
        JsonLines().format(record("session %s: started container %s for group %s", 7, "abc", "team"))
    )
    assert line["session"] == 7 and line["group"] == "team" and line["level"] == "WARNING"
    assert line["message"] == "session 7: started container abc for group team"
    assert json.loads(JsonLines().format(record("hello", session=3)))["session"] == 3
    plain = json.loads(JsonLines().format(record("gateway listening")))
    assert "session" not in plain and "group" not in plain


def test_a_traceback_stays_inside_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        made = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonLines().format(made)
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exc"]
