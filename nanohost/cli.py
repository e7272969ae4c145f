"""`nanohost`: the operators' command line.

Each command is a thin shell over the modules that own the concept (groups, group_config,
db, containers). Every command refuses bad input with one line on stderr and a non-zero exit,
and changes the database in one short transaction, so it is safe to run while the host runs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from nanohost import __version__
from nanohost.channels.state import ChannelStore
from nanohost.channels.web_auth import CHANNEL, WebAuth
from nanohost.db import engine as db_engine
from nanohost.db import migrate
from nanohost.db.models import (
    SESSION_MODES,
    AgentGroup,
    AgentSession,
    ChatBinding,
    Message,
    utcnow,
)
from nanohost.group_config import ConfigEdit, McpServerSpec, apply_edit, effective_config
from nanohost.groups import NotFound, bind_chat, create_group, delete_group, get_group
from nanohost.limits import SETTINGS_NAMES, check_limits, engine_resources
from nanohost.settings import Settings, SettingsError, load_settings
from nanohost.validation import InvalidInput, check_channel, check_chat_id

app = typer.Typer(
    name="nanohost",
    help="Run and administer nanohost: one isolated Codex agent per chat group.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
groups_app = typer.Typer(help="Create, inspect, configure and delete groups.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
sessions_app = typer.Typer(help="Agent sessions (one conversation thread each).", no_args_is_help=True)
messages_app = typer.Typer(help="Messages in and out of groups.", no_args_is_help=True)
image_app = typer.Typer(help="The agent container image.", no_args_is_help=True)
web_app = typer.Typer(help="The built-in web chat.", no_args_is_help=True)
app.add_typer(groups_app, name="groups")
app.add_typer(db_app, name="db")
app.add_typer(sessions_app, name="sessions")
app.add_typer(messages_app, name="messages")
app.add_typer(image_app, name="image")
app.add_typer(web_app, name="web")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A refusal with a message for the operator; exits 1."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def handles_errors(func_: F) -> F:
    """Turn expected failures into one clear line on stderr and exit code 1."""

    @wraps(func_)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func_(*args, **kwargs)
        except (CliError, InvalidInput, NotFound, SettingsError) as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(1) from None
        except SQLAlchemyError as exc:
            err.print(f"error: database problem: {exc.__class__.__name__}: {exc.args[0]}", markup=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    return load_settings()


@contextmanager
def database(cfg: Settings, *, upgrade: bool = True) -> Iterator[Session]:
    """A session in one transaction on a database brought to the current schema."""
    engine = db_engine.make_engine(cfg.db_url)
    try:
        if upgrade:
            migrate.upgrade(engine)
        with db_engine.transaction(db_engine.make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, Path):
        return str(value)
    return value


def emit(rows: Sequence[dict[str, Any]], as_json: bool, *, title: str | None = None, empty: str = "") -> None:
    """Rows as a rich table, or as JSON for scripts."""
    if as_json:
        print(json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows], indent=2, default=str))
        return
    if not rows:
        if empty:
            out.print(empty, markup=False)
        return
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*("" if v is None else str(_plain(v)) for v in row.values()))
    out.print(table)


def emit_mapping(data: dict[str, Any], as_json: bool) -> None:
    """A key/value view (one object)."""
    if as_json:
        print(json.dumps({k: _plain(v) for k, v in data.items()}, indent=2, default=str))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else ("" if value is None else value)
        table.add_row(key.replace("_", " "), str(_plain(shown)))
    out.print(table)


# --- top level --------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        print(f"nanohost {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Run and administer nanohost: one isolated Codex agent per chat group.

    Settings come from NANOHOST_* environment variables and a .env file in the current
    directory; see README.md.
    """


@app.command()
@handles_errors
def setup(as_json: JsonOption = False) -> None:
    """Create the data dir, the database, the `main` group and its web chat binding (idempotent)."""
    cfg = settings()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cfg.groups_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    with database(cfg) as session:
        group = session.scalar(select(AgentGroup).where(AgentGroup.name == "main"))
        if group is None:
            provider = "codex" if cfg.openai_api_key else "mock"
            group = create_group(session, cfg, "main", provider=provider)
            notes.append(f"created group main (provider {provider})")
            if provider == "mock":
                notes.append(
                    "no OpenAI key configured, so main uses the mock (echo) provider; set OPENAI_API_KEY "
                    "and run `nanohost groups config main --provider codex` to switch"
                )
        bind_chat(session, "web", "main", group, "shared")
        notes.append(f"data dir {cfg.data_dir}, database at {migrate.head_revision()}")
    with web_auth(cfg) as auth:
        password = auth.ensure_password()
    if as_json:
        shown = {"web_password": password} if password else {}
        print(json.dumps({"data_dir": str(cfg.data_dir), "group": "main", "notes": notes, **shown}))
    else:
        for note in notes:
            out.print(note, markup=False)
        if password:
            out.print(f"web chat password: {password}  {PASSWORD_NOTE}", markup=False)
        out.print(
            f"ready: start the host with `nanohost serve`, then open http://{_web_address(cfg)}/",
            markup=False,
        )


