"""The group's workspace scaffold and skill links, made at boot and never overwriting anything."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

INDEX = "# Memory index\n\nOne line per entry, each pointing to a file under memory/.\n\n(No entries yet.)\n"
DEFINITION = (
    "# How memory works here\n\n- memory/index.md is the table of contents, inlined into your instructions.\n"
    "- Details go in topic files next to it, one index line each.\n"
)
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def scaffold(workspace: Path) -> None:
    """Create the memory tree, conversations/ and skills/ where missing."""
    for folder in ("memory/system", "conversations", "skills"):
        (workspace / folder).mkdir(parents=True, exist_ok=True)
    for path, text in (
        (workspace / "memory/index.md", INDEX),
        (workspace / "memory/system/definition.md", DEFINITION),
    ):
        if not path.exists():
            try:
                with path.open("x", encoding="utf-8") as handle:  # "x": never clobber a racing writer
                    handle.write(text)
            except FileExistsError:
                pass


def link_skills(workspace: Path, codex_home: Path) -> list[str]:
    """Link each ``skills/<name>/SKILL.md`` of the workspace into ``$CODEX_HOME/skills/<name>``.

    Only links pointing into the workspace are ours to replace or remove; other entries stay.
    """
    source = workspace / "skills"
    target = codex_home / "skills"
    target.mkdir(parents=True, exist_ok=True)
    wanted = {
        p.parent.name: p.parent
        for p in source.glob("*/SKILL.md")
        if _SAFE.match(p.parent.name) and p.parent.resolve().parent == source.resolve()
    }
    for entry in target.iterdir():
        if entry.is_symlink() and os.readlink(entry).startswith(str(source)) and entry.name not in wanted:
            entry.unlink()
    for name, folder in sorted(wanted.items()):
        link = target / name
        if link.is_symlink() and os.readlink(link) != str(folder):
            link.unlink()
        if not link.exists() and not link.is_symlink():
            link.symlink_to(folder)
    return sorted(wanted)
