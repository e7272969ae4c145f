"""The composition root: builds the host from settings and tears it down in reverse.

settings → database → (container backend, gateway, channels, router, delivery, sweeper as they
land) → HTTP app. Each resource is set up and cleaned up in one ``cleanup_ctx`` generator, so a
failed start only undoes what it did.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy import Engine, text

from nanohost.db import engine as db_engine
from nanohost.db import migrate
from nanohost.settings import Settings

log = logging.getLogger("nanohost")

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = db_engine.make_engine(settings.db_url)
    migrate.upgrade(engine)
    log.info("database ready at %s", migrate.current_revision(engine))
    app[ENGINE] = engine
    yield
    engine.dispose()


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers."""
    try:
        with request.app[ENGINE].connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return web.json_response({"ok": False, "database": str(exc)}, status=503)
    return web.json_response({"ok": True})


def build_app(settings: Settings) -> web.Application:
    """The host's aiohttp application."""
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_database)
    app.router.add_get("/healthz", healthz)
    return app


def run(settings: Settings) -> None:
    """Serve until interrupted."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    web.run_app(build_app(settings), host=settings.web_host, port=settings.web_port, print=log.info)
