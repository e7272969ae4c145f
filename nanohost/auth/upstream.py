"""The gateway's route for a ``chatgpt`` group: the ChatGPT backend, with the host's sign-in.

Codex in the container runs its ChatGPT request path (``requires_openai_auth``) against the
gateway, with a dummy ``auth.json`` whose access and refresh "tokens" are the session's
placeholder. So its ``POST /v1/responses`` arrives here already in the ChatGPT shape, carrying
the placeholder as its bearer and a dummy ``chatgpt-account-id`` (dropped with the other
account headers). This route

- forwards it to ``{chatgpt_base_url}/responses`` with ``Authorization: Bearer <access token>``
  and ``chatgpt-account-id: <account>`` from the host's token store;
- on a 401, refreshes once (``ChatGPTAuth.refresh``: at most one refresh in flight; a request
  that finds the tokens already refreshed by someone else uses those) and retries once;
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

import json
import logging
import re
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


class ChatGPTUpstream:
    def __init__(self, auth: ChatGPTAuth, base_url: str) -> None:
        self.auth = auth
        self.base_url = base_url.rstrip("/")

    async def forward(
        self,
        request: web.Request,
        client: ClientSession,
        headers: CIMultiDict[str],
        path: str,
        group: str,
    ) -> web.StreamResponse:
        """Forward a vetted request (``path`` is its vetted path below ``/v1``)."""
        body = await request.read() if request.body_exists else None  # kept for the one retry
        url = self.base_url + path
        tokens: ChatGPTTokens | None = None
        refreshed = False
        for _ in range(2):
            try:
                if tokens is None:
                    tokens, refreshed = await self.auth.credentials()
                else:
                    tokens, refreshed = await self.auth.refresh(tokens.access_token), True
            except ChatGPTUnavailable as exc:
                log.warning("gateway: group %s: %s", group, exc)
                return _plain(400, str(exc))
            except Exception as exc:  # the issuer unreachable, or failing: transient
                log.warning("gateway: group %s: ChatGPT token refresh failed: %s", group, exc)
                return _plain(502, f"the ChatGPT sign-in service could not be reached: {exc}")
            headers["Authorization"] = f"Bearer {tokens.access_token}"
            headers["chatgpt-account-id"] = tokens.account_id
            try:
                upstream = await client.request(request.method, url, headers=headers, data=body)
            except Exception as exc:
                log.warning("gateway: ChatGPT backend unreachable for group %s: %s", group, exc)
                return _plain(502, f"upstream unreachable: {exc}")
            if upstream.status == 401:
                upstream.release()
                if not refreshed:  # one refresh per request, then one retry
                    log.info(
                        "gateway: group %s: the ChatGPT backend refused the access token; refreshing", group
                    )
                    continue
                return _plain(
                    400,
                    "the ChatGPT backend refused this host's sign-in even after renewing it; "
                    "an operator should check the plan (`nanohost auth status`) or sign in again",
                )
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
