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
  the new access token is handed to anyone, so a crash right after a refresh loses nothing;
- everything that save needs (the directory, the key file loaded or made, a temporary file with
  its room already written) is made ready *before* the issuer is asked: a store that cannot be
  written costs no refresh, and is answered 400 in plain words (``StoreUnwritable``), never 502,
  which Codex and the runner would retry. If the save still fails after the issuer rotated the
  token, the new tokens (or the broken mark) are kept in memory, used instead of the store's
  spent refresh token, and saved at the first request that can; only a restart before then
  loses them (then: ``auth login``).

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
from nanohost.auth.store import PreparedSave, TokenStore, marked_broken
from nanohost.auth.tokens import ChatGPTTokens, TokenFormatError

log = logging.getLogger(__name__)

LOGIN_HINT = "an operator must sign the host in again with `nanohost auth login`"


class ChatGPTUnavailable(Exception):
    """No usable sign-in; the message is plain words fit for the chat."""


class NotSignedIn(ChatGPTUnavailable):
    pass


class SignInBroken(ChatGPTUnavailable):
    pass


class StoreUnwritable(ChatGPTUnavailable):
    """The token store cannot be written (its directory, the key file, a full disk): no refresh
    is sent, since the rotated refresh token could not be kept."""


UNWRITABLE = (
    "this host cannot save its ChatGPT sign-in (its token store or key file cannot be written, or "
    "the disk is full), so the sign-in was not renewed; an operator should check the host's log"
)


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


RETRY_FIRST = 5.0
RETRY_MAX = 300.0
"""After the sign-in service fails (unreachable, 5xx, a garbled answer), it is not asked again for
``RETRY_FIRST`` seconds, doubling with each failure in a row up to ``RETRY_MAX``: every group's
requests during an outage would otherwise each send a refresh to a service that is down."""


