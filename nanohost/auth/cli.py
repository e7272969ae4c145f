"""``nanohost auth login | status | logout``: the host's ChatGPT sign-in.

The tokens go to ``<data dir>/auth/chatgpt.json`` (``store``) and nowhere else; a running host
picks a new sign-in up at its next model request (the gateway reads the store each time), so
there is nothing to restart. ``login`` saves under the refresh file lock, so it never races a
refresh of the running host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from aiohttp import ClientSession
from rich.console import Console
from sqlalchemy import select

from nanohost.auth import oauth
from nanohost.auth.refresher import describe, locked_delete, locked_save
from nanohost.auth.store import TokenStore
from nanohost.auth.tokens import ChatGPTTokens, TokenFormatError
from nanohost.db import engine as db_engine
from nanohost.db import migrate
from nanohost.db.models import AgentGroup, ContainerConfig
from nanohost.settings import Settings, SettingsError, load_settings

# Self-contained (no import of nanohost.cli, which imports this module at its end and may be
# running as __main__): its own output and error helpers, the same one-line style.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
F = TypeVar("F", bound=Callable[..., Any])


class AuthCliError(Exception):
    pass


def fail(message: str) -> NoReturn:
    raise AuthCliError(message)


def handles_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (AuthCliError, SettingsError, TokenFormatError) as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def settings() -> Settings:
    return load_settings()


def emit_mapping(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    for key, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else ("" if value is None else str(value))
        out.print(f"{key.replace('_', ' ')}: {shown}", markup=False)


auth_app: typer.Typer = typer.Typer(
    help="The host's ChatGPT sign-in (for groups with --auth chatgpt).", no_args_is_help=True
)


def _store() -> TokenStore:
    return TokenStore.for_settings(settings())


def _chatgpt_groups() -> list[str]:
    engine = db_engine.make_engine(settings().db_url)
    try:
        migrate.upgrade(engine)
        with db_engine.transaction(db_engine.make_session_factory(engine)) as session:
            return list(
                session.scalars(
                    select(AgentGroup.name)
                    .join(ContainerConfig, ContainerConfig.group_id == AgentGroup.id)
                    .where(ContainerConfig.auth == "chatgpt")
                    .order_by(AgentGroup.name)
                )
            )
    finally:
        engine.dispose()


async def _device_login(issuer: str) -> ChatGPTTokens:
    async with ClientSession() as session:
        code = await oauth.request_device_code(session, issuer)
        out.print(
            "To sign this host in to ChatGPT:\n"
            f"  1. open {code.verification_url} in a browser and sign in\n"
            f"  2. enter the one-time code {code.user_code} (it expires in 15 minutes; never share it)\n"
            "waiting for the code to be entered…",
            markup=False,
        )
        return await oauth.complete_device_code(session, issuer, code)


@auth_app.command("login")
@handles_errors
def login(
    import_path: Annotated[
        Path | None,
        typer.Option(
            "--import", help="Take the tokens of an existing Codex auth.json (`codex login`).", metavar="PATH"
        ),
    ] = None,
) -> None:
    """Sign the host in to a ChatGPT plan: the device-code flow Codex offers (open a URL, enter a
    code), or --import of a Codex auth.json. Do not keep using that auth.json elsewhere: its
    refresh token is now the host's, and refresh tokens are single use."""
    cfg = settings()
    if import_path is not None:
        try:
            data = json.loads(import_path.expanduser().read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail(f"cannot read {import_path}: {exc}")
        try:
            tokens = ChatGPTTokens.from_codex_auth_json(data)
        except TokenFormatError as exc:
            fail(f"{import_path}: {exc}")
    else:
        try:
            tokens = asyncio.run(_device_login(cfg.auth_issuer))
        except oauth.OAuthUnavailable as exc:
            fail(f"sign-in failed: {exc}")
    locked_save(TokenStore.for_settings(cfg), tokens)
    who = tokens.email or tokens.account_id
    out.print(f"signed in to ChatGPT as {who} (plan {tokens.plan or 'unknown'})", markup=False)
    if import_path is not None:
        out.print(
            f"the host now refreshes these tokens itself; stop using {import_path} elsewhere "
            "(a refresh there would invalidate the host's sign-in)",
            markup=False,
        )


@auth_app.command("status")
@handles_errors
def status(as_json: JsonOption = False) -> None:
    """Whether the host is signed in, as whom, until when, and which groups use it."""
    info = describe(_store())
    info["groups"] = _chatgpt_groups()
    emit_mapping(info, as_json)


@auth_app.command("logout")
@handles_errors
def logout() -> None:
    """Revoke the host's ChatGPT sign-in at the issuer and forget it (groups with --auth chatgpt
    stop answering until the next login)."""
    store = _store()
    with contextlib.suppress(TokenFormatError):  # an unreadable store is still removed
        tokens = store.load()
        if tokens is not None and tokens.broken is None:
            try:
                asyncio.run(_revoke(settings().auth_issuer, tokens.refresh_token))
            except oauth.OAuthUnavailable as exc:
                out.print(
                    f"could not revoke the sign-in at the issuer ({exc}); forgetting it here", markup=False
                )
    removed = locked_delete(store)
    out.print("signed out of ChatGPT" if removed else "not signed in to ChatGPT", markup=False)


async def _revoke(issuer: str, refresh_token: str) -> None:
    async with ClientSession() as session:
        await oauth.revoke(session, issuer, refresh_token)
