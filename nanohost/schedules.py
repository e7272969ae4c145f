"""What a schedule string means and when it next fires: pure functions, no clock of their own.

A schedule is one of:
- a cron expression (``0 9 * * 1-5``), read in the group's time zone (croniter);
- an interval, ``every 30m`` (units s, m, h, d; at least 1 minute);
- one time, an ISO-8601 timestamp (``2026-12-01T09:00:00Z``; without an offset, the group's zone).

The next run is always computed from the schedule, never as "now + interval" (which drifts by
however late each run fired): an interval is anchored at the task's creation, a cron expression
at its own fields. After downtime a task fires **at most once** for everything it missed, then
resumes its schedule: ``next_after(schedule, now)`` is the first slot strictly after ``now``.
Times are stored naive in UTC, as every other time in the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from nanohost.validation import InvalidInput

_INTERVAL = re.compile(r"^every\s+(\d+)\s*([smhd])$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: exactly one of cron, every, at."""

    text: str
    cron: str | None = None
    every: timedelta | None = None
    at: datetime | None = None
    """For a one-off: the UTC time (naive)."""

    @property
    def once(self) -> bool:
        return self.at is not None


def zone(name: str | None) -> tzinfo:
    """The named IANA zone, or the host's local zone when None."""
    if not name:
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin") from None


def parse(text: str, tz: tzinfo = UTC) -> Schedule:
    """A schedule string as a ``Schedule``, or ``InvalidInput`` saying what is accepted."""
    value = text.strip()
    if match := _INTERVAL.match(value):
        every = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2).lower()])
        if every < MIN_INTERVAL:
            raise InvalidInput(f"schedule {text!r}: an interval must be at least 1 minute")
        return Schedule(f"every {match.group(1)}{match.group(2).lower()}", every=every)
    if len(value.split()) in (5, 6) and croniter.is_valid(value):
        return Schedule(value, cron=value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"schedule {text!r} is not a cron expression (0 9 * * 1-5), an interval (every 30m) "
            "or an ISO time (2026-12-01T09:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return Schedule(value, at=moment.astimezone(UTC).replace(tzinfo=None))


def next_after(schedule: Schedule, now: datetime, *, anchor: datetime, tz: tzinfo = UTC) -> datetime | None:
    """The first time the schedule fires strictly after ``now`` (naive UTC), or None when a
    one-off has passed. ``anchor`` (naive UTC, the task's creation) fixes an interval's phase."""
    if schedule.at is not None:
        return schedule.at if schedule.at > now else None
    if schedule.every is not None:
        if now < anchor:
            return anchor + schedule.every
        periods = (now - anchor) // schedule.every + 1
        return anchor + periods * schedule.every
    assert schedule.cron is not None
    local_now = now.replace(tzinfo=UTC).astimezone(tz)
    upcoming: datetime = croniter(schedule.cron, local_now).get_next(datetime)
    return upcoming.astimezone(UTC).replace(tzinfo=None)


def first_run(schedule: Schedule, created: datetime, tz: tzinfo = UTC) -> datetime | None:
    """When a new task first fires: a one-off at its time (even if just passed: it fires at
    once), otherwise the first slot after creation."""
    if schedule.at is not None:
        return schedule.at
    return next_after(schedule, created, anchor=created, tz=tz)
