"""The gateway's route for a ``chatgpt`` group: the ChatGPT backend, with the host's sign-in.

Codex in the container runs its ChatGPT request path (``requires_openai_auth``) against the
gateway, with a dummy ``auth.json`` whose access and refresh "tokens" are the session's
placeholder. So its ``POST /v1/responses`` arrives here already in the ChatGPT shape, carrying
the placeholder as its bearer and a dummy ``chatgpt-account-id`` (dropped with the other
account headers). This route

- forwards it to ``{chatgpt_base_url}/responses`` with ``Authorization: Bearer <access token>``
  and ``chatgpt-account-id: <account>`` from the host's token store;
- on a 401, refreshes once (``ChatGPTAuth.refresh``: at most one refresh in flight; a request
  that finds the tokens already refreshed by someone else uses those) and retries once. Only a
  body of at most ``MAX_RETAINED_BODY`` (8 MiB) is kept in memory for that retry; a larger one
  is streamed through, and its 401 is answered, after the refresh, with a 503 that Codex
  retries by itself (it retries 5xx answers, not 429s), sending the body again;
- forwards at most ``MAX_IN_FLIGHT`` (4) requests of one grant at once; the next
  ``MAX_WAITING`` (16) wait for a slot with their bodies unread (Codex 0.138 does not retry a 429:
  its ``retry_429`` is off, so a 429 would fail the turn, while a wait costs it nothing), and any
  more are answered 429 with a plain body. So one container holds at most 4 × 8 MiB of bodies
  and 16 unread sockets, never 100 × 64 MiB;
- when there is no usable sign-in (never signed in, or the refresh was refused for good) answers
  **400** with a plain-words message: Codex makes one attempt on a 400 and reports its body as
  the turn's error, so the chat is told at once and nothing loops. A second 401 after a fresh
  refresh is answered the same way, and so is a 401 within ``NANOHOST_CHATGPT_REFRESH_INTERVAL``
  (60 s) of the last refresh (``RefreshTooSoon``: no refresh is sent; a container looping 401s
  cannot rotate the token at the issuer faster). The issuer unreachable: 502 (Codex and the
  runner retry).

And Codex's own refresh (``CODEX_REFRESH_TOKEN_URL_OVERRIDE`` points it at the gateway's
``/v1/oauth/token``; it calls it after a 401 or when its dummy ``last_refresh`` is 8 days old)
gets the same placeholder back as its "rotated" tokens (``dummy_refresh``): the container never
reaches the real issuer and never holds a real token. Codex's model-list call on this path
(``GET /v1/models?client_version=X.Y.Z``, exactly) is forwarded too (``is_models_call``).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Hashable
from typing import Any

from aiohttp import ClientSession, web
from multidict import CIMultiDict

from nanohost.auth.refresher import ChatGPTAuth, ChatGPTUnavailable
from nanohost.auth.tokens import ChatGPTTokens

log = logging.getLogger(__name__)

TOKEN_PATH = "/v1/oauth/token"
"""Where the container's Codex is told to refresh (``CODEX_REFRESH_TOKEN_URL_OVERRIDE``)."""
MAX_TOKEN_BODY = 64 * 1024


_MODELS_CALL = re.compile(r"/v1/models\?client_version=[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,6}", re.ASCII)
"""ASCII digits only (``\\d`` would also take Arabic-Indic, fullwidth and other Unicode digits)."""


def is_models_call(method: str, raw_target: str) -> bool:
    """Codex's model-list call on its ChatGPT path (``GET /models?client_version=0.138.0``): the
    one query a chatgpt grant may send, matched whole on the raw target."""
    return method == "GET" and _MODELS_CALL.fullmatch(raw_target) is not None


def _plain(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "nanohost_chatgpt"}}, status=status)


MAX_IN_FLIGHT = 4
"""Requests of one grant (one session's placeholder) forwarded at once. Codex makes one model
call at a time per turn; more than this only a hostile container sends."""
MAX_WAITING = 16
"""Requests of one grant waiting for a slot (their bodies unread: aiohttp stops reading a body
nobody reads, so a waiting request holds a socket buffer, not its body). Further ones get 429."""
MAX_RETAINED_BODY = 8 * 1024 * 1024
"""A body up to this size is read and kept for the one retry after a refresh; a larger one is
streamed through (never held in memory) and, on a 401, the token is renewed and a 503 asks Codex
to send it again (it retries 5xx by itself)."""

TOO_MANY = (
    "nanohost gateway: too many model requests at once from this session "
    f"(at most {MAX_IN_FLIGHT} forwarded and {MAX_WAITING} waiting)"
)
RESEND = "nanohost gateway: the ChatGPT sign-in was renewed while this request was on its way; send it again"


class _Slots:
    def __init__(self) -> None:
        self.semaphore = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.users = 0
        """Requests forwarded or waiting."""


