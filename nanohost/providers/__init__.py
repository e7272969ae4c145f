"""Host side of each agent provider: what a group's container needs before it starts.

Providers are registered by name (``nanohost.providers.registry``); this module holds the types
their host sides share.

A provider contribution turns a group's config snapshot into mounts and the provider part of
``runner.json``. It runs at every wake, so config edits apply at the next wake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanohost.validation import check_env


@dataclass(frozen=True)
class Mount:
    """A host path bound into the container."""

    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class GroupSpec:
    """A snapshot of one group's rows, so wake-time code never holds a database session."""

    name: str
    folder: str
    folder_path: Path
    provider: str
    model: str | None = None
    reasoning_effort: str | None = None
    mcp_servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    skills: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The stored env meets the CLI's rule again here, at the wake: a row written by other
        # means is refused (``InvalidInput``: the wake fails, saying what to fix).
        check_env(self.env)


@dataclass(frozen=True)
class Contribution:
    """Mounts to add and the provider fields of runner.json."""

    mounts: list[Mount]
    runner: dict[str, Any]
    notes: list[str] = field(default_factory=list)
