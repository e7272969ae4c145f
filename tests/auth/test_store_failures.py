"""A token store that cannot be written never costs the sign-in: nothing is sent to the issuer
until everything a save needs is ready (the key, the directory, a temporary file), and when a
save still fails after the issuer rotated the refresh token, the new tokens (or the broken
mark) are kept in memory so a consumed refresh token is never sent again. Such local failures
are answered 400 in plain words (Codex makes one attempt), never 502 (which it retries)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from nanohost.auth.store import TokenStore
from nanohost.auth.tokens import ChatGPTTokens
from tests.auth.conftest import Gw
from tests.fakes.chatgpt import FakeChatGPTBackend, FakeIssuer


def no_space_for(store: TokenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every save of ``store`` fails at its last step (ENOSPC), as on a full disk."""
    real = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst) == store.path:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("key_problem", ["key dir missing", "key invalid", "key unreadable"])
async def test_a_store_that_cannot_be_saved_is_found_before_the_issuer_is_asked(
    gw: Gw, issuer: FakeIssuer, store: TokenStore, tmp_path: Path, key_problem: str
) -> None:
    tokens = store.load()
    assert tokens is not None
    key = tmp_path / "keys" / "auth.key"
    if key_problem != "key dir missing":
        key.parent.mkdir()
        if key_problem == "key invalid":
            key.write_text("not a fernet key\n")
        else:
            key.mkdir()  # unreadable as a file, also for root
    store.key_file = key  # the plain store is encrypted at its next save: with this key
    issuer.expire_access()
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    for _ in range(3):
        status, body = await gw.ask(placeholder, "hello")
        assert status == 400, body
        message = json.loads(body)["error"]["message"]
        assert "cannot save its ChatGPT sign-in" in message
    assert issuer.refresh_requests == 0  # nothing rotated: the stored refresh token is still good
    assert tokens.refresh_token in issuer.live_refresh


async def test_new_tokens_that_cannot_be_saved_are_kept_and_the_spent_token_never_sent_again(
    gw: Gw,
    issuer: FakeIssuer,
    backend: FakeChatGPTBackend,
    store: TokenStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = store.load()
    assert old is not None
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    issuer.expire_access()
    no_space_for(store, monkeypatch)
    for text in ("first", "second", "third"):
        status, body = await gw.ask(placeholder, text)
        assert status == 200 and f"echo: {text}" in body
    assert issuer.refresh_requests == 1  # the spent refresh token was never sent again
    assert backend.seen_auth[-1][0] == f"Bearer {issuer.access_token}"
    on_disk = store.load()
    assert on_disk is not None and on_disk.refresh_token == old.refresh_token  # the save failed
    assert "kept in memory only" in (gw.auth.unsaved() or "")  # /healthz says so
    # the disk has room again: the kept tokens are saved at the next request
    monkeypatch.undo()
    assert (await gw.ask(placeholder, "fourth"))[0] == 200
    saved = store.load()
    assert saved is not None and saved.refresh_token in issuer.live_refresh
    assert saved.access_token == issuer.access_token and issuer.refresh_requests == 1
    assert gw.auth.unsaved() is None


async def test_a_refused_refresh_that_cannot_be_marked_is_kept_broken_in_memory(
    gw: Gw,
    issuer: FakeIssuer,
    backend: FakeChatGPTBackend,
    store: TokenStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    placeholder = gw.gateway.grant("g1", 1, auth="chatgpt")
    issuer.revoke_all()
    no_space_for(store, monkeypatch)
    for _ in range(4):
        status, body = await gw.ask(placeholder, "hello")
        assert status == 400 and "ChatGPT sign-in is no longer valid" in body, body
    assert issuer.refresh_requests == 1 and backend.refused == 1  # no loop at the issuer
    # a new sign-in still heals it
    monkeypatch.undo()
    store.save(ChatGPTTokens.from_oauth(**issuer.issue()))
    status, body = await gw.ask(placeholder, "back")
    assert status == 200 and "echo: back" in body
