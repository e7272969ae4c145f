"""Fakes of the two outside systems a ChatGPT sign-in talks to, on 127.0.0.1.

- ``FakeIssuer``: the OAuth issuer (``NANOHOST_AUTH_ISSUER``). Refresh tokens are single use and
  rotate, as the real ones: a used one is answered ``refresh_token_reused``, a revoked one
  ``refresh_token_invalidated``. It speaks Codex's device-code flow too (the code counts as
  entered at the second poll). Every refresh request is counted.
- ``FakeChatGPTBackend``: ``NANOHOST_CHATGPT_BASE_URL`` (``…/codex``). ``POST …/codex/responses``
  with the issuer's current access token and account id is answered by a ``ModelServer`` (the
  Responses SSE wire format, scripted replies, recorded requests); anything else is a 401.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakes.model_server import ModelServer

ACCOUNT = "acct-fake-1234"
EMAIL = "owner@example.test"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def jwt(claims: dict[str, Any]) -> str:
    return f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2lnbmF0dXJl"


def id_token(account: str = ACCOUNT) -> str:
    return jwt(
        {
            "email": EMAIL,
            "https://api.openai.com/auth": {"chatgpt_account_id": account, "chatgpt_plan_type": "pro"},
        }
    )


class FakeIssuer:
    def __init__(self) -> None:
        self._serial = itertools.count(1)
        self.live_refresh: set[str] = set()
        self.used_refresh: set[str] = set()
        self.revoked_refresh: set[str] = set()
        self.access_token = ""
        self.refresh_requests = 0
        self.refresh_gate: asyncio.Event | None = None
        """When set by a test, refresh requests wait for it (to make callers race)."""
        self.refresh_arrived = asyncio.Event()
        self.failing: int | None = None
        """When set by a test, refresh requests are counted and answered with this status."""
        self.device_polls = 0
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        app.router.add_post("/oauth/revoke", self._revoke)
        app.router.add_post("/api/accounts/deviceauth/usercode", self._usercode)
        app.router.add_post("/api/accounts/deviceauth/token", self._device_token)
        self._server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self._server.make_url("")).rstrip("/")

    async def start(self) -> None:
        await self._server.start_server()

    async def close(self) -> None:
        await self._server.close()

    def issue(self, *, expires_in: float = 3600) -> dict[str, str]:
        """A fresh token set, as a sign-in gives it (the new access token is the valid one)."""
        n = next(self._serial)
        self.access_token = jwt({"exp": int(time.time() + expires_in), "n": n, "kind": "access"})
        refresh = f"rt-fake-{n}-{'x' * 16}"
        self.live_refresh.add(refresh)
        return {"id_token": id_token(), "access_token": self.access_token, "refresh_token": refresh}

    def expire_access(self) -> None:
        """The backend stops accepting the current access token (it expired mid-turn)."""
        self.access_token = "expired-" + self.access_token

    def revoke_all(self) -> None:
        self.revoked_refresh |= self.live_refresh
        self.live_refresh.clear()
        self.expire_access()

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            body = await request.json()
            assert body["grant_type"] == "refresh_token" and body["client_id"]
            self.refresh_requests += 1
            self.refresh_arrived.set()
            if self.refresh_gate is not None:
                await self.refresh_gate.wait()
            if self.failing is not None:
                return web.json_response({"error": "temporarily unavailable"}, status=self.failing)
            token = body["refresh_token"]
            if token in self.revoked_refresh:
                return web.json_response({"error": {"code": "refresh_token_invalidated"}}, status=401)
            if token in self.used_refresh or token not in self.live_refresh:
                return web.json_response({"error": {"code": "refresh_token_reused"}}, status=401)
            self.live_refresh.discard(token)
            self.used_refresh.add(token)
            return web.json_response(self.issue())
        form = await request.post()
        assert form["grant_type"] == "authorization_code"
        assert form["code"] == "auth-code-1" and form["code_verifier"] == "verifier-1"
        assert str(form["redirect_uri"]).endswith("/deviceauth/callback")
        return web.json_response(self.issue())

    async def _revoke(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body["token_type_hint"] == "refresh_token" and body["client_id"]
        self.live_refresh.discard(body["token"])
        self.revoked_refresh.add(body["token"])
        return web.json_response({})

    async def _usercode(self, request: web.Request) -> web.Response:
        assert (await request.json())["client_id"]
        return web.json_response({"device_auth_id": "dev-1", "user_code": "ABCD-1234", "interval": "0"})

    async def _device_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body == {"device_auth_id": "dev-1", "user_code": "ABCD-1234"}
        self.device_polls += 1
        if self.device_polls < 2:
            return web.json_response({"error": "authorization_pending"}, status=403)
        return web.json_response(
            {"authorization_code": "auth-code-1", "code_verifier": "verifier-1", "code_challenge": "c"}
        )


class FakeChatGPTBackend:
    def __init__(self, issuer: FakeIssuer, model: ModelServer) -> None:
        self.issuer = issuer
        self.model = model
        self.refused = 0
        self.refuse_all = False
        """Refuse every token (a plan without Codex access, say)."""
        self._refusals = asyncio.Condition()
        self.refused_bytes: list[int] = []
        """The body size of every refused request."""
        self.seen_auth: list[tuple[str, str]] = []
        self.models_calls: list[tuple[str, str]] = []
        self.set_cookie: str | None = None
        """A ``Set-Cookie`` value every answer carries (a backend's session cookie)."""
        self.seen_cookies: list[str] = []
        """The ``Cookie`` header of every request (empty when none was sent)."""
        app = web.Application(client_max_size=128 * 1024 * 1024)  # the gateway forwards up to 64 MiB
        app.on_response_prepare.append(self._cookies)
        app.router.add_post("/backend-api/codex/responses", self._responses)
        app.router.add_get("/backend-api/codex/models", self._models)
        self._server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self._server.make_url("/backend-api/codex"))

    async def start(self) -> None:
        await self._server.start_server()

    async def close(self) -> None:
        await self._server.close()

    async def _cookies(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer (streamed or not), as it is sent: record the request's cookies, set ours."""
        self.seen_cookies.append(request.headers.get("Cookie", ""))
        if self.set_cookie is not None:
            response.headers.add("Set-Cookie", self.set_cookie)
            response.headers.add("Set-Cookie2", self.set_cookie)

    async def _models(self, request: web.Request) -> web.Response:
        """Recorded; answered 404, as a backend without a list would (Codex then uses its own)."""
        self.models_calls.append((request.query_string, request.headers.get("Authorization", "")))
        return web.json_response({"detail": "not here"}, status=404)

    async def wait_refused(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout), self._refusals:
            await self._refusals.wait_for(lambda: self.refused >= count)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        account = request.headers.get("chatgpt-account-id", "")
        self.seen_auth.append((auth, account))
        if self.refuse_all or auth != f"Bearer {self.issuer.access_token}" or account != ACCOUNT:
            self.refused += 1
            self.refused_bytes.append(len(await request.read()))  # read, as a real server would
            async with self._refusals:
                self._refusals.notify_all()
            return web.json_response({"detail": "Could not validate your credentials"}, status=401)
        return await self.model._responses(request)
