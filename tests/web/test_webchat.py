"""The web chat's edges without a browser: the password gate, cookies, CSRF, uploads, bindings.

Runs the real host app (real SQLite, real router and inbox) on a fake container backend: messages
are recorded and queued but no container starts, so no Docker engine is needed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from http.cookies import Morsel
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient, make_mocked_request
from sqlalchemy import delete, select

from nanohost.channels import forwarded, webchat
from nanohost.channels.api import ROUTER
from nanohost.channels.state import ChannelStore
from nanohost.channels.web_auth import COOKIE, PASSWORD_KEY, SECRET_KEY, SESSION_SECONDS, check_password
from nanohost.channels.webchat import LOGIN_LIMITER, LoginLimiter
from nanohost.db import make_engine, make_session_factory
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, ChannelState, Message
from nanohost.groups import bind_chat
from nanohost.settings import Settings, load_settings
from tests.web.conftest import PASSWORD, StartClient, set_web_password, web_auth

CSRF = {"X-Nanohost": "1"}
DATA_ENDPOINTS = [
    ("GET", "/web/groups"),
    ("GET", "/web/groups/team/messages"),
    ("POST", "/web/groups/team/messages"),
    ("GET", "/web/groups/team/stream"),
    ("GET", "/web/groups/team/files/1/0"),
]


async def log_in(client: TestClient, password: str = PASSWORD) -> int:
    response = await client.post("/web/login", json={"password": password})
    return response.status


def messages(settings: Settings) -> list[Message]:
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        rows = list(db.scalars(select(Message).order_by(Message.id)))
        db.expunge_all()
    engine.dispose()
    return rows


def inbox(settings: Settings, group: str = "team") -> list[Path]:
    folder = settings.groups_dir / group / "inbox"
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize(("method", "path"), DATA_ENDPOINTS)
async def test_every_data_endpoint_needs_a_session(client: TestClient, method: str, path: str) -> None:
    response = await client.request(method, path, json={"text": "hi"}, headers=CSRF)
    assert response.status == 401
    assert (await response.json())["error"] == "log in first"


async def test_without_a_session_the_page_is_the_login_form(client: TestClient) -> None:
    response = await client.get("/")
    assert response.status == 200
    html = await response.text()
    assert 'id="login"' in html and 'id="composer"' not in html
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


async def test_login_sets_a_strict_http_only_cookie_and_opens_the_chat(client: TestClient) -> None:
    response = await client.post("/web/login", json={"password": PASSWORD})
    assert response.status == 200
    cookie = response.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert cookie["max-age"] == str(SESSION_SECONDS)
    assert 'id="composer"' in await (await client.get("/")).text()
    groups = await (await client.get("/web/groups")).json()
    assert groups == {"groups": ["team"], "max_attachment_bytes": 4096}


async def test_form_login_redirects_to_the_chat(client: TestClient) -> None:
    response = await client.post("/web/login", data={"password": PASSWORD}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/"
    assert (await client.get("/web/groups")).status == 200


@pytest.mark.parametrize("body", [{"password": "wrong"}, {"password": ""}, {"password": 5}, {}])
async def test_wrong_password_is_refused(client: TestClient, body: dict[str, object]) -> None:
    started = time.monotonic()
    response = await client.post("/web/login", json=body)
    assert response.status == 401
    assert time.monotonic() - started >= 0.4  # guessing is slow
    assert COOKIE not in response.cookies
    assert (await client.get("/web/groups")).status == 401


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The login limiter's clock, moved by the test; wrong passwords answer at once."""
    fake = FakeClock()
    assert client.app is not None
    monkeypatch.setattr(client.app[LOGIN_LIMITER], "clock", fake)
    monkeypatch.setattr(webchat, "LOGIN_DELAY", 0)
    return fake