PASSWORD_NOTE = "(shown once; `nanohost web password` sets a new one)"


def _web_address(cfg: Settings) -> str:
    return f"{cfg.web_host}:{cfg.web_port}" if ":" not in cfg.web_host else f"[{cfg.web_host}]:{cfg.web_port}"


@contextmanager
def web_auth(cfg: Settings) -> Iterator[WebAuth]:
    """The web chat's password store in the host database (brought to the current schema)."""
    engine = db_engine.make_engine(cfg.db_url)
    try:
        migrate.upgrade(engine)
        yield WebAuth(ChannelStore(db_engine.make_session_factory(engine), CHANNEL))
    finally:
        engine.dispose()


# Telegram group ids are negative (-1001234): let them through as arguments, not options.
CHAT_ID_ARGS = {"ignore_unknown_options": True}


@app.command(context_settings=CHAT_ID_ARGS)
@handles_errors
def bind(
    channel: Annotated[str, typer.Argument(help="web, api, telegram, slack or discord.")],
    chat_id: Annotated[str, typer.Argument(help="The platform's own chat id, e.g. -1001234 or C0123.")],
    group: Annotated[str, typer.Argument(help="The group that answers in this chat.")],
    session_mode: Annotated[
        str,
        typer.Option(
            "--session", help="shared: one conversation for all chats of the group; per-chat: one each."
        ),
    ] = "shared",
) -> None:
    """Bind a chat to a group. A chat answers to exactly one group."""
    check_channel(channel)
    check_chat_id(chat_id)
    if session_mode not in SESSION_MODES:
        fail(f"unknown session mode {session_mode!r}; use one of: {', '.join(SESSION_MODES)}")
    with database(settings()) as session:
        bind_chat(session, channel, chat_id, get_group(session, group), session_mode)
    out.print(f"{channel} chat {chat_id} → group {group} ({session_mode} session)", markup=False)


@app.command(context_settings=CHAT_ID_ARGS)
@handles_errors
def unbind(
    channel: Annotated[str, typer.Argument(help="The channel of the chat.")],
    chat_id: Annotated[str, typer.Argument(help="The platform's chat id.")],
) -> None:
    """Remove a chat's binding; its messages are kept."""
    check_channel(channel)
    with database(settings()) as session:
        binding = session.scalar(
            select(ChatBinding).where(ChatBinding.channel == channel, ChatBinding.chat_id == chat_id)
        )
        if binding is None:
            fail(f"{channel} chat {chat_id} is not bound; see `nanohost groups show GROUP`")
        session.delete(binding)
    out.print(f"{channel} chat {chat_id} unbound", markup=False)


def _wake_queue(session: Session) -> dict[int, float]:
    """Session id → seconds its oldest unanswered message has waited, for sessions with no
    running container (not failed, not set aside): the wake queue as the database sees it.

    The CLI runs outside the host, so this is read from the database rather than asked of the
    host; it also counts a session between its message and its container start, and one
    waiting out a crash backoff."""
    now = utcnow()
    rows = session.execute(
        select(Message.session_id, func.min(Message.created_at))
        .join(AgentSession, Message.session_id == AgentSession.id)
        .where(
            Message.direction == "in",
            Message.status.in_(("pending", "queued")),
            AgentSession.status.in_(("idle", "stopped")),
            AgentSession.quarantined_at.is_(None),
        )
        .group_by(Message.session_id)
    ).all()
    return {int(sid): max(0.0, (now - oldest).total_seconds()) for sid, oldest in rows if sid is not None}


