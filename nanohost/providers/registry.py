"""The provider registry: every agent provider nanohost can run, by name, from entry points.

A provider is one pair under one name:

- its **host side**, a class registered in the ``nanohost.providers`` entry-point group (this
  project's own in ``pyproject.toml``; a third-party package adds one in its own). It says what
  a wake needs (``prepare``: instructions file, mounts, per-group state, the provider part of
  ``runner.json``), where its per-group state lives, and which model API calls the gateway may
  forward for it (``routes``; empty: the agent makes none and gets no gateway port);
- its **runner side**, named by the host side's ``runner`` as ``"module:callable"``. The runner
  inside the container imports it (the module must be importable in the agent image: a package
  under ``/opt/nanohost`` or installed into the image's venv) and calls it with the wake's
  ``RunnerConfig``, ``Paths`` and the model base URL to get an ``agent_runner.provider.Provider``.

Everything that needs provider names (the CLI's ``--provider``, validation of a stored row at
wake, ``doctor``, the README's table) asks this module; no other list of names exists. Loading
is lazy and cached: the names come from the entry points' metadata without importing anything;
a class is imported only when it is asked for.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from nanohost.gateway import API_PREFIX, Route
from nanohost.providers import Contribution, GroupSpec
from nanohost.validation import InvalidInput

if TYPE_CHECKING:
    from nanohost.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nanohost.providers"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
"""A provider name: it is stored in a 32-character column and written into runner.json."""
RUNNER_ENTRY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
"""The runner side, ``package.module:callable``; the runner checks the same shape."""


class HostProvider(Protocol):
    """The host side of a provider. Built once per host process with ``from_settings``."""

    name: ClassVar[str]
    """The registered name (must equal the entry point's name)."""
    summary: ClassVar[str]
    """One line for ``--provider`` help, ``doctor`` and the docs."""
    runner: ClassVar[str]
    """``"module:callable"`` of the runner side, importable inside the agent image."""
    routes: ClassVar[frozenset[Route]]
    """The model API calls its agent makes through the gateway; empty: none (no model key needed)."""
    # optional: ``auth_modes: ClassVar[tuple[str, ...]]``, how its model calls may be paid for
    # (default ``("api-key",)``; codex also takes ``"chatgpt"``, the host's sign-in, nanohost/auth)

    @classmethod
    def from_settings(cls, settings: Settings) -> HostProvider: ...

    def prepare(self, group: GroupSpec) -> Contribution:
        """What this wake adds: mounts and the provider part of runner.json (``provider`` and
        ``runner`` are set by the host). Runs at every wake, so config edits apply at the next."""
        ...

    def state_dir(self, folder: str) -> Path | None:
        """The group's per-provider state on the host (threads, sessions), removed with the group."""
        ...


class UnknownProvider(InvalidInput):
    """A provider name no installed package registers."""


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


@functools.cache
def names() -> tuple[str, ...]:
    """Every registered provider name, sorted (from metadata: nothing is imported)."""
    found = tuple(dict.fromkeys(ep.name for ep in _entry_points() if NAME.match(ep.name)))
    if not found:
        log.error(
            "no agent provider is registered (entry-point group %r): is nanohost installed? "
            "Run `pip install -e .` again after pulling a change to pyproject.toml",
            ENTRY_POINT_GROUP,
        )
    return found


def _hint() -> str:
    known = ", ".join(names()) or "none (reinstall nanohost: `pip install -e .`)"
    return f"registered providers: {known}"


@functools.cache
def get(name: str) -> type[HostProvider]:
    """The host-side class registered as ``name``; ``UnknownProvider`` (an ``InvalidInput``, so a
    wake that meets it fails saying what to fix) when none is, or it cannot be loaded."""
    matches = [ep for ep in _entry_points() if ep.name == name]
    if not matches or not NAME.match(name):
        raise UnknownProvider(f"unknown provider {name!r}; {_hint()}")
    if len({ep.value for ep in matches}) > 1:
        raise UnknownProvider(
            f"provider {name!r} is registered twice ({', '.join(ep.value for ep in matches)}); "
            "uninstall one of the packages"
        )
    entry = matches[0]
    try:
        loaded = entry.load()
    except Exception as exc:
        raise UnknownProvider(f"provider {name!r} ({entry.value}) cannot be loaded: {exc}") from exc
    problem = _shape_problem(name, loaded)
    if problem:
        raise UnknownProvider(f"provider {name!r} ({entry.value}) is not a nanohost provider: {problem}")
    provider: type[HostProvider] = loaded
    return provider


def _shape_problem(name: str, loaded: object) -> str | None:
    if not isinstance(loaded, type):
        return "the entry point must name a class"
    if getattr(loaded, "name", None) != name:
        return f"its name is {getattr(loaded, 'name', None)!r}, registered as {name!r}"
    runner = getattr(loaded, "runner", None)
    if not isinstance(runner, str) or not RUNNER_ENTRY.match(runner):
        return f"runner must be 'module:callable', not {runner!r}"
    routes = getattr(loaded, "routes", None)
    if not isinstance(routes, frozenset) or not all(
        isinstance(r, tuple) and len(r) == 2 and all(isinstance(p, str) for p in r) for r in routes
    ):
        return "routes must be a frozenset of (method, path)"
    if any(not path.startswith(API_PREFIX + "/") for _, path in routes):
        return f"every route's path must start with {API_PREFIX}/"
    if not isinstance(getattr(loaded, "summary", None), str):
        return "summary must be a string"
    for method in ("from_settings", "prepare", "state_dir"):
        if not callable(getattr(loaded, method, None)):
            return f"it has no {method}()"
    return None


def check_provider(value: str) -> str:
    """A registered provider name, case-insensitive (what the CLI and the API accept)."""
    name = value.strip().lower()
    get(name)
    return name


def uses_model(name: str) -> bool:
    """Whether the provider's agent calls the model through the gateway (so needs the host's key)."""
    return bool(get(name).routes)


def help_text() -> str:
    """The ``--provider`` help: the registered names."""
    return "One of: " + (", ".join(names()) or "none registered") + " (see `nanohost doctor`)."


class Providers(Mapping[str, "HostProvider"]):
    """The host sides built for one host process, by name; a name is built when first asked for,
    so an unloadable third-party provider fails only its own groups' wakes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[str, HostProvider] = {}

    def __getitem__(self, name: str) -> HostProvider:
        if name not in self._built:
            self._built[name] = get(name).from_settings(self.settings)
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(names())

    def state_dirs(self, folder: str) -> list[Path]:
        """Every provider's state dir for ``folder`` (a group may have switched providers)."""
        return list(self.state_dirs_by_name(folder).values())

    def state_dirs_by_name(self, folder: str) -> dict[str, Path]:
        """Each provider's state dir for ``folder``, by provider name (snapshots archive each under
        its provider's name)."""
        found: dict[str, Path] = {}
        for name in names():
            try:
                path = self[name].state_dir(folder)
            except InvalidInput as exc:
                log.warning("provider %s: %s", name, exc)
                continue
            if path is not None:
                found[name] = path
        return found
