"""In-process fan-out of message events to whoever is listening (long-polls, websockets).

Events are hints, never the record: listeners re-read the database after a wake-up, so a
missed event costs latency, not data.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any


class MessageBus:
    """Per-group subscriber queues, plus host-wide ones (delivery) that see every group's events
    with a ``group_id`` added."""

    def __init__(self) -> None:
        self._subscribers: dict[int, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._everything: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe_all(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        self._everything.add(queue)
        return queue

    def unsubscribe_all(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._everything.discard(queue)

    def subscribe(self, group_id: int) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._subscribers[group_id].add(queue)
        return queue

    def unsubscribe(self, group_id: int, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers[group_id].discard(queue)

    def broadcast(self, event: dict[str, Any]) -> None:
        """Tell every listener of every group (``{"type": "closing"}`` at shutdown ends long polls)."""
        for queues in list(self._subscribers.values()):
            for queue in list(queues):
                _put(queue, event)

    def publish(self, group_id: int, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers[group_id]):
            _put(queue, event)
        if event.get("type") == "item":  # the viewer's live steps: only the group's own listeners
            return
        for queue in list(self._everything):
            _put(queue, {**event, "group_id": group_id})


def _put(queue: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    if queue.full():  # a stalled listener loses hints, not data
        queue.get_nowait()
    queue.put_nowait(event)
