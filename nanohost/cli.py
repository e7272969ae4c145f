"""`nanohost`: the operators' command line.

Each command is a thin shell over the modules that own the concept (groups, group_config,
db, containers). Every command refuses bad input with one line on stderr and a non-zero exit,
and changes the database in one short transaction, so it is safe to run while the host runs.
"""

from __future__ import annotations

import contextlib
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
from nanohost.control import poke
from nanohost.db import engine as db_engine
from nanohost.db import migrate
from nanohost.db.models import (
    SESSION_MODES,
    AgentGroup,
    AgentSession,
    ChatBinding,
    Message,
    ScheduledTask,
    utcnow,
)
from nanohost.group_config import ConfigEdit, McpServerSpec, apply_edit, effective_config
from nanohost.groups import NotFound, bind_chat, create_group, delete_group, get_group
from nanohost.installation import installation_id
from nanohost.limits import SETTINGS_NAMES, check_limits, engine_resources
from nanohost.providers.registry import help_text as provider_help
from nanohost.scheduler import plan
from nanohost.schedules import parse as parse_schedule
from nanohost.schedules import zone
from nanohost.serve_lock import AlreadyServing
from nanohost.sessions import current_sessions, start_afresh
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
skills_app = typer.Typer(help="Shared skills groups can select (--skill).", no_args_is_help=True)
app.add_typer(groups_app, name="groups")
app.add_typer(db_app, name="db")
app.add_typer(sessions_app, name="sessions")
app.add_typer(messages_app, name="messages")
app.add_typer(image_app, name="image")
app.add_typer(web_app, name="web")
app.add_typer(skills_app, name="skills")

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
        installation = installation_id(session)
        notes.append(f"data dir {cfg.data_dir}, database at {migrate.head_revision()}")
        notes.append(f"installation {installation} (its containers are named nanohost-{installation}-…)")
    with web_auth(cfg) as auth:
        password = auth.ensure_password()
    if as_json:
        shown = {"web_password": password} if password else {}
        print(
            json.dumps(
                {
                    "data_dir": str(cfg.data_dir),
                    "installation": installation,
                    "group": "main",
                    "notes": notes,
                    **shown,
                }
            )
        )
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
def logs(
    group: str,
    n: Annotated[int, typer.Option("-n", min=1, max=100000, help="How many lines of kept output.")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow the running one.")] = False,
) -> None:
    """A group's container output: what was kept from earlier containers (each with how it
    ended), then the running container's, live with --follow."""
    from nanohost import container_logs

    cfg = settings()
    with database(cfg) as session:
        live = current_sessions(session, get_group(session, group).id)
        running = [(s.id, s.container_id) for s in live if s.status == "running" and s.container_id]
        ids = [s.id for s in live]
    for session_id in ids:
        text = container_logs.kept(cfg.data_dir, session_id)
        for line in text.splitlines()[-n:]:
            out.print(line, markup=False)
        ending = container_logs.last_ending(text)
        out.print(f"[session {session_id}] last exit: {ending or 'none kept yet'}", markup=False)
    for session_id, container_id in running:
        out.print(f"[session {session_id}] running container {container_id[:12]}:", markup=False)
        _print_container_output(container_id, n, follow)


def _print_container_output(container_id: str, n: int, follow: bool) -> None:
    import docker
    from docker.errors import NotFound

    client = docker.from_env()
    try:
        container = client.containers.get(container_id)
        if follow:
            for chunk in container.logs(stream=True, follow=True, tail=n):
                sys.stdout.write(bytes(chunk).decode(errors="replace"))
                sys.stdout.flush()
        else:
            out.print(bytes(container.logs(tail=n)).decode(errors="replace").rstrip(), markup=False)
    except NotFound:
        out.print("(it has just stopped)", markup=False)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


@app.command()
@handles_errors
def why(group: str, as_json: JsonOption = False) -> None:
    """Why a group is silent: every reason found, in plain words, most likely first."""
    from nanohost.why import explain

    cfg = settings()
    with database(cfg) as session:
        reasons = explain(session, cfg, get_group(session, group))
    if as_json:
        print(json.dumps(reasons))
        return
    for reason in reasons or ["Nothing stands out, and it has not answered yet."]:
        out.print(f"- {reason}", markup=False)


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
                    "error_at": _when(latest.last_error_at) if latest else None,
                    "quarantined": sum(1 for s in group.sessions if s.quarantined_at is not None),
                    "waiting_s": _oldest_wait(queue, group),
                }
            )
    emit(rows, as_json, title="nanohost status", empty="no groups yet; run `nanohost setup`")
    if not as_json:  # the ChatGPT sign-in, when there is one (nanohost/auth/)
        _chatgpt_line()
    if rows and not as_json:
        out.print(
            f"wake queue: {len(queue)} session(s) with unanswered messages and no running container"
            + (f"; the oldest has waited {max(queue.values()):.0f} s" if queue else ""),
            markup=False,
        )


