"""The OAuth calls of a ChatGPT sign-in, as Codex makes them (codex-rs/login, 0.138).

- Refresh: ``POST {issuer}/oauth/token`` with JSON ``{client_id, grant_type: "refresh_token",
  refresh_token}`` → ``{id_token?, access_token?, refresh_token?}``. Refresh tokens are single
  use: each success rotates it. A refusal names why in ``error`` (a string or ``{code}``):
  ``refresh_token_reused``, ``refresh_token_expired``, ``refresh_token_invalidated``,
  ``invalid_grant``; those (and any 401) are permanent.
- Device code: ``POST {issuer}/api/accounts/deviceauth/usercode`` ``{client_id}`` →
  ``{device_auth_id, user_code, interval}``; the user opens ``{issuer}/codex/device`` and enters
  the code; ``POST {issuer}/api/accounts/deviceauth/token`` ``{device_auth_id, user_code}`` answers
  403/404 until then, then ``{authorization_code, code_verifier, code_challenge}``, exchanged at
  ``POST {issuer}/oauth/token`` (form: ``grant_type=authorization_code``, ``code``,
  ``redirect_uri={issuer}/deviceauth/callback``, ``client_id``, ``code_verifier``).
- Revoke (logout): ``POST {issuer}/oauth/revoke`` ``{token, token_type_hint: "refresh_token",
  client_id}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout

from nanohost.auth.tokens import ChatGPTTokens, TokenFormatError

CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
"""Codex's public OAuth client id (the same for every install)."""
PERMANENT_CODES = frozenset(
    {"refresh_token_reused", "refresh_token_expired", "refresh_token_invalidated", "invalid_grant"}
)
TIMEOUT = ClientTimeout(total=30)
DEVICE_CODE_WAIT = 15 * 60.0


class RefreshRefused(Exception):
    """The issuer refused the refresh token for good; ``code`` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


class OAuthUnavailable(Exception):
    """The issuer could not be reached or failed (transient: try again later)."""


@dataclass(frozen=True)
class Refreshed:
    id_token: str | None
    access_token: str
    refresh_token: str | None


def error_code(body: str) -> str | None:
    """``error`` (a string, or ``{"code": …}``) or top-level ``code`` of an OAuth error body."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"])
    code = data.get("code")
    return code if isinstance(code, str) else None


async def refresh(session: ClientSession, issuer: str, refresh_token: str) -> Refreshed:
    body = {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": refresh_token}
    try:
        async with session.post(f"{issuer}/oauth/token", json=body, timeout=TIMEOUT) as response:
            text = await response.text()
            status = response.status
    except (ClientError, TimeoutError) as exc:
        raise OAuthUnavailable(f"the sign-in service could not be reached: {exc}") from None
    if status == 200:
        try:
            data = json.loads(text)
            access = data["access_token"]
        except (ValueError, KeyError, TypeError):
            raise OAuthUnavailable("the sign-in service answered without an access token") from None
        if not isinstance(access, str) or not access:
            raise OAuthUnavailable("the sign-in service answered without an access token")
        return Refreshed(data.get("id_token") or None, access, data.get("refresh_token") or None)
    code = (error_code(text) or "").lower()
    if status == 401 or code in PERMANENT_CODES:
        raise RefreshRefused(code or f"http_{status}", text[:300])
    raise OAuthUnavailable(f"the sign-in service answered {status}")


async def revoke(session: ClientSession, issuer: str, refresh_token: str) -> None:
    """Revoke the refresh token at the issuer (``auth logout``), as Codex's logout does."""
    body = {"token": refresh_token, "token_type_hint": "refresh_token", "client_id": CLIENT_ID}
    try:
        async with session.post(f"{issuer}/oauth/revoke", json=body, timeout=TIMEOUT) as response:
            if response.status >= 300:
                raise OAuthUnavailable(f"the sign-in service answered {response.status}")
    except (ClientError, TimeoutError) as exc:
        raise OAuthUnavailable(f"the sign-in service could not be reached: {exc}") from None


@dataclass(frozen=True)
class DeviceCode:
    verification_url: str
    user_code: str
    device_auth_id: str
    interval: float


async def request_device_code(session: ClientSession, issuer: str) -> DeviceCode:
    url = f"{issuer}/api/accounts/deviceauth/usercode"
    async with session.post(url, json={"client_id": CLIENT_ID}, timeout=TIMEOUT) as response:
        if response.status == 404:
            raise OAuthUnavailable("device-code sign-in is not enabled on this issuer")
        if response.status != 200:
            raise OAuthUnavailable(f"the device-code request failed with status {response.status}")
        data: dict[str, Any] = await response.json(content_type=None)
    try:
        interval = float(str(data.get("interval") or 5).strip())
        return DeviceCode(
            f"{issuer}/codex/device", str(data["user_code"]), str(data["device_auth_id"]), interval
        )
    except (KeyError, ValueError):
        raise OAuthUnavailable("the device-code answer lacks a user code") from None


async def complete_device_code(
    session: ClientSession,
    issuer: str,
    code: DeviceCode,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    max_wait: float = DEVICE_CODE_WAIT,
) -> ChatGPTTokens:
    """Poll until the user has entered the code, then exchange it for tokens."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    poll = {"device_auth_id": code.device_auth_id, "user_code": code.user_code}
    while True:
        async with session.post(
            f"{issuer}/api/accounts/deviceauth/token", json=poll, timeout=TIMEOUT
        ) as response:
            if response.status == 200:
                granted: dict[str, Any] = await response.json(content_type=None)
                break
            if response.status not in (403, 404):
                raise OAuthUnavailable(f"device-code sign-in failed with status {response.status}")
        if loop.time() >= deadline:
            raise OAuthUnavailable("the code was not entered within 15 minutes")
        await sleep(min(code.interval, max(0.0, deadline - loop.time())))
    form = {
        "grant_type": "authorization_code",
        "code": str(granted.get("authorization_code", "")),
        "redirect_uri": f"{issuer}/deviceauth/callback",
        "client_id": CLIENT_ID,
        "code_verifier": str(granted.get("code_verifier", "")),
    }
    async with session.post(f"{issuer}/oauth/token", data=form, timeout=TIMEOUT) as response:
        if response.status != 200:
            raise OAuthUnavailable(f"exchanging the code failed with status {response.status}")
        tokens: dict[str, Any] = await response.json(content_type=None)
    try:
        return ChatGPTTokens.from_oauth(
            str(tokens.get("id_token", "")),
            str(tokens.get("access_token", "")),
            str(tokens.get("refresh_token", "")),
        )
    except TokenFormatError as exc:
        raise OAuthUnavailable(str(exc)) from None