async def test_five_wrong_passwords_lock_the_client_out_for_ten_minutes(
    client: TestClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        assert await log_in(client, "guess") == 401
        clock.now += 60
    checks: list[str] = []

    def recording_check(stored: str, password: str) -> bool:
        checks.append(password)
        return check_password(stored, password)

    monkeypatch.setattr(webchat, "check_password", recording_check)
    locked = await client.post("/web/login", json={"password": PASSWORD})  # even the right one
    assert locked.status == 429
    assert (await locked.json())["error"] == "too many failed logins; try again in 5 minutes"
    assert locked.headers["Retry-After"] == "300"
    assert COOKIE not in locked.cookies and checks == []  # refused without a password check
    clock.now += 299  # the first failure is still inside the window
    assert await log_in(client) == 429
    clock.now += 1
    assert await log_in(client) == 200 and checks == [PASSWORD]
    assert await log_in(client, "guess") == 401  # a success forgot the earlier failures


async def test_parallel_guesses_run_one_password_check_at_a_time(
    client: TestClient, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    running: list[int] = []
    calls: list[int] = []

    def counting_check(stored: str, password: str) -> bool:
        with lock:
            running.append(1)
            calls.append(len(running))
        try:
            return check_password(stored, password)
        finally:
            with lock:
                running.pop()

    monkeypatch.setattr(webchat, "check_password", counting_check)
    statuses = await asyncio.gather(*(log_in(client, f"guess {i}") for i in range(20)))
    assert sorted(statuses) == [401] * 5 + [429] * 15
    assert calls == [1] * 5  # five scrypt checks, never two at once


def test_the_limiter_counts_each_client_ip_apart() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(max_failures=2, window=10, clock=clock)
    limiter.failed("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.locked_for("10.0.0.1") == 10 and limiter.locked_for("10.0.0.2") == 0
    clock.now += 10
    assert limiter.locked_for("10.0.0.1") == 0


def _tampered(value: str) -> list[str]:
    expires, nonce, signature = value.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return [
        f"{int(expires) + 1}.{nonce}.{signature}",  # a later expiry, same signature
        f"{expires}.{nonce}x.{signature}",
        f"{expires}.{nonce}.{flipped}",
        f"{expires}.{nonce}.",
        "garbage",
        "",
    ]


async def test_a_tampered_or_expired_cookie_is_refused(client: TestClient, web_settings: Settings) -> None:
    assert await log_in(client) == 200
    good = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    with web_auth(web_settings) as auth:
        expired = auth.issue_cookie(now=time.time() - SESSION_SECONDS - 1)
    for value in [*_tampered(good), expired]:
        client.session.cookie_jar.clear()
        client.session.cookie_jar.update_cookies({COOKIE: value})
        assert (await client.get("/web/groups")).status == 401, value
        assert 'id="login"' in await (await client.get("/")).text()
    client.session.cookie_jar.update_cookies({COOKIE: good})
    assert (await client.get("/web/groups")).status == 200


async def test_a_new_password_ends_every_session(client: TestClient, web_settings: Settings) -> None:
    assert await log_in(client) == 200
    set_web_password(web_settings, "a brand new password")
    assert (await client.get("/web/groups")).status == 401
    assert await log_in(client) == 401
    assert await log_in(client, "a brand new password") == 200


async def test_logout_forgets_the_cookie(client: TestClient) -> None:
    assert await log_in(client) == 200
    assert (await client.post("/web/logout")).status == 403  # no CSRF header
    assert (await client.post("/web/logout", headers=CSRF)).status == 200
    assert (await client.get("/web/groups")).status == 401


async def test_without_a_password_nothing_is_open(host_env: Path, start_client: StartClient) -> None:
    client = await start_client(load_settings())
    page = await client.get("/")
    assert page.status == 503
    html = await page.text()
    assert "nanohost setup" in html and 'id="login"' not in html
    refused = await client.post("/web/login", json={"password": ""})
    assert refused.status == 503 and "nanohost setup" in (await refused.json())["error"]
    for method, path in DATA_ENDPOINTS:
        assert (await client.request(method, path, headers=CSRF)).status == 401


async def test_post_json_and_read_it_back(client: TestClient, web_settings: Settings) -> None:
    assert await log_in(client) == 200
    response = await client.post("/web/groups/team/messages", json={"text": "hello"})
    assert response.status == 201
    message_id = (await response.json())["id"]
    listed = (await (await client.get("/web/groups/team/messages?after=0")).json())["messages"]
    assert [(m["id"], m["text"], m["sender"], m["direction"]) for m in listed] == [
        (message_id, "hello", "web", "in")
    ]
    (row,) = messages(web_settings)
    assert (row.channel, row.chat_id) == ("web", "team")


async def test_a_post_goes_to_the_first_web_bindings_chat_and_its_session(
    web_settings: Settings, start_client: StartClient
) -> None:
    """The group and its web binding are read together (one query per posted message): the
    first web binding decides the chat id and, when it says per-chat, the session."""
    engine = make_engine(web_settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        other = db.scalars(select(AgentGroup).where(AgentGroup.name == "other")).one()
        bind_chat(db, "web", "desk", other, "per-chat")
        bind_chat(db, "web", "later", other, "shared")
    engine.dispose()
    client = await start_client(web_settings)
    assert await log_in(client) == 200
    response = await client.post("/web/groups/other/messages", json={"text": "hi"})
    assert response.status == 201, await response.text()
    (row,) = messages(web_settings)
    assert (row.channel, row.chat_id) == ("web", "desk")
    engine = make_engine(web_settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        session = db.get(AgentSession, row.session_id)
        assert session is not None and session.chat_key == "web:desk"
    engine.dispose()


def test_a_cookie_check_reads_the_password_and_secret_in_one_transaction(web_settings: Settings) -> None:
    with web_auth(web_settings) as auth:
        cookie = auth.issue_cookie()
        reads: list[tuple[str, ...]] = []
        get_many = auth.store.get_many

        def counted(*keys: str) -> dict[str, str]:
            reads.append(keys)
            return get_many(*keys)

        auth.store.get = None  # type: ignore[assignment,method-assign]  # any single read fails
        auth.store.get_many = counted  # type: ignore[method-assign]
        assert auth.check_cookie(cookie)
        assert not auth.check_cookie(cookie[:-1] + ("A" if cookie[-1] != "A" else "B"))
        assert not auth.check_cookie("")
        assert reads == [(PASSWORD_KEY, SECRET_KEY)] * 2


def test_a_cookie_without_a_stored_secret_is_refused_and_a_secret_is_made(web_settings: Settings) -> None:
    with web_auth(web_settings) as auth:
        cookie = auth.issue_cookie()
        with transaction(auth.store.db) as db:
            db.execute(delete(ChannelState).where(ChannelState.key == SECRET_KEY))
        assert not auth.check_cookie(cookie)
        made = auth.store.get(SECRET_KEY)
        assert made
        assert auth.check_cookie(auth.issue_cookie())
        assert auth.store.get(SECRET_KEY) == made


def test_a_channel_store_reads_several_keys_at_once(web_settings: Settings) -> None:
    with web_auth(web_settings) as auth:
        auth.store.set("a", "1")
        auth.store.set("b", "2")
        assert auth.store.get_many("a", "b", "missing") == {"a": "1", "b": "2"}
        assert auth.store.get_many() == {}
        other = ChannelStore(auth.store.db, "telegram")
        other.set("a", "elsewhere")
        assert auth.store.get_many("a") == {"a": "1"}


@pytest.mark.parametrize(
    ("body", "status"), [({"text": "  "}, 400), ({"text": 5}, 400), ({"text": "x" * 100_001}, 413)]
)
async def test_bad_text_is_refused(
    client: TestClient, web_settings: Settings, body: dict[str, object], status: int
) -> None:
    assert await log_in(client) == 200
    assert (await client.post("/web/groups/team/messages", json=body)).status == status
    assert messages(web_settings) == []


async def test_a_state_change_without_the_csrf_header_is_403(
    client: TestClient, web_settings: Settings
) -> None:
    assert await log_in(client) == 200
    form = FormData()
    form.add_field("text", "from another site")
    form.add_field("file", b"data", filename="x.txt")
    for data in (form, {"text": "from another site"}):  # multipart, and a plain urlencoded form
        response = await client.post("/web/groups/team/messages", data=data)
        assert response.status == 403
        assert "X-Nanohost" in (await response.json())["error"]
    assert messages(web_settings) == [] and inbox(web_settings) == []


async def test_a_websocket_from_another_origin_is_refused(client: TestClient) -> None:
    assert await log_in(client) == 200
    response = await client.get("/web/groups/team/stream", headers={"Origin": "https://evil.example"})
    assert response.status == 403
    async with client.ws_connect("/web/groups/team/stream?after=0") as ws:  # same origin: fine
        await client.post("/web/groups/team/messages", json={"text": "live"})
        event = await ws.receive_json(timeout=10)
        assert (event["type"], event["text"]) == ("message", "live")


def _upload(name: str, data: bytes, text: str = "") -> FormData:
    form = FormData()
    form.add_field("text", text)
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return form


async def test_an_upload_lands_in_the_inbox(client: TestClient, web_settings: Settings) -> None:
    assert await log_in(client) == 200
    response = await client.post("/web/groups/team/messages", data=_upload("notes.txt", b"abc"), headers=CSRF)
    assert response.status == 201, await response.text()
    assert [p.name for p in inbox(web_settings)] == ["notes.txt"]
    assert inbox(web_settings)[0].read_bytes() == b"abc"
    (row,) = messages(web_settings)
    assert (row.text, row.attachments) == ("(sent a file)", ["inbox/notes.txt"])


async def test_a_file_name_with_path_tricks_stays_in_the_inbox(
    client: TestClient, web_settings: Settings
) -> None:
    assert await log_in(client) == 200
    body = (  # raw, as a hostile client writes it (aiohttp's own client would quote the slashes)
        b'--B\r\nContent-Disposition: form-data; name="text"\r\n\r\nlook\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="../../etc/passwd"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\nnot really\r\n--B--\r\n"
    )
    headers = {**CSRF, "Content-Type": "multipart/form-data; boundary=B"}
    response = await client.post("/web/groups/team/messages", data=body, headers=headers)
    assert response.status == 201
    (saved,) = inbox(web_settings)
    assert saved.name == "passwd" and saved.read_bytes() == b"not really"
    assert saved.resolve().parent == (web_settings.groups_dir / "team" / "inbox").resolve()
    assert not (web_settings.groups_dir / "etc").exists()
    (row,) = messages(web_settings)
    assert (row.text, row.attachments) == ("look", ["inbox/passwd"])


async def test_an_upload_over_the_limit_is_413_and_writes_nothing(
    client: TestClient, web_settings: Settings
) -> None:
    assert await log_in(client) == 200
    for size in (4097, 200_000):  # just over (read and cut off), and far over (refused by its length)
        form = _upload("big.bin", b"x" * size, text="too big")
        response = await client.post("/web/groups/team/messages", data=form, headers=CSRF)
        assert response.status == 413
        assert "larger than the 0.00390625 MiB limit" in (await response.json())["error"]
    assert inbox(web_settings) == [] and messages(web_settings) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [(m, p.replace("/team/", "/other/")) for m, p in DATA_ENDPOINTS[1:]]
    + [(m, p.replace("/team/", "/ghost/")) for m, p in DATA_ENDPOINTS[1:]],
)
async def test_a_group_without_a_web_binding_is_404(
    client: TestClient, web_settings: Settings, method: str, path: str
) -> None:
    assert await log_in(client) == 200
    response = await client.request(method, path, json={"text": "hi"})
    assert response.status == 404
    assert "web binding" in (await response.json())["error"]
    assert messages(web_settings) == []


async def test_files_the_agent_sent_can_be_downloaded(
    client: TestClient, web_settings: Settings, tmp_path: Path
) -> None:
    report = web_settings.data_dir / "outbox" / "1" / "7" / "report.txt"  # the host's kept copy
    report.parent.mkdir(parents=True)
    report.write_bytes(b"the report")
    stray = tmp_path / "stray.txt"  # a path outside the outbox (a row from before copies were kept)
    stray.write_bytes(b"not served")
    files = [{"path": str(report), "name": "report.txt"}, {"path": str(stray), "name": "stray.txt"}]
    message_id = _stored(web_settings, "out", files)
    assert await log_in(client) == 200
    (listed,) = (await (await client.get("/web/groups/team/messages")).json())["messages"]
    url = f"/web/groups/team/files/{message_id}/0"
    stray_url = f"/web/groups/team/files/{message_id}/1"
    assert listed["files"] == [{"name": "report.txt", "url": url}, {"name": "stray.txt", "url": stray_url}]
    download = await client.get(url)
    assert download.status == 200 and await download.read() == b"the report"
    assert "attachment" in download.headers["Content-Disposition"]
    assert (await client.get(stray_url)).status == 404  # only the host's kept copies are served
    assert (await client.get(f"/web/groups/team/files/{message_id}/2")).status == 404


async def test_an_uploaded_file_shows_in_the_history_and_downloads(
    client: TestClient, web_settings: Settings
) -> None:
    data = b"my notes\n\x00\xff"
    assert await log_in(client) == 200
    response = await client.post(
        "/web/groups/team/messages", data=_upload("notes.txt", data, "see"), headers=CSRF
    )
    assert response.status == 201
    message_id = (await response.json())["id"]
    (listed,) = (await (await client.get("/web/groups/team/messages")).json())["messages"]
    url = f"/web/groups/team/files/{message_id}/0"
    assert (listed["text"], listed["files"]) == ("see", [{"name": "notes.txt", "url": url}])
    download = await client.get(url)
    assert download.status == 200 and await download.read() == data
    assert download.headers["Content-Disposition"] == 'attachment; filename="notes.txt"'


def _stored(settings: Settings, direction: str, attachments: list[Any]) -> int:
    """A message in `team` carrying ``attachments`` as stored: folder-relative strings for a
    user's files, ``{"path", "name"}`` for the agent's."""
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        team = db.scalars(select(AgentGroup).where(AgentGroup.name == "team")).one()
        row = Message(
            group_id=team.id,
            direction=direction,
            channel="web",
            chat_id="team",
            sender="web" if direction == "in" else "agent",
            text="files",
            attachments=attachments,
            status="done" if direction == "in" else "delivered",
        )
        db.add(row)
        db.flush()
        message_id = row.id
    engine.dispose()
    return message_id


async def test_an_inbound_file_is_served_only_from_inside_the_inbox(
    client: TestClient, web_settings: Settings, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"host secret")
    folder = web_settings.groups_dir / "team"
    (folder / "inbox" / "sub").mkdir(parents=True)
    (folder / "inbox" / "ok.txt").write_bytes(b"fine")
    (folder / "inbox" / "link.txt").symlink_to(secret)  # the agent may plant links in its folder
    (folder / "inbox" / "dir").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(folder / "inbox" / "fifo")
    (folder / "notes.txt").write_bytes(b"group folder, not inbox")
    attachments = [
        "inbox/ok.txt",
        "../../etc/passwd",
        "inbox/../../../etc/passwd",
        "/etc/passwd",
        str(secret),
        "inbox/link.txt",
        "inbox/dir/secret.txt",
        "inbox/fifo",
        "inbox/sub",
        "inbox",
        "notes.txt",
        "inbox/missing.txt",
    ]
    message_id = _stored(web_settings, "in", attachments)
    assert await log_in(client) == 200
    (listed,) = (await (await client.get("/web/groups/team/messages")).json())["messages"]
    assert len(listed["files"]) == len(attachments)
    statuses = {}
    for index, attachment in enumerate(attachments):
        response = await client.get(f"/web/groups/team/files/{message_id}/{index}")
        statuses[attachment] = response.status
        assert b"host secret" not in await response.read()
    assert statuses == {a: 200 if a == "inbox/ok.txt" else 404 for a in attachments}

    # the agent swaps the whole inbox for a link to a directory outside: nothing in it is served
    (folder / "inbox").rename(folder / "old-inbox")
    (folder / "inbox").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "ok.txt").write_bytes(b"host secret")
    assert (await client.get(f"/web/groups/team/files/{message_id}/0")).status == 404


async def test_a_host_shutdown_closes_open_streams_at_once(client: TestClient) -> None:
    """An open chat must not hold the host's shutdown for aiohttp's 60 s grace period."""
    assert await log_in(client) == 200
    async with client.ws_connect("/web/groups/team/stream?after=0") as ws:
        closing = asyncio.create_task(client.server.close())
        message = await ws.receive(timeout=10)
        assert message.type is WSMsgType.CLOSE and message.data == WSCloseCode.GOING_AWAY
        await asyncio.wait_for(closing, 10)


async def test_a_host_shutdown_answers_open_long_polls_at_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client long-polling for 60 s must not hold the host's shutdown either."""
    assert await log_in(client) == 200
    newest = (await (await client.get("/web/groups/team/messages")).json())["messages"]
    after = newest[-1]["id"] if newest else 0
    bus = client.app[ROUTER].orchestrator.ctx.bus
    listening = asyncio.Event()
    subscribe = bus.subscribe

    def subscribe_and_say(group_id: int) -> asyncio.Queue[dict[str, Any]]:
        queue = subscribe(group_id)
        listening.set()
        return queue

    monkeypatch.setattr(bus, "subscribe", subscribe_and_say)
    poll = asyncio.create_task(client.get(f"/web/groups/team/messages?after={after}&wait=60"))
    await asyncio.wait_for(listening.wait(), 10)  # the poll is listening before the host closes
    await asyncio.wait_for(client.server.close(), 10)
    response = await asyncio.wait_for(poll, 10)
    assert response.status == 200 and (await response.json())["messages"] == []


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),  # the same host rotating addresses
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
    ],
)
def test_failed_logins_count_per_ipv4_address_or_ipv6_64(address: str | None, key: str) -> None:
    assert webchat.client_key(address) == key


