"""Building the agent image through the Docker engine.

The build context is assembled in memory (Dockerfile, the runner package, an optional extra CA
bundle) so a checkout's virtualenv and caches never travel to the engine. Builds use host
networking: the engine may have no bridge at all (containers run with no network).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanohost.settings import PROJECT_ROOT

CONTAINER_DIR = PROJECT_ROOT / "container"
VERSION_LABEL = "org.nanohost.codex-version"


class ImageBuildError(RuntimeError):
    """The build failed; the message names the step and the engine's error."""


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_context(ca_file: Path | None, container_dir: Path = CONTAINER_DIR) -> io.BytesIO:
    """A tar of exactly what the Dockerfile needs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", (container_dir / "Dockerfile").read_bytes())
        _add_bytes(tar, "extra-ca.crt", ca_file.read_bytes() if ca_file else b"")
        runner = container_dir / "agent_runner"
        for path in sorted(runner.rglob("*")):
            if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo") or not path.is_file():
                continue
            _add_bytes(tar, f"agent_runner/{path.relative_to(runner)}", path.read_bytes())
    buffer.seek(0)
    return buffer


def build_image(
    *,
    tag: str,
    codex_version: str,
    ca_file: Path | None,
    progress: Callable[[str], None] | None = None,
    client: Any | None = None,
) -> str:
    """Build and tag the agent image; returns its id. Raises ImageBuildError with the failing step."""
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
            buildargs={"CODEX_VERSION": codex_version},
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


def image_status(client: Any, tag: str) -> tuple[bool, str | None]:
    """Whether ``tag`` exists locally, and the Codex version it was built with."""
    from docker.errors import ImageNotFound

    try:
        image = client.images.get(tag)
    except ImageNotFound:
        return False, None
    labels = image.attrs.get("Config", {}).get("Labels") or {}
    return True, labels.get(VERSION_LABEL)
