"""One refresh at a time, the rotated token saved before it is used.

ChatGPT refresh tokens are single use and rotate: if two parties refresh with the same token,
the second is refused (``refresh_token_reused``) and the sign-in is lost. So exactly one party
ever refreshes: the host's gateway, through this object, and

- within the process, one ``asyncio.Lock``: requests of many groups that all met a 401 queue on
  it, and all but the first find the tokens already refreshed;
- across processes (a second host on the same data dir would be refused by its serve lock, but
  the CLI's ``auth login`` and anything else using the store), an exclusive ``flock`` on
  ``<data dir>/auth/refresh.lock``, under which the store is read again from disk: whoever got
  there first already saved new tokens, and they are used instead of refreshing again;
- the new tokens (with the rotated refresh token) are saved atomically and fsynced *before*
  the new access token is handed to anyone, so a crash right after a refresh loses nothing.

A refresh the issuer refuses for good (``refresh_token_reused``, ``…_expired``,
``…_invalidated``, ``invalid_grant``, any 401) marks the sign-in broken in the store: no further
refresh is ever attempted with it (no loop), and every request, ``nanohost auth status``,
``nanohost status`` and ``/healthz`` say so until an operator signs in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import ClientSession, DummyCookieJar

from nanohost.auth import oauth
from nanohost.auth.store import TokenStore
from nanohost.auth.tokens import ChatGPTTokens, TokenFormatError

log = logging.getLogger(__name__)

LOGIN_HINT = "an operator must sign the host in again with `nanohost auth login`"


class ChatGPTUnavailable(Exception):
    """No usable sign-in; the message is plain words fit for the chat."""


class NotSignedIn(ChatGPTUnavailable):
    pass


class SignInBroken(ChatGPTUnavailable):
    pass


class RefreshTooSoon(ChatGPTUnavailable):
    """A refresh was asked for within ``min_refresh_interval`` of the last one: not sent."""


MIN_REFRESH_INTERVAL = 60.0
"""Seconds at least between two refreshes this host sends (``NANOHOST_CHATGPT_REFRESH_INTERVAL``):
a container that makes the backend answer 401 cannot make the host rotate the refresh token at
the issuer once per request."""

TOO_SOON = (
    "the ChatGPT backend refused this host's sign-in, which was renewed less than a minute ago, "
    "so it is not renewed again yet; if this keeps happening an operator should check the plan "
    "(`nanohost auth status`) or sign in again"
)


def broken_message(reason: str) -> str:
    return (
        f"this host's ChatGPT sign-in is no longer valid (the sign-in service refused to renew it: "
        f"{reason}), so I cannot reach the model; {LOGIN_HINT}"
    )


NOT_SIGNED_IN = f"this host is not signed in to ChatGPT, so I cannot reach the model; {LOGIN_HINT}"


def _acquire(store: TokenStore) -> int:
    """The refresh file lock, held by the returned descriptor (blocks: call off the loop)."""
    store.ensure_dir()
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def _file_lock(store: TokenStore) -> Iterator[None]:
    fd = _acquire(store)
    try:
        yield
    finally:
        _release(fd)


def locked_delete(store: TokenStore) -> bool:
    """Forget the sign-in (``auth logout``) after any refresh under way has saved."""
    with _file_lock(store):
        return store.delete()


def locked_save(store: TokenStore, tokens: ChatGPTTokens) -> None:
    """Save a new sign-in (``auth login``) without racing a refresh in any process."""
    with _file_lock(store):
        store.save(tokens)


class ChatGPTAuth:
    """The host's ChatGPT credentials for the gateway: read them, refresh them (once)."""

    def __init__(
        self,
        store: TokenStore,
        issuer: str,
        session: ClientSession | None = None,
        *,
        min_refresh_interval: float = MIN_REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.issuer = issuer.rstrip("/")
        self._session = session
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[ChatGPTTokens]] = set()
        self.refreshes = 0
        """Refresh requests this object sent to the issuer."""
        self.min_refresh_interval = min_refresh_interval
        self.clock = clock
        self._refreshed_at: float | None = None
        """``clock()`` when the issuer last rotated the tokens for this object."""

    def _client(self) -> ClientSession:
        if self._session is None or self._session.closed:
            self._session = ClientSession(cookie_jar=DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._tasks:  # a refresh under way finishes (and saves) before the client goes
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _load(self) -> ChatGPTTokens:
        try:
            tokens = self.store.load()
        except TokenFormatError as exc:  # encrypted without its key, or damaged: say so, never retry
            raise SignInBroken(f"this host's ChatGPT sign-in cannot be read ({exc}); {LOGIN_HINT}") from None
        return self._usable(tokens)

    def _usable(self, tokens: ChatGPTTokens | None) -> ChatGPTTokens:
        if tokens is None:
            raise NotSignedIn(NOT_SIGNED_IN)
        if tokens.broken is not None:
            raise SignInBroken(broken_message(tokens.broken.reason))
        return tokens

    async def credentials(self) -> tuple[ChatGPTTokens, bool]:
        """Tokens to use now, and whether this call refreshed them (it does when the access
        token's own expiry has passed)."""
        tokens = self._load()
        if tokens.expired():
            return await self.refresh(tokens.access_token), True
        return tokens, False

    async def refresh(self, stale_access_token: str) -> ChatGPTTokens:
        """New tokens because ``stale_access_token`` was refused or expired: refreshed by this call,
        or by whoever refreshed first (then no second refresh is sent).

        The refresh runs as its own task, shielded: a caller that goes away (a cancelled request)
        never cuts it between the issuer rotating the refresh token and the store saving it."""
        async with self._lock:
            task = asyncio.ensure_future(self._refresh_under_file_lock(stale_access_token))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return await asyncio.shield(task)

    async def _refresh_under_file_lock(self, stale_access_token: str) -> ChatGPTTokens:
        fd = await asyncio.to_thread(_acquire, self.store)
        try:
            return await self._refresh_locked(stale_access_token)
        finally:
            _release(fd)

    async def _refresh_locked(self, stale_access_token: str) -> ChatGPTTokens:
        tokens = self._load()  # from disk: another process may have refreshed
        if tokens.access_token != stale_access_token and not tokens.expired():
            return tokens
        if self._refreshed_at is not None and self.clock() - self._refreshed_at < self.min_refresh_interval:
            log.warning("ChatGPT token refresh refused: the last one was less than a minute ago")
            raise RefreshTooSoon(TOO_SOON)
        self.refreshes += 1
        try:
            got = await oauth.refresh(self._client(), self.issuer, tokens.refresh_token)
        except oauth.RefreshRefused as exc:
            log.error("ChatGPT sign-in refused at refresh (%s): %s", exc.code, LOGIN_HINT)
            await asyncio.to_thread(self.store.mark_broken, tokens, exc.code)
            raise SignInBroken(broken_message(exc.code)) from None
        self._refreshed_at = self.clock()
        fresh = tokens.rotated(got.id_token, got.access_token, got.refresh_token)
        await asyncio.to_thread(self.store.save, fresh)  # durable before anyone uses it
        log.info("ChatGPT tokens refreshed for account %s", fresh.account_id)
        return fresh


def describe(store: TokenStore) -> dict[str, Any]:
    """The sign-in as ``auth status``, ``status`` and ``/healthz`` show it (never a token)."""
    try:
        tokens = store.load()
    except ValueError as exc:
        return {"signed_in": False, "state": "unreadable", "problem": str(exc)}
    if tokens is None:
        return {"signed_in": False, "state": "not signed in"}
    expiry = tokens.expires_at()
    info: dict[str, Any] = {
        "signed_in": True,
        "state": "broken" if tokens.broken else "ok",
        "account": tokens.account_id,
        "email": tokens.email,
        "plan": tokens.plan,
        "access_expires": expiry.isoformat() if expiry else None,
        "last_refresh": tokens.last_refresh or None,
    }
    if tokens.broken:
        info["problem"] = broken_message(tokens.broken.reason)
        info["broken_at"] = tokens.broken.at
    return info
