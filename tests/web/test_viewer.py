"""The conversation viewer's and the operator view's endpoints without a browser (fake backend).

The archive is the agent's: these tests plant what a hostile agent could (links to host files at
every level, bad lines, huge lines, FIFOs) and check that the viewer and the download show none
of it; and that every endpoint keeps the web chat's access rules (login, web binding, CSRF) and
the API's (token)."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from nanohost.db import make_engine, make_session_factory
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, Snapshot
from nanohost.settings import Settings, load_settings
from tests.web.conftest import StartClient
from tests.web.test_webchat import log_in

CSRF = {"X-Nanohost": "1"}


def turn_line(turn: str, prompt: str = "hello", **extra: Any) -> str:
    record = {
        "v": 1,
        "turn": turn,
        "thread": "th-1",
        "provider": "codex",
        "model": "gpt-test",
        "status": "completed",
        "started_at": "2026-12-01T10:00:00.000Z",
        "ended_at": "2026-12-01T10:00:01.500Z",
        "duration_ms": 1500,
        "prompts": [prompt],
        "reply": f"reply to {prompt}",
        "usage": {"input": 100, "cached_input": 20, "output": 30, "total": 130},
        "items": [
            {"id": "r", "type": "reasoning", "text": "thinking about " + prompt},
            {
                "id": "c",
                "type": "command",
                "command": "ls -la",
                "output": "total 0\nneedle-in-output",
                "exit_code": 0,
            },
            {"id": "f", "type": "file_change", "changes": [{"path": "a.txt", "kind": "add", "diff": "+a"}]},
            {
                "id": "t",
                "type": "tool_call",
                "server": "db",
                "tool": "read_query",
                "arguments": "{}",
                "result": "1",
            },
        ],
        **extra,
    }
    return json.dumps(record) + "\n"


def turns_dir(settings: Settings, group: str = "team") -> Path:
    path = settings.groups_dir / group / "conversations" / "turns"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def logged_in(client: TestClient) -> TestClient:
    assert await log_in(client) == 200
    return client


async def test_turns_are_listed_newest_first_opened_by_id_and_searched(
    web_settings: Settings, client: TestClient
) -> None:
    days = turns_dir(web_settings)
    (days / "2026-11-30.jsonl").write_text(turn_line("old-1", "yesterday"))
    (days / "2026-12-01.jsonl").write_text(
        turn_line("new-1", "first today")
        + "not json at all\n"
        + json.dumps({"v": 1, "turn": "bad", "status": 3})
        + "\n"  # wrong shape: skipped
        + turn_line("new-2", "second today")
        + '{"v": 1, "turn": "half'  # a line still being written: no newline yet
    )
    await logged_in(client)
    listed = await (await client.get("/web/groups/team/turns")).json()
    assert [t["turn"] for t in listed["turns"]] == ["new-2", "new-1", "old-1"]
    assert listed["more"] is False
    first = listed["turns"][0]
    assert first == {
        "turn": "new-2",
        "started_at": "2026-12-01T10:00:00.000Z",
        "status": "completed",
        "model": "gpt-test",
        "duration_ms": 1500,
        "tokens": 130,
        "prompt": "second today",
        "reply": "reply to second today",
        "steps": 4,
    }
    page = await (await client.get("/web/groups/team/turns?before=new-2")).json()
    assert [t["turn"] for t in page["turns"]] == ["new-1", "old-1"]

    detail = await client.get("/web/groups/team/turns/old-1")
    assert detail.status == 200
    body = await detail.json()
    assert body["prompts"] == ["yesterday"] and body["usage"]["cached_input"] == 20
    assert [i["type"] for i in body["items"]] == ["reasoning", "command", "file_change", "tool_call"]
    assert (await client.get("/web/groups/team/turns/nope")).status == 404
    assert (await client.get("/web/groups/team/turns/..%2F..%2Fetc")).status == 404

    found = await (await client.get("/web/groups/team/search?q=NEEDLE-in")).json()
    assert [t["turn"] for t in found["turns"]] == ["new-2", "new-1", "old-1"] and found["complete"]
    found = await (await client.get("/web/groups/team/search?q=yesterday")).json()
    assert [t["turn"] for t in found["turns"]] == ["old-1"]
    assert (await (await client.get("/web/groups/team/search?q=absent")).json())["turns"] == []
    assert (await client.get("/web/groups/team/search?q=" + "x" * 201)).status == 400


async def test_a_turn_over_the_limits_is_skipped_not_an_error(
    web_settings: Settings, client: TestClient
) -> None:
    days = turns_dir(web_settings)
    huge = turn_line("huge", "x" * 30_000)  # a prompt over the archive's limit
    many = json.loads(turn_line("many"))
    many["items"] = many["items"] * 60  # 240 items: over the 200 a turn may have
    (days / "2026-12-01.jsonl").write_text(huge + json.dumps(many) + "\n" + turn_line("fine"))
    await logged_in(client)
    listed = await (await client.get("/web/groups/team/turns")).json()
    assert [t["turn"] for t in listed["turns"]] == ["fine"]


@pytest.mark.parametrize("where", ["conversations", "turns", "day"])
async def test_links_in_the_archive_lead_nowhere(
    web_settings: Settings, client: TestClient, tmp_path: Path, where: str
) -> None:
    secret_dir = tmp_path / "host-secret"
    (secret_dir / "turns").mkdir(parents=True)
    secret_line = turn_line("secret-turn", "HOST SECRET")
    (secret_dir / "turns" / "2026-12-01.jsonl").write_text(secret_line)
    (secret_dir / "2026-12-01.jsonl").write_text(secret_line)
    folder = web_settings.groups_dir / "team"
    if where == "conversations":
        shutil.rmtree(folder / "conversations", ignore_errors=True)
        os.symlink(secret_dir, folder / "conversations")
    elif where == "turns":
        (folder / "conversations").mkdir(exist_ok=True)
        os.symlink(secret_dir, folder / "conversations" / "turns")
    else:
        os.symlink(secret_dir / "2026-12-01.jsonl", turns_dir(web_settings) / "2026-12-01.jsonl")
    await logged_in(client)
    listed = await (await client.get("/web/groups/team/turns")).json()
    assert listed["turns"] == []
    assert (await client.get("/web/groups/team/turns/secret-turn")).status == 404
    assert (await (await client.get("/web/groups/team/search?q=secret")).json())["turns"] == []
    download = await client.get("/web/groups/team/archive.zip")
    assert download.status == 200
    data = await download.read()
    assert b"HOST SECRET" not in data
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert all("secret" not in n for n in names)


async def test_the_download_carries_the_archive_and_lists_what_it_left_out(
    web_settings: Settings, client: TestClient, tmp_path: Path
) -> None:
    days = turns_dir(web_settings)
    (days / "2026-12-01.jsonl").write_text(turn_line("t1"))
    conversations = days.parent
    (conversations / "2026-12-01T10-00-00Z-abcd.md").write_text("# Exchange\n\nhello\n")
    (tmp_path / "passwd").write_text("root:x:0:0 HOST FILE")
    os.symlink(tmp_path / "passwd", conversations / "stolen.md")
    os.mkfifo(conversations / "pipe")
    await logged_in(client)
    response = await client.get("/web/groups/team/archive.zip")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/zip"
    assert "team-conversations.zip" in response.headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    assert sorted(archive.namelist()) == [
        "NANOHOST-SKIPPED.txt",
        "conversations/2026-12-01T10-00-00Z-abcd.md",
        "conversations/turns/2026-12-01.jsonl",
    ]
    assert archive.read("conversations/turns/2026-12-01.jsonl").decode() == turn_line("t1")
    skipped = archive.read("NANOHOST-SKIPPED.txt").decode()
    assert "conversations/stolen.md: a link, left out" in skipped
    assert "conversations/pipe: not a regular file, left out" in skipped
    assert b"HOST FILE" not in await (await client.get("/web/groups/team/archive.zip")).read()


VIEWER_CALLS = [
    ("GET", "/web/groups/{g}/turns"),
    ("GET", "/web/groups/{g}/turns/t1"),
    ("GET", "/web/groups/{g}/search?q=x"),
    ("GET", "/web/groups/{g}/archive.zip"),
    ("POST", "/web/operator/groups/{g}/restart"),
    ("POST", "/web/operator/groups/{g}/snapshot"),
]


@pytest.mark.parametrize(("method", "path"), VIEWER_CALLS)
async def test_the_viewer_needs_the_login_and_a_web_binding(
    web_settings: Settings, client: TestClient, method: str, path: str
) -> None:
    (turns_dir(web_settings, "other") / "2026-12-01.jsonl").write_text(turn_line("t1"))
    response = await client.request(method, path.format(g="team"), headers=CSRF)
    assert response.status == 401
    await logged_in(client)
    response = await client.request(method, path.format(g="other"), headers=CSRF)
    assert response.status == 404  # `other` has no web binding: as if it did not exist
    assert "t1" not in await response.text()


async def test_the_pages_need_the_login(client: TestClient) -> None:
    for page in ("/viewer", "/operator"):
        response = await client.get(page, allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/"
    await logged_in(client)
    for page, script in (("/viewer", "viewer.js"), ("/operator", "operator.js")):
        response = await client.get(page)
        assert response.status == 200 and script in await response.text()
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def db_rows(settings: Settings, model: Any) -> list[Any]:
    engine = make_engine(settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        rows = list(db.scalars(select(model)))
        db.expunge_all()
    engine.dispose()
    return rows


async def test_the_operator_view_lists_web_groups_restarts_and_snapshots(
    web_settings: Settings, client: TestClient
) -> None:
    await logged_in(client)
    response = await client.post("/web/groups/team/messages", json={"text": "wake up"})
    assert response.status == 201
    states = (await (await client.get("/web/operator/groups")).json())["groups"]
    assert [g["name"] for g in states] == ["team"]  # `other` has no web binding
    assert states[0]["state"] in ("running", "queued") and states[0]["last_activity"]

    # a state change without the CSRF header (what a cross-site form could send) is refused
    assert (await client.post("/web/operator/groups/team/restart")).status == 403
    assert (await client.post("/web/operator/groups/team/snapshot")).status == 403
    assert db_rows(web_settings, Snapshot) == []

    assert (await client.post("/web/operator/groups/team/restart", headers=CSRF)).status == 200
    response = await client.post("/web/operator/groups/team/snapshot", json={"note": "from a test"})
    assert response.status == 201, await response.text()
    taken = await response.json()
    (snapshot,) = db_rows(web_settings, Snapshot)
    assert taken["id"] == snapshot.id and snapshot.note == "from a test"
    response = await client.post("/web/operator/groups/team/snapshot", json={"note": "x" * 501})
    assert response.status == 400


async def test_a_restart_from_the_web_asks_for_a_clean_restart(
    web_settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanohost.channels.api import ROUTER

    await logged_in(client)
    assert (await client.post("/web/groups/team/messages", json={"text": "hello"})).status == 201
    ctx = client.server.app[ROUTER].orchestrator.ctx
    team = next(g for g in db_rows(web_settings, AgentGroup) if g.name == "team")
    asked: list[list[bool]] = []
    real_set = ctx.sweep_now.set

    def sweep_now() -> None:  # what the sweeper will find when it wakes (it clears the flag)
        asked.append(
            [s.restart_requested for s in db_rows(web_settings, AgentSession) if s.group_id == team.id]
        )
        real_set()

    monkeypatch.setattr(ctx.sweep_now, "set", sweep_now)
    assert (await client.post("/web/operator/groups/team/restart", headers=CSRF)).status == 200
    assert asked == [[True]]  # the group's session is asked to restart, and the sweeper woken at once


async def test_the_api_operator_endpoints_need_the_token_and_see_every_group(
    web_settings: Settings, start_client: StartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NANOHOST_API_TOKEN", "operator-token")
    client: TestClient = await start_client(load_settings(max_attachment_bytes=4096))
    assert (await client.get("/api/operator/groups")).status == 401
    assert (await client.post("/api/groups/other/restart")).status == 401
    assert (await client.post("/api/groups/other/snapshots")).status == 401
    await logged_in(client)  # a web login is not the API token
    assert (await client.get("/api/operator/groups")).status == 401
    auth = {"Authorization": "Bearer operator-token"}
    states = (await (await client.get("/api/operator/groups", headers=auth)).json())["groups"]
    assert [(g["name"], g["state"]) for g in states] == [("other", "idle"), ("team", "idle")]
    assert (await client.post("/api/groups/other/restart", headers=auth)).status == 200
    response = await client.post("/api/groups/other/snapshots", headers=auth, json={"note": "api"})
    assert response.status == 201
    assert (await client.post("/api/groups/nope/snapshots", headers=auth)).status == 404


async def test_the_api_token_reads_every_groups_archive_and_a_web_login_does_not(
    web_settings: Settings, start_client: StartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The viewer's turns, one turn, search and download, for API clients: every group (also one
    with no web binding), with the token only."""
    monkeypatch.setenv("NANOHOST_API_TOKEN", "operator-token")
    client: TestClient = await start_client(load_settings(max_attachment_bytes=4096))
    (turns_dir(web_settings, "other") / "2026-12-01.jsonl").write_text(
        turn_line("o-1", "unbound") + turn_line("o-2", "findme please")
    )
    paths = [
        "/api/groups/other/turns",
        "/api/groups/other/turns/o-1",
        "/api/groups/other/search?q=findme",
        "/api/groups/other/archive.zip",
    ]
    await logged_in(client)  # a web login is not the API token
    for path in paths:
        assert (await client.get(path)).status == 401, path
    assert (await client.get("/web/groups/other/turns")).status == 404  # no web binding
    auth = {"Authorization": "Bearer operator-token"}
    listed = await (await client.get(paths[0], headers=auth)).json()
    assert [t["turn"] for t in listed["turns"]] == ["o-2", "o-1"]
    assert (await (await client.get(paths[1], headers=auth)).json())["prompts"] == ["unbound"]
    found = await (await client.get(paths[2], headers=auth)).json()
    assert [t["turn"] for t in found["turns"]] == ["o-2"]
    download = await client.get(paths[3], headers=auth)
    assert download.status == 200
    names = zipfile.ZipFile(io.BytesIO(await download.read())).namelist()
    assert "conversations/turns/2026-12-01.jsonl" in names
    assert (await client.get("/api/groups/other/turns/..%2Fx", headers=auth)).status == 404
    assert (await client.get("/api/groups/nope/turns", headers=auth)).status == 404