async def test_an_id_out_of_range_is_404_not_500(client: TestClient) -> None:
    assert await log_in(client) == 200
    for url in (
        "/web/groups/team/files/99999999999999999999999/0",
        "/web/groups/team/files/1/99999999999999999999999",
        "/web/groups/team/files/-1/0",
        "/web/groups/team/files/x/0",
        "/web/groups/team/messages?after=99999999999999999999999",
        "/web/groups/team/messages?after=-1",
    ):
        response = await client.get(url)
        assert response.status == 404, url
        assert "error" in await response.json()


# --- behind a reverse proxy ---------------------------------------------------------------

PROXY = [ip_network("127.0.0.1/32")]
"""The test client connects from 127.0.0.1: trusting it makes the client a trusted proxy."""


async def _login_cookie(client: TestClient, headers: dict[str, str]) -> Morsel[str]:
    response = await client.post("/web/login", json={"password": PASSWORD}, headers=headers)
    assert response.status == 200
    return response.cookies[COOKIE]


@pytest.mark.parametrize(
    "headers", [{}, {"X-Forwarded-Proto": "https"}, {"Forwarded": "for=203.0.113.9;proto=https"}]
)
async def test_without_a_trusted_proxy_forwarded_https_is_ignored(
    client: TestClient, headers: dict[str, str]
) -> None:
    cookie = await _login_cookie(client, headers)
    assert not cookie["secure"]


