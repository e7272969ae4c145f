"""The pinned Codex CLI for tests: NANOHOST_CODEX_BIN, else installed from npm into .cache/codex.

The version is the Dockerfile's ``ARG CODEX_VERSION`` so tests and image never disagree.
npm is a declared test dependency: without it these tests fail with a clear message.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "container" / "Dockerfile"


def pinned_version() -> str:
    match = re.search(r"^ARG CODEX_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "container/Dockerfile lost its ARG CODEX_VERSION pin"
    return match.group(1)


def ensure_codex() -> str:
    version = pinned_version()
    explicit = os.environ.get("NANOHOST_CODEX_BIN")
    prefix = ROOT / ".cache" / "codex"
    binary = Path(explicit) if explicit else prefix / "node_modules" / ".bin" / "codex"
    if not binary.exists() and not explicit:
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is required to install the pinned Codex CLI (apt-get install npm)")
        prefix.mkdir(parents=True, exist_ok=True)
        with open(prefix / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not binary.exists():
                result = subprocess.run(
                    [
                        npm,
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--prefix",
                        str(prefix),
                        f"@openai/codex@{version}",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                if result.returncode != 0:
                    pytest.fail(f"npm could not install @openai/codex@{version}: {result.stderr[-2000:]}")
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and version in out.stdout, (
        f"{binary} is not Codex {version}: {out.stdout}{out.stderr}"
    )
    return str(binary)


@pytest.fixture(scope="session")
def codex_bin() -> str:
    return ensure_codex()
