"""The agent image's contract, read from container/Dockerfile: a drifting pin fails here first."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = (Path(__file__).resolve().parents[1] / "container" / "Dockerfile").read_text()


def test_codex_is_pinned_and_installed_by_that_pin() -> None:
    assert re.findall(r"^ARG CODEX_VERSION=(.+)$", DOCKERFILE, re.MULTILINE) == ["0.138.0", "0.138.0"]
    install = [line for line in DOCKERFILE.splitlines() if "@openai/codex" in line and "npm install" in line]
    assert install == ["RUN npm install -g --no-audit --no-fund @openai/codex@${CODEX_VERSION}"]


def test_base_user_workdir_and_entrypoint() -> None:
    assert DOCKERFILE.count("FROM debian:bookworm-slim") == 2
    assert "useradd --uid 1000 --create-home --home-dir /home/agent" in DOCKERFILE
    assert re.search(r"^USER agent$", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^WORKDIR /workspace/agent$", DOCKERFILE, re.MULTILINE)
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "agent_runner"]' in DOCKERFILE
    assert "LABEL org.nanohost.codex-version=${CODEX_VERSION}" in DOCKERFILE


def test_settings_default_matches_the_pin() -> None:
    from nanohost.settings import Settings

    assert Settings.model_fields["codex_version"].default == "0.138.0"


def test_everything_hashed_is_copied_and_the_hash_busts_no_cached_layer() -> None:
    from nanohost.containers.image import CONTEXT_DIRS

    for folder in CONTEXT_DIRS:
        assert re.search(rf"^COPY {folder}/ /opt/nanohost/{folder}/$", DOCKERFILE, re.MULTILINE), folder
    lines = DOCKERFILE.splitlines()
    arg = lines.index("ARG CONTENT_HASH=unknown")
    assert lines[arg + 1] == "LABEL org.nanohost.content-hash=${CONTENT_HASH}"
    assert not [line for line in lines[arg:] if line.startswith(("RUN", "COPY"))]  # nothing after it
