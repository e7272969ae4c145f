"""Which chat channels this host runs: each is on when its token is set.

The web chat and the HTTP API are built into the host's web app and always on; the chat platforms
below are adapters (``ChannelAdapter``), started and stopped by ``Channels``. Modules are
imported only for the channels that are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.orm import Session, sessionmaker

from nanohost.channels.base import ChannelAdapter, ChannelSink, ChannelStartError, TransientError
from nanohost.channels.http import Backoff
from nanohost.channels.state import ChannelStore
from nanohost.settings import Settings

log = logging.getLogger(__name__)

PLATFORMS = ("telegram", "slack", "discord")


def enabled_channels(settings: Settings, db: sessionmaker[Session]) -> list[ChannelAdapter]:
    """An adapter for each platform whose token is set (not yet started)."""
    adapters: list[ChannelAdapter] = []
    if settings.telegram_token is not None:
        from nanohost.channels.telegram import TelegramChannel

        adapters.append(
            TelegramChannel(
                settings.telegram_token.get_secret_value(),
                settings.telegram_api_base,
                ChannelStore(db, "telegram"),
            )
        )
    if settings.slack_app_token is not None or settings.slack_bot_token is not None:
        from nanohost.channels.slack import SlackChannel

        adapters.append(
            SlackChannel(
                app_token=settings.slack_app_token.get_secret_value() if settings.slack_app_token else "",
                bot_token=settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else "",
                api_base=settings.slack_api_base,
            )
        )
    if settings.discord_token is not None:
        from nanohost.channels.discord import DiscordChannel

        adapters.append(DiscordChannel(settings.discord_token.get_secret_value(), settings.discord_api_base))
    return adapters


class Channels:
    """The chat platforms this host runs. A platform that refuses its credentials stays off (the
    log says which variable to fix); one that cannot be reached at start is retried in the
    background with backoff, and joins delivery once it is up. ``start`` gives every platform
    its first try at once and returns when each has answered or timed out."""

    def __init__(self, adapters: list[ChannelAdapter], sink: ChannelSink) -> None:
        self.pending = adapters
        self.sink = sink
        self.running: dict[str, ChannelAdapter] = {}
        self._state: dict[str, str] = {a.name: "starting" for a in adapters}
        self._retries: list[asyncio.Task[None]] = []

    @property
    def state(self) -> dict[str, str]:
        """Each platform's state for ``/healthz``: on, retrying: why, or off: why."""
        states = dict(self._state)
        for name, adapter in self.running.items():
            if (why := adapter.broken()) is not None:
                states[name] = f"off: {why}"
        return states

    async def start(self) -> None:
        await asyncio.gather(*(self._start_or_retry(a) for a in self.pending))

    async def _start_or_retry(self, adapter: ChannelAdapter) -> None:
        if await self._try(adapter) is False:
            self._retries.append(asyncio.get_running_loop().create_task(self._retry(adapter)))

    async def _try(self, adapter: ChannelAdapter) -> bool | None:
        """True: on; None: off for good; False: worth another try."""
        try:
            await adapter.start(self.sink)
        except ChannelStartError as exc:
            log.error("channel %s is off: %s", adapter.name, exc)
            self._state[adapter.name] = f"off: {exc}"
            result: bool | None = None
        except TransientError as exc:
            log.warning("channel %s cannot start yet (%s); retrying in the background", adapter.name, exc)
            self._state[adapter.name] = f"retrying: {exc}"
            result = False
        except Exception as exc:
            log.exception("channel %s is off: it failed to start", adapter.name)
            self._state[adapter.name] = f"off: failed to start ({type(exc).__name__})"
            result = None
        else:
            log.info("channel %s is on", adapter.name)
            self.running[adapter.name] = adapter
            self._state[adapter.name] = "on"
            return True
        with contextlib.suppress(Exception):
            await adapter.stop()
        return result

    async def _retry(self, adapter: ChannelAdapter) -> None:
        backoff = Backoff(first=2.0, most=300.0)
        while True:
            await asyncio.sleep(backoff.next())
            if await self._try(adapter) is not False:
                return

    async def stop(self) -> None:
        for task in self._retries:
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)
        for adapter in list(self.running.values()):
            try:
                await adapter.stop()
            except Exception:
                log.exception("channel %s did not stop cleanly", adapter.name)