@pytest.mark.parametrize(
    ("headers", "secure"),
    [
        ({"X-Forwarded-Proto": "https"}, True),
        ({"X-Forwarded-Proto": "HTTPS"}, True),
        ({"Forwarded": "for=203.0.113.9;proto=https"}, True),
        ({"X-Forwarded-Proto": "http"}, False),
        ({"X-Forwarded-Proto": "https, http"}, False),  # the nearest proxy's word counts
        ({"Forwarded": "for=203.0.113.9;proto=http"}, False),
        ({}, False),
    ],
)
async def test_behind_a_trusted_proxy_the_cookie_is_secure_when_the_browser_used_https(
    web_settings: Settings, start_client: StartClient, headers: dict[str, str], secure: bool
) -> None:
    client = await start_client(web_settings.model_copy(update={"trusted_proxies": PROXY}))
    cookie = await _login_cookie(client, headers)
    assert bool(cookie["secure"]) is secure
    logout = await client.post("/web/logout", headers={**CSRF, **headers})
    assert bool(logout.cookies[COOKIE]["secure"]) is secure


async def test_behind_a_trusted_proxy_each_browser_is_locked_out_alone(
    web_settings: Settings, start_client: StartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webchat, "LOGIN_DELAY", 0)
    client = await start_client(web_settings.model_copy(update={"trusted_proxies": PROXY}))
    guesser = {"X-Forwarded-For": "203.0.113.5"}
    for _ in range(5):
        response = await client.post("/web/login", json={"password": "guess"}, headers=guesser)
        assert response.status == 401
    assert (await client.post("/web/login", json={"password": PASSWORD}, headers=guesser)).status == 429
    # what the guesser puts left of the proxy's own entry does not change who it is
    spoofed = {"X-Forwarded-For": "198.51.100.1, 203.0.113.5"}
    assert (await client.post("/web/login", json={"password": PASSWORD}, headers=spoofed)).status == 429
    other = {"X-Forwarded-For": "203.0.113.6"}
    assert (await client.post("/web/login", json={"password": PASSWORD}, headers=other)).status == 200


