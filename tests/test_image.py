"""What goes into the agent image and the tag that names it (nanohost/containers/image.py)."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from nanohost.containers.image import (
    CONTAINER_DIR,
    build_context,
    content_hash,
    context_files,
    image_has_command,
    parse_step,
)


@pytest.fixture
def container(tmp_path: Path) -> Path:
    """A copy of container/ to change."""
    copy = tmp_path / "container"
    shutil.copytree(CONTAINER_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def fresh_hash(container: Path, version: str = "0.138.0") -> str:
    content_hash.cache_clear()
    return content_hash(version, container)


@pytest.mark.parametrize(
    "change",
    [
        "Dockerfile",
        "agent_runner/main.py",
        "agent_runner/codex/env.py",
        "skills/write-report/SKILL.md",
        "mcp_servers/nanohost_sqlite.py",
    ],
)
def test_any_change_to_what_goes_in_changes_the_hash(container: Path, change: str) -> None:
    before = fresh_hash(container)
    assert fresh_hash(container) == before  # stable
    with (container / change).open("a") as handle:
        handle.write("\n# changed\n")
    assert fresh_hash(container) != before


def test_new_files_modes_and_the_codex_version_change_the_hash(container: Path) -> None:
    before = fresh_hash(container)
    (container / "skills" / "new-skill").mkdir()
    (container / "skills" / "new-skill" / "SKILL.md").write_text("---\nname: new-skill\n---\n")
    with_skill = fresh_hash(container)
    assert with_skill != before
    (container / "mcp_servers" / "nanohost_sqlite.py").chmod(0o755)
    assert fresh_hash(container) != with_skill
    assert fresh_hash(container, "0.139.0") != fresh_hash(container, "0.138.0")


def test_caches_and_bytecode_do_not_count(container: Path) -> None:
    before = fresh_hash(container)
    (container / "agent_runner" / "__pycache__").mkdir(exist_ok=True)
    (container / "agent_runner" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (container / "agent_runner" / "stray.pyc").write_bytes(b"\0")
    assert fresh_hash(container) == before


def test_the_context_is_exactly_the_hashed_files_plus_the_ca(container: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("CA")
    with tarfile.open(fileobj=build_context(ca, container)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {name for name, _ in context_files(container)} | {"extra-ca.crt"}
        assert members["mcp_servers/nanohost-mcp-sqlite"].mode == 0o755  # runs as a command
        assert members["Dockerfile"].mode == 0o644
        extracted = tar.extractfile("extra-ca.crt")
        assert extracted is not None and extracted.read() == b"CA"
    names = {name for name, _ in context_files(container)}
    assert {"Dockerfile", "agent_runner/main.py", "skills/write-report/SKILL.md"} <= names


def test_the_hash_is_computed_once_per_process(container: Path) -> None:
    first = fresh_hash(container)
    (container / "Dockerfile").write_text("changed while running")
    assert content_hash("0.138.0", container) == first  # a running host keeps its tag
    assert fresh_hash(container) != first


@pytest.mark.parametrize(
    ("command", "ok"),
    [
        ("nanohost-mcp-sqlite", True),
        ("/usr/local/bin/nanohost-mcp-sqlite", True),
        ("python3", True),
        ("/opt/venv/bin/python", True),
        ("/workspace/agent/tools/server.sh", True),
        ("npx", False),
        ("node", False),
        ("uv", False),
        ("/usr/bin/node", False),
        ("/workspace/agent/../../etc/x", False),
        ("/workspace/agentx/server", False),
        ("./server.py", False),
    ],
)
def test_which_commands_the_image_has(command: str, ok: bool) -> None:
    assert image_has_command(command) is ok


def test_build_steps_are_parsed_from_the_log() -> None:
    step = parse_step("Step 3/17 : RUN apt-get update  && apt-get install -y x\n")
    assert step is not None and (step.number, step.total) == (3, 17)
    assert step.instruction.startswith("RUN apt-get update")
    assert parse_step(" ---> Using cache\n") is None
    assert parse_step("Step x/y : nonsense") is None


class FakeImage:
    def __init__(self, tags: list[str], labels: dict[str, str], created: str = "2026-01-01") -> None:
        self.tags = tags
        self.attrs = {"Config": {"Labels": labels}, "Created": created}


class FakeContainer:
    def __init__(self, image: str) -> None:
        self.attrs = {"Config": {"Image": image}}


class FakeEngine:
    """The parts of docker-py's client that doctor's image check reads."""

    def __init__(self, images: list[FakeImage], running: list[str]) -> None:
        self._images, self._running = images, running
        self.images, self.containers = self, self  # client.images.get / client.containers.list

    def get(self, tag: str) -> FakeImage:
        from docker.errors import ImageNotFound

        for image in self._images:
            if tag in image.tags:
                return image
        raise ImageNotFound(tag)

    def list(self, name: str | None = None, filters: dict[str, str] | None = None) -> list[Any]:
        if filters is not None:
            return [FakeContainer(image) for image in self._running]
        return [i for i in self._images if any(t.startswith(f"{name}:") for t in i.tags)]


def doctor_image_check(host_env: Path, images: list[FakeImage], running: list[str]) -> tuple[bool, str]:
    from nanohost.doctor import _image
    from nanohost.settings import load_settings

    check = _image(load_settings(), FakeEngine(images, running))
    return check.ok, check.detail


def test_doctor_says_when_the_image_is_older_than_the_code(host_env: Path) -> None:
    from nanohost.containers.image import HASH_LABEL, VERSION_LABEL
    from nanohost.settings import load_settings

    tag = load_settings().image_tag
    current = FakeImage([tag], {VERSION_LABEL: "0.138.0", HASH_LABEL: tag.rsplit("-", 1)[1]}, "2026-02-01")
    old = FakeImage(["nanohost-agent:0.138.0-0123456789ab"], {}, "2026-01-01")

    ok, detail = doctor_image_check(host_env, [], [])
    assert not ok and f"{tag} missing; run `nanohost image build`" in detail
    ok, detail = doctor_image_check(host_env, [old], [])
    assert not ok and "nanohost-agent:0.138.0-0123456789ab is older than this code" in detail
    assert f"wants {tag}" in detail
    ok, detail = doctor_image_check(host_env, [old, current], ["nanohost-agent:0.138.0-0123456789ab"])
    assert not ok and "running containers still use nanohost-agent:0.138.0-0123456789ab" in detail
    ok, detail = doctor_image_check(host_env, [old, current], [tag, "nanohost-test-agent:0.1.0-x"])
    assert ok and detail == f"{tag} (Codex 0.138.0, built from this code)"