def _chatgpt_line() -> None:
    from nanohost.auth.refresher import describe
    from nanohost.auth.store import TokenStore

    info = describe(TokenStore.for_settings(settings()))
    if info["state"] == "ok":
        out.print(f"ChatGPT sign-in: ok ({info.get('email') or info.get('account')})", markup=False)
    elif info["state"] != "not signed in":
        out.print(f"ChatGPT sign-in: {info['state']}: {info.get('problem', '')}", markup=False)


def _when(moment: datetime | None) -> str | None:
    """A stored UTC time as operators read it."""
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else None


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
    try:
        host_app.run(cfg)
    except AlreadyServing as exc:  # taken first: the other host's containers and sockets are untouched
        fail(str(exc))


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
    provider: Annotated[str, typer.Option(help=provider_help())] = "mock",
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
    yes: Annotated[bool, typer.Option("--yes", help="Also when its container is running: stop it.")] = False,
) -> None:
    """Delete a group with its bindings, sessions, messages and session data (and its folder and
    Codex state unless --keep-files). A running container is stopped cleanly first (needs --yes)."""
    cfg = settings()
    with database(cfg) as session:
        group = get_group(session, name)
        running = [s.container_id for s in group.sessions if s.status == "running" and s.container_id]
        session_ids = [s.id for s in group.sessions]
    if running and not yes:
        fail(f"group {name} has a running container; pass --yes to stop it and delete the group")
    for container_id in running:
        stop_container(container_id)
    with database(cfg) as session:
        group = delete_group(session, cfg, name, keep_files=keep_files)
    remove_session_data(cfg, session_ids)
    kept = f"; files kept in {cfg.groups_dir / group.folder}" if keep_files else ""
    out.print(f"deleted group {name}{kept}", markup=False)
    poke(cfg.data_dir, "sweep")  # the host drops the deleted sessions' runtimes now


def stop_container(container_id: str) -> None:
    """Stop a container cleanly (SIGTERM; the runner exits 0), from the CLI's own process."""
    import asyncio

    from nanohost.containers.backend import DockerBackend

    backend = DockerBackend()
    try:
        asyncio.run(backend.stop(container_id))
    except Exception as exc:  # the engine is down or the container is gone: nothing to stop
        err.print(f"(could not stop container {container_id[:12]}: {exc})", markup=False)
    finally:
        backend.close()


def remove_session_data(cfg: Settings, session_ids: list[int]) -> None:
    """The host-owned session directories and outbox copies of deleted sessions."""
    import shutil

    for session_id in session_ids:
        for path in (cfg.sessions_dir / str(session_id), cfg.data_dir / "outbox" / str(session_id)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)


@groups_app.command("restart")
@handles_errors
def groups_restart(name: str) -> None:
    """Stop the group's container cleanly now; the next message (or a waiting one) wakes it with
    the current config. A turn under way is interrupted and its message answered after the wake."""
    cfg = settings()
    with database(cfg) as session:
        group = get_group(session, name)
        for live in current_sessions(session, group.id):
            live.restart_requested = True
    told = poke(cfg.data_dir, "sweep")
    out.print(
        f"restarting {name}" if told else f"{name} restarts when the host starts (no running host answered)",
        markup=False,
    )