async def test_without_a_trusted_proxy_x_forwarded_for_cannot_escape_the_lockout(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webchat, "LOGIN_DELAY", 0)
    for i in range(5):
        headers = {"X-Forwarded-For": f"203.0.113.{i}"}
        assert (await client.post("/web/login", json={"password": "guess"}, headers=headers)).status == 401
    fresh = {"X-Forwarded-For": "198.51.100.77"}
    assert (await client.post("/web/login", json={"password": PASSWORD}, headers=fresh)).status == 429


def _request(remote: str, headers: dict[str, str] | None = None, scheme: str = "http") -> web.Request:
    return make_mocked_request("POST", "/web/login", headers=headers or {}).clone(
        remote=remote, scheme=scheme
    )


@pytest.mark.parametrize(
    ("remote", "headers", "client"),
    [
        ("203.0.113.9", {"X-Forwarded-For": "198.51.100.1"}, "203.0.113.9"),  # not a proxy: ignored
        ("10.0.0.2", {}, "10.0.0.2"),  # a proxy that says nothing is the client
        ("10.0.0.2", {"X-Forwarded-For": "198.51.100.1"}, "198.51.100.1"),
        ("10.0.0.2", {"X-Forwarded-For": "1.1.1.1, 198.51.100.1, 10.0.0.3"}, "198.51.100.1"),
        ("10.0.0.2", {"X-Forwarded-For": "10.0.0.4, 10.0.0.3"}, "10.0.0.4"),  # only proxies: the farthest
        ("10.0.0.2", {"X-Forwarded-For": "198.51.100.1, garbage"}, "10.0.0.2"),  # unreadable: go no further
        ("10.0.0.2", {"X-Forwarded-For": "[2001:db8::5]:4711"}, "2001:db8::5"),
        ("10.0.0.2", {"Forwarded": 'for=198.51.100.1, for="[2001:db8::7]:80"'}, "2001:db8::7"),
        ("::ffff:10.0.0.2", {"X-Forwarded-For": "198.51.100.1:5555"}, "198.51.100.1"),
    ],
)
def test_the_client_address_behind_proxies(remote: str, headers: dict[str, str], client: str) -> None:
    proxies = [ip_network("10.0.0.0/8")]
    assert forwarded.client_address(_request(remote, headers), proxies) == client


