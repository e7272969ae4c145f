"""The web chat password from the operator's side: `nanohost setup` and `nanohost web password`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nanohost.channels.web_auth import PASSWORD_KEY
from nanohost.cli import app
from nanohost.settings import load_settings
from tests.web.conftest import web_auth

PRINTED = re.compile(r"^web chat password: (\S+)  \(", re.MULTILINE)


def run(*args: str, ok: bool = True) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def works(password: str) -> bool:
    with web_auth(load_settings()) as auth:
        return auth.check_password(password)


def test_setup_prints_the_password_once_and_stores_only_a_hash(host_env: Path) -> None:
    _, first, _ = run("setup")
    (password,) = PRINTED.findall(first)
    assert "shown once; `nanohost web password` sets a new one" in first
    assert len(password) >= 20 and works(password)
    with web_auth(load_settings()) as auth:
        stored = auth.store.get(PASSWORD_KEY)
    assert stored and stored.startswith("scrypt$") and password not in stored
    _, second, _ = run("setup")
    assert "web chat password" not in second and password not in second and works(password)


def test_setup_json_carries_the_new_password_once(host_env: Path) -> None:
    _, first, _ = run("setup", "--json")
    assert works(json.loads(first)["web_password"])
    _, second, _ = run("setup", "--json")
    assert "web_password" not in json.loads(second)


def test_web_password_sets_a_new_one(host_env: Path) -> None:
    _, setup_out, _ = run("setup")
    (old,) = PRINTED.findall(setup_out)
    _, reset, _ = run("web", "password")
    new = re.findall(r"web chat password: (\S+)", reset)[0]
    assert new != old and works(new) and not works(old)
    _, chosen, _ = run("web", "password", "--set", "my own passphrase")
    assert "my own passphrase" in chosen and works("my own passphrase") and not works(new)


@pytest.mark.parametrize("value", ["short", "       x"])
def test_a_short_password_is_refused(host_env: Path, value: str) -> None:
    run("setup")
    code, _, stderr = run("web", "password", "--set", value, ok=False)
    assert code == 1 and "at least 8 characters" in stderr
