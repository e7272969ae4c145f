"""`make run` and `make test`: each installs what it needs and no more, and `make run` ends with
one short block (URL, password, next commands) before it serves.

scripts/run.sh runs here for real (setup, `image build --if-missing` on the test image, the
block) with a ``nanohost`` whose ``serve`` only says it was called.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nanohost.settings import PROJECT_ROOT
from tests.support.host import TEST_IMAGE_NAME

NANOHOST = Path(sys.executable).with_name("nanohost")


def dry_run(target: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("NO MAKE: apt-get install make")
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }  # under `make test`
    done = subprocess.run(
        [make, "--no-print-directory", "-n", target],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return done.stdout


def test_make_run_installs_only_what_running_needs() -> None:
    commands = dry_run("run")
    assert "scripts/install-run-deps.sh" in commands and "scripts/run.sh" in commands
    assert "install-test-deps" not in commands and "pytest" not in commands
    run_deps = (PROJECT_ROOT / "scripts" / "install-run-deps.sh").read_text()
    for test_tool in ("chromium", "npm", "nodejs"):
        assert test_tool not in run_deps


def test_make_test_installs_the_test_tools_and_runs_pytest() -> None:
    commands = dry_run("test")
    assert "scripts/install-test-deps.sh" in commands
    assert commands.strip().endswith("-m pytest")
    test_deps = (PROJECT_ROOT / "scripts" / "install-test-deps.sh").read_text()
    assert "chromium" in test_deps and "npm" in test_deps
    assert "bash scripts/install-run-deps.sh" in test_deps  # the engine and base image too


def fake_bin(tmp_path: Path) -> Path:
    """A bin dir whose `nanohost` is the real one, except `serve` (and a build told to fail)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nanohost"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = serve ]; then echo SERVE-CALLED; exit 0; fi\n'
        'if [ "$1" = image ] && [ -n "$FAIL_BUILD" ]; then echo "image build failed: boom" >&2; exit 1; fi\n'
        f'exec {NANOHOST} "$@"\n'
    )
    script.chmod(0o755)
    python = bin_dir / "python"  # a script, not a link: a link would leave the virtualenv behind
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return bin_dir


def run_script(bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "run.sh")],
        env={**os.environ, "BIN": str(bin_dir), "NANOHOST_IMAGE_NAME": TEST_IMAGE_NAME, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.docker
def test_run_script_ends_with_one_block_then_serves(host_env: Path, agent_image: str) -> None:
    bin_dir = fake_bin(host_env)
    first = run_script(bin_dir)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert "a few minutes" in " ".join(lines[:2])  # said up front
    assert f"{agent_image} is present, built from this code" in first.stdout
    block = first.stdout.split("nanohost is ready\n", 1)[1]
    assert block.splitlines()[0] == "  web chat  http://127.0.0.1:8080/"
    password = re.search(r"^  password  (\S+)  \(shown once", block, re.MULTILINE)
    assert password and len(password.group(1)) >= 12
    assert re.search(rf"^  next      {re.escape(str(bin_dir))}/nanohost doctor   # ", block, re.MULTILINE)
    assert "groups config main --provider codex" in block  # main is a mock group without a key
    assert lines[-1] == "SERVE-CALLED" and lines[-2] == "starting the host (Ctrl-C stops it)"

    again = run_script(bin_dir)
    assert again.returncode == 0 and password.group(1) not in again.stdout  # shown once
    assert "the one shown at the first run" in again.stdout


def test_a_failed_build_still_shows_the_password(host_env: Path, docker_client: Any) -> None:
    result = run_script(fake_bin(host_env), FAIL_BUILD="1")
    assert result.returncode == 1
    assert "image build failed: boom" in result.stderr
    assert re.search(r"^web chat password: \S+  \(shown once", result.stdout, re.MULTILINE)
    assert "SERVE-CALLED" not in result.stdout and "nanohost is ready" not in result.stdout
