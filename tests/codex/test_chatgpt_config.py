"""The runner's side of a chatgpt-auth group: Codex's config and the dummy auth.json, checked
against what Codex 0.138 reads (its ChatGPT path, no refresh of its own, no real token)."""

from __future__ import annotations

import base64
import json
import stat
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agent_runner.codex.chatgpt import DUMMY_ACCOUNT, REFRESH_URL_ENV, dummy_id_token, write_auth_json
from agent_runner.codex.config import PLACEHOLDER_ENV, render
from agent_runner.codex.provider import CodexProvider
from agent_runner.config import ConfigError, RunnerConfig

BASE = "http://127.0.0.1:4444/v1"


def test_chatgpt_config_takes_the_openai_auth_path_to_the_gateway() -> None:
    config = tomllib.loads(render(base_url=BASE, chatgpt=True))
    provider = config["model_providers"]["nanohost"]
    assert provider["requires_openai_auth"] is True and "env_key" not in provider
    assert provider["base_url"] == BASE
    assert config["chatgpt_base_url"].startswith(BASE)  # nothing goes to chatgpt.com
    plain = tomllib.loads(render(base_url=BASE))
    assert plain["model_providers"]["nanohost"]["env_key"] == PLACEHOLDER_ENV
    assert (
        "chatgpt_base_url" not in plain and "requires_openai_auth" not in plain["model_providers"]["nanohost"]
    )


def test_the_dummy_sign_in_holds_only_the_placeholder(tmp_path: Path) -> None:
    path = write_auth_json(tmp_path, "nh-ph-abc")
    data = json.loads(path.read_text())
    assert data["auth_mode"] == "chatgpt"
    assert data["tokens"]["access_token"] == data["tokens"]["refresh_token"] == "nh-ph-abc"
    assert data["tokens"]["account_id"] == DUMMY_ACCOUNT
    # Codex refreshes a non-JWT access token only when last_refresh is 8 days old: it is now
    written = datetime.fromisoformat(data["last_refresh"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - written).total_seconds()) < 60
    header, payload, signature = data["tokens"]["id_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["https://api.openai.com/auth"]["chatgpt_account_id"] == DUMMY_ACCOUNT
    assert header and signature and data["tokens"]["id_token"] == dummy_id_token()
    assert write_auth_json(tmp_path, None).read_text() == ""  # back to api-key: no ChatGPT path left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".auth.")]


def test_a_planted_link_at_auth_json_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    home = tmp_path / "home"
    home.mkdir()
    (home / "auth.json").symlink_to(target)
    write_auth_json(home, "nh-ph-x")
    assert target.read_text() == "keep"
    assert stat.S_ISREG((home / "auth.json").lstat().st_mode)


def test_the_provider_points_codex_refresh_at_the_gateway(tmp_path: Path) -> None:
    chatgpt = CodexProvider(
        codex_home=tmp_path, cwd=tmp_path, base_url=BASE, placeholder="nh-ph-1", auth="chatgpt"
    )
    assert chatgpt._env[REFRESH_URL_ENV] == f"{BASE}/oauth/token"
    plain = CodexProvider(codex_home=tmp_path, cwd=tmp_path, base_url=BASE, placeholder="nh-ph-1")
    assert REFRESH_URL_ENV not in plain._env


def test_runner_json_auth_is_checked() -> None:
    codex = {"provider": "codex", "runner": "agent_runner.codex.runner:build"}
    assert RunnerConfig.from_dict({**codex, "auth": "chatgpt"}).auth == "chatgpt"
    assert RunnerConfig.from_dict(codex).auth == "api-key"
    with pytest.raises(ConfigError, match="auth must be"):
        RunnerConfig.from_dict({**codex, "auth": "root"})
