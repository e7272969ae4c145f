"""The agent image: what goes into it, its tag, the commands it provides, and building it.

The build context is assembled in memory from ``context_files`` (Dockerfile, the runner package,
the shared skills, the bundled MCP servers, and an optional extra CA bundle) so a checkout's
virtualenv and caches never travel to the engine. Builds use host networking: the engine may
have no bridge at all (containers run with no network).

The tag carries a hash of that content and the Codex version (``content_hash``), so a changed
runner, skill or Dockerfile means a new tag: ``image build --if-missing`` rebuilds, the host
never runs an image older than its code, and ``nanohost doctor`` says when the image is behind.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from nanohost.settings import PROJECT_ROOT

CONTAINER_DIR = PROJECT_ROOT / "container"
VERSION_LABEL = "org.nanohost.codex-version"
HASH_LABEL = "org.nanohost.content-hash"
HASH_LENGTH = 12
CONTEXT_DIRS = ("agent_runner", "skills", "mcp_servers")
"""Folders of ``container/`` that go into the image (each copied by the Dockerfile)."""

IMAGE_COMMANDS = {
    "nanohost-mcp-sqlite": "/usr/local/bin/nanohost-mcp-sqlite",
    "python3": "/usr/bin/python3",
    "bash": "/usr/bin/bash",
    "sh": "/usr/bin/sh",
}
"""Programs on the image's PATH an MCP server can be started with (``--mcp-add … --command``),
by name and where the image has them. Checked against the built image by
tests/integration/test_image_contents.py. To offer another, install it in container/Dockerfile
and add it here."""
IMAGE_PATHS = frozenset({*IMAGE_COMMANDS.values(), "/opt/venv/bin/python"})
"""Absolute paths in the image that may be a command too (/opt/venv/bin/python has the mcp SDK)."""
WORKSPACE_PREFIX = "/workspace/agent/"
"""A program in the group's own folder (mounted there) may be a command as well."""


class ImageBuildError(RuntimeError):
    """The build failed; the message names the step and the engine's error."""


def image_has_command(command: str) -> bool:
    """Whether ``command`` names a program the container can start: one of ``IMAGE_COMMANDS``, an
    absolute path of one (or of ``IMAGE_PATHS``), or a path inside the group's folder."""
    if command in IMAGE_COMMANDS or command in IMAGE_PATHS:
        return True
    normal = os.path.normpath(command)
    return command.startswith(WORKSPACE_PREFIX) and normal.startswith(WORKSPACE_PREFIX)


def context_files(container_dir: Path = CONTAINER_DIR) -> list[tuple[str, Path]]:
    """Each file of the build context (but the CA bundle) as (name in the context, path), sorted."""
    files: list[tuple[str, Path]] = []
    dockerfile = container_dir / "Dockerfile"
    if dockerfile.is_file():
        files.append(("Dockerfile", dockerfile))
    for folder in CONTEXT_DIRS:
        root = container_dir / folder
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo") or not path.is_file():
                continue
            files.append((f"{folder}/{path.relative_to(root).as_posix()}", path))
    return files


def _mode(path: Path) -> int:
    return 0o755 if os.access(path, os.X_OK) else 0o644


