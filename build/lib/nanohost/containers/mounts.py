"""Which host paths may enter a container: the operator's allow-list, and never a credential store.

Extra mounts are refused unless their source resolves (symlinks followed) inside a root the
operator listed in ``NANOHOST_ALLOWED_MOUNTS``, and never when any part of the path is a known
credential or control location (``.ssh``, ``.aws``, the host user's ``.codex``, the Docker
socket, ...), even inside an allowed root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nanohost.validation import InvalidInput

EXTRA_MOUNT_ROOT = PurePosixPath("/workspace/extra")
FORBIDDEN_PARTS = frozenset(
    {
        ".ssh",
        ".aws",
        ".codex",
        ".gnupg",
        ".docker",
        ".kube",
        ".azure",
        ".netrc",
        ".git-credentials",
        ".password-store",
        "gcloud",
        "docker.sock",
        ".env",
    }
)
FORBIDDEN_ROOTS = (
    Path("/etc"),
    Path("/proc"),
    Path("/sys"),
    Path("/dev"),
    Path("/boot"),
    Path("/run"),
    Path("/var/run"),
    Path("/root"),
)


@dataclass(frozen=True)
class ExtraMount:
    """An operator-approved extra mount: host ``source`` at ``/workspace/extra/<name>``."""

    source: Path
    name: str
    read_only: bool = True

    @property
    def target(self) -> str:
        return str(EXTRA_MOUNT_ROOT / self.name)


def check_extra_mount(raw: dict[str, Any], allowed_roots: list[Path]) -> ExtraMount:
    """Validate one ``additional_mounts`` entry ({"source", "name", "read_only"}) or refuse it clearly."""
    source_text = str(raw.get("source", ""))
    if not source_text or not Path(source_text).is_absolute():
        raise InvalidInput(f"mount source {source_text!r} must be an absolute host path")
    source = Path(source_text)
    resolved = source.resolve()
    for path in (source, resolved):
        bad = next((part for part in path.parts if part in FORBIDDEN_PARTS), None)
        if bad is not None:
            raise InvalidInput(
                f"mount {source_text!r} is refused: {bad!r} holds credentials or controls the host"
            )
    if resolved == Path("/") or any(resolved == root or root in resolved.parents for root in FORBIDDEN_ROOTS):
        raise InvalidInput(f"mount {source_text!r} is refused: system paths never enter a container")
    if not any(resolved == root or root in resolved.parents for root in allowed_roots):
        roots = ", ".join(str(r) for r in allowed_roots) or "none"
        raise InvalidInput(
            f"mount {source_text!r} is not under an allowed root (NANOHOST_ALLOWED_MOUNTS: {roots})"
        )
    if not resolved.exists():
        raise InvalidInput(f"mount source {source_text!r} does not exist")
    name = str(raw.get("name") or resolved.name)
    if not name or "/" in name or name.startswith(".") or ".." in name or len(name) > 64:
        raise InvalidInput(f"mount name {name!r} must be a plain folder name")
    return ExtraMount(resolved, name, bool(raw.get("read_only", True)))