def test_a_direct_https_connection_is_https_without_any_proxy() -> None:
    assert forwarded.came_over_https(_request("203.0.113.9", scheme="https"), [])
    assert not forwarded.came_over_https(_request("203.0.113.9", {"X-Forwarded-Proto": "https"}), [])


async def test_a_stream_reads_once_for_every_message_hint_waiting(
    client: TestClient, web_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hints that wait together (a reply comes with its messages' acks) cost one database read:
    the read comes after they were all published, so it finds every row they announce."""
    from nanohost.channels import api

    assert await log_in(client) == 200
    seed = await client.post("/web/groups/team/messages", json={"text": "hello"})
    assert seed.status == 201
    ws = await client.ws_connect("/web/groups/team/stream?after=0")
    assert (await ws.receive_json())["text"] == "hello"  # replayed: the stream listens by now
    reads: list[int] = []
    real = api._messages_after

    def counted(*args: Any) -> list[dict[str, Any]]:
        reads.append(args[2])
        return real(*args)

    monkeypatch.setattr(api, "_messages_after", counted)
    engine = make_engine(web_settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        team = db.scalars(select(AgentGroup).where(AgentGroup.name == "team")).one()
        rows = [
            Message(group_id=team.id, direction="out", channel="web", chat_id="team", text=f"reply {n}")
            for n in range(2)
        ]
        db.add_all(rows)
        db.flush()
        ids = [row.id for row in rows]
    engine.dispose()
    bus = client.server.app[ROUTER].orchestrator.ctx.bus
    for message_id in ids:
        bus.publish(team.id, {"type": "message", "id": message_id})
    bus.publish(team.id, {"type": "progress", "text": "working"})
    bus.publish(team.id, {"type": "message", "id": ids[-1]})
    received = [await ws.receive_json() for _ in range(3)]
    assert [(e["type"], e.get("text")) for e in received] == [
        ("message", "reply 0"),
        ("message", "reply 1"),
        ("progress", "working"),
    ]
    assert len(reads) == 1
    await ws.close()


async def test_reading_the_chat_does_not_wait_for_a_writer(
    client: TestClient, web_settings: Settings
) -> None:
    """The cookie check, the group lookup and the history read take no write lock: while another
    process holds it (the CLI, the import thread), the chat still answers at once."""
    import sqlite3

    assert await log_in(client) == 200
    assert (await client.post("/web/groups/team/messages", json={"text": "hello"})).status == 201
    writer = sqlite3.connect(web_settings.data_dir / "nanohost.db", isolation_level=None, timeout=0)
    writer.execute("BEGIN IMMEDIATE")
    try:
        response = await client.get("/web/groups/team/messages?after=0")
        assert response.status == 200
        assert [m["text"] for m in (await response.json())["messages"]] == ["hello"]
        ws = await client.ws_connect("/web/groups/team/stream?after=0")
        assert (await ws.receive_json())["text"] == "hello"
        await ws.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


async def test_a_running_host_keeps_its_startup_heap_out_of_the_collector(
    web_settings: Settings, start_client: StartClient
) -> None:
    """What the host built at start is frozen (a full collection no longer walks it, stalling the
    event loop), and handed back to the collector at shutdown."""
    import gc

    assert gc.get_freeze_count() == 0
    client = await start_client(web_settings)
    assert gc.get_freeze_count() > 10_000
    await client.close()
    assert gc.get_freeze_count() == 0
