"""`nanohost auth login | status | logout` and `groups config --auth`, through the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from nanohost.auth.store import TokenStore
from nanohost.auth.tokens import ChatGPTTokens
from nanohost.db.models import AgentSession
from nanohost.settings import load_settings
from tests.fakes.chatgpt import ACCOUNT, EMAIL, FakeIssuer
from tests.test_cli import Run, cli, engine_asked, ready  # noqa: F401  (fixtures)
from tests.test_why import rows


def codex_auth_json(issuer: FakeIssuer) -> dict[str, object]:
    """What `codex login` leaves in ~/.codex/auth.json."""
    tokens = issuer.issue()
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {**tokens, "account_id": ACCOUNT},
        "last_refresh": "2026-11-30T10:00:00Z",
    }


def test_import_keeps_the_tokens_only_in_a_private_store(cli: Run, host_env: Path) -> None:  # noqa: F811
    issuer = FakeIssuer()
    source = host_env / "auth.json"
    data = codex_auth_json(issuer)
    source.write_text(json.dumps(data))
    result = cli("auth", "login", "--import", str(source))
    assert f"signed in to ChatGPT as {EMAIL} (plan pro)" in result.stdout
    assert "stop using" in result.stdout  # the operator is told the file's refresh token is now the host's
    store = TokenStore(load_settings().data_dir)
    saved = store.load()
    tokens = data["tokens"]
    assert isinstance(tokens, dict)
    assert saved is not None and saved.refresh_token == tokens["refresh_token"]
    assert saved.account_id == ACCOUNT
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert [p.name for p in store.dir.iterdir() if p.name.startswith(".chatgpt.")] == []  # no temp left

    status = cli("auth", "status", "--json").json()
    assert isinstance(status, dict)
    assert status["state"] == "ok" and status["account"] == ACCOUNT and status["email"] == EMAIL
    shown = cli("auth", "status").stdout
    for secret in (tokens["access_token"], tokens["refresh_token"]):
        assert secret not in shown and secret not in json.dumps(status)


def test_import_refuses_what_is_not_a_chatgpt_sign_in(cli: Run, host_env: Path) -> None:  # noqa: F811
    source = host_env / "auth.json"
    source.write_text(json.dumps({"OPENAI_API_KEY": "sk-abc", "tokens": None}))
    result = cli("auth", "login", "--import", str(source), ok=False)
    assert result.code == 1 and "holds no ChatGPT tokens" in result.stderr
    assert not TokenStore(load_settings().data_dir).path.exists()


async def test_device_code_login_against_the_issuer(host_env: Path) -> None:
    issuer = FakeIssuer()
    await issuer.start()
    url = issuer.url
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nanohost.cli",
            "auth",
            "login",
            env={**os.environ, "NANOHOST_AUTH_ISSUER": url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        await issuer.close()
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert f"{url}/codex/device" in text and "ABCD-1234" in text
    assert issuer.device_polls == 2  # pending once, then granted
    saved = TokenStore(load_settings().data_dir).load()
    assert saved is not None and saved.access_token == issuer.access_token and saved.account_id == ACCOUNT


def test_status_and_logout_say_what_state_the_sign_in_is_in(ready: Run, host_env: Path) -> None:  # noqa: F811
    store = TokenStore(load_settings().data_dir)
    assert cli_json(ready, "auth", "status")["state"] == "not signed in"
    tokens = ChatGPTTokens.from_oauth(**FakeIssuer().issue())
    store.save(tokens)
    ready("groups", "config", "main", "--auth", "chatgpt")
    info = cli_json(ready, "auth", "status")
    assert info["state"] == "ok" and info["groups"] == ["main"]
    assert "ChatGPT sign-in: ok" in ready("status").stdout

    store.mark_broken(tokens, "refresh_token_reused")
    info = cli_json(ready, "auth", "status")
    assert info["state"] == "broken" and "nanohost auth login" in str(info["problem"])
    status = ready("status").stdout
    assert "ChatGPT sign-in: broken" in status and "refresh_token_reused" in status

    assert "signed out" in ready("auth", "logout").stdout
    assert not store.path.exists()
    assert cli_json(ready, "auth", "status")["state"] == "not signed in"


def test_groups_config_auth_is_checked_and_shown(ready: Run) -> None:  # noqa: F811
    assert cli_json(ready, "groups", "show", "main")["auth"] == "api-key"
    changed = ready("groups", "config", "main", "--auth", "ChatGPT", "--json").json()
    assert isinstance(changed, dict)
    assert changed["changes"] == ["auth = chatgpt"] and changed["config"]["auth"] == "chatgpt"
    result = ready("groups", "config", "main", "--auth", "oauth", ok=False)
    assert result.code == 1 and "unknown auth mode 'oauth'" in result.stderr
    assert cli_json(ready, "groups", "show", "main")["auth"] == "chatgpt"


def cli_json(run: Run, *args: str) -> dict[str, object]:
    data = run(*args, "--json").json()
    assert isinstance(data, dict)
    return data


def test_why_and_doctor_name_a_broken_sign_in(
    ready: Run,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    ready("groups", "config", "main", "--provider", "codex", "--auth", "chatgpt")
    store = TokenStore(load_settings().data_dir)
    tokens = ChatGPTTokens.from_oauth(**FakeIssuer().issue())
    store.save(tokens)
    checks = {c["name"]: c for c in ready("doctor", "--json", ok=False).json()}  # type: ignore[union-attr]
    assert (
        checks["model credential"]["ok"] is True
        and "ChatGPT sign-in ok" in checks["model credential"]["detail"]
    )
    store.mark_broken(tokens, "refresh_token_invalidated")
    checks = {c["name"]: c for c in ready("doctor", "--json", ok=False).json()}  # type: ignore[union-attr]
    assert checks["model credential"]["ok"] is False
    assert "refresh_token_invalidated" in checks["model credential"]["detail"]
    rows(AgentSession(group_id=1, status="stopped"))  # why names session-level reasons
    reasons = ready("why", "main", "--json").json()
    assert isinstance(reasons, list)
    assert any("ChatGPT sign-in, which is broken" in str(r) for r in reasons)
    assert not any("OPENAI_API_KEY" in str(r) for r in reasons)  # not the api-key mode's reason


def test_login_with_a_key_file_keeps_the_store_encrypted(
    cli: Run,  # noqa: F811
    host_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NANOHOST_AUTH_KEY_FILE", str(host_env / "auth.key"))
    source = host_env / "auth.json"
    data = codex_auth_json(FakeIssuer())
    source.write_text(json.dumps(data))
    cli("auth", "login", "--import", str(source))
    settings = load_settings()
    raw = TokenStore(settings.data_dir).path.read_bytes()
    tokens = data["tokens"]
    assert isinstance(tokens, dict) and tokens["refresh_token"].encode() not in raw
    assert cli_json(cli, "auth", "status")["state"] == "ok"
    monkeypatch.delenv("NANOHOST_AUTH_KEY_FILE")
    info = cli_json(cli, "auth", "status")
    assert info["state"] == "unreadable" and "NANOHOST_AUTH_KEY_FILE" in str(info["problem"])


async def test_logout_revokes_the_refresh_token_at_the_issuer(host_env: Path) -> None:
    issuer = FakeIssuer()
    await issuer.start()
    url = issuer.url
    try:
        store = TokenStore(load_settings().data_dir)
        saved = ChatGPTTokens.from_oauth(**issuer.issue())
        store.save(saved)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nanohost.cli",
            "auth",
            "logout",
            env={**os.environ, "NANOHOST_AUTH_ISSUER": url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        await issuer.close()
    assert process.returncode == 0, err.decode()
    assert "signed out of ChatGPT" in out.decode()
    assert saved.refresh_token in issuer.revoked_refresh and saved.refresh_token not in issuer.live_refresh
    assert not store.path.exists()
