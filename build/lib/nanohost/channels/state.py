"""Durable per-channel values (Telegram's update offset), kept in the host database."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from nanohost.db.engine import transaction
from nanohost.db.models import ChannelState


class ChannelStore:
    """Get and set small string values for one channel; each ``set`` commits at once."""

    def __init__(self, db: sessionmaker[Session], channel: str) -> None:
        self.db = db
        self.channel = channel

    def get(self, key: str) -> str | None:
        with transaction(self.db) as db:
            row = db.get(ChannelState, (self.channel, key))
            return row.value if row is not None else None

    def set(self, key: str, value: str) -> None:
        with transaction(self.db) as db:
            row = db.get(ChannelState, (self.channel, key))
            if row is None:
                db.add(ChannelState(channel=self.channel, key=key, value=value))
            else:
                row.value = value
