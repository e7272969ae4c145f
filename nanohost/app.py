"""The composition root: builds the host from settings and tears it down in reverse.

settings → data dir lock → database (and the installation id) → container backend → gateway →
provider contributions → orchestrator (sessions, sweeper) → scheduler → control socket → router
and chat channels → delivery → snapshots → the heap built so far frozen (``gc.freeze``) → HTTP
app (API and web chat). Each resource is set up and cleaned up in its own ``cleanup_ctx``
generator, so a failed start only undoes what it did (no gateway socket is left behind), and a
second host on the same data dir stops at the lock, before it touches a container or a socket.
A container engine that does not answer is no reason not to start (``Orchestrator``). Nothing
else builds host-wide objects; everything receives what it needs as arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, select, text

from nanohost import log_format
from nanohost.auth.refresher import ChatGPTAuth
from nanohost.auth.refresher import describe as describe_chatgpt
from nanohost.auth.store import TokenStore
from nanohost.auth.upstream import ChatGPTUpstream
from nanohost.channels import api, webchat, webviewer
from nanohost.channels.registry import Channels, enabled_channels
from nanohost.containers.backend import ContainerBackend, DockerBackend
from nanohost.control import ControlSocket
from nanohost.db import engine as db_engine
from nanohost.db import migrate
from nanohost.db.models import AgentGroup, AgentSession, utcnow
from nanohost.delivery import Delivery
from nanohost.disk import DISK_FULL, REFUSE_BELOW, free_bytes, is_disk_full
from nanohost.gateway import Gateway
from nanohost.installation import installation_id
from nanohost.metrics import CONTENT_TYPE
from nanohost.orchestrator import Orchestrator
from nanohost.providers.registry import Providers
from nanohost.quota import DiskQuota
from nanohost.router import Router
from nanohost.runtime import HostContext
from nanohost.scheduler import SCHEDULER_SENDER, Queue, Scheduler
from nanohost.serve_lock import DataDirLock
from nanohost.settings import Settings
from nanohost.slots import Slots

log = logging.getLogger("nanohost")

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
INSTALLATION = web.AppKey("installation", str)
BACKEND = web.AppKey("backend", ContainerBackend)
GATEWAY = web.AppKey("gateway", Gateway)
ORCHESTRATOR = web.AppKey("orchestrator", Orchestrator)
CHANNELS = web.AppKey("channels", Channels)


async def _data_dir_lock(app: web.Application) -> AsyncIterator[None]:
    """First of all: this host alone serves its data dir (``serve_lock``), or it does not start."""
    lock = DataDirLock(app[SETTINGS].data_dir)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = db_engine.make_engine(settings.db_url)
    try:
        migrate.upgrade(engine)
        with db_engine.transaction(db_engine.make_session_factory(engine)) as db:
            app[INSTALLATION] = installation_id(db)
        log.info("database ready at %s; installation %s", migrate.current_revision(engine), app[INSTALLATION])
        app[ENGINE] = engine
        yield
    finally:
        engine.dispose()


Step = Callable[[web.Application], AsyncIterator[None]]


def _in_order(*steps: Step) -> Step:
    """The steps as one ``cleanup_ctx`` entry: set up in order, torn down in reverse, and when one
    fails to start, those before it are torn down at once. (aiohttp itself leaves the steps that
    did start as they are when a later one fails, e.g. the gateway socket on disk.) Each step
    cleans up in a ``finally``, as an error thrown at its ``yield`` must not skip that."""

    async def host(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for step in steps:
                await stack.enter_async_context(contextlib.asynccontextmanager(step)(app))
            yield

    return host


async def _frozen_heap(app: web.Application) -> AsyncIterator[None]:
    """Once the host is up, what it built is moved out of the cyclic garbage collector's sight
    (``gc.freeze``): a full collection walked all of it (~130k objects, 60-180 ms) every few
    hundred messages, stalling the event loop, and with it the gateway between a busy agent and
    its model: most of the warm round trips over 100 ms. Later objects are collected as usual;
    at shutdown everything goes back (``gc.unfreeze``), so a process that starts many hosts
    (the tests) frees them."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _heard(ctx: HostContext, word: str) -> None:
    """The CLI changed something in the database: look at it now, not at the next sweep."""
    (ctx.tasks_changed if word == "tasks" else ctx.sweep_now).set()


def _queue_into(orchestrator: Orchestrator) -> Queue:
    """How the scheduler hands a fired task's message to its session (as the router does)."""

    async def queue(session_id: int, message_id: int, text: str) -> None:
        runtime = await orchestrator.runtime(session_id)
        await runtime.submit(message_id, text, SCHEDULER_SENDER, [])

    return queue


