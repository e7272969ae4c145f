"""Shared skills: how-tos that ship in the agent image, selected per group with ``--skill``.

Each is ``container/skills/<name>/SKILL.md``: a YAML-style front matter block with ``name`` and
``description``, then the instructions. The image carries them at ``/opt/nanohost/skills``
(they are part of its content hash, so an edit means a rebuild), the host mounts the same folder
there read-only, and a group's wake links each selected one into the group's
``.agents/skills/``. ``nanohost skills list`` shows them; ``--skill`` refuses any other name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nanohost.settings import PROJECT_ROOT
from nanohost.validation import InvalidInput, check_name

SKILLS_DIR = PROJECT_ROOT / "container" / "skills"
_FIELD = re.compile(r"^([a-z_-]+):\s*(.*?)\s*$")


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    path: Path


def front_matter(text: str) -> dict[str, str]:
    """The ``key: value`` lines between the leading ``---`` lines (empty when there are none)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            return fields
        if match := _FIELD.match(line):
            value = match.group(2)
            quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'"
            fields[match.group(1)] = value[1:-1] if quoted else value
    return {}  # never closed: not front matter


def shared_skills(root: Path = SKILLS_DIR) -> list[Skill]:
    """The shared skills, by name; a folder without a SKILL.md is not one."""
    if not root.is_dir():
        return []
    skills = []
    for path in sorted(root.glob("*/SKILL.md")):
        name = path.parent.name
        if name.startswith("."):
            continue
        fields = front_matter(path.read_text(encoding="utf-8", errors="replace"))
        skills.append(Skill(name, fields.get("description", ""), path))
    return skills


def check_skill(name: str, root: Path = SKILLS_DIR) -> str:
    """``name`` if it is a shared skill; otherwise a refusal that lists the ones there are."""
    check_name(name, "skill name")
    known = [skill.name for skill in shared_skills(root)]
    if name not in known:
        raise InvalidInput(
            f"unknown skill {name!r}; the shared skills are: {', '.join(known) or 'none'} "
            "(`nanohost skills list`). A group's own skills go in its folder, under skills/<name>/SKILL.md"
        )
    return name
