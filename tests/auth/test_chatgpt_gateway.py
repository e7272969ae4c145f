"""The gateway's ChatGPT route over a real unix socket, against a fake issuer and a fake ChatGPT
backend on 127.0.0.1: the real token and account id are injected, a 401 costs exactly one
refresh and one retry, concurrent refreshes collapse into one, a refused refresh is said plainly
and never retried."""

from __future__ import annotations

import asyncio
import io
import json
import stat
from pathlib import Path

from aiohttp import ClientSession, DummyCookieJar, UnixConnector

from nanohost.auth.refresher import ChatGPTAuth, describe
from nanohost.auth.store import TokenStore
from nanohost.auth.tokens import ChatGPTTokens
from nanohost.auth.upstream import (
    MAX_IN_FLIGHT,
    MAX_RETAINED_BODY,
    MAX_WAITING,
    ChatGPTUpstream,
    is_models_call,
)
from nanohost.gateway import Gateway
from tests.auth.conftest import Gw
from tests.fakes.chatgpt import ACCOUNT, FakeChatGPTBackend, FakeIssuer
from tests.fakes.model_server import ModelServer, Reply


async def test_the_real_token_and_account_are_injected_and_the_placeholder_stays_home(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend, model_server: ModelServer
) -> None:
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    status, body = await gw.ask(placeholder, "hello", **{"chatgpt-account-id": "someone-else"})
    assert status == 200 and "echo: hello" in body
    assert backend.seen_auth == [(f"Bearer {issuer.access_token}", ACCOUNT)]
    assert placeholder not in json.dumps(model_server.requests[0].headers)
    assert issuer.refresh_requests == 0


async def test_an_api_key_grant_never_takes_the_chatgpt_route(gw: Gw, backend: FakeChatGPTBackend) -> None:
    placeholder = gw.gateway.grant("g1", 1)  # api-key, and this gateway has no key
    status, body = await gw.ask(placeholder, "hello")
    assert status == 401 and "OPENAI_API_KEY" in body
    assert backend.seen_auth == []


async def test_expiry_mid_turn_costs_one_refresh_and_one_retry(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend, store: TokenStore
) -> None:
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    assert (await gw.ask(placeholder, "first"))[0] == 200
    old = store.load()
    assert old is not None
    issuer.expire_access()  # the backend stops accepting the access token between two requests
    status, body = await gw.ask(placeholder, "second")
    assert status == 200 and "echo: second" in body
    assert issuer.refresh_requests == 1
    assert backend.refused == 1  # the one 401, then the retry with the new token
    new = store.load()
    assert new is not None and new.access_token == issuer.access_token
    # the rotated refresh token was saved (the old one is spent at the issuer)
    assert new.refresh_token != old.refresh_token and new.refresh_token in issuer.live_refresh
    assert old.refresh_token in issuer.used_refresh
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


async def test_an_access_token_past_its_exp_is_refreshed_before_it_is_sent(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend, store: TokenStore
) -> None:
    from nanohost.auth.tokens import ChatGPTTokens

    store.save(ChatGPTTokens.from_oauth(**issuer.issue(expires_in=-60)))
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    assert (await gw.ask(placeholder, "hi"))[0] == 200
    assert issuer.refresh_requests == 1 and backend.refused == 0


async def test_two_groups_racing_a_refresh_send_exactly_one(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend
) -> None:
    first = gw.gateway.grant("alpha", 1, auth="chatgpt")
    second = gw.gateway.grant("beta", 2, auth="chatgpt")
    issuer.expire_access()
    issuer.refresh_gate = asyncio.Event()  # hold the refresh until both groups met their 401
    asks = [
        asyncio.create_task(gw.ask(first, "from alpha")),
        asyncio.create_task(gw.ask(second, "from beta")),
    ]
    await issuer.refresh_arrived.wait()
    await backend.wait_refused(2)
    issuer.refresh_gate.set()
    results = await asyncio.gather(*asks)
    assert [status for status, _ in results] == [200, 200]
    assert "echo: from alpha" in results[0][1] and "echo: from beta" in results[1][1]
    assert issuer.refresh_requests == 1
    assert issuer.used_refresh and not (issuer.used_refresh & issuer.live_refresh)


