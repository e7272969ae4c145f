"""In-process fan-out of message events to whoever is listening (long-polls, websockets).

Events are hints, never the record: listeners re-read the database after a wake-up, so a
missed event costs latency, not data.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from typing import Any

MAX_SUBSCRIBER_EVENTS = 1000
MAX_SUBSCRIBER_BYTES = 1024 * 1024
"""What one group listener's queue holds at most (a browser tab whose socket stalled): past it,
the oldest live steps are dropped first, never a chat message's hint, and the listener is told it
``missed`` steps (the viewer then reads the turn from the archive)."""
MISSED: dict[str, Any] = {"type": "missed"}
"""Told a listener before its next event when live steps were dropped from its queue."""


def event_bytes(event: dict[str, Any]) -> int:
    """An event's size as a websocket sends it."""
    return len(json.dumps(event, default=str))


class Subscriber(asyncio.Queue[dict[str, Any]]):
    """A group listener's queue, bounded by events and by bytes (``MAX_SUBSCRIBER_*``)."""

    _queue: deque[tuple[dict[str, Any], int]]

    def __init__(self, max_bytes: int = MAX_SUBSCRIBER_BYTES) -> None:
        super().__init__(maxsize=MAX_SUBSCRIBER_EVENTS)
        self.max_bytes = max_bytes
        self.held = 0
        """Bytes of the events waiting."""
        self.missed = False
        self.dropped = 0

    def _init(self, maxsize: int) -> None:
        self._queue = deque()

    def _put(self, item: Any) -> None:
        self._queue.append(item)
        self.held += item[1]

    def _get(self) -> dict[str, Any]:
        if self.missed:  # before anything newer: the listener re-reads what it missed
            self.missed = False
            return dict(MISSED)
        event, size = self._queue.popleft()
        self.held -= size
        return event

    def qsize(self) -> int:
        return len(self._queue) + int(self.missed)

    def empty(self) -> bool:
        return not self._queue and not self.missed

    def full(self) -> bool:
        return len(self._queue) >= MAX_SUBSCRIBER_EVENTS

    def offer(self, event: dict[str, Any], size: int) -> None:
        """Queue ``event`` (``size`` bytes), dropping the oldest live steps (then other hints,
        a chat message's last) until it fits."""
        if size > self.max_bytes:  # never happens with the boundary's limits; still bounded
            self.missed = self.missed or event.get("type") == "item"
            return
        while self._queue and (self.full() or self.held + size > self.max_bytes):
            self._drop_one()
        self.put_nowait((event, size))  # type: ignore[arg-type]

    def _drop_one(self) -> None:
        for rank in (("item", "progress"), None):
            for index, (event, size) in enumerate(self._queue):
                kind = event.get("type")
                if (kind in rank) if rank else kind not in ("message", "closing"):
                    del self._queue[index]
                    self.held -= size
                    self.dropped += 1
                    self.missed = self.missed or kind == "item"
                    return
        event, size = self._queue.popleft()  # only chat message hints left: a newer one covers it
        self.held -= size
        self.dropped += 1


class MessageBus:
    """Per-group subscriber queues, plus host-wide ones (delivery) that see every group's events
    with a ``group_id`` added."""

    def __init__(self) -> None:
        self._subscribers: dict[int, set[Subscriber]] = defaultdict(set)
        self._everything: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe_all(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        self._everything.add(queue)
        return queue

    def unsubscribe_all(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._everything.discard(queue)

    def subscribe(self, group_id: int) -> Subscriber:
        queue = Subscriber()
        self._subscribers[group_id].add(queue)
        return queue

    def unsubscribe(self, group_id: int, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers[group_id].discard(queue)

    def broadcast(self, event: dict[str, Any]) -> None:
        """Tell every listener of every group (``{"type": "closing"}`` at shutdown ends long polls)."""
        size = event_bytes(event)
        for queues in list(self._subscribers.values()):
            for queue in list(queues):
                queue.offer(event, size)

    def publish(self, group_id: int, event: dict[str, Any]) -> None:
        size = event_bytes(event)
        for queue in list(self._subscribers[group_id]):
            queue.offer(event, size)
        if event.get("type") == "item":  # the viewer's live steps: only the group's own listeners
            return
        for everything in list(self._everything):
            _put(everything, {**event, "group_id": group_id})


def _put(queue: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    if queue.full():  # a stalled listener loses hints, not data
        queue.get_nowait()
    queue.put_nowait(event)
