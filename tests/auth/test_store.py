"""The token store: private, atomic, and encrypted at rest when given a key file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nanohost.auth import check_auth_mode
from nanohost.auth.store import ENCRYPTED_MAGIC, TokenStore
from nanohost.auth.tokens import ChatGPTTokens, TokenFormatError
from nanohost.validation import InvalidInput
from tests.fakes.chatgpt import ACCOUNT, FakeIssuer, jwt


def tokens() -> ChatGPTTokens:
    return ChatGPTTokens.from_oauth(**FakeIssuer().issue())


def test_with_a_key_file_no_token_is_readable_on_disk(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "auth.key"
    key.parent.mkdir()
    store = TokenStore(tmp_path / "data", key)
    saved = tokens()
    store.save(saved)
    raw = store.path.read_bytes()
    assert raw.startswith(ENCRYPTED_MAGIC)
    for secret in (saved.access_token, saved.refresh_token, saved.id_token, ACCOUNT):
        assert secret.encode() not in raw
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert store.load() == saved
    with pytest.raises(TokenFormatError, match="encrypted and NANOHOST_AUTH_KEY_FILE is not set"):
        TokenStore(tmp_path / "data").load()
    other = tmp_path / "other.key"
    TokenStore(tmp_path / "elsewhere", other).save(saved)  # makes a different key
    with pytest.raises(TokenFormatError, match="does not decrypt"):
        TokenStore(tmp_path / "data", other).load()


def test_a_plain_store_is_encrypted_at_its_next_save_once_a_key_is_set(tmp_path: Path) -> None:
    plain = TokenStore(tmp_path / "data")
    first = tokens()
    plain.save(first)
    assert first.refresh_token.encode() in plain.path.read_bytes()
    keyed = TokenStore(tmp_path / "data", tmp_path / "auth.key")
    assert keyed.load() == first
    keyed.mark_broken(first, "refresh_token_reused")
    assert keyed.path.read_bytes().startswith(ENCRYPTED_MAGIC)
    loaded = keyed.load()
    assert loaded is not None and loaded.broken is not None and loaded.broken.reason == "refresh_token_reused"


def test_an_id_token_without_an_account_is_refused() -> None:
    with pytest.raises(TokenFormatError, match="names no ChatGPT account"):
        ChatGPTTokens.from_oauth(jwt({"email": "a@b"}), "at", "rt")
    with pytest.raises(TokenFormatError, match="not a JWT"):
        ChatGPTTokens.from_oauth("opaque", "at", "rt")


def test_auth_modes_are_checked_when_read() -> None:
    assert check_auth_mode(None) == "api-key"
    assert check_auth_mode(" ChatGPT ") == "chatgpt"
    for bad in ("oauth", "", 3):
        with pytest.raises(InvalidInput, match="unknown auth mode"):
            check_auth_mode(bad)