async def test_two_processes_sharing_the_store_refresh_once(store: TokenStore, issuer: FakeIssuer) -> None:
    """Two refreshers with their own asyncio locks (as two processes have) are serialised by the
    file lock, and the second finds the first's tokens on disk instead of refreshing again."""
    loaded = store.load()
    assert loaded is not None
    stale = loaded.access_token
    one, two = ChatGPTAuth(store, issuer.url), ChatGPTAuth(store, issuer.url)
    try:
        a, b = await asyncio.gather(one.refresh(stale), two.refresh(stale))
    finally:
        await one.close()
        await two.close()
    assert issuer.refresh_requests == 1
    assert a.access_token == b.access_token == issuer.access_token


async def test_a_revoked_sign_in_is_said_plainly_and_never_retried(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend, store: TokenStore
) -> None:
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    issuer.revoke_all()
    status, body = await gw.ask(placeholder, "hello")
    # 400: Codex makes one attempt and reports the message; no word the runner reads as a bad key
    assert status == 400
    message = json.loads(body)["error"]["message"]
    assert "ChatGPT sign-in is no longer valid" in message and "nanohost auth login" in message
    assert "refresh_token_invalidated" in message
    assert issuer.refresh_requests == 1
    for _ in range(3):  # later turns: the same message, with no refresh and no backend call
        assert (await gw.ask(placeholder, "again"))[0] == 400
    assert issuer.refresh_requests == 1 and backend.refused == 1
    info = describe(store)
    assert info["state"] == "broken" and "nanohost auth login" in info["problem"]


async def test_a_reused_refresh_token_marks_the_sign_in_broken(
    gw: Gw, issuer: FakeIssuer, store: TokenStore
) -> None:
    """What copying auth.json elsewhere does: someone else spent the refresh token first."""
    loaded = store.load()
    assert loaded is not None
    issuer.live_refresh.discard(loaded.refresh_token)
    issuer.used_refresh.add(loaded.refresh_token)
    issuer.expire_access()
    status, body = await gw.ask(gw.gateway.grant("g1", 1, auth="chatgpt"), "hello")
    assert status == 400 and "refresh_token_reused" in body
    assert describe(store)["state"] == "broken"


async def test_not_signed_in_is_said_plainly(gw: Gw, store: TokenStore, issuer: FakeIssuer) -> None:
    store.delete()
    status, body = await gw.ask(gw.gateway.grant("g1", 1, auth="chatgpt"), "hello")
    assert status == 400 and "not signed in to ChatGPT" in body
    assert issuer.refresh_requests == 0


async def test_codex_own_refresh_gets_the_placeholder_back_and_never_reaches_the_issuer(
    gw: Gw, issuer: FakeIssuer
) -> None:
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    api_key_grant = gw.gateway.grant("g2", 2)

    async def refresh(token: str) -> tuple[int, dict[str, object]]:
        body = {"client_id": "x", "grant_type": "refresh_token", "refresh_token": token}
        async with gw.client.post("http://gateway/v1/oauth/token", json=body) as response:
            return response.status, await response.json()

    assert await refresh(placeholder) == (200, {"access_token": placeholder, "refresh_token": placeholder})
    for other in (api_key_grant, "rt-anything"):
        status, _ = await refresh(other)
        assert status == 503  # transient for Codex: never "refresh token revoked"
    assert issuer.refresh_requests == 0


async def test_a_new_login_heals_a_broken_sign_in_without_a_restart(
    gw: Gw, issuer: FakeIssuer, store: TokenStore
) -> None:
    from nanohost.auth.refresher import locked_save
    from nanohost.auth.tokens import ChatGPTTokens

    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    issuer.revoke_all()
    assert (await gw.ask(placeholder, "x"))[0] == 400
    locked_save(store, ChatGPTTokens.from_oauth(**issuer.issue()))
    status, body = await gw.ask(placeholder, "back")
    assert status == 200 and "echo: back" in body


async def test_the_issuer_down_is_transient(gw: Gw, store: TokenStore, issuer: FakeIssuer) -> None:
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    issuer.expire_access()
    await issuer.close()
    status, _ = await gw.ask(placeholder, "hello")
    assert status == 502  # Codex and the runner retry; the sign-in is not marked broken
    assert describe(store)["state"] == "ok"