@app.command()
@handles_errors
def status(as_json: JsonOption = False) -> None:
    """Groups with their session state, container, pending messages and last error, and the wake
    queue: sessions with unanswered messages and no running container (read from the database)."""
    with database(settings()) as session:
        queue = _wake_queue(session)
        pending = dict(
            session.execute(
                select(Message.group_id, func.count())
                .where(Message.direction == "out", Message.status.in_(("pending", "failed")))
                .group_by(Message.group_id)
            ).all()
        )
        rows = []
        for group in session.scalars(select(AgentGroup).order_by(AgentGroup.name)):
            latest = max(group.sessions, key=lambda s: s.id, default=None)
            rows.append(
                {
                    "group": group.name,
                    "provider": group.agent_provider,
                    "session": latest.status if latest else "none",
                    "container": (latest.container_id or "")[:12] if latest else "",
                    "crashes": latest.crash_count if latest else 0,
                    "undelivered": pending.get(group.id, 0),
                    "last_error": latest.last_error if latest else None,
                    "quarantined": sum(1 for s in group.sessions if s.quarantined_at is not None),
                    "waiting_s": _oldest_wait(queue, group),
                }
            )
    emit(rows, as_json, title="nanohost status", empty="no groups yet; run `nanohost setup`")
    if rows and not as_json:
        out.print(
            f"wake queue: {len(queue)} session(s) with unanswered messages and no running container"
            + (f"; the oldest has waited {max(queue.values()):.0f} s" if queue else ""),
            markup=False,
        )


def _oldest_wait(queue: dict[int, float], group: AgentGroup) -> int | None:
    """Whole seconds the group's longest-waiting session has waited for a container, if any."""
    waits = [queue[s.id] for s in group.sessions if s.id in queue]
    return int(max(waits)) if waits else None


@app.command()
def doctor(as_json: JsonOption = False) -> None:
    """Check that everything the host needs is in place; each line is OK or says how to fix it."""
    from nanohost.doctor import run_checks

    try:
        cfg = settings()
    except SettingsError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    results = run_checks(cfg)
    if as_json:
        print(json.dumps([r._asdict() for r in results], indent=2))
    else:
        for result in results:
            mark = "[green]OK  [/]" if result.ok else "[red]FAIL[/]"
            out.print(f"{mark} {result.name}: ", end="")
            out.print(result.detail, markup=False)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
@handles_errors
def serve() -> None:
    """Start the host: upgrade the database, then serve the web chat and API."""
    from nanohost import app as host_app

    cfg = settings()
    check_limits(  # default limits the engine cannot grant would fail every wake
        memory=cfg.container_memory,
        cpus=cfg.container_cpus,
        pids=cfg.container_pids,
        probe=engine_resources,
        names=SETTINGS_NAMES,
    )
    host_app.run(cfg)


# --- groups -----------------------------------------------------------------------------


@groups_app.command("list")
@handles_errors
def groups_list(as_json: JsonOption = False) -> None:
    """All groups."""
    with database(settings()) as session:
        rows = [
            {
                "name": g.name,
                "folder": g.folder,
                "provider": g.agent_provider,
                "model": g.config.model,
                "chats": len(g.bindings),
                "created": g.created_at,
            }
            for g in session.scalars(select(AgentGroup).order_by(AgentGroup.name))
        ]
    emit(rows, as_json, empty="no groups yet; create one with `nanohost groups create NAME`")


@groups_app.command("create")
@handles_errors
def groups_create(
    name: Annotated[str, typer.Argument(help="Letters, digits, '.', '_' or '-'; at most 64.")],
    folder: Annotated[
        str | None, typer.Option(help="Folder under the groups dir (default: the name, lowercased).")
    ] = None,
    provider: Annotated[str, typer.Option(help="codex or mock.")] = "mock",
) -> None:
    """Create a group and its folder from groups/templates/."""
    cfg = settings()
    with database(cfg) as session:
        group = create_group(session, cfg, name, folder=folder, provider=provider)
        folder_path = cfg.groups_dir / group.folder
    out.print(f"created group {name} (provider {group.agent_provider}) in {folder_path}", markup=False)


@groups_app.command("show")
@handles_errors
def groups_show(name: str, as_json: JsonOption = False) -> None:
    """A group's effective config (what its next wake uses) and its chats."""
    cfg = settings()
    with database(cfg) as session:
        group = get_group(session, name)
        data = effective_config(cfg, group)
        data["chats"] = [f"{b.channel}:{b.chat_id} ({b.session_mode})" for b in group.bindings]
    emit_mapping(data, as_json)


@groups_app.command("delete")
@handles_errors
def groups_delete(
    name: str,
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="Keep the group folder and Codex state.")
    ] = False,
) -> None:
    """Delete a group with its bindings, sessions and messages (and its files unless --keep-files)."""
    cfg = settings()
    with database(cfg) as session:
        group = delete_group(session, cfg, name, keep_files=keep_files)
    kept = f"; files kept in {cfg.groups_dir / group.folder}" if keep_files else ""
    out.print(f"deleted group {name}{kept}", markup=False)


