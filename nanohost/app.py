"""The composition root: builds the host from settings and tears it down in reverse.

settings → database → container backend → gateway → provider contributions → orchestrator
(sessions, sweeper) → router → chat channels → delivery → HTTP app (API and web chat). Each
resource is set up and cleaned up in one ``cleanup_ctx`` generator, so a failed start only undoes
what it did. Nothing else builds host-wide objects; everything receives what it needs as arguments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, select, text

from nanohost.channels import api, webchat
from nanohost.channels.registry import Channels, enabled_channels
from nanohost.containers.backend import ContainerBackend, DockerBackend
from nanohost.db import engine as db_engine
from nanohost.db import migrate
from nanohost.db.models import AgentGroup, AgentSession, utcnow
from nanohost.delivery import Delivery
from nanohost.gateway import Gateway
from nanohost.orchestrator import Orchestrator
from nanohost.providers import ProviderContribution
from nanohost.providers.codex import CodexContribution
from nanohost.providers.mock import MockContribution
from nanohost.router import Router
from nanohost.runtime import HostContext
from nanohost.settings import Settings
from nanohost.slots import Slots

log = logging.getLogger("nanohost")

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
BACKEND = web.AppKey("backend", ContainerBackend)
ORCHESTRATOR = web.AppKey("orchestrator", Orchestrator)
CHANNELS = web.AppKey("channels", Channels)


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = db_engine.make_engine(settings.db_url)
    migrate.upgrade(engine)
    log.info("database ready at %s", migrate.current_revision(engine))
    app[ENGINE] = engine
    yield
    engine.dispose()


def _contributions(settings: Settings) -> dict[str, ProviderContribution]:
    return {"codex": CodexContribution(settings.data_dir), "mock": MockContribution()}


def _host(backend_factory: Any) -> Any:
    async def host(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        backend = backend_factory() if backend_factory else DockerBackend()
        app[BACKEND] = backend
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        gateway = Gateway(settings.data_dir / "gateway", settings.model_base_url, key)
        await gateway.start()
        ctx = HostContext(
            settings=settings,
            db=db_engine.make_session_factory(app[ENGINE]),
            backend=backend,
            gateway=gateway,
            contributions=_contributions(settings),
            slots=Slots(settings.max_containers, quantum=settings.slot_quantum),
        )
        orchestrator = Orchestrator(ctx)
        await orchestrator.start()
        app[ORCHESTRATOR] = orchestrator
        router = Router(orchestrator, max_attachment_bytes=settings.max_attachment_bytes)
        app[api.ROUTER] = router
        if settings.api_token:
            app[api.API_TOKEN] = settings.api_token.get_secret_value()
        channels = Channels(enabled_channels(settings, ctx.db), router)
        await channels.start()
        app[CHANNELS] = channels
        # delivery sends through channels.running, which a late-starting channel joins
        delivery = Delivery(
            ctx.db, ctx.bus, channels.running, settings.data_dir / "outbox", typing_for=settings.turn_timeout
        )
        await delivery.start()
        yield
        await delivery.close()  # first: no send is cut off half-way by its channel stopping
        await channels.stop()
        await ctx.slots.close()  # no eviction starts while the runtimes close
        await orchestrator.close()
        await gateway.stop()
        if isinstance(backend, DockerBackend):
            backend.close()

    return host


async def healthz(request: web.Request) -> web.Response:
    """200 when the database and the container backend answer; the chat platforms' states are
    shown too (``on``, ``retrying: …``, ``off: …``) when any is configured, and the wake queue
    (container slots in use, wakes waiting for one, the oldest wait). Wakes merely waiting for a
    slot are not a fault: still 200."""
    checks: dict[str, Any] = {}
    try:
        with request.app[ENGINE].connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = str(exc)
    checks["containers"] = "ok" if await request.app[BACKEND].ping() else "container engine not reachable"
    ok = all(v == "ok" for v in checks.values())
    channels = request.app[CHANNELS].state if CHANNELS in request.app else {}
    shown: dict[str, Any] = {"channels": channels} if channels else {}
    if ORCHESTRATOR in request.app:
        shown["wake_queue"] = request.app[ORCHESTRATOR].ctx.slots.stats()
    if checks["database"] == "ok":
        quarantined = await asyncio.to_thread(_quarantined, request.app[ENGINE])
        if quarantined:
            shown["quarantined"] = quarantined
    return web.json_response({"ok": ok, **checks, **shown}, status=200 if ok else 503)


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


def build_app(settings: Settings, *, backend_factory: Any = None) -> web.Application:
    """The host's aiohttp application (``backend_factory`` lets tests pass their own backend)."""
    app = web.Application(middlewares=[api.require_token], client_max_size=32 * 1024**2)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_host(backend_factory))
    app.router.add_get("/healthz", healthz)
    api.add_routes(app)
    webchat.add_routes(app)
    return app


def run(settings: Settings) -> None:
    """Serve until interrupted."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(build_app(settings), host=settings.web_host, port=settings.web_port, print=log.info)
