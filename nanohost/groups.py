"""Groups: their rows and their folders, created and removed together.

A group is a database row plus a folder under the groups dir (the agent's workspace). The
folder starts as a copy of ``groups/templates/``. Creation validates everything first and
touches the disk last, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from nanohost.db.models import AgentGroup, ChatBinding, ContainerConfig
from nanohost.providers.registry import Providers
from nanohost.providers.registry import check_provider as check_provider
from nanohost.safe_fs import create_beneath, make_dirs_beneath
from nanohost.settings import PROJECT_ROOT, Settings
from nanohost.validation import InvalidInput, check_folder, check_name

TEMPLATES_DIR = PROJECT_ROOT / "groups" / "templates"
_SKIP_TEMPLATE_FILES = frozenset({".gitkeep"})


class NotFound(LookupError):
    """A named thing does not exist; the message says how to list what does."""


def get_group(session: Session, name: str) -> AgentGroup:
    """The group called ``name``, or a NotFound that says how to list groups."""
    group = session.scalar(select(AgentGroup).where(AgentGroup.name == name))
    if group is None:
        raise NotFound(f"no group named {name!r}; see `nanohost groups list`")
    return group


def group_folder(settings: Settings, group: AgentGroup) -> Path:
    """The group's workspace folder on the host."""
    return settings.groups_dir / group.folder


def populate_folder(folder: Path, templates: Path = TEMPLATES_DIR) -> None:
    """Copy the template files that are missing into ``folder``; never overwrite what exists.

    An adopted folder may have been an agent's workspace, so files are created through
    ``safe_fs`` (never through a link left in it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(templates.rglob("*")):
        relative = source.relative_to(templates).as_posix()
        if source.is_dir():
            make_dirs_beneath(folder, relative)
        elif source.name not in _SKIP_TEMPLATE_FILES:
            create_beneath(folder, relative, source.read_bytes())


def create_group(
    session: Session, settings: Settings, name: str, *, folder: str | None = None, provider: str = "mock"
) -> AgentGroup:
    """Create a group row, its config row and its folder. Validates before touching anything.

    An existing folder with no group (for example one kept by ``delete --keep-files``) is
    adopted: missing template files are added, nothing is overwritten.
    """
    check_name(name)
    folder = check_folder(folder if folder is not None else name.lower())
    provider = check_provider(provider)
    if session.scalar(select(AgentGroup).where(AgentGroup.name == name)) is not None:
        raise InvalidInput(f"a group named {name!r} already exists; see `nanohost groups show {name}`")
    owner = session.scalar(select(AgentGroup).where(AgentGroup.folder == folder))
    if owner is not None:
        raise InvalidInput(f"folder {folder!r} already belongs to group {owner.name!r}; pass --folder")
    target = settings.groups_dir / folder
    if target.exists() and not target.is_dir():
        raise InvalidInput(f"{target} exists and is not a directory")
    group = AgentGroup(name=name, folder=folder, agent_provider=provider, config=ContainerConfig())
    session.add(group)
    session.flush()  # surfaces constraint errors before the disk is touched
    populate_folder(target)
    return group


def delete_group(session: Session, settings: Settings, name: str, *, keep_files: bool) -> AgentGroup:
    """Delete a group with its config, bindings, sessions and messages; its files unless kept."""
    group = get_group(session, name)
    outboxes = [settings.data_dir / "outbox" / str(s.id) for s in group.sessions]
    session.delete(group)
    session.flush()
    if not keep_files:
        snapshots = settings.data_dir / "snapshots" / group.folder
        for path in (
            settings.groups_dir / group.folder,
            *Providers(settings).state_dirs(group.folder),
            snapshots,
            *outboxes,
        ):
            _remove_inside(path, parent=path.parent)
    return group


def _remove_inside(path: Path, *, parent: Path) -> None:
    """Remove a directory only if it really lies inside ``parent`` (never follow a link out)."""
    if path.is_symlink():
        path.unlink()
        return
    if path.exists() and path.resolve().parent == parent.resolve():
        shutil.rmtree(path)


def bind_chat(
    session: Session, channel: str, chat_id: str, group: AgentGroup, session_mode: str
) -> ChatBinding:
    """Bind a chat to a group. A chat answers to one group only, so a second binding is refused."""
    existing = session.scalar(
        select(ChatBinding).where(ChatBinding.channel == channel, ChatBinding.chat_id == chat_id)
    )
    if existing is not None:
        if existing.group_id == group.id and existing.session_mode == session_mode:
            return existing
        if existing.group_id != group.id:
            raise InvalidInput(
                f"{channel} chat {chat_id} is already bound to group {existing.group.name!r}; "
                f"run `nanohost unbind {channel} {chat_id}` first"
            )
        existing.session_mode = session_mode
        return existing
    binding = ChatBinding(channel=channel, chat_id=chat_id, group=group, session_mode=session_mode)
    session.add(binding)
    session.flush()
    return binding