@functools.cache
def content_hash(codex_version: str, container_dir: Path = CONTAINER_DIR) -> str:
    """A hash of everything that goes into the image: the Codex version and each context file's
    name, mode and bytes (not the CA bundle, which is about the build machine). Computed once per
    process: a running host keeps the tag it started with."""
    digest = hashlib.sha256(f"codex {codex_version}\n".encode())
    for name, path in context_files(container_dir):
        data = path.read_bytes()
        digest.update(f"{name}\0{_mode(path):o}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:HASH_LENGTH]


def image_tag(image_name: str, codex_version: str) -> str:
    """``<name>:<codex version>-<content hash>``: the image this code runs."""
    return f"{image_name}:{codex_version}-{content_hash(codex_version)}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def build_context(ca_file: Path | None, container_dir: Path = CONTAINER_DIR) -> io.BytesIO:
    """A tar of exactly what the Dockerfile needs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_bytes(tar, "extra-ca.crt", ca_file.read_bytes() if ca_file else b"")
        for name, path in context_files(container_dir):
            _add_bytes(tar, name, path.read_bytes(), _mode(path))
    buffer.seek(0)
    return buffer


class BuildStep(NamedTuple):
    """One Dockerfile step as the engine starts it: ``Step 3/17 : RUN …``."""

    number: int
    total: int
    instruction: str


def parse_step(line: str) -> BuildStep | None:
    """The step a build log line starts, if it starts one."""
    if not line.startswith("Step "):
        return None
    head, _, instruction = line.partition(" : ")
    number, _, total = head.removeprefix("Step ").partition("/")
    if not (number.strip().isdigit() and total.strip().isdigit()):
        return None
    return BuildStep(int(number), int(total), instruction.strip())


def build_image(
    *,
    tag: str,
    codex_version: str,
    ca_file: Path | None,
    progress: Callable[[str], None] | None = None,
    client: Any | None = None,
) -> str:
    """Build and tag the agent image; returns its id. Raises ImageBuildError with the failing step.

    ``progress`` gets every line of the engine's build log (``parse_step`` finds the steps)."""
    import docker
    from docker.errors import APIError

    own = client is None
    client = client or docker.from_env()
    step = "(before the first step)"
    tail: list[str] = []
    try:
        stream = client.api.build(
            fileobj=build_context(ca_file),
            custom_context=True,
            tag=tag,
            buildargs={"CODEX_VERSION": codex_version, "CONTENT_HASH": content_hash(codex_version)},
            network_mode="host",
            decode=True,
            rm=True,
            forcerm=True,
        )
        image_id = ""
        for chunk in stream:
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                context = "\n".join(tail[-8:])
                raise ImageBuildError(f"{step.strip()} failed: {detail.strip()}\n{context}".rstrip())
            text = str(chunk.get("stream", ""))
            if text.startswith("Step "):
                step = text
            if text.strip():
                tail.append(text.rstrip())
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = str(chunk["aux"]["ID"])
            if progress and text:
                progress(text)
        return image_id or str(client.images.get(tag).id)
    except APIError as exc:
        raise ImageBuildError(f"the engine refused the build: {exc.explanation or exc}") from exc
    finally:
        if own:
            client.close()


class ImageState(NamedTuple):
    """What the engine has under one tag."""

    present: bool
    codex_version: str | None = None
    content_hash: str | None = None


def image_status(client: Any, tag: str) -> ImageState:
    """Whether ``tag`` exists locally, and the Codex version and content hash it was built with."""
    from docker.errors import ImageNotFound

    try:
        image = client.images.get(tag)
    except ImageNotFound:
        return ImageState(False)
    labels = image.attrs.get("Config", {}).get("Labels") or {}
    return ImageState(True, labels.get(VERSION_LABEL), labels.get(HASH_LABEL))


def older_tags(client: Any, image_name: str, current: str) -> list[str]:
    """Other tags of ``image_name`` the engine has (images built from other code), newest first."""
    images = sorted(
        client.images.list(name=image_name), key=lambda i: str(i.attrs.get("Created", "")), reverse=True
    )
    return [t for image in images for t in image.tags if t.startswith(f"{image_name}:") and t != current]


class PrunableTag(NamedTuple):
    """An agent image tag built from other code that no container (of any state) uses.

    ``size`` is what removing it frees: the image's size when this is its last tag, else 0."""

    tag: str
    size: int


def prunable_tags(client: Any, image_name: str, current: str) -> list[PrunableTag]:
    """Older tags of ``image_name`` that no container uses, stopped ones included.

    Every runner change makes a new content-hash tag, so older ones pile up (hundreds of MB each).
    A tag a container names is kept whatever its installation (removing it would break that
    container's restart), and so is the last tag of an image a container runs; the current tag
    is never offered."""
    used_names: set[str] = set()
    used_ids: set[str] = set()
    for container in client.containers.list(all=True):
        used_names.add(str((container.attrs.get("Config") or {}).get("Image", "")))
        used_ids.add(str(container.attrs.get("Image", "")))
    found: list[PrunableTag] = []
    for image in client.images.list(name=image_name):
        tags = list(image.tags)
        removable = [
            t for t in tags if t.startswith(f"{image_name}:") and t != current and t not in used_names
        ]
        whole = len(removable) == len(tags)
        if whole and image.id in used_ids:
            continue
        size = int(image.attrs.get("Size") or 0)
        found += [
            PrunableTag(t, size if whole and i == len(removable) - 1 else 0) for i, t in enumerate(removable)
        ]
    return sorted(found)


def prune_images(client: Any, tags: list[PrunableTag]) -> list[tuple[str, str | None]]:
    """Remove each tag (the image's layers go once no tag holds them); ``(tag, error or None)``."""
    from docker.errors import APIError

    results: list[tuple[str, str | None]] = []
    for item in tags:
        try:
            client.images.remove(item.tag, noprune=False)
            results.append((item.tag, None))
        except APIError as exc:  # in use since we looked, or removed by someone else
            results.append((item.tag, str(getattr(exc, "explanation", None) or exc)))
    return results
