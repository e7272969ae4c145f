"""Scheduled tasks fire on a simulated clock: cron in the group's zone, anchored intervals,
one-offs, at most one catch-up run after downtime, and only for the group that may."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nanohost.db import make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.db.models import AgentGroup, AgentSession, Message, ScheduledTask
from nanohost.groups import create_group
from nanohost.importer import OutboundImport
from nanohost.orchestrator import Orchestrator
from nanohost.scheduler import SCHEDULER_SENDER, Scheduler, plan
from nanohost.schedules import first_run, next_after, parse, zone
from nanohost.settings import load_settings
from nanohost.transport import SessionQueues
from nanohost.validation import InvalidInput

T0 = datetime(2026, 12, 1, 10, 0, 0)


def test_schedules_parse_and_refuse_clearly() -> None:
    assert parse("0 9 * * 1-5").cron == "0 9 * * 1-5"
    assert parse("every 30m").every == timedelta(minutes=30)
    assert parse("every 2H").text == "every 2h"
    assert parse("2026-12-24T09:00:00Z").at == datetime(2026, 12, 24, 9, 0)
    assert parse("2026-12-24T09:00:00", zone("Europe/Berlin")).at == datetime(2026, 12, 24, 8, 0)
    for bad, says in [
        ("every 10s", "at least 1 minute"),
        ("tomorrow", "not a cron"),
        ("* * *", "not a cron"),
    ]:
        with pytest.raises(InvalidInput, match=says):
            parse(bad)
    with pytest.raises(InvalidInput, match="unknown time zone"):
        zone("Mars/Olympus")


def test_an_interval_is_anchored_not_drifting() -> None:
    every = parse("every 30m")
    late = T0 + timedelta(minutes=31, seconds=7)  # the 10:30 run fired 67 s late
    assert next_after(every, late, anchor=T0) == T0 + timedelta(hours=1)  # 11:00, not 11:01:07


def test_after_downtime_the_next_run_is_the_first_slot_after_now() -> None:
    every = parse("every 30m")
    back = T0 + timedelta(hours=5, minutes=47)
    assert next_after(every, back, anchor=T0) == T0 + timedelta(hours=6)
    daily = parse("0 9 * * *")
    assert next_after(daily, datetime(2026, 12, 5, 12, 0), anchor=T0) == datetime(2026, 12, 6, 9, 0)


def test_cron_is_read_in_the_groups_zone() -> None:
    berlin = zone("Europe/Berlin")  # UTC+1 in December, UTC+2 in July
    assert next_after(parse("0 9 * * *"), T0, anchor=T0, tz=berlin) == datetime(2026, 12, 2, 8, 0)
    july = datetime(2026, 7, 1, 0, 0)
    assert next_after(parse("0 9 * * *"), july, anchor=july, tz=berlin) == datetime(2026, 7, 1, 7, 0)


def test_a_one_off_fires_once_even_just_after_its_time() -> None:
    once = parse("2026-12-01T09:59:00Z")
    assert first_run(once, T0) == datetime(2026, 12, 1, 9, 59)
    assert next_after(once, T0, anchor=T0) is None


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db(host_env: Path) -> sessionmaker[Session]:
    settings = load_settings()
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        create_group(session, settings, "main")
        create_group(session, settings, "team")
    return factory


@pytest.fixture
def fired() -> list[tuple[int, int, str]]:
    return []


def scheduler(db: sessionmaker[Session], clock: Clock, fired: list[tuple[int, int, str]]) -> Scheduler:
    orchestrator = Orchestrator.__new__(Orchestrator)  # only its session_for is used here

    async def queue(session_id: int, message_id: int, text: str) -> None:
        fired.append((session_id, message_id, text))

    return Scheduler(db, orchestrator.session_for, queue, clock=clock)


def add_task(
    db: sessionmaker[Session], group: str, schedule: str, created: datetime, tz: str | None = None
) -> int:
    with transaction(db) as session:
        target = session.scalar(select(AgentGroup).where(AgentGroup.name == group))
        assert target is not None
        target.config.timezone = tz
        task = ScheduledTask(
            group_id=target.id, prompt=f"do {schedule}", schedule=schedule, created_at=created
        )
        session.add(task)
        session.flush()
        return task.id


def task(db: sessionmaker[Session], task_id: int) -> ScheduledTask:
    with transaction(db) as session:
        found = session.get(ScheduledTask, task_id)
        assert found is not None
        session.expunge(found)
        return found


async def test_an_interval_task_fires_on_time_and_once_after_downtime(
    db: sessionmaker[Session], fired: list[tuple[int, int, str]]
) -> None:
    clock = Clock(T0)
    tick = scheduler(db, clock, fired).tick
    task_id = add_task(db, "team", "every 30m", T0)
    assert await tick() == []  # planned, not due
    assert task(db, task_id).next_run_at == T0 + timedelta(minutes=30)

    clock.now = T0 + timedelta(minutes=30, seconds=2)
    (message_id,) = await tick()
    assert await tick() == []  # not twice for one slot
    with transaction(db) as session:
        message = session.get(Message, message_id)
        assert message is not None and message.sender == SCHEDULER_SENDER and message.status == "pending"
        assert message.text.startswith(f"[scheduled task #{task_id}: every 30m] do every 30m")
        assert message.direction == "in" and message.session_id is not None
    assert [f[1] for f in fired] == [message_id]
    assert task(db, task_id).next_run_at == T0 + timedelta(hours=1)

    clock.now = T0 + timedelta(hours=7, minutes=12)  # the host was down for hours
    assert len(await tick()) == 1  # everything missed fires once
    assert task(db, task_id).next_run_at == T0 + timedelta(hours=7, minutes=30)
    assert len(fired) == 2


async def test_a_one_off_is_done_after_it_fires_and_a_paused_task_waits(
    db: sessionmaker[Session], fired: list[tuple[int, int, str]]
) -> None:
    clock = Clock(T0)
    tick = scheduler(db, clock, fired).tick
    once = add_task(db, "team", "2026-12-01T10:00:45Z", T0)
    paused = add_task(db, "team", "every 1m", T0)
    with transaction(db) as session:
        row = session.get(ScheduledTask, paused)
        assert row is not None
        row.status = "paused"
    await tick()
    clock.now = T0 + timedelta(minutes=5)
    assert len(await tick()) == 1
    assert task(db, once).status == "done" and task(db, once).next_run_at is None
    assert task(db, paused).last_run_at is None
    assert len(await tick()) == 0


async def test_cron_fires_in_the_groups_zone(
    db: sessionmaker[Session], fired: list[tuple[int, int, str]]
) -> None:
    clock = Clock(T0)
    tick = scheduler(db, clock, fired).tick
    task_id = add_task(db, "team", "30 10 * * *", T0, tz="Europe/Berlin")  # 10:30 in Berlin = 09:30 UTC
    await tick()
    assert task(db, task_id).next_run_at == datetime(2026, 12, 2, 9, 30)
    clock.now = datetime(2026, 12, 2, 9, 30)
    assert len(await tick()) == 1


async def test_a_broken_schedule_pauses_its_task_instead_of_failing_every_tick(
    db: sessionmaker[Session], fired: list[tuple[int, int, str]]
) -> None:
    tick = scheduler(db, Clock(T0), fired).tick
    task_id = add_task(db, "team", "whenever", T0)
    good = add_task(db, "team", "every 5m", T0)
    await tick()
    assert task(db, task_id).status == "paused"
    assert task(db, good).next_run_at == T0 + timedelta(minutes=5)


def importer(db: sessionmaker[Session], group: str, session_dir: Path) -> OutboundImport:
    settings = load_settings()
    with transaction(db) as session:
        target = session.scalar(select(AgentGroup).where(AgentGroup.name == group))
        assert target is not None
        agent_session = AgentSession(group_id=target.id)
        session.add(agent_session)
        session.flush()
        session_id, group_id = agent_session.id, target.id
    return OutboundImport(
        db,
        SessionQueues(session_dir),
        session_id=session_id,
        group_id=group_id,
        folder=settings.groups_dir / group,
        outbox=settings.data_dir / "outbox" / str(session_id),
        on_tasks_changed=lambda _db: None,
    )


def agent_schedules(session_dir: Path, **payload: Any) -> None:
    import sqlite3

    queue = sqlite3.connect(session_dir / "outbound.db", isolation_level=None)
    queue.execute("CREATE TABLE IF NOT EXISTS outbound (id INTEGER PRIMARY KEY, kind, payload, created_at)")
    queue.execute(
        "INSERT INTO outbound VALUES (NULL, 'task', ?, 0)", (json.dumps({"op": "schedule", **payload}),)
    )
    queue.close()


def test_a_group_schedules_for_itself_and_only_main_for_others(
    db: sessionmaker[Session], tmp_path: Path
) -> None:
    team = importer(db, "team", tmp_path / "team-session")
    agent_schedules(tmp_path / "team-session", prompt="mine", schedule="every 1h")
    agent_schedules(tmp_path / "team-session", prompt="theirs", schedule="every 1h", group="main")
    team.batch()
    main = importer(db, "main", tmp_path / "main-session")
    agent_schedules(tmp_path / "main-session", prompt="for team", schedule="every 1h", group="team")
    main.batch()
    with transaction(db) as session:
        rows = {
            (t.prompt, session.get(AgentGroup, t.group_id).name)  # type: ignore[union-attr]
            for t in session.scalars(select(ScheduledTask))
        }
        refused = session.get(AgentSession, team.session_id)
        assert refused is not None and "only the main group" in (refused.last_error or "")
        assert all(t.next_run_at is not None for t in session.scalars(select(ScheduledTask)))
    assert rows == {("mine", "team"), ("for team", "team")}


def test_plan_gives_a_new_task_its_first_run() -> None:
    row = ScheduledTask(group_id=1, prompt="p", schedule="every 15m", created_at=T0)
    plan(row, None, T0)
    assert row.next_run_at == T0 + timedelta(minutes=15)
