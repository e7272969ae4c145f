"""The pinned OpenCode binary for tests: NANOHOST_OPENCODE_BIN, else installed from npm into
.cache/opencode. The version is the Dockerfile's ``ARG OPENCODE_VERSION``, so tests and image
never disagree. The npm package ``opencode-ai`` carries the binary in a per-platform package
(``opencode-linux-x64`` …); the binary itself is used, as in the image (no Node at run time)."""

from __future__ import annotations

import fcntl
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "container" / "Dockerfile"


def pinned_version() -> str:
    match = re.search(r"^ARG OPENCODE_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "container/Dockerfile lost its ARG OPENCODE_VERSION pin"
    return match.group(1)


def _platform_binary(prefix: Path) -> Path:
    arch = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    return prefix / "node_modules" / f"opencode-linux-{arch}" / "bin" / "opencode"


def ensure_opencode() -> str:
    version = pinned_version()
    explicit = os.environ.get("NANOHOST_OPENCODE_BIN")
    prefix = ROOT / ".cache" / "opencode"
    binary = Path(explicit) if explicit else _platform_binary(prefix)
    installed = prefix / "node_modules" / "opencode-ai" / "package.json"
    if not explicit and (not binary.exists() or f'"version": "{version}"' not in _read(installed)):
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is required to install the pinned OpenCode (apt-get install npm)")
        prefix.mkdir(parents=True, exist_ok=True)
        with open(prefix / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            result = subprocess.run(
                [
                    npm,
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(prefix),
                    f"opencode-ai@{version}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if result.returncode != 0:
                pytest.fail(f"npm could not install opencode-ai@{version}: {result.stderr[-2000:]}")
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and version in out.stdout, f"{binary} is not OpenCode {version}: {out}"
    return str(binary)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.fixture(scope="session")
def opencode_bin() -> str:
    return ensure_opencode()
