"""Long replies split under each platform's limit, in order, at natural breaks, code intact."""

from __future__ import annotations

import random
import re

import pytest

from nanohost.channels.chunking import split_message, split_to_fit

LIMITS = [100, 2000, 4096, 40_000]


def _fences_balanced(piece: str) -> bool:
    return len(re.findall(r"^\s*```", piece, re.MULTILINE)) % 2 == 0


def test_short_text_is_one_piece() -> None:
    assert split_message("hello", 4096) == ["hello"]


def test_paragraphs_are_preferred_to_lines_and_words() -> None:
    text = "first paragraph " * 5 + "\n\n" + "second paragraph " * 5
    pieces = split_message(text.strip(), 120)
    assert pieces == [("first paragraph " * 5).strip(), ("second paragraph " * 5).strip()]


def test_words_are_not_cut_and_nothing_is_lost() -> None:
    rng = random.Random(7)
    words = " ".join("w" * rng.randint(1, 15) for _ in range(3000))
    pieces = split_message(words, 100)
    assert all(len(p) <= 100 for p in pieces)
    assert " ".join(pieces) == words


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert split_message("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]


@pytest.mark.parametrize("limit", LIMITS)
def test_code_blocks_are_never_cut_open(limit: int) -> None:
    code = "\n".join(f"    value_{i} = compute({i}) * 2" for i in range(3000))
    text = "Here is the code:\n\n```python\n" + code + "\n```\n\nAnd that is all. " * 3
    pieces = split_message(text, limit)
    assert all(len(p) <= limit for p in pieces)
    assert all(_fences_balanced(p) for p in pieces)
    # every code line arrives once, in order
    lines = [line for p in pieces for line in p.split("\n") if line.startswith("    value_")]
    assert lines == code.split("\n")
    if len(pieces) > 1 and limit < len(text):
        assert any(p.startswith("```python") for p in pieces[1:])  # reopened with its language


def test_order_is_kept() -> None:
    text = "\n".join(f"line {i:04d}" for i in range(2000))
    pieces = split_message(text, 4096)
    numbers = [int(n) for p in pieces for n in re.findall(r"line (\d+)", p)]
    assert numbers == list(range(2000))
    assert all(len(p) <= 4096 for p in pieces)


def test_a_too_small_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        split_message("text", 10)


def test_split_to_fit_uses_the_platforms_own_measure() -> None:
    def utf16(text: str) -> int:
        return len(text.encode("utf-16-le")) // 2

    text = "😀 " * 3000  # 6000 characters, 9000 UTF-16 code units
    pieces = split_to_fit(text, 4096, utf16)
    assert all(utf16(p) <= 4096 for p in pieces)
    assert " ".join(pieces).split() == text.split()

    def escaped(text: str) -> int:
        return len(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))

    text = "x" * 50 + "&" * 150 + "<>" * 50  # 300 characters, 1100 once escaped
    pieces = split_to_fit(text, 300, escaped)
    assert len(pieces) >= 4 and all(escaped(p) <= 300 for p in pieces)
    assert "".join(pieces) == text


@pytest.mark.parametrize("limit", [32, 100, 2000])
def test_a_fence_line_longer_than_the_limit_still_makes_progress(limit: int) -> None:
    text = "```" + "q" * 2500 + "\nz\n```\nafter"
    pieces = split_message(text, limit)
    assert all(len(p) <= limit for p in pieces)
    assert len(pieces) <= 2 * len(text) // (limit // 2)  # bounded: no piece repeats the long line
    assert "".join(pieces).count("q") == 2500
    assert pieces[-1].endswith("after")


def test_random_text_always_terminates_within_the_limit() -> None:
    """Fuzz: fences of every shape, long lines, emoji; every piece fits by the platform's measure."""

    def utf16(text: str) -> int:
        return len(text.encode("utf-16-le")) // 2

    rng = random.Random(11)
    alphabet = ["```", "````", "```python", "```" + "z" * 40, "`" * 12, "\n", "\n\n", " ", "word", "x" * 50]
    alphabet += ["~~~", "😀"]
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        limit = rng.choice([32, 33, 64, 200])
        pieces = split_message(text, limit)
        assert all(len(p) <= limit for p in pieces)
        assert len(pieces) <= len(text) + 1
        assert all(utf16(p) <= limit for p in split_to_fit(text, limit, utf16))