@groups_app.command("config")
@handles_errors
def groups_config(
    name: str,
    model: Annotated[str | None, typer.Option(help="Model name, e.g. gpt-5.5.")] = None,
    effort: Annotated[
        str | None, typer.Option(help="Reasoning effort: none, minimal, low, medium, high or xhigh.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help=provider_help())] = None,
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
    disk_quota: Annotated[
        str | None,
        typer.Option(
            "--disk-quota",
            help="Disk the group may fill, e.g. 50g; 0: none; default: NANOHOST_GROUP_DISK_QUOTA.",
        ),
    ] = None,
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
    timezone: Annotated[
        str | None,
        typer.Option("--timezone", help="IANA zone for the group's cron schedules, e.g. Europe/Berlin."),
    ] = None,
    auth: Annotated[
        str | None,
        typer.Option("--auth", help="api-key (OPENAI_API_KEY) or chatgpt (`nanohost auth login`)."),
    ] = None,
    now: Annotated[
        bool, typer.Option("--now", help="Restart the group's container now to apply the edit.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Change a group's config. Sender and engage-mode edits apply from the next message; the
    rest when the group's container is next idle (it is restarted cleanly then), or at once with
    --now.

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
        disk_quota=disk_quota,
        allow_senders=allow_sender or [],
        deny_senders=deny_sender or [],
        engage=engage,
        trigger=trigger,
        add_skills=skill or [],
        remove_skills=no_skill or [],
        allow_egress=allow_egress or [],
        deny_egress=deny_egress or [],
        auth=auth,
    )
    cfg = settings()
    with database(cfg) as session:
        group = get_group(session, name)
        changes = apply_edit(group, edit, probe=engine_resources)
        if timezone is not None and timezone != group.config.timezone:
            zone(timezone)  # refuses an unknown zone
            group.config.timezone = timezone or None
            for task in session.scalars(select(ScheduledTask).where(ScheduledTask.group_id == group.id)):
                if task.status == "active":
                    plan(task, group.config.timezone, utcnow())
            shown_zone = timezone or "the host's own"
            changes.append(f"timezone = {shown_zone}")
        if edit.needs_wake() and changes:
            group.config.version += 1  # a container with the older config is replaced when idle
        if now:
            for live in current_sessions(session, group.id):
                live.restart_requested = True
        data = effective_config(cfg, group)
    if changes or now:
        poke(cfg.data_dir, "tasks" if timezone is not None and not edit.needs_wake() else "sweep")
    if as_json:
        emit_mapping({"changes": changes, "config": data}, True)
        return
    if not changes:
        emit_mapping(data, False)
        return
    for change in changes:
        out.print(f"{name}: {change}", markup=False)
    if now:
        out.print("applies now: the group's container restarts cleanly", markup=False)
    elif edit.needs_wake():
        out.print(
            "applies when the group's container is next idle (it restarts then; --now: at once); "
            "senders and engage mode: from the next message",
            markup=False,
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
    """Start the group's conversation afresh: a new thread, on a running group too.

    Each of the group's live sessions is replaced by a fresh one (waiting messages move with it)
    and its container stops cleanly; the old thread stays in the archive (`conversations/`, the
    Codex state). The group folder and memory are kept.
    """
    cfg = settings()
    with database(cfg) as session:
        target = get_group(session, group)
        live = current_sessions(session, target.id)
        for old in live:
            start_afresh(session, old)
    poke(cfg.data_dir, "sweep")
    out.print(
        f"reset {len(live)} session(s) of group {group}; the next message starts a new thread", markup=False
    )


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
        str | None,
        typer.Option(help="Image tag (default: NANOHOST_IMAGE_NAME:CODEX_VERSION-<hash of container/>)."),
    ] = None,
    if_missing: Annotated[
        bool,
        typer.Option("--if-missing", help="Do nothing when the image exists, built from this code."),
    ] = False,
    log: Annotated[bool, typer.Option("--log", help="Show the engine's whole build log.")] = False,
) -> None:
    """Build the agent image (Codex CLI pinned) through the local Docker engine.

    Its tag carries a hash of what goes into it (container/Dockerfile, the runner, the skills,
    the bundled MCP servers, the Codex version), so a changed runner means a new image."""
    import docker

    from nanohost.containers.image import content_hash, image_status, older_tags

    cfg = settings()
    target = tag or cfg.image_tag
    wanted = content_hash(cfg.codex_version)
    try:
        client = docker.from_env()
        try:
            state = image_status(client, target)
            older = older_tags(client, cfg.image_name, target)
        finally:
            client.close()
    except Exception as exc:
        fail(f"cannot reach the Docker engine: {exc}; start it (scripts/start-dockerd.sh)")
    current = state.present and state.content_hash == wanted and state.codex_version == cfg.codex_version
    if if_missing and current:
        out.print(f"{target} is present, built from this code (Codex {state.codex_version})", markup=False)
        return
    if state.present and not current:
        out.print(f"{target} was built from other code; building it again", markup=False)
    elif older and not state.present:
        out.print(f"{older[0]} is older than this code", markup=False)
    first = not older and not state.present
    out.print(
        f"building {target} (Codex {cfg.codex_version})"
        + ("; the first build downloads Debian packages and Codex and takes a few minutes" if first else ""),
        markup=False,
    )
    image_id = _build_with_progress(cfg, target, log)
    out.print(f"built {target} ({image_id[:19]})", markup=False)


@image_app.command("prune")
@handles_errors
def image_prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
) -> None:
    """Remove agent images built from older code that no container uses.

    Each runner or Codex change builds a new tag; the old ones stay until pruned. The current
    tag and every tag a container (running or stopped, of any installation) uses are kept."""
    import docker

    from nanohost.containers.image import prunable_tags, prune_images

    cfg = settings()
    try:
        client = docker.from_env()
    except Exception as exc:
        fail(f"cannot reach the Docker engine: {exc}; start it (scripts/start-dockerd.sh)")
    try:
        tags = prunable_tags(client, cfg.image_name, cfg.image_tag)
        if not tags:
            out.print(f"nothing to prune: no unused {cfg.image_name} image other than {cfg.image_tag}")
            return
        total = sum(t.size for t in tags)
        verb = "would remove" if dry_run else "removing"
        out.print(f"{verb} {len(tags)} unused image(s), {total / 2**20:.0f} MiB:", markup=False)
        for item in tags:
            out.print(f"  {item.tag}  {item.size / 2**20:.0f} MiB", markup=False)
        if dry_run:
            return
        failed = [(tag, error) for tag, error in prune_images(client, tags) if error]
    finally:
        client.close()
    for tag, error in failed:
        err.print(f"could not remove {tag}: {error}", markup=False)
    if failed:
        raise typer.Exit(1)
    out.print("done", markup=False)


def _build_with_progress(cfg: Settings, target: str, log: bool) -> str:
    """Build, showing one line per Dockerfile step (a progress bar on a terminal), or the whole
    engine log with ``log``. A failure names its step and the log's last lines."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nanohost.containers.image import ImageBuildError, build_image, parse_step

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=out
    )
    task = bar.add_task("starting", total=None)

    def progress(line: str) -> None:
        if log:
            if line.strip():
                out.print(line.rstrip(), markup=False)
            return
        step = parse_step(line)
        if step is None:
            return
        what = step.instruction if len(step.instruction) <= 70 else step.instruction[:69] + "…"
        if out.is_terminal:
            bar.update(task, description=what, completed=step.number - 1, total=step.total)
        else:
            out.print(f"[{step.number}/{step.total}] {what}", markup=False)

    with bar if out.is_terminal and not log else contextlib.nullcontext():
        try:
            image_id = build_image(
                tag=target, codex_version=cfg.codex_version, ca_file=cfg.image_ca_file, progress=progress
            )
        except ImageBuildError as exc:
            fail(f"image build failed: {exc}")
        except Exception as exc:  # docker unreachable and similar
            fail(f"image build failed: {exc}; is the Docker engine running? (`nanohost doctor`)")
        bar.update(task, description="done", completed=bar.tasks[0].total or 1)
    return image_id


# --- skills -----------------------------------------------------------------------------


@skills_app.command("list")
@handles_errors
def skills_list(as_json: JsonOption = False) -> None:
    """The shared skills that ship in the agent image; select one with `groups config NAME --skill SKILL`."""
    from nanohost.skills import shared_skills

    rows = [{"name": s.name, "description": s.description} for s in shared_skills()]
    emit(rows, as_json, empty="no shared skills (container/skills/ is empty)")


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


# --- scheduled tasks ---------------------------------------------------------------------

tasks_app = typer.Typer(
    help="Scheduled prompts (cron, interval or once) that run in a group.", no_args_is_help=True
)
app.add_typer(tasks_app, name="tasks")


def _task_row(task: ScheduledTask, group: str) -> dict[str, Any]:
    return {
        "id": task.id,
        "group": group,
        "schedule": task.schedule,
        "status": task.status,
        "next_run_utc": task.next_run_at.isoformat(timespec="seconds") if task.next_run_at else None,
        "last_run_utc": task.last_run_at.isoformat(timespec="seconds") if task.last_run_at else None,
        "prompt": task.prompt if len(task.prompt) <= 60 else task.prompt[:57] + "...",
    }


def _tell_host(cfg: Settings, word: str) -> None:
    if not poke(cfg.data_dir, word):
        err.print("(no running host answered; it applies this when it starts)", markup=False)


@tasks_app.command("list")
@handles_errors
def tasks_list(
    group: Annotated[str | None, typer.Argument(help="Only this group's tasks.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Scheduled tasks, soonest first (times in UTC)."""
    with database(settings()) as session:
        query = select(ScheduledTask, AgentGroup.name).join(
            AgentGroup, ScheduledTask.group_id == AgentGroup.id
        )
        if group is not None:
            query = query.where(ScheduledTask.group_id == get_group(session, group).id)
        rows = [
            _task_row(task, name)
            for task, name in session.execute(
                query.order_by(ScheduledTask.next_run_at.is_(None), ScheduledTask.next_run_at)
            )
            if task.status != "cancelled"
        ]
    emit(rows, as_json, title="scheduled tasks", empty="no scheduled tasks")


@tasks_app.command("add")
@handles_errors
def tasks_add(
    group: str,
    prompt: Annotated[str, typer.Option("--prompt", help="What the agent is asked each time.")],
    cron: Annotated[
        str | None, typer.Option("--cron", help="Cron expression in the group's zone, e.g. '0 9 * * 1-5'.")
    ] = None,
    every: Annotated[str | None, typer.Option("--every", help="Interval, e.g. 30m, 2h, 1d.")] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Once, at an ISO time, e.g. 2026-12-24T09:00:00Z.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Schedule a prompt for a group; its replies go to the group's web/API chat."""
    given = [v for v in (cron, f"every {every}" if every else None, at) if v]
    if len(given) != 1:
        fail("give exactly one of --cron, --every or --at")
    if not prompt.strip():
        fail("--prompt is empty")
    cfg = settings()
    with database(cfg) as session:
        target = get_group(session, group)
        schedule = parse_schedule(given[0], zone(target.config.timezone))
        task = ScheduledTask(group_id=target.id, prompt=prompt, schedule=schedule.text, created_at=utcnow())
        session.add(task)
        session.flush()
        plan(task, target.config.timezone, task.created_at)
        row = _task_row(task, target.name)
    if as_json:
        emit_mapping(row, True)
    else:
        out.print(f"task {row['id']} scheduled for {group}: next run {row['next_run_utc']} UTC", markup=False)
    _tell_host(cfg, "tasks")


def _set_task_status(task_id: int, status: str) -> ScheduledTask:
    cfg = settings()
    with database(cfg) as session:
        task = session.get(ScheduledTask, task_id)
        if task is None or task.status == "cancelled":
            fail(f"no scheduled task {task_id}; see `nanohost tasks list`")
        if status == "active" and task.status == "done":
            fail(f"task {task_id} was a one-off and has run; add a new one")
        task.status = status
        if status == "active":
            plan(task, task_group_zone(session, task), utcnow())
    _tell_host(cfg, "tasks")
    return task


def task_group_zone(session: Session, task: ScheduledTask) -> str | None:
    group = session.get(AgentGroup, task.group_id)
    return group.config.timezone if group is not None else None


@tasks_app.command("pause")
@handles_errors
def tasks_pause(task_id: int) -> None:
    """Stop a task from firing until it is resumed."""
    _set_task_status(task_id, "paused")
    out.print(f"task {task_id} paused", markup=False)


@tasks_app.command("resume")
@handles_errors
def tasks_resume(task_id: int) -> None:
    """Let a paused task fire again, from its next slot after now (missed runs are not replayed)."""
    task = _set_task_status(task_id, "active")
    out.print(f"task {task_id} resumed; next run {task.next_run_at} UTC", markup=False)


@tasks_app.command("delete")
@handles_errors
def tasks_delete(task_id: int) -> None:
    """Cancel a task for good (it stays in the database as cancelled)."""
    _set_task_status(task_id, "cancelled")
    out.print(f"task {task_id} deleted", markup=False)


# --- snapshots ---------------------------------------------------------------------------

snapshots_app = typer.Typer(
    help="Snapshots of a group's folder and agent state: take, list, restore, prune.", no_args_is_help=True
)
app.add_typer(snapshots_app, name="snapshots")


@contextmanager
def _snapshot_db(cfg: Settings) -> Iterator[Any]:
    """A session factory on a database brought to the current schema (a snapshot command makes
    several short transactions around its long file work, never one long one)."""
    from nanohost import snapshots

    engine = db_engine.make_engine(cfg.db_url)
    try:
        migrate.upgrade(engine)
        yield db_engine.make_session_factory(engine)
    except snapshots.SnapshotError as exc:
        fail(str(exc))
    finally:
        engine.dispose()


def _snapshot_row(snapshot: Any, group: str) -> dict[str, Any]:
    from nanohost.snapshots import human_size

    return {
        "id": snapshot.id,
        "group": group,
        "taken_utc": snapshot.created_at.isoformat(timespec="seconds"),
        "reason": snapshot.reason,
        "files": snapshot.files,
        "content": human_size(snapshot.content_bytes),
        "archive": human_size(snapshot.size),
        "thread": snapshot.continuation,
        "restored_utc": snapshot.restored_at.isoformat(timespec="seconds") if snapshot.restored_at else None,
        "note": snapshot.note,
    }


@snapshots_app.command("create")
@handles_errors
def snapshots_create(
    group: str,
    note: Annotated[str | None, typer.Option("--note", help="A word on what this snapshot is.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Snapshot a group's folder and agent state (Codex threads) into one archive."""
    from nanohost import snapshots

    cfg = settings()
    with _snapshot_db(cfg) as factory:
        recovered = snapshots.recover(cfg, factory)
        taken = snapshots.create(cfg, factory, group, note=note)
    for line in recovered:
        err.print(f"(restore interrupted earlier: {line})", markup=False)
    if as_json:
        emit_mapping({**taken.__dict__, "path": str(taken.path)}, True)
        return
    out.print(
        f"snapshot {taken.id} of group {group}: {taken.files} files, "
        f"{snapshots.human_size(taken.content_bytes)} → archive {snapshots.human_size(taken.size)}"
        + (f"; resumes thread {taken.continuation}" if taken.continuation else "; no thread yet"),
        markup=False,
    )


@snapshots_app.command("list")
@handles_errors
def snapshots_list(
    group: Annotated[str | None, typer.Argument(help="Only this group's snapshots.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Snapshots, newest first, with their size before (content) and after (archive) compression."""
    from nanohost import snapshots

    with _snapshot_db(settings()) as factory:
        rows = [_snapshot_row(s, g.name) for s, g in snapshots.listing(factory, group)]
    empty = "no snapshots; take one with `nanohost snapshots create GROUP`"
    emit(rows, as_json, title="snapshots", empty=empty)


@snapshots_app.command("restore")
@handles_errors
def snapshots_restore(group: str, snapshot_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Put a group's folder and agent state back as snapshot ID had them.

    The group's container is stopped cleanly first and the current state is kept as a
    `before-restore` snapshot; the swap is atomic (a host dying half-way is rolled back or
    completed at its next start). The next message resumes the snapshot's thread in a fresh
    session. Paths excluded from snapshots (caches, node_modules, .venv) are gone afterwards.
    """
    from docker.errors import DockerException

    from nanohost import snapshots

    def say(line: str) -> None:
        out.print(line, markup=False)

    cfg = settings()
    with _snapshot_db(cfg) as factory:
        with db_engine.transaction(factory) as session:
            installation = installation_id(session)
        containers = snapshots.DockerContainers(
            installation, cfg.data_dir, lambda: poke(cfg.data_dir, "sweep")
        )
        try:
            done = snapshots.restore(cfg, factory, group, snapshot_id, containers, progress=say)
        except DockerException as exc:
            fail(f"cannot reach the Docker engine to make sure no container of group {group} runs: {exc}")
        finally:
            containers.close()
    poke(cfg.data_dir, "sweep")
    out.print(
        f"restored snapshot {snapshot_id} of group {group} ({done.files} files); the next message "
        + (f"resumes thread {done.continuation}" if done.continuation else "starts a new thread")
        + f"; the state before is snapshot {done.before.id}",
        markup=False,
    )
    if done.skipped:
        err.print(f"{len(done.skipped)} archive entries were not restored:", markup=False)
        for line in done.skipped[:20]:
            err.print(f"  {line}", markup=False)


@snapshots_app.command("prune")
@handles_errors
def snapshots_prune(
    group: str,
    keep: Annotated[
        int | None,
        typer.Option("--keep", min=1, help="How many to keep (default: the group's snapshot keep)."),
    ] = None,
) -> None:
    """Delete the group's oldest snapshots beyond the newest N (every reason)."""
    from nanohost import snapshots

    cfg = settings()
    with _snapshot_db(cfg) as factory:
        deleted = snapshots.prune(cfg, factory, group, keep)
    shown = f": {', '.join(str(i) for i in deleted)}" if deleted else ""
    out.print(f"deleted {len(deleted)} snapshot(s) of group {group}{shown}", markup=False)


@snapshots_app.command("delete")
@handles_errors
def snapshots_delete(snapshot_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Delete one snapshot (its row and its archive)."""
    from nanohost import snapshots

    cfg = settings()
    with _snapshot_db(cfg) as factory:
        row = snapshots.delete(cfg, factory, snapshot_id)
    out.print(f"deleted snapshot {snapshot_id} ({snapshots.human_size(row.size)})", markup=False)


@snapshots_app.command("config")
@handles_errors
def snapshots_config(
    group: str,
    on: Annotated[
        str | None,
        typer.Option("--on", help="Automatic snapshots: idle (after each busy spell), daily or off."),
    ] = None,
    keep: Annotated[
        int | None, typer.Option("--keep", help="Automatic snapshots kept (the oldest beyond go).")
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Leave out a name (any depth, globs: *.log) or a path (data/big)."),
    ] = None,
    no_exclude: Annotated[
        list[str] | None, typer.Option("--no-exclude", help="Stop leaving out a pattern.")
    ] = None,
    default_excludes: Annotated[
        bool, typer.Option("--default-excludes", help="Go back to the default excludes.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """A group's snapshot settings: automatic snapshots, how many are kept, what is left out.
    With no options, prints them."""
    from nanohost import snapshots

    cfg = settings()
    with _snapshot_db(cfg) as factory, db_engine.transaction(factory) as session:
        target = get_group(session, group)
        config = target.config
        if on is not None:
            config.snapshot_on = snapshots.check_mode(on)
        if keep is not None:
            config.snapshot_keep = snapshots.check_keep(keep)
        patterns = list(snapshots.DEFAULT_EXCLUDES) if default_excludes else snapshots.excludes_of(target)
        for pattern in exclude or []:
            if (checked := snapshots.check_pattern(pattern)) not in patterns:
                patterns.append(checked)
        for pattern in no_exclude or []:
            checked = snapshots.check_pattern(pattern)
            if checked not in patterns:
                fail(f"{checked!r} is not excluded; excluded are: {', '.join(patterns) or 'nothing'}")
            patterns.remove(checked)
        if default_excludes:
            config.snapshot_excludes = None
        if exclude or no_exclude:
            config.snapshot_excludes = patterns
        data = {"snapshot_on": config.snapshot_on, "snapshot_keep": config.snapshot_keep}
        data["excludes"] = patterns
    emit_mapping(data, as_json)


# --- ChatGPT sign-in: `nanohost auth …` (nanohost/auth/cli.py)
from nanohost.auth.cli import auth_app  # noqa: E402

app.add_typer(auth_app, name="auth")
# --- end ChatGPT sign-in


def main() -> None:
    """Console-script entry point."""
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "200")  # tables piped to a file are not cut at 80
    app()


if __name__ == "__main__":
    main()
