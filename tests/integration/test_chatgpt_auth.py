"""A chatgpt-auth group end to end: real Codex in the real container takes its ChatGPT request
path to the gateway, which answers with the host's sign-in from a fake issuer and a fake ChatGPT
backend on 127.0.0.1. No real token is ever inside the container; a revoked sign-in is said in
the chat and on /healthz, once per message, with one refresh attempt in all."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from nanohost.auth.store import TokenStore
from nanohost.auth.tokens import ChatGPTTokens
from tests.auth.conftest import backend, issuer  # noqa: F401  (fixtures)
from tests.fakes.chatgpt import ACCOUNT, FakeChatGPTBackend, FakeIssuer
from tests.fakes.model_server import ModelServer, Reply, model_server  # noqa: F401  (fixture)
from tests.integration.conftest import add_group, make_settings
from tests.integration.test_host_codex import everything_the_container_sees
from tests.support.host import containers_of

pytestmark = [pytest.mark.docker, pytest.mark.codex]


def signed_in(tmp_path: Path, issuer: FakeIssuer, backend: FakeChatGPTBackend) -> tuple[Any, TokenStore]:  # noqa: F811
    # two expiries a few seconds apart below: no minimum interval between refreshes here
    # (the minimum: tests/auth, test_a_loop_of_401s_rotates_the_refresh_token_at_most_once_a_minute)
    settings = make_settings(
        tmp_path, auth_issuer=issuer.url, chatgpt_base_url=backend.url, chatgpt_refresh_interval=0
    )
    store = TokenStore(settings.data_dir)
    store.save(ChatGPTTokens.from_oauth(**issuer.issue()))
    add_group(settings, "plan", provider="codex", auth="chatgpt")
    return settings, store


async def test_codex_answers_through_the_chatgpt_path_with_no_token_in_the_container(
    tmp_path: Path,
    start_host: Any,
    docker_client: Any,
    issuer: FakeIssuer,  # noqa: F811
    backend: FakeChatGPTBackend,  # noqa: F811
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings, store = signed_in(tmp_path, issuer, backend)
    tokens_seen: set[str] = set()
    first = store.load()
    assert first is not None
    tokens_seen |= {first.access_token, first.refresh_token, first.id_token}
    host = await start_host(settings)
    message_id = await host.send("plan", "hello chatgpt")
    replies = await host.replies_after("plan", message_id, wait=120)
    assert [r["text"] for r in replies] == ["echo: hello chatgpt"]
    assert backend.seen_auth[-1] == (f"Bearer {issuer.access_token}", ACCOUNT)
    request = model_server.requests[0]
    assert request.headers["originator"] and "nh-ph-" not in str(request.headers)
    assert "hello chatgpt" in request.user_texts
    # Codex's model-list call on its ChatGPT path reached the backend, with the host's token too
    assert backend.models_calls and backend.models_calls[0] == (
        "client_version=0.138.0",
        f"Bearer {first.access_token}",
    )

    # the access token expires between two turns: one refresh, the turn is answered
    issuer.expire_access()
    second = await host.send("plan", "after expiry")
    replies = await host.replies_after("plan", second, wait=120)
    assert [r["text"] for r in replies] == ["echo: after expiry"]
    assert issuer.refresh_requests == 1
    rotated = store.load()
    assert rotated is not None and rotated.refresh_token in issuer.live_refresh
    tokens_seen |= {rotated.access_token, rotated.refresh_token}

    # expiry in the middle of a turn: the tool call's follow-up request meets the 401
    hold = asyncio.Event()
    command = {"name": "exec_command", "arguments": json.dumps({"cmd": "echo mid-turn"})}
    model_server.script(Reply(tool_call=command, hold=hold), "finished after the refresh")
    before = len(model_server.requests)
    third = await host.send("plan", "run a command")
    await model_server.wait_streaming(1, timeout=120)
    issuer.expire_access()
    hold.set()
    replies = await host.replies_after("plan", third, wait=120)
    assert "finished after the refresh" in [r["text"] for r in replies]
    assert issuer.refresh_requests == 2  # one more, for the one 401 in the turn
    assert len(model_server.requests) == before + 2  # the turn's two model calls, neither repeated
    assert "mid-turn" in model_server.requests[-1].all_text  # the command's output reached the model
    latest = store.load()
    assert latest is not None
    tokens_seen |= {latest.access_token, latest.refresh_token}

    (container,) = containers_of(docker_client, settings, "plan")
    seen = everything_the_container_sees(container, settings, "plan")
    assert "requires_openai_auth = true" in seen and "nh-ph-" in seen
    _, auth_json = container.exec_run(["cat", "/home/agent/.codex/auth.json"])
    assert b'"auth_mode": "chatgpt"' in auth_json and b"nh-ph-" in auth_json
    for secret in tokens_seen:
        assert secret not in seen
        assert secret not in container.logs().decode(errors="replace")


async def test_a_revoked_sign_in_is_told_in_the_chat_and_never_loops(
    tmp_path: Path,
    start_host: Any,
    issuer: FakeIssuer,  # noqa: F811
    backend: FakeChatGPTBackend,  # noqa: F811
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings, store = signed_in(tmp_path, issuer, backend)
    issuer.revoke_all()
    host = await start_host(settings)
    first = await host.send("plan", "hello?")
    replies = await host.replies_after("plan", first, wait=120)
    assert len(replies) == 1
    text = replies[0]["text"]
    assert "ChatGPT sign-in is no longer valid" in text and "nanohost auth login" in text
    assert "API key" not in text  # not the api-key mode's message
    second = await host.send("plan", "and now?")
    again = await host.replies_after("plan", second, wait=120)
    assert len(again) == 1 and "ChatGPT sign-in is no longer valid" in again[0]["text"]
    assert issuer.refresh_requests == 1  # one refused refresh in all: no loop
    assert backend.refused == 1 and model_server.requests == []
    health = await (await host.client.get("/healthz")).json()
    assert health["ok"] is False and "broken" in health["chatgpt_auth"]


async def test_codex_sends_a_request_again_after_the_503_of_a_renewed_large_body(
    tmp_path: Path,
    start_host: Any,
    issuer: FakeIssuer,  # noqa: F811
    backend: FakeChatGPTBackend,  # noqa: F811
    model_server: ModelServer,  # noqa: F811
) -> None:
    """What the gateway's answer to a streamed body's 401 relies on (``nanohost.auth.upstream``):
    real Codex on its ChatGPT path takes a 503 as transient and the same request is sent again
    (Codex retries 5xx itself; the runner's transport retry is the backstop), so the turn is
    answered and the chat never hears of it."""
    from nanohost.auth.upstream import RESEND

    settings, _ = signed_in(tmp_path, issuer, backend)
    model_server.script(Reply(status=503, error_body=json.dumps({"error": {"message": RESEND}})))
    host = await start_host(settings)
    message_id = await host.send("plan", "resend me")
    replies = await host.replies_after("plan", message_id, wait=120)
    assert [r["text"] for r in replies] == ["echo: resend me"]
    first, second = model_server.requests
    assert first.body == second.body  # the same request, sent again


async def test_an_auth_mode_written_behind_the_cli_stops_the_wake_and_says_so(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "odd", auth="oauth2")  # the CLI would refuse it; the wake reads it again
    host = await start_host(settings)
    message_id = await host.send("odd", "hi")
    replies = await host.replies_after("odd", message_id)
    assert len(replies) == 1 and "unknown auth mode 'oauth2'" in replies[0]["text"]
    assert containers_of(docker_client, settings, "odd", all=True) == []


async def test_a_provider_that_cannot_use_the_chatgpt_sign_in_is_refused_at_the_wake(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    settings = make_settings(tmp_path)
    add_group(settings, "open", provider="opencode", auth="chatgpt")
    host = await start_host(settings)
    message_id = await host.send("open", "hi")
    (reply,) = await host.replies_after("open", message_id)
    assert "the opencode provider cannot use the chatgpt auth mode (it takes api-key)" in reply["text"]
    assert containers_of(docker_client, settings, "open", all=True) == []


async def test_a_restarted_host_adopts_a_chatgpt_container_with_its_auth_mode(
    tmp_path: Path,
    start_host: Any,
    docker_client: Any,
    issuer: FakeIssuer,  # noqa: F811
    backend: FakeChatGPTBackend,  # noqa: F811
    model_server: ModelServer,  # noqa: F811
) -> None:
    settings, _ = signed_in(tmp_path, issuer, backend)
    host = await start_host(settings)
    first = await host.send("plan", "before the restart")
    assert [r["text"] for r in await host.replies_after("plan", first, wait=120)] == [
        "echo: before the restart"
    ]
    (container,) = containers_of(docker_client, settings, "plan")
    await host.client.close()
    set_auth(settings, "plan", "api-key")  # edited while no host runs: the running container keeps its grant

    again = await start_host(settings)  # adopts the running container; the grant comes from the database
    assert again.orchestrator.runtimes[1].container_id == container.id
    (grant,) = again.orchestrator.ctx.gateway._grants.values()
    assert grant.auth == "chatgpt"
    second = await again.send("plan", "after the restart")
    assert [r["text"] for r in await again.replies_after("plan", second, wait=120)] == [
        "echo: after the restart"
    ]
    assert len(backend.seen_auth) == 2 and backend.refused == 0


def set_auth(settings: Any, group: str, auth: str) -> None:
    from nanohost.db import make_engine, make_session_factory
    from nanohost.db.engine import transaction
    from nanohost.groups import get_group

    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        get_group(db, group).config.auth = auth
    engine.dispose()