@groups_app.command("config")
@handles_errors
def groups_config(
    name: str,
    model: Annotated[str | None, typer.Option(help="Model name, e.g. gpt-5.5.")] = None,
    effort: Annotated[
        str | None, typer.Option(help="Reasoning effort: none, minimal, low, medium, high or xhigh.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="codex or mock.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="Set NAME=VALUE in the container.")] = None,
    unset_env: Annotated[list[str] | None, typer.Option("--unset-env", help="Remove an env NAME.")] = None,
    mcp_add: Annotated[str | None, typer.Option("--mcp-add", help="Add an MCP server NAME.")] = None,
    command: Annotated[str | None, typer.Option("--command", help="With --mcp-add: the command.")] = None,
    arg: Annotated[list[str] | None, typer.Option("--arg", help="With --mcp-add: an argument.")] = None,
    instructions: Annotated[
        str | None, typer.Option("--instructions", help="With --mcp-add: text for AGENTS.md.")
    ] = None,
    mcp_remove: Annotated[
        list[str] | None, typer.Option("--mcp-remove", help="Remove an MCP server.")
    ] = None,
    memory: Annotated[str | None, typer.Option(help="Memory limit, e.g. 512m or 2g.")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPU limit, e.g. 1.5.")] = None,
    pids: Annotated[int | None, typer.Option(help="Process limit, e.g. 256.")] = None,
    allow_sender: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-sender",
            help="Let a sender in: user id (123456789, U012AB3CD) or @name; telegram:@name: one platform.",
        ),
    ] = None,
    deny_sender: Annotated[
        list[str] | None, typer.Option("--deny-sender", help="Remove a sender id from the allow-list.")
    ] = None,
    engage: Annotated[str | None, typer.Option(help="always, mention or trigger.")] = None,
    trigger: Annotated[str | None, typer.Option(help="The trigger word for --engage trigger.")] = None,
    skill: Annotated[list[str] | None, typer.Option("--skill", help="Select a shared skill.")] = None,
    no_skill: Annotated[list[str] | None, typer.Option("--no-skill", help="Deselect a shared skill.")] = None,
    allow_egress: Annotated[
        list[str] | None, typer.Option("--allow-egress", help="Let the agent reach a host (e.g. *.pypi.org).")
    ] = None,
    deny_egress: Annotated[
        list[str] | None, typer.Option("--deny-egress", help="Remove a host from the egress allow-list.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a group's config; changes take effect at the group's next wake.

    With no options, prints the effective config (like `groups show`). An empty allow-list
    means everyone in a bound chat may talk to the agent.
    """
    if (command or arg or instructions) and not mcp_add:
        fail("--command, --arg and --instructions go with --mcp-add NAME")
    edit = ConfigEdit(
        model=model,
        effort=effort,
        provider=provider,
        set_env=env or [],
        unset_env=unset_env or [],
        mcp_add=McpServerSpec(mcp_add, command or "", arg or [], instructions) if mcp_add else None,
        mcp_remove=mcp_remove or [],
        memory=memory,
        cpus=cpus,
        pids=pids,
        allow_senders=allow_sender or [],
        deny_senders=deny_sender or [],
        engage=engage,
        trigger=trigger,
        add_skills=skill or [],
        remove_skills=no_skill or [],
        allow_egress=allow_egress or [],
        deny_egress=deny_egress or [],
    )
    cfg = settings()
    with database(cfg) as session:
        group = get_group(session, name)
        changes = apply_edit(group, edit, probe=engine_resources)
        data = effective_config(cfg, group)
    if as_json:
        emit_mapping({"changes": changes, "config": data}, True)
        return
    if not changes:
        emit_mapping(data, False)
        return
    for change in changes:
        out.print(f"{name}: {change}", markup=False)
    if edit.needs_wake():
        out.print(
            "takes effect at the group's next wake (senders, engage mode: the next message)", markup=False
        )
    else:
        out.print("applies from the next message", markup=False)


# --- sessions and messages --------------------------------------------------------------


@sessions_app.command("list")
@handles_errors
def sessions_list(
    group: Annotated[str | None, typer.Argument(help="Only this group's sessions.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Sessions with their thread, container and health."""
    with database(settings()) as session:
        query = select(AgentSession).order_by(AgentSession.id)
        if group is not None:
            query = query.where(AgentSession.group_id == get_group(session, group).id)
        rows = [
            {
                "id": s.id,
                "group": s.group.name,
                "chat": s.chat_key or "(shared)",
                "status": s.status,
                "thread": s.continuation,
                "container": (s.container_id or "")[:12],
                "crashes": s.crash_count,
                "last_active": s.last_active_at,
                "last_error": s.last_error,
            }
            for s in session.scalars(query)
        ]
    emit(rows, as_json, empty="no sessions yet")


@sessions_app.command("reset")
@handles_errors
def sessions_reset(group: str) -> None:
    """Start the group's conversation afresh: forget its threads and clear failures.

    The next message starts a new Codex thread; the group folder and memory are kept.
    """
    with database(settings()) as session:
        target = get_group(session, group)
        count = 0
        for agent_session in target.sessions:
            if agent_session.status == "running":
                fail(f"group {group} has a running container; wait for it to go idle, then reset")
            agent_session.continuation = None
            agent_session.crash_count = 0
            agent_session.last_error = None
            agent_session.status = "idle"
            count += 1
    out.print(f"reset {count} session(s) of group {group}", markup=False)


@messages_app.command("tail")
@handles_errors
def messages_tail(
    group: str,
    n: Annotated[int, typer.Option("-n", min=1, max=10000, help="How many messages.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The group's last N messages, oldest first."""
    with database(settings()) as session:
        target = get_group(session, group)
        messages = session.scalars(
            select(Message).where(Message.group_id == target.id).order_by(Message.id.desc()).limit(n)
        ).all()
        rows = [
            {
                "id": m.id,
                "at": m.created_at,
                "dir": m.direction,
                "chat": f"{m.channel}:{m.chat_id}",
                "sender": m.sender,
                "status": m.status,
                "text": m.text,
            }
            for m in reversed(messages)
        ]
    emit(rows, as_json, empty=f"no messages in group {group} yet")


# --- database and image -----------------------------------------------------------------


@db_app.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Bring the database schema to the newest revision."""
    cfg = settings()
    engine = db_engine.make_engine(cfg.db_url)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    out.print(f"database at {after} (was {before or 'empty'})", markup=False)


@db_app.command("current")
@handles_errors
def db_current(as_json: JsonOption = False) -> None:
    """Show the database's schema revision and the newest one this code knows."""
    cfg = settings()
    engine = db_engine.make_engine(cfg.db_url)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if as_json:
        print(json.dumps({"current": current, "head": head, "at_head": current == head}))
        return
    state = "at head" if current == head else "behind: run `nanohost db upgrade`"
    out.print(f"current {current or '(empty)'}, head {head} ({state})", markup=False)


@image_app.command("build")
@handles_errors
def image_build(
    tag: Annotated[
        str | None, typer.Option(help="Image tag (default: NANOHOST_IMAGE_NAME:CODEX_VERSION).")
    ] = None,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="Do nothing when the image exists with the right Codex.")
    ] = False,
) -> None:
    """Build the agent image (Codex CLI pinned) through the local Docker engine."""
    from nanohost.containers.image import ImageBuildError, build_image, image_status

    cfg = settings()
    target = tag or cfg.image_tag
    if if_missing:
        import docker

        try:
            client = docker.from_env()
            present, version = image_status(client, target)
            client.close()
        except Exception as exc:
            fail(f"cannot reach the Docker engine: {exc}; start it (scripts/start-dockerd.sh)")
        if present and version == cfg.codex_version:
            out.print(f"{target} is present (Codex {version})", markup=False)
            return
    out.print(f"building {target} (Codex {cfg.codex_version})", markup=False)
    with out.status("building…") as spinner:

        def progress(line: str) -> None:
            line = line.rstrip()
            if line:
                out.print(line, markup=False)
                spinner.update(line[:80])

        try:
            image_id = build_image(
                tag=target, codex_version=cfg.codex_version, ca_file=cfg.image_ca_file, progress=progress
            )
        except ImageBuildError as exc:
            fail(f"image build failed: {exc}")
        except Exception as exc:  # docker unreachable and similar
            fail(f"image build failed: {exc}; is the Docker engine running? (`nanohost doctor`)")
    out.print(f"built {target} ({image_id[:19]})", markup=False)


# --- web chat ---------------------------------------------------------------------------


@web_app.command("password")
@handles_errors
def web_password(
    value: Annotated[
        str | None, typer.Option("--set", help="Use this password instead of a random one (8+ characters).")
    ] = None,
) -> None:
    """Set a new web chat password (random unless --set) and print it; every browser logs out."""
    if value is not None and len(value.strip()) < 8:
        fail("the web chat password must have at least 8 characters")
    with web_auth(settings()) as auth:
        password = auth.set_password(value)
    out.print(f"web chat password: {password}  (every browser must log in again)", markup=False)


def main() -> None:
    """Console-script entry point."""
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "200")  # tables piped to a file are not cut at 80
    app()


if __name__ == "__main__":
    main()
