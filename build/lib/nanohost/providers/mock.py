"""The mock (echo) provider needs nothing from the host beyond the standard mounts."""

from __future__ import annotations

from nanohost.providers import Contribution, GroupSpec


class MockContribution:
    """Host side of the deterministic echo agent used for demos and tests."""

    name = "mock"

    def prepare(self, group: GroupSpec) -> Contribution:
        return Contribution(mounts=[], runner={"provider": "mock"})
