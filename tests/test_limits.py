"""Container limits are checked when given: fixed bounds, then what the engine has (injected here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nanohost.limits import (
    SETTINGS_NAMES,
    EngineResources,
    check_limits,
    engine_resources,
    host_resources,
    show_memory,
)
from nanohost.validation import InvalidInput

GIB = 1024**3
SMALL_ENGINE = EngineResources(cpus=2, memory=4 * GIB)


def small_engine() -> EngineResources:
    return SMALL_ENGINE


def never_asked() -> EngineResources:
    raise AssertionError("the engine was asked although the fixed checks refuse (or nothing to compare)")


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"cpus": 64.0}, "--cpus 64 is more than the 2 CPUs the Docker engine has"),
        ({"cpus": 2.5}, "--cpus 2.5 is more than the 2 CPUs the Docker engine has"),
        ({"memory": "999999g"}, "--memory 999999g is more than the 4g of memory the Docker engine has"),
        ({"memory": "4097m"}, "--memory 4097m is more than the 4g of memory the Docker engine has"),
    ],
)
def test_more_than_the_engine_has_is_refused_with_its_figure(given: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_limits(**given, probe=small_engine)
    assert str(caught.value) == says


def test_up_to_what_the_engine_has_passes() -> None:
    check_limits(memory="4g", cpus=2.0, pids=65536, probe=small_engine)
    check_limits(memory="6m", cpus=0.01, pids=16, probe=small_engine)


def test_the_settings_are_named_as_variables_and_the_fallback_as_this_host() -> None:
    host = EngineResources(cpus=1, memory=512 * 1024**2, source="this host")
    with pytest.raises(InvalidInput) as caught:
        check_limits(cpus=2.0, probe=lambda: host, names=SETTINGS_NAMES)
    assert str(caught.value) == "NANOHOST_CONTAINER_CPUS=2 is more than the 1 CPU this host has"
    with pytest.raises(InvalidInput) as caught:
        check_limits(memory="1g", probe=lambda: host, names=SETTINGS_NAMES)
    assert str(caught.value) == "NANOHOST_CONTAINER_MEMORY=1g is more than the 512m of memory this host has"


def test_unknown_figures_are_not_compared() -> None:
    check_limits(memory="999g", cpus=200.0, probe=lambda: EngineResources(cpus=None, memory=None))


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"cpus": 0.0}, "--cpus 0 must be between 0.01 and 256"),
        ({"cpus": -1.0}, "--cpus -1 must be between 0.01 and 256"),
        ({"cpus": 0.001}, "--cpus 0.001 must be between 0.01 and 256"),
        ({"cpus": float("nan")}, "--cpus nan must be between 0.01 and 256"),
        ({"cpus": float("inf")}, "--cpus inf must be between 0.01 and 256"),
        ({"cpus": 257.0}, "--cpus 257 must be between 0.01 and 256"),
        ({"pids": 0}, "--pids 0 must be between 16 and 65536"),
        ({"pids": -1}, "--pids -1 must be between 16 and 65536"),
        ({"pids": 15}, "--pids 15 must be between 16 and 65536"),
        ({"pids": 10**9}, "--pids 1000000000 must be between 16 and 65536"),
        ({"memory": "lots"}, "--memory lots: 'lots' is not a memory size"),
        ({"memory": "-1g"}, "--memory -1g: '-1g' is not a memory size"),
        ({"memory": "1m"}, "--memory 1m: '1m' is below Docker's minimum of 6m"),
    ],
)
def test_fixed_bounds_refuse_without_asking_the_engine(given: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_limits(**given, probe=never_asked)
    assert str(caught.value).startswith(says)


def test_the_engine_is_asked_only_for_memory_or_cpus() -> None:
    check_limits(pids=256, probe=never_asked)
    check_limits(probe=never_asked)


@pytest.mark.parametrize(("size", "shown"), [(4 * GIB, "4g"), (8 * GIB - 1, "7.9g"), (512 * 1024**2, "512m")])
def test_memory_figures_are_rounded_down(size: int, shown: str) -> None:
    assert show_memory(size) == shown


class FakeClient:
    def __init__(self, info: dict[str, Any] | Exception) -> None:
        self._info = info

    def info(self) -> dict[str, Any]:
        if isinstance(self._info, Exception):
            raise self._info
        return self._info

    def close(self) -> None:
        raise AssertionError("a client the caller passed is the caller's to close")


def test_the_engine_figures_come_from_docker_info() -> None:
    figures = engine_resources(FakeClient({"NCPU": 3, "MemTotal": 5 * GIB, "Name": "engine"}))
    assert figures == EngineResources(cpus=3, memory=5 * GIB, source="the Docker engine")


@pytest.mark.parametrize("info", [ConnectionError("engine down"), {"NCPU": 0, "MemTotal": 0}, {"Name": "x"}])
def test_without_engine_figures_the_hosts_own_are_used(info: dict[str, Any] | Exception) -> None:
    assert engine_resources(FakeClient(info)) == host_resources()


def test_an_engine_that_is_not_there_falls_back_to_this_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no.sock'}")
    figures = engine_resources()
    assert figures.source == "this host"
    assert figures.cpus == os.cpu_count()


def test_host_figures_read_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemFree:  1000 kB\nMemTotal:       16314312 kB\nSwapTotal: 0 kB\n")
    assert host_resources(meminfo) == EngineResources(
        cpus=os.cpu_count(), memory=16314312 * 1024, source="this host"
    )
    assert host_resources(tmp_path / "missing").memory is None


def test_the_real_host_figures_are_read() -> None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():  # pragma: no cover - not Linux
        pytest.skip("no /proc/meminfo on this system")
    total = next(
        int(line.split()[1]) for line in meminfo.read_text().splitlines() if line.startswith("MemTotal:")
    )
    figures = host_resources()
    assert figures.memory == total * 1024 and figures.memory > 0
    assert figures.cpus is not None and figures.cpus >= 1
