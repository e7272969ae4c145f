"""The conversation viewer and the operator view of the web UI, and their API twins.

Access (README "The conversation viewer"): the web pages and ``/web/…`` endpoints need the web
chat's login (same cookie, same CSRF rules: ``webchat.guarded``) and see only groups with a
``web`` binding, as the chat does; any other group answers 404. The ``/api/…`` twins need the
API token (``api.require_token``) and see every group.

- ``GET /viewer`` (``?group=&turn=`` is a permalink to a turn), ``GET /operator``: the pages
- ``GET /web/groups/{group}/turns?before=<turn>`` → ``{"turns": [summary], "more", "complete"}``
  newest first (``complete`` False: the read stopped at its budget, older turns were not reached)
- ``GET /web/groups/{group}/turns/{turn}`` → the archived turn (``viewer.ArchivedTurn``)
- ``GET /web/groups/{group}/search?q=`` → ``{"turns": [summary], "complete"}``
- ``GET /web/groups/{group}/archive.zip`` → the group's ``conversations/`` folder (safe reads;
  one download at a time per group, a second answers 429)
- the live feed: ``{"type": "item", "turn", "phase": "start"|"item"|"end", …}`` events on the
  chat's websocket ``/web/groups/{group}/stream``
- ``GET /web/operator/groups`` → ``{"groups": [{name, state, last_activity, …}]}``;
  ``POST /web/operator/groups/{group}/restart`` and ``…/snapshot`` (``X-Nanohost: 1`` or JSON)
- ``GET /api/operator/groups``, ``POST /api/groups/{group}/restart``,
  ``POST /api/groups/{group}/snapshots`` (``{"note"}``): the same for every group, with the token

A group's state: ``failed`` (its session gave up after repeated crashes), ``running`` (a container
runs), ``queued`` (messages wait and no container runs yet: waiting for a slot, a start or a
crash backoff), ``idle`` (nothing to do).
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select

from nanohost import viewer
from nanohost.channels import api
from nanohost.channels.web_auth import CHANNEL, COOKIE
from nanohost.channels.webchat import PAGE_HEADERS, WEB_DIR, _auth, guarded, web_group
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, ChatBinding, Message
from nanohost.orchestrator import Orchestrator
from nanohost.sessions import current_sessions, current_sessions_by_group

log = logging.getLogger(__name__)

TURN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
CHUNK = 64 * 1024
MAX_NOTE = 500
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _orchestrator(request: web.Request) -> Orchestrator:
    return request.app[api.ROUTER].orchestrator


def _folder(request: web.Request, group: AgentGroup) -> Path:
    return _orchestrator(request).ctx.settings.groups_dir / group.folder


# --- pages ----------------------------------------------------------------------------------


def _page(name: str) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        if not _auth(request).check_cookie(request.cookies.get(COOKIE)):
            raise web.HTTPSeeOther("/")  # the login (or "run setup") page
        html = await asyncio.to_thread((WEB_DIR / name).read_text)
        return web.Response(text=html, content_type="text/html", headers=PAGE_HEADERS)

    return serve


# --- the viewer -----------------------------------------------------------------------------


ARCHIVE_READS: web.AppKey[asyncio.Lock] = web.AppKey("viewer_archive_reads", asyncio.Lock)
"""One archive read (a listing, a lookup, a search) at a time per host: parsing holds the GIL, so
concurrent reads would only multiply what a hostile archive costs."""


DOWNLOADS: web.AppKey[set[int]] = web.AppKey("viewer_downloads", set)
"""Groups whose archive download is under way (one at a time per group; a second gets 429)."""
MAX_DOWNLOADS = 2
"""Archive downloads under way at once on the host, all groups together: each spools up to
512 MiB into the data dir, and the API token reaches every group."""


async def _read_archive(request: web.Request, read: Callable[..., Any], *args: Any) -> Any:
    async with request.app[ARCHIVE_READS]:
        return await asyncio.to_thread(read, *args)


GroupLookup = Callable[[web.Request], AgentGroup]
"""How an endpoint finds its group: ``web_group`` (a web login: web-bound groups only) or
``api.find_group`` (the API token: every group)."""


def _with_group(find: GroupLookup, handler: Callable[[web.Request, AgentGroup], Awaitable[Any]]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(request, find(request))  # type: ignore[no-any-return]

    return handle


async def turns(request: web.Request, group: AgentGroup) -> web.Response:
    before = request.query.get("before") or None
    if before is not None and not TURN_ID.match(before):
        return _error(400, "before must be a turn id")
    found = await _read_archive(request, viewer.list_turns, _folder(request, group), before)
    return web.json_response(found)


async def turn(request: web.Request, group: AgentGroup) -> web.Response:
    turn_id = request.match_info["turn"]
    if not TURN_ID.match(turn_id):
        return _error(404, "no such turn")
    found, complete = await _read_archive(request, viewer.lookup, _folder(request, group), turn_id)
    if found is None:
        if not complete:
            return _error(
                404,
                "no such turn in the newest part of the archive (the lookup stopped at its "
                f"{viewer.MAX_READ_BYTES // 2**20} MiB limit; older turns are in the download)",
            )
        return _error(404, "no such turn")
    return web.json_response(found.model_dump(exclude_none=True))


async def search(request: web.Request, group: AgentGroup) -> web.Response:
    query = request.query.get("q", "")
    if len(query) > viewer.MAX_QUERY:
        return _error(400, f"the search is longer than {viewer.MAX_QUERY} characters")
    found = await _read_archive(request, viewer.search, _folder(request, group), query)
    return web.json_response(found)


async def download(request: web.Request, group: AgentGroup) -> web.StreamResponse:
    """The group's conversation archive as a zip, built from safe reads into a host-owned
    temporary file (so the response's length is known and no agent file is read twice)."""
    settings = _orchestrator(request).ctx.settings
    downloading = request.app[DOWNLOADS]
    if group.id in downloading:  # each spools up to 512 MiB on the host's disk: one at a time
        return _error(
            429, "a download of this group's archive is already under way; try again when it is done"
        )
    if len(downloading) >= MAX_DOWNLOADS:
        return _error(
            429, f"{MAX_DOWNLOADS} archive downloads are under way on this host; try again when one is done"
        )
    downloading.add(group.id)
    try:
        folder = _folder(request, group)
        free = lambda: downloading.discard(group.id)  # noqa: E731
        return await _send_zip(request, group.name, folder, settings.data_dir, free)
    finally:
        downloading.discard(group.id)


async def _send_zip(
    request: web.Request, group_name: str, folder: Path, data_dir: Path, done: Callable[[], None]
) -> web.StreamResponse:
    """``done`` is called before the last bytes go out: once a client has the whole archive, the
    next download of the group is no longer refused."""
    with tempfile.TemporaryFile(dir=data_dir) as spool:
        await asyncio.to_thread(viewer.write_zip, folder, spool)
        size = spool.tell()
        spool.seek(0)
        name = f"{group_name}-conversations.zip"
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/zip",
                "Content-Length": str(size),
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        chunk = await asyncio.to_thread(spool.read, CHUNK)
        while chunk:
            following = await asyncio.to_thread(spool.read, CHUNK)
            if not following:
                done()
            await response.write(chunk)
            chunk = following
        done()
        await response.write_eof()
    return response


# --- the operator view ----------------------------------------------------------------------


def group_states(orchestrator: Orchestrator, *, web_only: bool) -> list[dict[str, Any]]:
    """Every group (or only the web-bound ones) with its state, last activity and last error.

    The operator view asks every 5 s, so this is a fixed handful of queries that seek indexes, not
    one per group nor a scan of every message a long-lived host has kept."""
    runtimes = orchestrator.runtimes
    slots = orchestrator.ctx.slots
    latest = (  # the group's newest message, through ix_messages_group_id
        select(Message.created_at)
        .where(Message.group_id == AgentGroup.id)
        .order_by(Message.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    with transaction(orchestrator.ctx.db) as db:
        query = select(AgentGroup, latest).order_by(AgentGroup.name)
        if web_only:
            query = query.where(
                AgentGroup.id.in_(select(ChatBinding.group_id).where(ChatBinding.channel == CHANNEL))
            )
        live_by_group = current_sessions_by_group(db)
        waiting = set(  # through ix_messages_session_status, per live session
            db.scalars(
                select(AgentSession.id).where(
                    AgentSession.id.in_([s.id for live in live_by_group.values() for s in live]),
                    select(Message.id)
                    .where(
                        Message.session_id == AgentSession.id,
                        Message.direction == "in",
                        Message.status.in_(("pending", "queued")),
                    )
                    .exists(),
                )
            ).all()
        )
        rows = []
        for group, last_message in db.execute(query):
            live = live_by_group.get(group.id, [])
            running = [runtimes[s.id] for s in live if s.id in runtimes and runtimes[s.id].container_id]
            waking = [
                runtimes[s.id]
                for s in live
                if s.id in runtimes and runtimes[s.id].waking and not slots.holds(runtimes[s.id])
            ]
            if any(s.status == "failed" for s in live):
                state = "failed"
            elif running:
                state = "running"
            elif waking or any(s.id in waiting for s in live):
                state = "queued"
            else:
                state = "idle"
            moments = [m for m in [last_message, *(s.last_active_at for s in live)] if m]
            errors = sorted((s for s in live if s.last_error), key=lambda s: s.id)
            rows.append(
                {
                    "name": group.name,
                    "state": state,
                    "provider": group.agent_provider,
                    "last_activity": max(moments).isoformat() + "Z" if moments else None,
                    "last_error": errors[-1].last_error if errors else None,
                }
            )
        return rows


def restart_group(orchestrator: Orchestrator, name: str) -> bool:
    """Stop the group's container cleanly at once (as ``nanohost groups restart``); the next
    message, or one waiting, wakes it. False when there is no such group."""
    with transaction(orchestrator.ctx.db) as db:
        group = db.scalar(select(AgentGroup).where(AgentGroup.name == name))
        if group is None:
            return False
        for live in current_sessions(db, group.id):
            live.restart_requested = True
    orchestrator.ctx.sweep_now.set()
    return True


async def take_snapshot(orchestrator: Orchestrator, name: str, note: str | None) -> web.Response:
    from nanohost import snapshots

    ctx = orchestrator.ctx
    try:
        taken = await asyncio.to_thread(snapshots.create, ctx.settings, ctx.db, name, note=note)
    except snapshots.SnapshotError as exc:
        return _error(409, str(exc))
    return web.json_response(
        {
            "id": taken.id,
            "group": name,
            "files": taken.files,
            "size": taken.size,
            "summary": f"snapshot {taken.id}: {taken.files} files, {snapshots.human_size(taken.size)}",
        },
        status=201,
    )


async def _note(request: web.Request) -> str | None | web.Response:
    if request.content_type != "application/json" or not request.can_read_body:
        return None
    try:
        body = await request.json()
    except ValueError:
        return _error(400, 'body must be JSON {"note": "..."}')
    note = body.get("note") if isinstance(body, dict) else None
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        return _error(400, f"note must be text of at most {MAX_NOTE} characters")
    return note or None


async def web_states(request: web.Request) -> web.Response:
    states = await asyncio.to_thread(group_states, _orchestrator(request), web_only=True)
    return web.json_response({"groups": states})


async def web_restart(request: web.Request) -> web.Response:
    group = web_group(request)
    restart_group(_orchestrator(request), group.name)
    log.info("web: restart of group %s asked", group.name)
    return web.json_response({"ok": True, "group": group.name})


async def web_snapshot(request: web.Request) -> web.Response:
    group = web_group(request)
    note = await _note(request)
    if isinstance(note, web.Response):
        return note
    return await take_snapshot(_orchestrator(request), group.name, note or "taken from the web operator view")


async def api_states(request: web.Request) -> web.Response:
    states = await asyncio.to_thread(group_states, _orchestrator(request), web_only=False)
    return web.json_response({"groups": states})


async def api_restart(request: web.Request) -> web.Response:
    group = api.find_group(request)
    restart_group(_orchestrator(request), group.name)
    return web.json_response({"ok": True, "group": group.name})


async def api_snapshot(request: web.Request) -> web.Response:
    group = api.find_group(request)
    note = await _note(request)
    if isinstance(note, web.Response):
        return note
    return await take_snapshot(_orchestrator(request), group.name, note)


def add_routes(app: web.Application) -> None:
    """Register the viewer's and the operator view's pages and endpoints."""
    app[ARCHIVE_READS] = asyncio.Lock()
    app[DOWNLOADS] = set()
    app.router.add_get("/viewer", _page("viewer.html"))
    app.router.add_get("/operator", _page("operator.html"))
    for prefix, find, wrap in (
        ("/web", web_group, guarded),  # the web login: web-bound groups only
        ("/api", api.find_group, lambda handler: handler),  # the API token (middleware): every group
    ):
        app.router.add_get(f"{prefix}/groups/{{group}}/turns", wrap(_with_group(find, turns)))
        app.router.add_get(f"{prefix}/groups/{{group}}/turns/{{turn}}", wrap(_with_group(find, turn)))
        app.router.add_get(f"{prefix}/groups/{{group}}/search", wrap(_with_group(find, search)))
        app.router.add_get(f"{prefix}/groups/{{group}}/archive.zip", wrap(_with_group(find, download)))
    app.router.add_get("/web/operator/groups", guarded(web_states))
    app.router.add_post("/web/operator/groups/{group}/restart", guarded(web_restart, changes_state=True))
    app.router.add_post("/web/operator/groups/{group}/snapshot", guarded(web_snapshot, changes_state=True))
    app.router.add_get("/api/operator/groups", api_states)
    app.router.add_post("/api/groups/{group}/restart", api_restart)
    app.router.add_post("/api/groups/{group}/snapshots", api_snapshot)