def _backend(backend_factory: Any) -> Step:
    async def backend_step(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if backend_factory:
            backend = backend_factory()
        else:
            backend = DockerBackend(
                installation=app[INSTALLATION], data_dir=settings.data_dir, spare_netns=settings.spare_netns
            )
        app[BACKEND] = backend
        try:
            yield
        finally:
            if isinstance(backend, DockerBackend):
                backend.close()

    return backend_step


async def _gateway(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    chatgpt = ChatGPTAuth(  # nanohost/auth/
        TokenStore.for_settings(settings),
        settings.auth_issuer,
        min_refresh_interval=settings.chatgpt_refresh_interval,
    )
    gateway = Gateway(
        settings.data_dir / "gateway",
        settings.model_base_url,
        key,
        chatgpt=ChatGPTUpstream(chatgpt, settings.chatgpt_base_url),
    )
    await gateway.start()
    app[GATEWAY] = gateway
    try:
        yield
    finally:
        await gateway.stop()  # its sockets go with it, also when a later step failed
        await chatgpt.close()


async def _orchestrator(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    ctx = HostContext(
        settings=settings,
        db=db_engine.make_session_factory(app[ENGINE]),
        backend=app[BACKEND],
        gateway=app[GATEWAY],
        contributions=Providers(settings),
        slots=Slots(settings.max_containers, quantum=settings.slot_quantum),
        installation=app[INSTALLATION],
        quota=DiskQuota(settings.group_disk_quota_bytes),
    )
    ctx.metrics.watch(ctx.db, ctx.slots.stats)
    orchestrator = Orchestrator(ctx)
    try:
        await orchestrator.start()
        app[ORCHESTRATOR] = orchestrator
        yield
    finally:
        await ctx.slots.close()  # no eviction starts while the runtimes close
        await orchestrator.close()


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    orchestrator = app[ORCHESTRATOR]
    ctx = orchestrator.ctx
    queue = _queue_into(orchestrator)
    scheduler = Scheduler(ctx.db, orchestrator.session_for, queue, changed=ctx.tasks_changed)
    await scheduler.start()
    try:
        yield
    finally:
        await scheduler.close()


async def _control(app: web.Application) -> AsyncIterator[None]:
    ctx = app[ORCHESTRATOR].ctx
    control = ControlSocket(app[SETTINGS].data_dir, lambda word: _heard(ctx, word))
    await control.start()
    try:
        yield
    finally:
        await control.stop()


async def _channels(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    orchestrator = app[ORCHESTRATOR]
    router = Router(orchestrator, max_attachment_bytes=settings.max_attachment_bytes)
    app[api.ROUTER] = router
    if settings.api_token:
        app[api.API_TOKEN] = settings.api_token.get_secret_value()
    channels = Channels(enabled_channels(settings, orchestrator.ctx.db), router)
    await channels.start()
    app[CHANNELS] = channels
    try:
        yield
    finally:
        await channels.stop()


async def _delivery(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    ctx = app[ORCHESTRATOR].ctx
    # delivery sends through channels.running, which a late-starting channel joins
    delivery = Delivery(
        ctx.db, ctx.bus, app[CHANNELS].running, settings.data_dir / "outbox", typing_for=settings.turn_timeout
    )
    await delivery.start()
    try:
        yield
    finally:
        await delivery.close()  # first: no send is cut off half-way by its channel stopping


async def _snapshots(app: web.Application) -> AsyncIterator[None]:
    """Interrupted snapshot restores are finished or rolled back, then automatic snapshots are
    taken as they come due (``snapshots``)."""
    from nanohost import snapshots

    task = asyncio.get_running_loop().create_task(
        snapshots.automatic(app[SETTINGS], app[ORCHESTRATOR].ctx.db)
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def healthz(request: web.Request) -> web.Response:
    """200 when the database and the container engine answer and the data dir's disk has room
    (``disk_free_bytes``; ``low`` below ``disk_low_bytes``, ``full`` when messages are refused);
    else 503 with the reason in place of ``ok``. The host keeps serving and queueing while the
    engine is away; it says so here. The chat platforms' states are shown too (``on``,
    ``retrying: …``, ``off: …``) when any is configured, and the wake queue (container slots in
    use, wakes waiting for one, the oldest wait). Wakes merely waiting for a slot are not a fault:
    still 200."""
    checks: dict[str, Any] = {}
    try:
        with request.app[ENGINE].connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = str(exc)
    checks["containers"] = "ok" if await request.app[BACKEND].ping() else "container engine not reachable"
    settings = request.app[SETTINGS]
    shown: dict[str, Any] = {}
    try:
        free = await asyncio.to_thread(free_bytes, settings.data_dir)
    except OSError as exc:
        checks["disk"] = f"unreadable: {exc}"
    else:
        shown["disk_free_bytes"] = free
        checks["disk"] = _disk_state(free, settings.disk_low_bytes)
    ok = all(v == "ok" for v in checks.values())
    channels = request.app[CHANNELS].state if CHANNELS in request.app else {}
    if channels:
        shown["channels"] = channels
    if ORCHESTRATOR in request.app:
        shown["wake_queue"] = request.app[ORCHESTRATOR].ctx.slots.stats()
    chatgpt = describe_chatgpt(TokenStore.for_settings(settings))  # the ChatGPT sign-in, if any
    gateway = request.app.get(GATEWAY)
    unsaved = gateway.chatgpt.auth.unsaved() if gateway is not None and gateway.chatgpt else None
    if unsaved is not None:  # in use, but not on disk: a restart would lose it
        ok = False
        shown["chatgpt_auth"] = f"unsaved: {unsaved}"
    elif chatgpt["state"] == "ok":
        shown["chatgpt_auth"] = "ok"
    elif chatgpt["state"] != "not signed in":
        ok = False
        shown["chatgpt_auth"] = f"{chatgpt['state']}: {chatgpt.get('problem', '')}"
    if checks["database"] == "ok":
        quarantined = await asyncio.to_thread(_quarantined, request.app[ENGINE])
        if quarantined:
            shown["quarantined"] = quarantined
    return web.json_response({"ok": ok, **checks, **shown}, status=200 if ok else 503)


def _disk_state(free: int, low: int) -> str:
    if free < REFUSE_BELOW:
        return f"full: {_mib(free)} free; new messages are refused (507) until space is freed"
    if free < low:
        return f"low: {_mib(free)} free (NANOHOST_DISK_LOW_BYTES is {_mib(low)})"
    return "ok"


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


WEB_POST = "/web/groups/{group}/messages"
MESSAGE_POSTS = {"/api/groups/{group}/messages", WEB_POST}


@web.middleware
async def disk_guard(request: web.Request, handler: api.Handler) -> web.StreamResponse:
    """A message is stored whole or not at all: with the data dir's disk (nearly) full it is
    refused before anything is written, and a write that fails because the disk (or the database)
    is full answers 507 with the reason, never a bare 500. Nothing is latched: once space is freed,
    the next message goes through."""
    resource = request.match_info.route.resource
    if (
        request.method == "POST"
        and resource is not None
        and resource.canonical in MESSAGE_POSTS
        and free_bytes(request.app[SETTINGS].data_dir) < REFUSE_BELOW  # one statvfs: microseconds
        and (resource.canonical != WEB_POST or webchat.logged_in(request))  # else its 401 comes first
    ):
        log.error("refused a message for %s: the data dir's disk is full", request.path)
        return web.json_response({"error": DISK_FULL}, status=507)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        log.error("%s %s failed: the disk is full: %s", request.method, request.path, exc)
        return web.json_response({"error": DISK_FULL}, status=507)


def _quarantined(engine: Engine) -> list[dict[str, Any]]:
    """Sessions set aside in the last week because their queue was unreadable (newest first):
    the host is healthy, but an operator should look at the kept files."""
    since = utcnow() - timedelta(days=7)
    with db_engine.make_session_factory(engine)() as db:
        rows = db.execute(
            select(AgentSession.id, AgentGroup.name, AgentSession.quarantined_at, AgentSession.last_error)
            .join(AgentGroup, AgentSession.group_id == AgentGroup.id)
            .where(AgentSession.quarantined_at.is_not(None), AgentSession.quarantined_at >= since)
            .order_by(AgentSession.quarantined_at.desc())
            .limit(20)
        ).all()
    return [
        {"session": sid, "group": group, "at": f"{at.isoformat()}Z" if at else None, "reason": error}
        for sid, group, at, error in rows
    ]


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; needs the API's bearer token (503 without one configured)."""
    token = request.app.get(api.API_TOKEN)
    if token is None:
        raise web.HTTPServiceUnavailable(text="set NANOHOST_API_TOKEN to read /metrics")
    if not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
        raise web.HTTPUnauthorized(text="bearer token required", headers={"WWW-Authenticate": "Bearer"})
    body = await asyncio.to_thread(request.app[ORCHESTRATOR].ctx.metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def build_app(settings: Settings, *, backend_factory: Any = None) -> web.Application:
    """The host's aiohttp application (``backend_factory`` lets tests pass their own backend)."""
    app = web.Application(middlewares=[api.require_token, disk_guard], client_max_size=32 * 1024**2)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(
        _in_order(
            _data_dir_lock,  # first: a second host on this data dir stops here, having touched nothing
            _database,
            _backend(backend_factory),
            _gateway,
            _orchestrator,
            _scheduler,
            _control,
            _channels,
            _delivery,
            _snapshots,
            _frozen_heap,  # last: everything above is built
        )
    )
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    api.add_routes(app)
    webchat.add_routes(app)
    webviewer.add_routes(app)
    return app


def run(settings: Settings) -> None:
    """Serve until interrupted."""
    log_format.configure(settings.log_level, settings.log_format)
    # a long poll that began as shutdown did must not hold the exit for its whole wait
    web.run_app(
        build_app(settings),
        host=settings.web_host,
        port=settings.web_port,
        print=log.info,
        shutdown_timeout=3.0,
    )
