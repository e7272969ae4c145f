"""The mock (echo) provider needs nothing from the host beyond the standard mounts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nanohost.providers import Contribution, GroupSpec

if TYPE_CHECKING:
    from nanohost.settings import Settings


class MockContribution:
    """Host side of the deterministic echo agent used for demos and tests."""

    name = "mock"
    summary = "a deterministic echo agent for demos and tests (no model, no key)"
    runner = "agent_runner.mock:build"
    routes: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> MockContribution:
        return cls()

    def prepare(self, group: GroupSpec) -> Contribution:
        return Contribution(mounts=[], runner={})

    def state_dir(self, folder: str) -> Path | None:
        return None
