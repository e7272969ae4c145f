"""Files users send are saved inside the group's inbox under safe, unique, bounded names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nanohost.channels.inbox import MAX_NAME, safe_name, save_incoming


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("/abs/path/notes.txt", "notes.txt"),
        ("..", "file"),
        ("", "file"),
        (".bashrc", "bashrc"),
        ("-rf", "rf"),
        ("a\x00b\nc.txt", "abc.txt"),
        ("my report (final).pdf", "my report (final).pdf"),
        ("naïve café.md", "naïve café.md"),
        ("$(rm -rf).sh", "_(rm -rf).sh"),
    ],
)
def test_safe_name(given: str, expected: str) -> None:
    assert safe_name(given) == expected


def test_long_names_are_bounded_and_keep_their_extension() -> None:
    name = safe_name("a" * 5000 + ".tar.gz")
    assert len(name) <= MAX_NAME
    assert name.endswith(".gz")


def test_saving_never_overwrites_and_stays_inside_the_inbox(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    first = save_incoming(folder, "../../secret.txt", b"one")
    second = save_incoming(folder, "secret.txt", b"two")
    assert first == "inbox/secret.txt"
    assert second == "inbox/secret-1.txt"
    assert (folder / first).read_bytes() == b"one"
    assert (folder / second).read_bytes() == b"two"
    assert not (tmp_path / "secret.txt").exists()


def test_a_symlinked_inbox_cannot_steer_writes_outside(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "team", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, folder / "inbox")
    saved = save_incoming(folder, "x.txt", b"data")
    assert (folder / saved).read_bytes() == b"data"
    assert not (folder / "inbox").is_symlink()
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_file_name_is_not_followed(tmp_path: Path) -> None:
    folder, target = tmp_path / "team", tmp_path / "target.txt"
    (folder / "inbox").mkdir(parents=True)
    target.write_text("keep")
    os.symlink(target, folder / "inbox" / "x.txt")
    saved = save_incoming(folder, "x.txt", b"new")
    assert saved == "inbox/x-1.txt"
    assert target.read_text() == "keep"


def test_an_inbox_that_is_a_file_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "inbox").write_text("not a folder")
    assert save_incoming(folder, "a.txt", b"a") == "inbox/a.txt"
    assert (folder / "inbox" / "a.txt").read_bytes() == b"a"
