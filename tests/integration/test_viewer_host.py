"""The conversation viewer end to end: the mock agent in a real container, the real host.

A turn's steps travel as ``item`` rows through the session queue to the web chat's websocket
(never stored as messages) and land in the group's archive, where the viewer's endpoints find
them. A hostile agent writing item rows and archive files itself (``docker exec`` as the agent
user) gets its bad rows skipped and its links to host files ignored by the viewer and the download.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType
from sqlalchemy import func, select

from nanohost.db.engine import transaction
from nanohost.db.models import AgentSession, Message
from tests.integration.test_boundary import container_of, outbound_insert, python_in
from tests.support.host import Host, add_group, bind, make_settings
from tests.web.conftest import PASSWORD, set_web_password

pytestmark = pytest.mark.docker


async def web_host(tmp_path: Path, start_host: Any) -> Host:
    settings = make_settings(tmp_path)
    add_group(settings, "team")
    bind(settings, "web", "team", "team")
    set_web_password(settings, PASSWORD)
    host: Host = await start_host(settings)
    response = await host.client.post("/web/login", json={"password": PASSWORD})
    assert response.status == 200
    return host


async def items_until(ws: Any, done: Any, limit: float = 60) -> list[dict[str, Any]]:
    """The websocket's item events until ``done(event)``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(limit):
        while True:
            message = await ws.receive()
            assert message.type == WSMsgType.TEXT, message
            event = json.loads(message.data)
            if event.get("type") == "item":
                seen.append(event)
                if done(event):
                    return seen


async def test_a_turns_steps_stream_live_and_are_archived_for_the_viewer(
    tmp_path: Path, start_host: Any
) -> None:
    host = await web_host(tmp_path, start_host)
    ws = await host.client.ws_connect("/web/groups/team/stream")
    try:
        await host.send("team", "what did you do")
        events = await items_until(ws, lambda e: e["phase"] == "end")
    finally:
        await ws.close()
    assert events[0]["phase"] == "start" and events[0]["prompts"] == ["what did you do"]
    turn_id = events[0]["turn"]
    assert all(e["turn"] == turn_id for e in events)
    steps = {e["item"]["id"]: e["item"] for e in events if e["phase"] == "item"}
    assert steps["cmd-1"]["status"] == "completed" and steps["cmd-1"]["output"] == "what did you do"
    assert events[-1]["model"] == "mock-echo" and events[-1]["status"] == "completed"

    with transaction(host.orchestrator.ctx.db) as db:  # shown, never stored as chat messages
        outs = db.scalar(select(func.count()).select_from(Message).where(Message.direction == "out"))
    assert outs == 1

    listed = await (await host.client.get("/web/groups/team/turns")).json()
    assert [t["turn"] for t in listed["turns"]] == [turn_id]
    detail = await (await host.client.get(f"/web/groups/team/turns/{turn_id}")).json()
    assert detail["prompts"] == ["what did you do"] and detail["reply"] == "echo: what did you do"
    assert [i["type"] for i in detail["items"]] == ["reasoning", "command", "file_change", "message"]
    found = await (await host.client.get("/web/groups/team/search?q=WHAT%20DID")).json()
    assert [t["turn"] for t in found["turns"]] == [turn_id]


async def test_a_hostile_agents_item_rows_and_archive_links_get_nowhere(
    tmp_path: Path, start_host: Any, docker_client: Any
) -> None:
    host = await web_host(tmp_path, start_host)
    first = await host.send("team", "hello")
    assert await host.replies_after("team", first)
    container = container_of(docker_client, host.settings, "team")
    secret = tmp_path / "host-secret.jsonl"
    secret.write_text(json.dumps({"v": 1, "turn": "stolen", "status": "completed", "started_at": "x"}) + "\n")
    turns = "/workspace/agent/conversations/turns"
    code, output = python_in(
        container,
        "import os\n"
        f"os.symlink({str(secret)!r}, {turns!r} + '/2099-01-01.jsonl')\n"  # a host path, from the host's view
        f"os.symlink('/etc', {turns!r} + '/2099-01-02.jsonl')\n",
    )
    assert code == 0, output

    ws = await host.client.ws_connect("/web/groups/team/stream")
    try:
        good = {
            "turn": "forged-1",
            "phase": "item",
            "item": {"id": "ok", "type": "reasoning", "text": "fine"},
        }
        poison = [
            ("item", json.dumps({**good, "item": {"id": "big", "type": "command", "output": "x" * 30_000}})),
            ("item", json.dumps({**good, "turn": "../../../etc"})),
            ("item", json.dumps({**good, "item": {"id": "t", "type": "telepathy"}})),
            ("item", json.dumps({**good, "phase": "end", "usage": {"total": "lots"}})),
            ("item", json.dumps(good)),
        ]
        code, output = python_in(container, outbound_insert(poison))
        assert code == 0, output
        events = await items_until(ws, lambda e: e.get("item", {}).get("id") == "ok")
    finally:
        await ws.close()
    assert [e["item"]["id"] for e in events] == ["ok"]  # the four bad rows were skipped
    with transaction(host.orchestrator.ctx.db) as db:
        session = db.get(AgentSession, 1)
        assert session is not None and session.last_error is not None and "item row" in session.last_error

    listed = await (await host.client.get("/web/groups/team/turns")).json()
    assert [t["prompt"] for t in listed["turns"]] == ["hello"]  # the linked "day" files are not read
    assert (await host.client.get("/web/groups/team/turns/stolen")).status == 404
    download = await host.client.get("/web/groups/team/archive.zip")
    assert download.status == 200
    archive = zipfile.ZipFile(io.BytesIO(await download.read()))
    assert not any("2099" in name and not name.endswith("SKIPPED.txt") for name in archive.namelist())
    skipped = archive.read("NANOHOST-SKIPPED.txt").decode()
    assert "2099-01-01.jsonl: a link, left out" in skipped and "2099-01-02.jsonl: a link, left out" in skipped
    assert b"stolen" not in b"".join(archive.read(n) for n in archive.namelist())
    second = await host.send("team", "still there?")
    assert [r["text"] for r in await host.replies_after("team", second)][-1] == "echo: still there?"
