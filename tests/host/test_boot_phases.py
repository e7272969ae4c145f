"""The wake's phases as the runner logs them, read back by the host as hostile input."""

from __future__ import annotations

import json

from nanohost.boot_phases import MAX_LINE, parse_phases

NOW = 1_800_000_000.0


def line(marks: object) -> str:
    return "nanohost-phases " + json.dumps(marks)


def test_the_last_line_wins_and_good_marks_are_kept() -> None:
    text = "\n".join(
        [line({"runner": NOW - 9}), "INFO something else", line({"runner": NOW - 1, "replied": NOW})]
    )
    assert parse_phases(text, now=NOW) == {"runner": NOW - 1, "replied": NOW}


def test_hostile_marks_are_dropped() -> None:
    marks = {
        "ok": NOW,
        "Bad-Name": NOW,
        "x" * 60: NOW,
        "nan": float("nan"),
        "far": NOW + 10 * 86_400,
        "text": "soon",
        "flag": True,
    }
    assert parse_phases(line(marks), now=NOW) == {"ok": NOW}


def test_oversized_or_broken_lines_give_nothing() -> None:
    assert parse_phases(line({"a": NOW, "pad": "x" * MAX_LINE}), now=NOW) == {}
    assert parse_phases("nanohost-phases {not json", now=NOW) == {}
    assert parse_phases(line([NOW]), now=NOW) == {}
    assert parse_phases("no phases here", now=NOW) == {}


def test_at_most_32_marks_are_read() -> None:
    marks = {f"m{i}": NOW for i in range(100)}
    assert len(parse_phases(line(marks), now=NOW)) == 32