async def test_an_issuer_that_is_down_is_asked_again_only_after_a_growing_pause(
    gw: Gw, store: TokenStore, issuer: FakeIssuer
) -> None:
    """During an outage of the sign-in service, every group's requests would each send it a
    refresh; after a failure it is left alone for 5 s, then 10 s, ... and a success resets that."""
    clock = FakeClock()
    gw.auth.clock = clock
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    issuer.expire_access()
    issuer.failing = 503
    status, body = await gw.ask(placeholder, "hello")
    assert status == 502 and "could not be reached" in body
    assert issuer.refresh_requests == 1
    for n in range(10):  # 4 s of requests: none reaches the issuer
        clock.now += 0.4
        status, body = await gw.ask(placeholder, f"again {n}")
        assert status == 502 and "asked again in" in body, body
    assert issuer.refresh_requests == 1
    clock.now += 1.1  # 5 s after the failure: asked once more, fails, and the pause doubles
    assert (await gw.ask(placeholder, "later"))[0] == 502
    assert issuer.refresh_requests == 2
    clock.now += 9
    assert (await gw.ask(placeholder, "within 10 s"))[0] == 502
    assert issuer.refresh_requests == 2
    issuer.failing = None
    clock.now += 1.1
    status, body = await gw.ask(placeholder, "back")
    assert status == 200 and "echo: back" in body
    assert issuer.refresh_requests == 3
    assert describe(store)["state"] == "ok"  # an outage never marks the sign-in broken
    # the next outage starts again at the shortest pause
    clock.now += 61
    issuer.expire_access()
    issuer.failing = 500
    assert (await gw.ask(placeholder, "down again"))[0] == 502
    clock.now += 5.1
    assert (await gw.ask(placeholder, "5 s later"))[0] == 502
    assert issuer.refresh_requests == 5
    gw.auth._failures = 5000  # days of an outage: the pause stays at its cap, no overflow
    clock.now += 301
    assert (await gw.ask(placeholder, "days later"))[0] == 502
    assert issuer.refresh_requests == 6
    clock.now += 299
    assert (await gw.ask(placeholder, "within the cap"))[0] == 502
    assert issuer.refresh_requests == 6


async def test_a_backend_that_keeps_refusing_costs_one_refresh_per_request(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend, store: TokenStore
) -> None:
    from nanohost.auth.tokens import ChatGPTTokens

    clock = FakeClock()
    gw.auth.clock = clock
    backend.refuse_all = True
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    status, body = await gw.ask(placeholder, "hello")
    assert status == 400 and "even after renewing it" in body
    assert issuer.refresh_requests == 1 and backend.refused == 2
    # an access token past its exp is refreshed before sending; a 401 then costs no second refresh
    clock.now += 61  # (and no refresh at all within a minute of the last one)
    store.save(ChatGPTTokens.from_oauth(**issuer.issue(expires_in=-60)))
    assert (await gw.ask(placeholder, "again"))[0] == 400
    assert issuer.refresh_requests == 2 and backend.refused == 3
    assert describe(store)["state"] == "ok"  # the sign-in itself is fine: nothing marked broken


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_loop_of_401s_rotates_the_refresh_token_at_most_once_a_minute(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend, store: TokenStore
) -> None:
    """A container that makes the backend answer 401 (whatever it sends) cannot make the host
    rotate the refresh token at the issuer once per request."""
    clock = FakeClock()
    gw.auth.clock = clock
    backend.refuse_all = True
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    assert (await gw.ask(placeholder, "first"))[0] == 400
    assert issuer.refresh_requests == 1
    for n in range(20):
        clock.now += 2  # 40 s in all: still within the minute
        status, body = await gw.ask(placeholder, f"again {n}")
        assert status == 400, body
        assert "less than a minute ago" in json.loads(body)["error"]["message"]
    assert issuer.refresh_requests == 1
    # past its exp too: not renewed again within the minute either
    store.save(ChatGPTTokens.from_oauth(**issuer.issue(expires_in=-60)))
    assert (await gw.ask(placeholder, "expired"))[0] == 400
    assert issuer.refresh_requests == 1
    clock.now += 21  # a minute after the refresh: one more, and again no more than that
    for _ in range(5):
        assert (await gw.ask(placeholder, "later"))[0] == 400
    assert issuer.refresh_requests == 2
    backend.refuse_all = False  # the backend takes the token again: no refresh needed
    assert (await gw.ask(placeholder, "fine"))[0] == 200
    assert issuer.refresh_requests == 2 and describe(store)["state"] == "ok"


