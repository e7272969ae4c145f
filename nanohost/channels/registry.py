"""Which chat channels this host runs: each is on when its token is set.

The web chat and the HTTP API are built into the host's web app and always on; the chat platforms
below are adapters (``ChannelAdapter``) started by the composition root. Modules are imported
only for the channels that are on.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from nanohost.channels.base import ChannelAdapter
from nanohost.channels.state import ChannelStore
from nanohost.settings import Settings

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