class ChatGPTUpstream:
    def __init__(self, auth: ChatGPTAuth, base_url: str) -> None:
        self.auth = auth
        self.base_url = base_url.rstrip("/")
        self._slots: dict[Hashable, _Slots] = {}
        self._changed: asyncio.Condition | None = None

    def users(self, grant: Hashable) -> int:
        """Requests of ``grant`` forwarded or waiting right now."""
        slots = self._slots.get(grant)
        return slots.users if slots is not None else 0

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def wait_users(self, grant: Hashable, count: int) -> None:
        """Until ``grant`` has ``count`` requests forwarded or waiting (for tests and checks)."""
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.users(grant) >= count)

    async def forward(
        self,
        request: web.Request,
        client: ClientSession,
        headers: CIMultiDict[str],
        path: str,
        group: str,
        grant: Hashable,
    ) -> web.StreamResponse:
        """Forward a vetted request (``path`` is its vetted path below ``/v1``) of ``grant``, at
        most ``MAX_IN_FLIGHT`` of a grant at once; the next ``MAX_WAITING`` wait for a slot (Codex
        does not retry a 429: waiting is what it copes with), any more are answered 429."""
        slots = self._slots.setdefault(grant, _Slots())
        if slots.users >= MAX_IN_FLIGHT + MAX_WAITING:
            log.warning("gateway: group %s: too many ChatGPT requests at once; refused", group)
            return _plain(429, TOO_MANY)
        slots.users += 1
        try:
            changed = self._condition()
            async with changed:
                changed.notify_all()
            async with slots.semaphore:
                return await self._forward(request, client, headers, path, group)
        finally:
            slots.users -= 1
            if slots.users == 0 and self._slots.get(grant) is slots:
                del self._slots[grant]

    async def _forward(
        self,
        request: web.Request,
        client: ClientSession,
        headers: CIMultiDict[str],
        path: str,
        group: str,
    ) -> web.StreamResponse:
        length = request.content_length if request.body_exists else 0
        # the gateway has checked: a body has a Content-Length, of at most MAX_REQUEST_BODY
        kept = length is not None and length <= MAX_RETAINED_BODY
        body = await request.read() if request.body_exists and kept else None  # for the one retry
        if not kept:
            headers["Content-Length"] = str(length)  # streamed as sent, not re-chunked
        url = self.base_url + path
        tokens: ChatGPTTokens | None = None
        refreshed = False
        for _ in range(2):
            got = await self._tokens(tokens, group)
            if isinstance(got, web.Response):
                return got
            tokens, refreshed = got
            headers["Authorization"] = f"Bearer {tokens.access_token}"
            headers["chatgpt-account-id"] = tokens.account_id
            data: Any = (io.BytesIO(body) if body else None) if kept else request.content
            try:
                upstream = await client.request(request.method, url, headers=headers, data=data)
            except Exception as exc:
                log.warning("gateway: ChatGPT backend unreachable for group %s: %s", group, exc)
                return _plain(502, f"upstream unreachable: {exc}")
            if upstream.status == 401:
                upstream.release()
                if refreshed:
                    return _plain(
                        400,
                        "the ChatGPT backend refused this host's sign-in even after renewing it; "
                        "an operator should check the plan (`nanohost auth status`) or sign in again",
                    )
                log.info("gateway: group %s: the ChatGPT backend refused the access token; refreshing", group)
                if not kept:  # the streamed body is spent: renew now, and Codex sends it again
                    renewed = await self._tokens(tokens, group)
                    return renewed if isinstance(renewed, web.Response) else _plain(503, RESEND)
                continue  # one refresh per request, then one retry
            async with upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _SKIP_RESPONSE:
                        response.headers.add(key, value)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response
        raise AssertionError("unreachable")

    async def _tokens(
        self, refused: ChatGPTTokens | None, group: str
    ) -> tuple[ChatGPTTokens, bool] | web.Response:
        """The tokens to send (refreshed when ``refused`` was refused, or when expired) and whether
        they were just refreshed; or the plain answer when there are none."""
        try:
            if refused is None:
                return await self.auth.credentials()
            return await self.auth.refresh(refused.access_token), True
        except ChatGPTUnavailable as exc:
            log.warning("gateway: group %s: %s", group, exc)
            return _plain(400, str(exc))
        except Exception as exc:  # the issuer unreachable, or failing: transient
            log.warning("gateway: group %s: ChatGPT token refresh failed: %s", group, exc)
            return _plain(502, f"the ChatGPT sign-in service could not be reached: {exc}")


_SKIP_RESPONSE = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}
    | {"set-cookie", "set-cookie2"}
)
"""Never forwarded to a container: hop-by-hop headers, and the backend's cookies (the gateway's
sessions keep no cookie either: ``aiohttp.DummyCookieJar``)."""


async def dummy_refresh(request: web.Request, placeholder_auth: dict[str, str]) -> web.Response:
    """Codex's refresh call from a container: answered with the placeholder it already has.

    ``placeholder_auth`` maps each chatgpt-mode placeholder to its group. An unknown one (the
    host has just restarted and not restored its grants yet) gets a 503, which Codex takes as
    transient, never as a refused sign-in."""
    if request.content_length is None or request.content_length > MAX_TOKEN_BODY:
        return _plain(400, "nanohost gateway: a token request needs a small body")
    try:
        data: Any = json.loads(await request.read())
    except ValueError:
        return _plain(400, "nanohost gateway: a token request must be JSON")
    token = data.get("refresh_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or token not in placeholder_auth:
        return _plain(503, "unknown nanohost placeholder")
    return web.json_response({"access_token": token, "refresh_token": token})
