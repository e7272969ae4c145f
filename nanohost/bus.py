"""In-process fan-out of message events to whoever is listening (long-polls, websockets).

Events are hints, never the record: listeners re-read the database after a wake-up, so a
missed event costs latency, not data.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any


class MessageBus:
    """Per-group subscriber queues."""

    def __init__(self) -> None:
        self._subscribers: dict[int, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def subscribe(self, group_id: int) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._subscribers[group_id].add(queue)
        return queue

    def unsubscribe(self, group_id: int, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers[group_id].discard(queue)

    def publish(self, group_id: int, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers[group_id]):
            if queue.full():  # a stalled listener loses hints, not data
                queue.get_nowait()
            queue.put_nowait(event)