class IssuerAway(Exception):
    """The sign-in service failed moments ago and is not asked again yet. Transient (not a
    ``ChatGPTUnavailable``): the gateway answers 502 and the runner retries the turn later."""


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
        self._unsaved: ChatGPTTokens | None = None
        """Tokens newer than the store's, whose save failed after the issuer rotated the refresh
        token (or the broken mark whose save failed): used instead of the store while it still
        holds ``_unsaved_over``, the refresh token they replaced, which is spent and must never
        be sent again. Saved at the next request that can (``_persist_unsaved``)."""
        self._unsaved_over: str | None = None
        self._failures = 0
        """Refreshes in a row that the sign-in service failed (not refused: that is ``broken``)."""
        self._retry_at: float | None = None
        """``clock()`` before which the failing service is not asked again."""

    def _client(self) -> ClientSession:
        if self._session is None or self._session.closed:
            self._session = ClientSession(cookie_jar=DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._tasks:  # a refresh under way finishes (and saves) before the client goes
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def unsaved(self) -> str | None:
        """What is wrong when the sign-in in use lives only in memory (its save failed), or None:
        for ``/healthz``, since a restart before it is saved loses it."""
        if self._unsaved is None:
            return None
        what = "the broken mark" if self._unsaved.broken is not None else "the renewed sign-in"
        return f"{what} could not be saved to the token store and is kept in memory only (see the log)"

    def _load(self) -> ChatGPTTokens:
        try:
            tokens = self.store.load()
        except TokenFormatError as exc:  # encrypted without its key, or damaged: say so, never retry
            if self._unsaved is not None:
                return self._usable(self._unsaved)
            raise SignInBroken(f"this host's ChatGPT sign-in cannot be read ({exc}); {LOGIN_HINT}") from None
        if self._unsaved is not None:
            if tokens is not None and tokens.refresh_token == self._unsaved_over:
                return self._usable(self._unsaved)  # the store still holds the spent token
            self._unsaved = self._unsaved_over = None  # changed since: a new login (or logout)
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
        if self._unsaved is not None:
            await self._persist_unsaved()
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

    async def _persist_unsaved(self) -> None:
        """Save tokens kept only in memory, once the store can take them (under both locks, and
        only while the store still holds the refresh token they replaced)."""
        async with self._lock:
            unsaved, over = self._unsaved, self._unsaved_over
            if unsaved is None:
                return

            def persist() -> None:
                with _file_lock(self.store):
                    current = self.store.load()
                    if current is not None and current.refresh_token == over:
                        self.store.save(unsaved)

            try:
                await asyncio.to_thread(persist)
            except (OSError, TokenFormatError) as exc:
                log.warning("the ChatGPT sign-in kept in memory still cannot be saved: %s", exc)
                return
            if self._unsaved is unsaved:
                self._unsaved = self._unsaved_over = None
                log.info("the ChatGPT sign-in kept in memory is saved")

    async def _save_or_keep(self, prepared: PreparedSave, new: ChatGPTTokens, replaced: str) -> None:
        """Save tokens the issuer has just rotated (or the broken mark); if that still fails, keep
        them in memory: the refresh token ``replaced`` is spent and must never be sent again."""
        try:
            await asyncio.to_thread(self.store.commit, prepared, new)
        except Exception as exc:  # a full disk, a vanished directory: kept, not lost
            log.error(
                "the renewed ChatGPT sign-in could not be saved (%s); it is kept in memory until it can "
                "be (a restart before then loses it: then sign in again)",
                exc,
            )
            if self._unsaved is None:
                self._unsaved_over = replaced  # what the store holds
            self._unsaved = new
        else:
            self._unsaved = self._unsaved_over = None

    async def _refresh_under_file_lock(self, stale_access_token: str) -> ChatGPTTokens:
        try:
            fd = await asyncio.to_thread(_acquire, self.store)
        except OSError as exc:
            log.error("cannot take the ChatGPT refresh lock: %s", exc)
            raise StoreUnwritable(UNWRITABLE) from None
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
        if self._retry_at is not None and (wait := self._retry_at - self.clock()) > 0:
            raise IssuerAway(
                f"the sign-in service failed {self._failures} time(s) in a row; "
                f"it is asked again in {wait:.0f} s"
            )
        try:  # everything the save needs, before the issuer rotates anything
            prepared = await asyncio.to_thread(self.store.prepare_save)
        except (OSError, TokenFormatError) as exc:
            log.error("ChatGPT token store cannot be written, so no refresh is sent: %s", exc)
            raise StoreUnwritable(UNWRITABLE) from None
        self.refreshes += 1
        try:
            got = await oauth.refresh(self._client(), self.issuer, tokens.refresh_token)
        except oauth.RefreshRefused as exc:
            self._failures, self._retry_at = 0, None
            log.error("ChatGPT sign-in refused at refresh (%s): %s", exc.code, LOGIN_HINT)
            await self._save_or_keep(prepared, marked_broken(tokens, exc.code), tokens.refresh_token)
            raise SignInBroken(broken_message(exc.code)) from None
        except BaseException as exc:
            self.store.discard(prepared)  # nothing was rotated
            if isinstance(exc, Exception):
                self._failed()
            raise
        self._failures, self._retry_at = 0, None
        self._refreshed_at = self.clock()
        fresh = tokens.rotated(got.id_token, got.access_token, got.refresh_token)
        await self._save_or_keep(prepared, fresh, tokens.refresh_token)  # durable before use, or kept
        log.info("ChatGPT tokens refreshed for account %s", fresh.account_id)
        return fresh

    def _failed(self) -> None:
        self._failures += 1
        pause = min(RETRY_FIRST * 2 ** min(self._failures - 1, 16), RETRY_MAX)  # no float overflow
        self._retry_at = self.clock() + pause
        log.warning(
            "the ChatGPT sign-in service failed (%d in a row); it is not asked again for %.0f s",
            self._failures,
            pause,
        )


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