def test_every_viewer_and_operator_route_is_in_the_readme() -> None:
    from aiohttp import web

    from nanohost.channels import webviewer

    app = web.Application()
    webviewer.add_routes(app)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## The conversation viewer") : readme.index("## Chat channels")]
    api_table = readme[readme.index("## The HTTP API") : readme.index("## The web chat")]
    routes = {r.canonical for r in app.router.resources()}
    assert len(routes) == 16
    for route in routes:
        where = api_table if route.startswith("/api/") else section
        documented = route.replace("/web/operator/groups/{group}/snapshot", "…/snapshot")
        assert route in where or documented in where or route.split("?")[0] in where, route


def test_each_group_state_is_told_apart(host_env: Path) -> None:
    from dataclasses import dataclass
    from datetime import datetime
    from types import SimpleNamespace

    from nanohost.channels.webviewer import group_states
    from nanohost.db import migrate
    from nanohost.db.models import Message
    from nanohost.groups import bind_chat, create_group
    from nanohost.slots import Slots

    settings = load_settings()
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    sessions: dict[str, int] = {}
    with transaction(factory) as db:
        for name in ("running", "waking", "waiting", "failed", "idle", "unbound"):
            group = create_group(db, settings, name, provider="mock")
            if name != "unbound":
                bind_chat(db, "web", name, group, "shared")
            session = AgentSession(group_id=group.id, status="failed" if name == "failed" else "idle")
            db.add(session)
            db.flush()
            sessions[name] = session.id
            if name in ("waiting", "failed"):  # an unanswered message; failed wins over queued
                db.add(
                    Message(
                        group_id=group.id,
                        session_id=session.id,
                        direction="in",
                        channel="web",
                        chat_id=name,
                        text="hello?",
                        status="queued",
                        created_at=datetime(2026, 12, 1, 9, 30),
                    )
                )

    @dataclass(eq=False)
    class Runtime:
        container_id: str | None
        waking: bool

    slots = Slots(1)
    runtimes = {
        sessions["running"]: Runtime("c1", False),
        sessions["waking"]: Runtime(None, True),  # waiting for a slot
        sessions["idle"]: Runtime(None, False),
    }
    orchestrator: Any = SimpleNamespace(runtimes=runtimes, ctx=SimpleNamespace(slots=slots, db=factory))
    shown = {g["name"]: g for g in group_states(orchestrator, web_only=True)}
    assert {name: g["state"] for name, g in shown.items()} == {
        "failed": "failed",
        "idle": "idle",
        "running": "running",
        "waiting": "queued",
        "waking": "queued",
    }
    assert shown["waiting"]["last_activity"] == "2026-12-01T09:30:00Z"
    assert shown["idle"]["last_activity"] is None
    everyone = [g["name"] for g in group_states(orchestrator, web_only=False)]
    assert "unbound" in everyone and len(everyone) == 6
    engine.dispose()


