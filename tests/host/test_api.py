"""The API channel's contract at its edges: auth, bad input, unknown groups, long-poll timeout.

Runs the real host app (real SQLite, real Docker backend); no container is started here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.exc import OperationalError

import nanohost.router as router_module
from nanohost.app import build_app
from nanohost.channels.api import ROUTER, parse_id
from nanohost.db import make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.groups import create_group
from nanohost.settings import load_settings

pytestmark = pytest.mark.docker
TOKEN = "test-token"


@pytest.fixture
async def client(host_env: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    import docker

    try:
        docker.from_env().close()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"NO DOCKER ENGINE: {exc}")
    monkeypatch.setenv("NANOHOST_API_TOKEN", TOKEN)
    settings = load_settings()
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        create_group(db, settings, "team")
    engine.dispose()
    async with TestClient(TestServer(build_app(settings))) as test_client:
        yield test_client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
async def test_api_needs_the_token(client: TestClient, headers: dict[str, str]) -> None:
    response = await client.get("/api/groups/team/messages", headers=headers)
    assert response.status == 401


async def test_healthz_reports_database_and_containers(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    body = await response.json()
    queue = body.pop("wake_queue")
    free = body.pop("disk_free_bytes")
    assert body == {"ok": True, "database": "ok", "containers": "ok", "disk": "ok"}
    assert isinstance(free, int) and free > 0
    assert (queue["capacity"], queue["in_use"], queue["waiting"], queue["oldest_wait_s"]) == (8, 0, 0, 0.0)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ("not json", 400, "must be JSON"),
        ("[1, 2]", 400, "JSON object"),
        ('{"sender": "a"}', 400, '"text"'),
        ('{"text": "   "}', 400, '"text"'),
        ('{"text": 5}', 400, '"text"'),
        ('{"text": "hi", "sender": ""}', 400, '"sender"'),
        ('{"text": "' + "x" * 100_001 + '"}', 413, "longer than"),
    ],
)
async def test_bad_messages_are_refused(client: TestClient, body: str, status: int, says: str) -> None:
    response = await client.post("/api/groups/team/messages", data=body, headers=AUTH)
    assert response.status == status
    assert says in (await response.json())["error"]
    listing = await client.get("/api/groups/team/messages", headers=AUTH)
    assert (await listing.json())["messages"] == []


async def test_unknown_group_is_404(client: TestClient) -> None:
    response = await client.post("/api/groups/ghost/messages", json={"text": "hi"}, headers=AUTH)
    assert response.status == 404
    assert "ghost" in (await response.json())["error"]


@pytest.mark.parametrize("query", ["wait=999", "wait=-1", "wait=soon"])
async def test_bad_query_values(client: TestClient, query: str) -> None:
    response = await client.get(f"/api/groups/team/messages?{query}", headers=AUTH)
    assert response.status == 400
    assert "wait must be" in (await response.json())["error"]


BAD_IDS = [
    "99999999999999999999999",  # beyond SQLite's 64-bit ids: used to overflow into a 500
    "9223372036854775808",  # 2**63, one past the largest
    "-1",
    "-5",
    "x",
    "1.5",
    "1e3",
    "%2B1",  # +1
    "1_0",
    "%201",  # " 1"
    "%EF%BC%91",  # a full-width digit one
]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_an_id_that_cannot_be_a_message_id_is_404(client: TestClient, bad: str) -> None:
    for url in (f"/api/groups/team/files/{bad}/0", f"/api/groups/team/files/1/{bad}"):
        response = await client.get(url, headers=AUTH)
        assert response.status == 404, url
        assert (await response.json()) == {"error": "no such file"}
    response = await client.get(f"/api/groups/team/messages?after={bad}", headers=AUTH)
    assert response.status == 404
    assert "after must be a message id" in (await response.json())["error"]
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect(f"/api/groups/team/stream?after={bad}", headers=AUTH)
    assert caught.value.status == 404


async def test_the_largest_id_is_an_id_that_does_not_exist(client: TestClient) -> None:
    largest = 2**63 - 1
    response = await client.get(f"/api/groups/team/files/{largest}/{largest}", headers=AUTH)
    assert response.status == 404 and (await response.json()) == {"error": "no such file"}
    response = await client.get(f"/api/groups/team/messages?after={largest}", headers=AUTH)
    assert response.status == 200 and (await response.json()) == {"messages": []}
    response = await client.get(f"/api/groups/team/messages?after={0:025d}", headers=AUTH)
    assert response.status == 200  # leading zeros are fine


@pytest.mark.parametrize(
    ("raw", "value"),
    [("0", 0), ("42", 42), ("007", 7), ("0" * 30 + "1", 1), (str(2**63 - 1), 2**63 - 1), (str(2**63), None)]
    + [(bad, None) for bad in ["", "-1", "+1", " 1", "1 ", "1_0", "1.0", "\uff11", "\u0661", "x"]]
    + [(None, None)],
)
def test_parse_id(raw: str | None, value: int | None) -> None:
    assert parse_id(raw) == value


async def test_long_poll_returns_empty_after_wait(client: TestClient) -> None:
    response = await client.get("/api/groups/team/messages?after=0&wait=0.2", headers=AUTH)
    assert response.status == 200
    assert (await response.json()) == {"messages": []}


async def test_api_is_closed_without_a_token(host_env: Path) -> None:
    settings = load_settings()
    async with TestClient(TestServer(build_app(settings))) as test_client:
        response = await test_client.get("/api/groups/team/messages", headers=AUTH)
        assert response.status == 503
        assert "NANOHOST_API_TOKEN" in (await response.json())["error"]


async def test_a_database_that_stays_locked_is_503_and_nothing_is_recorded(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = client.server.app[ROUTER]

    def locked(*_: object) -> tuple[int, int]:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(router, "_insert", locked)
    monkeypatch.setattr(router_module, "DB_RETRY_BASE", 0.0)
    response = await client.post("/api/groups/team/messages", json={"text": "hello"}, headers=AUTH)
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"
    assert "send the message again" in (await response.json())["error"]
    listed = await client.get("/api/groups/team/messages", headers=AUTH)
    assert [m for m in (await listed.json())["messages"] if m["direction"] == "in"] == []


async def test_a_message_recorded_but_not_queued_is_202_with_its_id(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = client.server.app[ROUTER]

    async def unavailable(_session_id: int) -> object:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(router.orchestrator, "runtime", unavailable)
    response = await client.post("/api/groups/team/messages", json={"text": "hello"}, headers=AUTH)
    assert response.status == 202
    body = await response.json()
    assert body["queued"] is False and "next wake" in body["detail"]
    listed = await client.get("/api/groups/team/messages", headers=AUTH)
    recorded = [m for m in (await listed.json())["messages"] if m["direction"] == "in"]
    assert [(m["id"], m["text"]) for m in recorded] == [(body["id"], "hello")]
