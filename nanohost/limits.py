"""Container limits (memory, CPUs, processes): one check for a group's config and the host defaults.

A limit the engine cannot grant used to be found only when a group woke. ``check_limits`` refuses
it when it is given: always against fixed bounds, and, with a probe, against what the Docker
engine has (``engine_resources``: ``docker info``'s NCPU and MemTotal, or this host's own figures
when the engine does not answer). ``nanohost groups config`` and ``nanohost serve`` both use it.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanohost.validation import InvalidInput

log = logging.getLogger(__name__)

_MEMORY_RE = re.compile(r"^(?P<num>\d+(?:\.\d+)?)(?P<unit>[bkmg]?)$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_MEMORY_BYTES = 6 * 1024**2
"""Docker refuses a memory limit under 6 MiB."""
MIN_CPUS = 0.01
"""Docker refuses fewer CPUs than this."""
MAX_CPUS = 256.0
MIN_PIDS = 16
"""Fewer processes than this and the runner, Codex and a shell cannot all start."""
MAX_PIDS = 65536
"""A process limit at all; Docker takes 0 or -1 as "unlimited", which is never meant here."""

CLI_NAMES = {"memory": "--memory {}", "cpus": "--cpus {}", "pids": "--pids {}"}
SETTINGS_NAMES = {
    "memory": "NANOHOST_CONTAINER_MEMORY={}",
    "cpus": "NANOHOST_CONTAINER_CPUS={}",
    "pids": "NANOHOST_CONTAINER_PIDS={}",
}
"""How ``check_limits`` names a value in its messages: as the CLI option or the setting."""


def parse_size(value: str) -> int:
    """Parse a Docker-style size (``512m``, ``2g``, ``1.5g``) into bytes.

    Raises ``ValueError`` with a message a person can act on.
    """
    match = _MEMORY_RE.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a memory size; use a number with k, m or g, e.g. 512m or 2g")
    return int(float(match["num"]) * _MEMORY_UNITS[match["unit"].lower()])


def parse_memory(value: str) -> int:
    """A memory limit (``parse_size``), at least Docker's minimum."""
    size = parse_size(value)
    if size < MIN_MEMORY_BYTES:
        raise ValueError(f"{value!r} is below Docker's minimum of 6m")
    return size


def show_memory(size: int) -> str:
    """Bytes as Docker-style size, rounded down (so "more than 7.7g" never hides a 7.8g request)."""
    if size >= 1024**3:
        return f"{math.floor(size / 1024**3 * 10) / 10:g}g"
    return f"{size // 1024**2}m"


@dataclass(frozen=True)
class EngineResources:
    """What containers can get at most; ``None`` where the figure is unknown."""

    cpus: int | None
    memory: int | None
    source: str = "the Docker engine"
    """Who has these figures, as the messages say it: "the Docker engine" or "this host"."""


def host_resources(meminfo: Path = Path("/proc/meminfo")) -> EngineResources:
    """This host's CPU count and total memory (``MemTotal`` in ``meminfo``)."""
    memory: int | None = None
    try:
        for line in meminfo.read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "MemTotal":
                number, _, unit = rest.strip().partition(" ")
                memory = int(number) * (1024 if unit.strip().lower() == "kb" else 1)
                break
    except (OSError, ValueError):
        memory = None
    return EngineResources(cpus=os.cpu_count(), memory=memory, source="this host")


def engine_resources(client: Any | None = None) -> EngineResources:
    """NCPU and MemTotal from the Docker engine's ``info``; this host's figures when it does not answer."""
    own = client is None
    try:
        if client is None:
            import docker

            host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
                raise FileNotFoundError(host)  # docker-py leaks a socket when it cannot connect
            client = docker.from_env(timeout=5)
        info = client.info()
        cpus, memory = int(info["NCPU"]), int(info["MemTotal"])
        if cpus > 0 and memory > 0:
            return EngineResources(cpus=cpus, memory=memory)
    except Exception as exc:
        log.debug("Docker engine figures unavailable (%s); using this host's", exc)
    finally:
        if own and client is not None:
            client.close()
    return host_resources()


def check_limits(
    *,
    memory: str | None = None,
    cpus: float | None = None,
    pids: int | None = None,
    probe: Callable[[], EngineResources] | None = None,
    names: Mapping[str, str] = CLI_NAMES,
) -> None:
    """Refuse limits that are malformed, out of bounds, or (with ``probe``) more than the engine has.

    ``None`` means "not given". ``probe`` is called only when memory or CPUs passed the fixed
    checks, so a typo is refused without asking the engine. ``names`` says how the messages name
    each value (``CLI_NAMES`` or ``SETTINGS_NAMES``).
    """
    size: int | None = None
    if memory is not None:
        try:
            size = parse_memory(memory)
        except ValueError as exc:
            raise InvalidInput(f"{names['memory'].format(memory)}: {exc}") from None
    if cpus is not None and not MIN_CPUS <= cpus <= MAX_CPUS:  # also refuses nan
        shown = names["cpus"].format(f"{cpus:g}")
        raise InvalidInput(f"{shown} must be between {MIN_CPUS:g} and {MAX_CPUS:g}")
    if pids is not None and not MIN_PIDS <= pids <= MAX_PIDS:
        raise InvalidInput(f"{names['pids'].format(pids)} must be between {MIN_PIDS} and {MAX_PIDS}")
    if probe is None or (size is None and cpus is None):
        return
    have = probe()
    if size is not None and have.memory is not None and size > have.memory:
        raise InvalidInput(
            f"{names['memory'].format(memory)} is more than the {show_memory(have.memory)} of memory "
            f"{have.source} has"
        )
    if cpus is not None and have.cpus is not None and cpus > have.cpus:
        plural = "CPU" if have.cpus == 1 else "CPUs"
        raise InvalidInput(
            f"{names['cpus'].format(f'{cpus:g}')} is more than the {have.cpus} {plural} {have.source} has"
        )