async def test_an_unreadable_store_is_said_plainly_not_retried(gw: Gw, store: TokenStore) -> None:
    store.path.write_text("{not json")
    status, body = await gw.ask(gw.gateway.grant("g1", 1, auth="chatgpt"), "hello")
    assert status == 400 and "cannot be read" in body and "nanohost auth login" in body


async def test_codex_model_list_call_is_the_one_query_a_chatgpt_grant_may_send(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend
) -> None:
    chatgpt = gw.gateway.grant("g1", 1, auth="chatgpt")
    api_key = gw.gateway.grant("g2", 2)

    async def get(placeholder: str, target: str) -> int:
        async with gw.client.get(
            f"http://gateway{target}", headers={"Authorization": f"Bearer {placeholder}"}
        ) as response:
            return response.status

    assert await get(chatgpt, "/v1/models?client_version=0.138.0") == 404  # the backend's answer
    assert backend.models_calls == [("client_version=0.138.0", f"Bearer {issuer.access_token}")]
    for target in (
        "/v1/models?client_version=0.138.0&x=1",
        "/v1/models?client_version=../../x",
        "/v1/models",
        "/v1/files?client_version=0.138.0",
    ):
        assert await get(chatgpt, target) == 403, target
    assert await get(api_key, "/v1/models?client_version=0.138.0") == 403
    assert len(backend.models_calls) == 1


async def test_a_caller_gone_mid_refresh_never_loses_the_rotated_token(
    store: TokenStore, issuer: FakeIssuer
) -> None:
    loaded = store.load()
    assert loaded is not None
    auth = ChatGPTAuth(store, issuer.url)
    issuer.refresh_gate = asyncio.Event()
    caller = asyncio.create_task(auth.refresh(loaded.access_token))
    await issuer.refresh_arrived.wait()  # the issuer is rotating the token right now
    caller.cancel()
    issuer.refresh_gate.set()
    await auth.close()  # waits for the refresh under way
    saved = store.load()
    assert caller.cancelled()
    assert saved is not None and saved.refresh_token in issuer.live_refresh  # the rotated one, kept
    assert saved.access_token == issuer.access_token and issuer.refresh_requests == 1


def test_a_refresh_answer_with_an_unreadable_id_token_keeps_the_rotated_refresh_token() -> None:
    from nanohost.auth.tokens import ChatGPTTokens

    old = ChatGPTTokens.from_oauth(**FakeIssuer().issue())
    new = old.rotated("not-a-jwt", "new-access", "new-refresh")
    assert (new.access_token, new.refresh_token, new.account_id) == ("new-access", "new-refresh", ACCOUNT)
    assert new.id_token == old.id_token


async def test_a_backend_cookie_reaches_neither_the_container_nor_another_group(
    tmp_path: Path, store: TokenStore, issuer: FakeIssuer, backend: FakeChatGPTBackend
) -> None:
    """The backend's cookies stay out of the gateway: one group's are never sent upstream for
    another (no shared cookie jar), and no Set-Cookie is forwarded to a container."""
    auth = ChatGPTAuth(store, issuer.url)
    # by name, not 127.0.0.1: a cookie jar keeps no cookie for an IP address
    base = backend.url.replace("127.0.0.1", "localhost")
    gateway = Gateway(tmp_path / "gw", "http://127.0.0.1:9/v1", None, chatgpt=ChatGPTUpstream(auth, base))
    await gateway.start()
    backend.set_cookie = "session=alpha-secret; Path=/; Max-Age=3600"
    try:
        async with ClientSession(
            connector=UnixConnector(path=str(gateway.socket_path)), cookie_jar=DummyCookieJar()
        ) as client:
            gw = Gw(gateway, client, auth)
            alpha = gateway.grant("alpha", 1, auth="chatgpt")
            beta = gateway.grant("beta", 2, auth="chatgpt")
            for target in ("/v1/models?client_version=0.138.0", "/v1/responses"):
                method = "GET" if "models" in target else "POST"
                async with client.request(
                    method,
                    f"http://gateway{target}",
                    json=None if method == "GET" else {"model": "m", "input": "hi"},
                    headers={"Authorization": f"Bearer {alpha}"},
                ) as response:
                    await response.read()
                    assert "Set-Cookie" not in response.headers and "Set-Cookie2" not in response.headers
            assert (await gw.ask(beta, "from beta"))[0] == 200
    finally:
        await gateway.stop()
        await auth.close()
    assert len(backend.seen_cookies) == 3 and backend.seen_cookies == ["", "", ""]


