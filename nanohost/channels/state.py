"""Durable per-channel values (Telegram's update offset), kept in the host database."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nanohost.db.engine import reading, transaction
from nanohost.db.models import ChannelState


class ChannelStore:
    """Get and set small string values for one channel; each ``set`` commits at once."""

    def __init__(self, db: sessionmaker[Session], channel: str) -> None:
        self.db = db
        self.channel = channel

    def get(self, key: str) -> str | None:
        with reading(self.db) as db:
            row = db.get(ChannelState, (self.channel, key))
            return row.value if row is not None else None

    def get_many(self, *keys: str) -> dict[str, str]:
        """The values of those ``keys`` that are set, read in one transaction."""
        with reading(self.db) as db:
            rows = db.execute(
                select(ChannelState.key, ChannelState.value).where(
                    ChannelState.channel == self.channel, ChannelState.key.in_(keys)
                )
            ).all()
            return {key: value for key, value in rows}

    def set(self, key: str, value: str) -> None:
        with transaction(self.db) as db:
            row = db.get(ChannelState, (self.channel, key))
            if row is None:
                db.add(ChannelState(channel=self.channel, key=key, value=value))
            else:
                row.value = value
