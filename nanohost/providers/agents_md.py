"""Compose a group's AGENTS.md at every wake.

Codex reads at most 32 KiB of project doc. Composition must never throw: a throw here would
turn into a respawn loop that silently darkens the group. So it degrades instead: the core
(header, runtime contract, memory, skills) always stays; optional sections (runtime modules,
per-MCP-server instructions) are dropped largest first until the doc fits, and what was dropped
is named in the doc itself and logged at error level.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nanohost.safe_fs import read_beneath

log = logging.getLogger(__name__)

LIMIT_BYTES = 32 * 1024
WARN_BYTES = 28 * 1024
INDEX_CAP_BYTES = 8 * 1024
"""The inlined memory index is core, so it is capped to keep the core itself under the limit."""
CONTRACT_CAP_BYTES = 12 * 1024

HEADER = (
    "<!-- Composed by nanohost at every wake; do not edit (edits are replaced). Change memory in\n"
    "memory/index.md, the group's settings with `nanohost groups config`, or the shared contract in\n"
    "nanohost/providers/contract.md. -->\n"
)


@dataclass(frozen=True)
class Section:
    """One part of the doc. Optional sections may be dropped to fit; core ones never are."""

    title: str
    body: str
    optional: bool = False

    def render(self) -> str:
        return f"## {self.title}\n\n{self.body.strip()}\n"


@dataclass(frozen=True)
class Composed:
    """The doc and what composing it had to leave out."""

    text: str
    omitted: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.text.encode())


def _truncate(text: str, cap: int, what: str) -> str:
    data = text.encode()
    if len(data) <= cap:
        return text
    kept = data[:cap].decode(errors="ignore")
    return f"{kept}\n\n[… {what} truncated at {cap} bytes …]\n"


def _read_agent_file(folder: Path, relative: str, cap: int) -> str:
    """A file from the agent's folder, read without following a link (the agent could point one
    at a host file to have it composed into its instructions), at most ``cap`` bytes plus one."""
    data = read_beneath(folder, relative, cap)
    return "" if data is None else data.decode("utf-8", errors="replace")


def skill_names(folder: Path) -> list[str]:
    """Agent-authored skills: ``skills/<name>/SKILL.md`` in the group folder."""
    root = folder / "skills"
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/SKILL.md") if not p.parent.name.startswith("."))


def core_sections(contract: str, folder: Path, shared_skills: list[str]) -> list[Section]:
    """Header-adjacent sections that are always kept."""
    index = _read_agent_file(folder, "memory/index.md", INDEX_CAP_BYTES)
    index = _truncate(index, INDEX_CAP_BYTES, "memory index")
    memory = (
        "Your long-term memory lives in `memory/`. How it works: `memory/system/definition.md`.\n"
        "The index `memory/index.md` is inlined here as it was at this wake:\n\n"
        f"<memory-index>\n{index.strip() or '(empty)'}\n</memory-index>"
    )
    own = skill_names(folder)
    skills = "\n".join(
        [
            "Shared skills selected for this group (under `.agents/skills/`): "
            + (", ".join(f"`{s}`" for s in shared_skills) or "none"),
            "Skills you wrote yourself (under `skills/<name>/SKILL.md`): "
            + (", ".join(f"`{s}`" for s in own) or "none yet"),
        ]
    )
    return [
        Section("Runtime contract", _truncate(contract, CONTRACT_CAP_BYTES, "runtime contract")),
        Section("Memory", memory),
        Section("Skills", skills),
    ]


def compose(core: list[Section], optional: list[Section], *, group: str = "") -> Composed:
    """Join the sections; drop optional ones, largest first, until the doc fits the limit."""
    kept = list(optional)
    omitted: list[str] = []

    def render() -> str:
        parts = [HEADER, *(s.render() for s in core), *(s.render() for s in kept)]
        if omitted:
            names = "\n".join(f"- {name}" for name in omitted)
            parts.append(
                Section(
                    "Omitted for size",
                    f"These sections did not fit Codex's {LIMIT_BYTES // 1024} KiB limit and were left out:\n"
                    f"{names}",
                ).render()
            )
        return "\n".join(parts)

    text = render()
    while len(text.encode()) > LIMIT_BYTES and kept:
        largest = max(kept, key=lambda s: len(s.render().encode()))
        kept.remove(largest)
        omitted.append(largest.title)
        text = render()
    composed = Composed(text, tuple(omitted))
    if omitted:
        log.error("AGENTS.md for group %s: omitted for size: %s", group, ", ".join(omitted))
    if composed.size > LIMIT_BYTES:  # only possible if the capped core alone is too big
        log.error("AGENTS.md for group %s is %d bytes even without optional sections", group, composed.size)
    elif composed.size >= WARN_BYTES:
        log.warning(
            "AGENTS.md for group %s is %d bytes, near the %d limit", group, composed.size, LIMIT_BYTES
        )
    return composed


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
