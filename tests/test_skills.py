"""Shared skills (container/skills/): what ships, how they are read, and what --skill accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanohost.skills import check_skill, front_matter, shared_skills
from nanohost.validation import InvalidInput


def test_each_shipped_skill_names_itself_and_says_when_to_use_it() -> None:
    skills = shared_skills()
    assert [s.name for s in skills] == ["schedule-reminders", "summarize-files", "write-report"]
    for skill in skills:
        text = skill.path.read_text()
        fields = front_matter(text)
        assert fields["name"] == skill.name  # Codex matches a skill by its front matter name
        assert 40 <= len(fields["description"]) <= 1024, skill.name
        body = text.split("\n---\n", 1)[1]
        assert body.count("\n## ") >= 2 and len(body) > 1500, f"{skill.name} has too little to say"


def test_front_matter() -> None:
    assert front_matter("---\nname: x\ndescription: a: b 'c'\n---\nbody") == {
        "name": "x",
        "description": "a: b 'c'",
    }
    assert front_matter('---\ndescription: "quoted"\n---\n') == {"description": "quoted"}
    assert front_matter("name: x\n") == {}  # no opening line
    assert front_matter("---\nname: x\n") == {}  # never closed


def test_only_shipped_skills_are_accepted(tmp_path: Path) -> None:
    assert check_skill("write-report") == "write-report"
    with pytest.raises(InvalidInput, match="unknown skill 'pdf'; the shared skills are: schedule-reminders"):
        check_skill("pdf")
    with pytest.raises(InvalidInput, match="path separator"):
        check_skill("../write-report")
    (tmp_path / "notes").mkdir()  # a folder without SKILL.md is not a skill
    with pytest.raises(InvalidInput, match="the shared skills are: none"):
        check_skill("notes", tmp_path)