def test_live_steps_reach_only_their_groups_listeners() -> None:
    from nanohost.bus import MessageBus

    bus = MessageBus()
    mine, theirs, everything = bus.subscribe(1), bus.subscribe(2), bus.subscribe_all()
    bus.publish(1, {"type": "item", "turn": "t", "phase": "start"})
    bus.publish(1, {"type": "message", "id": 3})
    assert [mine.get_nowait()["type"], mine.get_nowait()["type"]] == ["item", "message"]
    assert theirs.empty()
    assert everything.get_nowait() == {"type": "message", "id": 3, "group_id": 1}  # delivery's queue
    assert everything.empty()  # a flood of steps can never push another group's message out of it


def test_search_finds_text_json_escapes_and_stops_at_its_budget(
    host_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanohost import viewer

    folder = host_env / "groups" / "team"
    days = folder / "conversations" / "turns"
    days.mkdir(parents=True)
    lines = [turn_line(f"t{n}", f"question {n}") for n in range(300)]
    lines[10] = json.dumps(json.loads(turn_line("quoted", 'say "Café" twice')), ensure_ascii=False) + "\n"
    lines[20] = turn_line("escaped", "naïve")  # written with \\u escapes, as another writer might
    (days / "2026-12-01.jsonl").write_text("".join(lines))
    assert [t["turn"] for t in viewer.search(folder, "CAFÉ")["turns"]] == ["quoted"]
    assert [t["turn"] for t in viewer.search(folder, '"café"')["turns"]] == ["quoted"]
    assert [t["turn"] for t in viewer.search(folder, "question 299")["turns"]] == ["t299"]
    page = viewer.search(folder, "question", limit=5)
    assert [t["turn"] for t in page["turns"]] == ["t299", "t298", "t297", "t296", "t295"]
    assert page["complete"] is False
    assert viewer.list_turns(folder, limit=2)["turns"][1]["turn"] == "t298"
    assert viewer.find_turn(folder, "t0") is not None and viewer.find_turn(folder, "t") is None
    monkeypatch.setattr(viewer, "MAX_READ_BYTES", len(lines[0]) * 50)
    capped = viewer.search(folder, "question 27")
    assert capped["complete"] is False  # only the newest ~50 lines were looked at: t27 is not found
    assert [t["turn"] for t in capped["turns"]] == [f"t{n}" for n in range(279, 269, -1)]
    monkeypatch.undo()
    assert [t["turn"] for t in viewer.search(folder, "question 27")["turns"]][-1] == "t27"
    assert [t["turn"] for t in viewer.search(folder, "NAÏVE")["turns"]] == ["escaped"]


def test_listing_and_lookup_stop_at_the_read_budget_and_parse_only_turn_lines(
    host_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many days of big valid-JSON-but-not-a-turn lines: a listing, a lookup of a missing turn
    and a search each read at most the budget (newest days first), parse none of the junk, and
    say that they stopped early."""
    from nanohost import viewer

    folder = host_env / "groups" / "team"
    days = folder / "conversations" / "turns"
    days.mkdir(parents=True)
    (days / "2026-01-01.jsonl").write_text(turn_line("oldest"))
    junk = json.dumps({"junk": "x" * 100_000, "turn": "nope"}) + "\n"
    marked = '{"v": 1, "junk": "' + "y" * 100_000 + '"}\n'  # passes the marker, is not a turn
    for day in range(2, 22):
        (days / f"2026-01-{day:02}.jsonl").write_text(junk * 4 + marked)
    day_bytes = len(junk) * 4 + len(marked)
    read: list[int] = []
    parsed: list[int] = []
    real_read, real_parse = viewer.read_day, viewer.parse_line
    monkeypatch.setattr(viewer, "read_day", lambda f, n: read.append(len(data := real_read(f, n))) or data)
    monkeypatch.setattr(viewer, "parse_line", lambda line: parsed.append(len(line)) or real_parse(line))
    monkeypatch.setattr(viewer, "MAX_READ_BYTES", 3 * day_bytes)
    monkeypatch.setattr(viewer, "MAX_PARSE_BYTES", 10 * day_bytes)

    listed = viewer.list_turns(folder)
    assert listed == {"turns": [], "more": False, "complete": False}
    assert sum(read) <= 4 * day_bytes  # the budget, and at most the day it ran out in
    assert sum(parsed) <= 4 * len(marked)  # the junk without the marker was never parsed

    read.clear(), parsed.clear()
    assert viewer.lookup(folder, "missing") == (None, False)
    assert sum(read) <= 4 * day_bytes
    assert parsed == []  # no line holds the id

    read.clear(), parsed.clear()
    assert viewer.search(folder, "y")["complete"] is False
    assert sum(read) <= 4 * day_bytes

    monkeypatch.setattr(viewer, "MAX_READ_BYTES", 100 * day_bytes)
    monkeypatch.setattr(viewer, "MAX_PARSE_BYTES", 2 * len(marked))
    parsed.clear()
    assert viewer.list_turns(folder)["complete"] is False  # the parse budget stops it too
    assert sum(parsed) <= 3 * len(marked)
    monkeypatch.setattr(viewer, "MAX_PARSE_BYTES", 100 * day_bytes)
    assert [t["turn"] for t in viewer.list_turns(folder)["turns"]] == ["oldest"]
    assert viewer.lookup(folder, "oldest")[0] is not None


async def test_archive_reads_take_turns_and_a_cut_lookup_says_so(
    web_settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import threading

    from nanohost import viewer
    from nanohost.channels.webviewer import ARCHIVE_READS

    days = turns_dir(web_settings)
    (days / "2026-12-01.jsonl").write_text(turn_line("t1") * 20)
    await logged_in(client)
    monkeypatch.setattr(viewer, "MAX_READ_BYTES", len(turn_line("t1")) * 2)
    listed = await (await client.get("/web/groups/team/turns")).json()
    assert listed["complete"] is False  # the answer says the budget cut it short
    missing = await client.get("/web/groups/team/turns/elsewhere")
    assert missing.status == 404 and "limit" in (await missing.json())["error"]
    monkeypatch.undo()

    entered, release = threading.Event(), threading.Event()
    active, most = [0], [0]
    real = viewer.list_turns

    def slow_listing(*args: Any) -> dict[str, Any]:
        active[0] += 1
        most[0] = max(most[0], active[0])
        entered.set()
        release.wait()
        active[0] -= 1
        return real(*args)

    monkeypatch.setattr(viewer, "list_turns", slow_listing)
    first = asyncio.ensure_future(client.get("/web/groups/team/turns"))
    second = asyncio.ensure_future(client.get("/web/groups/team/turns"))
    await asyncio.to_thread(entered.wait)
    try:
        assert client.app is not None and client.app[ARCHIVE_READS].locked()  # the second one waits
    finally:
        release.set()
    assert [(await first).status, (await second).status] == [200, 200]
    assert most[0] == 1


def test_the_download_counts_every_entry_caps_its_skip_list_and_refuses_unsafe_names(
    host_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Directories and left-out entries count against the entry cap, the skip list is capped (with
    how many more), a huge directory is read only up to its cap, names a Windows extractor would
    read as a path are left out, and an agent file named like the host's list is packed as itself."""
    from nanohost import viewer

    folder = host_env / "groups" / "team"
    conversations = folder / "conversations"
    (conversations / "turns").mkdir(parents=True)
    (conversations / "SKIPPED.txt").write_text("the agent's own file")
    (conversations / "..\\..\\evil.txt").write_text("escape on Windows")
    (conversations / "a:b.md").write_text("a stream on NTFS")
    (conversations / "NUL.md").write_text("a device")
    (conversations / "dots.").write_text("trailing dot")
    (conversations / "new\nline.md").write_text("a second line in the list")
    links = conversations / "links"
    links.mkdir()
    for n in range(40):
        os.symlink("/etc/passwd", links / f"l{n:03}")
    dirs = conversations / "dirs"
    for n in range(30):
        (dirs / f"d{n:03}").mkdir(parents=True)

    def pack() -> tuple[zipfile.ZipFile, viewer.Packed]:
        out = io.BytesIO()
        packed = viewer.write_zip(folder, out)
        return zipfile.ZipFile(out), packed

    archive, packed = pack()
    names = archive.namelist()
    assert len(names) == len(set(names))  # no duplicate member
    assert archive.read("conversations/SKIPPED.txt") == b"the agent's own file"
    assert all("\\" not in n and ":" not in n and "NUL" not in n and not n.endswith(".") for n in names)
    assert not any("new" in n for n in names)
    skipped = archive.read(viewer.SKIPPED_NAME).decode()
    assert "conversations/..\\..\\evil.txt: a name unsafe to extract" in skipped
    assert "'conversations/new\\nline.md': a name unsafe to extract" in skipped  # one line, escaped

    monkeypatch.setattr(viewer, "MAX_DIR_ENTRIES", 35)
    archive, packed = pack()
    lines = archive.read(viewer.SKIPPED_NAME).decode().splitlines()
    assert "conversations/links/: more than 35 entries: the rest left out" in lines
    assert sum(line.startswith("conversations/links/l") for line in lines) == 35  # read up to the cap

    monkeypatch.setattr(viewer, "MAX_SKIPPED", 10)
    archive, packed = pack()
    lines = archive.read(viewer.SKIPPED_NAME).decode().splitlines()
    assert len(lines) == 11 and lines[-1] == f"… and {packed.skipped_more} more left out"
    assert packed.skipped_more > 20

    monkeypatch.setattr(viewer, "MAX_DIR_ENTRIES", 10_000)
    monkeypatch.setattr(viewer, "MAX_DOWNLOAD_ENTRIES", 20)
    archive, packed = pack()
    assert packed.entries <= 21  # directories and skipped links count too
    assert len(archive.namelist()) <= 21


async def test_one_download_at_a_time_per_group(
    web_settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import threading

    from nanohost import viewer

    (turns_dir(web_settings) / "2026-12-01.jsonl").write_text(turn_line("t1"))
    await logged_in(client)
    entered, release = threading.Event(), threading.Event()
    real = viewer.write_zip

    def held_zip(folder: Path, out: Any) -> Any:
        if not entered.is_set():  # the first download is held; any other goes straight through
            entered.set()
            release.wait()
        return real(folder, out)

    monkeypatch.setattr(viewer, "write_zip", held_zip)
    first = asyncio.ensure_future(client.get("/web/groups/team/archive.zip"))
    await asyncio.to_thread(entered.wait)
    try:
        second = await client.get("/web/groups/team/archive.zip")
        assert second.status == 429
        assert "already under way" in (await second.json())["error"]
    finally:
        release.set()
    response = await first
    assert response.status == 200
    assert (
        "conversations/turns/2026-12-01.jsonl"
        in zipfile.ZipFile(io.BytesIO(await response.read())).namelist()
    )
    assert (await client.get("/web/groups/team/archive.zip")).status == 200  # and after it, again


async def test_at_most_two_downloads_at_once_on_the_host(
    web_settings: Settings, start_client: StartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API token reaches every group: however many groups, the spools on the host's disk
    stay bounded."""
    import asyncio
    import threading

    from nanohost import viewer
    from nanohost.groups import create_group

    engine = make_engine(web_settings.db_url)
    with transaction(make_session_factory(engine)) as db:
        create_group(db, web_settings, "third", provider="mock")
    engine.dispose()
    monkeypatch.setenv("NANOHOST_API_TOKEN", "operator-token")
    client: TestClient = await start_client(load_settings(max_attachment_bytes=4096))
    auth = {"Authorization": "Bearer operator-token"}
    entered, release = threading.Semaphore(0), threading.Event()
    real = viewer.write_zip

    def held_zip(folder: Path, out: Any) -> Any:
        entered.release()
        release.wait()
        return real(folder, out)

    monkeypatch.setattr(viewer, "write_zip", held_zip)
    held = [
        asyncio.ensure_future(client.get(f"/api/groups/{g}/archive.zip", headers=auth))
        for g in ("team", "other")
    ]
    for _ in held:
        await asyncio.to_thread(entered.acquire)
    try:
        third = await client.get("/api/groups/third/archive.zip", headers=auth)
        assert third.status == 429 and "2 archive downloads" in (await third.json())["error"]
    finally:
        release.set()
    assert [(await r).status for r in held] == [200, 200]


def test_a_stalled_listener_holds_a_bounded_number_of_bytes_and_keeps_every_message() -> None:
    """A hostile agent's steps flood a listener that never reads: its queue stays within its
    byte cap, drops the oldest steps (never a chat message's hint) and tells it it missed some."""
    import json as _json

    from nanohost.bus import MAX_SUBSCRIBER_BYTES, MessageBus

    bus = MessageBus()
    stalled = bus.subscribe(1)
    step = {
        "type": "item",
        "turn": "t",
        "phase": "item",
        "item": {"id": "s", "type": "other", "text": "x" * 30_000},
    }
    for n in range(2000):
        bus.publish(1, {**step, "item": {**step["item"], "id": f"s{n}"}})
        if n % 100 == 0:
            bus.publish(1, {"type": "message", "id": n})
    held = []
    while not stalled.empty():
        held.append(stalled.get_nowait())
    assert sum(len(_json.dumps(e)) for e in held) <= MAX_SUBSCRIBER_BYTES + 100
    assert held[0] == {"type": "missed"}
    assert [e["id"] for e in held if e["type"] == "message"] == list(range(0, 2000, 100))
    assert held[-1]["item"]["id"] == "s1999"  # the newest steps are the ones kept


def test_a_line_over_the_line_cap_is_never_parsed(host_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nanohost import viewer

    folder = host_env / "groups" / "team"
    days = folder / "conversations" / "turns"
    days.mkdir(parents=True)
    huge = '{"v": 1, "turn": "huge", "junk": "' + "z" * (viewer.MAX_LINE_BYTES + 10) + '"}\n'
    (days / "2026-12-01.jsonl").write_text(turn_line("t1") + huge)
    parsed: list[int] = []
    real = json.loads
    monkeypatch.setattr(viewer.json, "loads", lambda text: parsed.append(len(text)) or real(text))
    assert [t["turn"] for t in viewer.list_turns(folder)["turns"]] == ["t1"]
    assert viewer.lookup(folder, "huge") == (None, True)
    assert max(parsed) < viewer.MAX_LINE_BYTES and viewer.MAX_LINE_BYTES <= 1024 * 1024
