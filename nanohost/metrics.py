"""``GET /metrics``: the host's figures in Prometheus text format (``prometheus_client``).

Events are counted where they happen (wakes, crashes, turn latency); totals that the database
already holds (messages in and out by channel) and states (containers running, the wake queue)
are read when scraped, so they are right across restarts. Each host has its own registry: tests
run several hosts in one process. The endpoint needs the API's bearer token, like ``/api``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from nanohost.db.engine import transaction
from nanohost.db.models import Message

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class _Stored(Collector):
    """Figures read at scrape time from the database and the live host."""

    def __init__(self, db: sessionmaker[Session], live: Callable[[], dict[str, Any]]) -> None:
        self.db = db
        self.live = live

    def collect(self) -> Iterator[Any]:
        messages = CounterMetricFamily(
            "nanohost_messages",
            "Messages recorded, by direction (in/out) and channel",
            labels=["direction", "channel"],
        )
        with transaction(self.db) as db:
            for direction, channel, count in db.execute(
                select(Message.direction, Message.channel, func.count()).group_by(
                    Message.direction, Message.channel
                )
            ):
                messages.add_metric([direction, channel], count)
        yield messages
        live = self.live()
        yield GaugeMetricFamily(
            "nanohost_containers_running", "Agent containers running", value=live["in_use"]
        )
        yield GaugeMetricFamily(
            "nanohost_container_slots", "Containers allowed at once", value=live["capacity"]
        )
        yield GaugeMetricFamily(
            "nanohost_wake_queue", "Wakes waiting for a container slot", value=live["waiting"]
        )
        yield GaugeMetricFamily(
            "nanohost_wake_queue_oldest_seconds",
            "How long the oldest waiting wake has waited",
            value=live["oldest_wait_s"],
        )


class HostMetrics:
    """One host's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.wakes = Counter("nanohost_wakes", "Containers started", registry=self.registry)
        self.crashes = Counter(
            "nanohost_crashes", "Containers that died with messages waiting", registry=self.registry
        )
        self.turn_seconds = Histogram(
            "nanohost_turn_seconds",
            "From a message being recorded to its answer being imported",
            buckets=TURN_BUCKETS,
            registry=self.registry,
        )

    def watch(self, db: sessionmaker[Session], live: Callable[[], dict[str, Any]]) -> None:
        """Add the scrape-time figures (once the database and slots exist)."""
        self.registry.register(_Stored(db, live))

    def render(self) -> bytes:
        return generate_latest(self.registry)