def test_the_models_call_takes_ascii_digits_only() -> None:
    assert is_models_call("GET", "/v1/models?client_version=0.138.0")
    for target in (
        "/v1/models?client_version=0.1\u0663\u0668.0",  # Arabic-Indic digits
        "/v1/models?client_version=\u0660.138.0",
        "/v1/models?client_version=0.138.\uff10",  # fullwidth zero
    ):
        assert not is_models_call("GET", target), target


def _big_ask(text: str, size: int) -> bytes:
    padding = "x" * size
    body = {
        "model": "gpt-5.5",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": padding}]},
            {"role": "user", "content": [{"type": "input_text", "text": text}]},
        ],
    }
    return json.dumps(body).encode()


async def test_a_grant_has_four_requests_in_flight_and_a_bounded_queue(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend, model_server: ModelServer
) -> None:
    """Requests of one grant beyond four wait (their bodies unread) rather than fail, since Codex
    does not retry a 429; past the waiting room a 429 says why. Other grants are not held up."""
    upstream = gw.gateway.chatgpt
    assert upstream is not None
    hold = asyncio.Event()
    model_server.script(*(Reply(text=f"held {n}", hold=hold) for n in range(MAX_IN_FLIGHT)))
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    grant = gw.gateway._grants[placeholder]
    full = MAX_IN_FLIGHT + MAX_WAITING
    asks = [asyncio.create_task(gw.ask(placeholder, f"ask {n}")) for n in range(full)]
    await model_server.wait_streaming(MAX_IN_FLIGHT)
    await upstream.wait_users(grant, full)
    assert len(model_server.requests) == MAX_IN_FLIGHT  # the rest wait at the gateway
    status, body = await gw.ask(placeholder, "one too many")
    assert status == 429 and "too many model requests at once" in json.loads(body)["error"]["message"]
    other = gw.gateway.grant("g2", 2, auth="chatgpt")  # another group is not held up
    assert (await gw.ask(other, "from g2"))[0] == 200
    hold.set()
    results = await asyncio.gather(*asks)
    assert [status for status, _ in results] == [200] * full
    assert len(model_server.requests) == full + 1
    assert upstream.users(grant) == 0


async def test_a_large_body_is_streamed_not_kept_and_a_401_is_renewed_then_resent_by_codex(
    gw: Gw, issuer: FakeIssuer, backend: FakeChatGPTBackend, model_server: ModelServer
) -> None:
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    big = _big_ask("big one", MAX_RETAINED_BODY + 1024)
    issuer.expire_access()

    async def post(data: bytes) -> tuple[int, str]:
        async with gw.client.post(
            "http://gateway/v1/responses",
            data=io.BytesIO(data),
            headers={"Authorization": f"Bearer {placeholder}", "Content-Type": "application/json"},
        ) as response:
            return response.status, await response.text()

    status, body = await post(big)
    # not retried by the gateway (the body was streamed, not kept): renewed, then a 503 that
    # Codex retries by itself (it retries 5xx answers, never a 429)
    assert status == 503, body
    assert "renewed" in json.loads(body)["error"]["message"]
    assert issuer.refresh_requests == 1 and backend.refused_bytes == [len(big)]
    assert model_server.requests == []
    status, body = await post(big)  # Codex's retry
    assert status == 200 and "echo: big one" in body
    assert issuer.refresh_requests == 1
    assert len(model_server.requests[0].all_text) > MAX_RETAINED_BODY  # arrived whole
    # a small body is kept for the one retry, as before
    issuer.expire_access()
    gw.auth.min_refresh_interval = 0
    status, body = await gw.ask(placeholder, "small one")
    assert status == 200 and "echo: small one" in body
    assert issuer.refresh_requests == 2
