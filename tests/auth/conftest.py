"""Fixtures of the ChatGPT sign-in tests: a fake issuer and a fake ChatGPT backend on 127.0.0.1, a
token store in a temporary data dir, and a gateway on a real unix socket routing to them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, UnixConnector

from nanohost.auth.refresher import ChatGPTAuth
from nanohost.auth.store import TokenStore
from nanohost.auth.tokens import ChatGPTTokens
from nanohost.auth.upstream import ChatGPTUpstream
from nanohost.gateway import Gateway
from tests.fakes.chatgpt import FakeChatGPTBackend, FakeIssuer
from tests.fakes.model_server import ModelServer, model_server  # noqa: F401  (fixture)


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    fake = FakeIssuer()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def backend(issuer: FakeIssuer, model_server: ModelServer) -> AsyncIterator[FakeChatGPTBackend]:  # noqa: F811
    fake = FakeChatGPTBackend(issuer, model_server)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def store(tmp_path: Path, issuer: FakeIssuer) -> TokenStore:
    """Signed in: the issuer's first token set, as `auth login` saves it."""
    store = TokenStore(tmp_path / "data")
    store.save(ChatGPTTokens.from_oauth(**issuer.issue()))
    return store


class Gw:
    def __init__(self, gateway: Gateway, client: ClientSession, auth: ChatGPTAuth) -> None:
        self.gateway = gateway
        self.client = client
        self.auth = auth

    async def ask(self, placeholder: str, text: str, **headers: str) -> tuple[int, str]:
        body: dict[str, Any] = {
            "model": "gpt-5.5",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
        }
        async with self.client.post(
            "http://gateway/v1/responses",
            json=body,
            headers={"Authorization": f"Bearer {placeholder}", **headers},
        ) as response:
            return response.status, await response.text()


@pytest.fixture
async def gw(
    tmp_path: Path, store: TokenStore, issuer: FakeIssuer, backend: FakeChatGPTBackend
) -> AsyncIterator[Gw]:
    auth = ChatGPTAuth(store, issuer.url)
    gateway = Gateway(
        tmp_path / "gw", "http://127.0.0.1:9/v1", None, chatgpt=ChatGPTUpstream(auth, backend.url)
    )
    await gateway.start()
    client = ClientSession(connector=UnixConnector(path=str(gateway.socket_path)))
    yield Gw(gateway, client, auth)
    await client.close()
    await gateway.stop()
    await auth.close()
