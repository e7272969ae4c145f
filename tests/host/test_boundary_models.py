"""Property tests of the boundary: whatever bytes a container puts in any queue row, the host
neither crashes nor stops the session; good rows after bad ones still arrive."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from nanohost.boundary import (
    MAX_REPLY_CHARS,
    BadRow,
    CancelTask,
    MessageRow,
    cap_text,
    parse_ack,
    parse_continuation,
    parse_row,
)
from nanohost.db import make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.db.models import AgentSession, Message
from nanohost.groups import create_group
from nanohost.importer import MAX_ITEM_EVENTS, OutboundImport
from nanohost.settings import load_settings
from nanohost.transport import QueueUnreadable, SessionQueues

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
kinds = st.sampled_from(["message", "file", "progress", "status", "task"]) | st.text(max_size=10)
payload_objects = st.fixed_dictionaries(
    {},
    optional={
        "text": json_values,
        "in_reply_to": json_values,
        "path": json_values,
        "caption": json_values,
        "op": st.sampled_from(["schedule", "cancel"]) | json_values,
        "task_id": json_values,
        "prompt": json_values,
        "schedule": json_values,
        "state": json_values,
        "error": json_values,
    },
)
column_values = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=64)
    | payload_objects.map(json.dumps)
)


@given(
    kind=st.none() | st.binary(max_size=16) | kinds,
    payload=st.none() | st.binary(),
    size=st.integers(0, 2**40),
)
def test_parse_row_never_raises_on_any_bytes(kind: Any, payload: bytes | None, size: int) -> None:
    parsed = parse_row(kind, payload, size)
    assert isinstance(parsed, BadRow) or parsed.kind in ("message", "file", "progress", "status", "task")


@given(kind=kinds, payload=payload_objects)
def test_parse_row_never_raises_on_any_json_object(kind: str, payload: dict[str, Any]) -> None:
    parse_row(kind, json.dumps(payload).encode(), 0)


@given(inbound_id=column_values, status=column_values, reason=column_values)
def test_acks_and_continuations_are_models_or_nothing(inbound_id: Any, status: Any, reason: Any) -> None:
    ack = parse_ack(inbound_id, status, reason)
    assert ack is None or (isinstance(ack.inbound_id, int) and ack.status in ("done", "failed"))
    value = parse_continuation(reason)
    assert value is None or (isinstance(value, str) and len(value) <= 128)


def test_the_runners_own_rows_pass_and_wrong_types_do_not() -> None:
    good = parse_row("message", json.dumps({"text": "hi", "in_reply_to": [3]}).encode(), 0)
    assert good == MessageRow(kind="message", text="hi", in_reply_to=[3])
    assert isinstance(parse_row("task", b'{"op": "cancel", "task_id": "12"}', 0), CancelTask)
    for kind, payload in [
        ("message", {"text": "x", "in_reply_to": 5}),
        ("message", {"text": "x", "in_reply_to": [True]}),
        ("message", {"text": 5}),
        ("task", {"op": "cancel", "task_id": "abc"}),
        ("task", {"op": "cancel", "task_id": 7}),
        ("task", {"op": "launch"}),
        ("file", {"path": ""}),
        ("message", {"text": "\ud800"}),
    ]:
        assert isinstance(parse_row(kind, json.dumps(payload).encode(), 0), BadRow), (kind, payload)
    assert isinstance(parse_row("message", b"\xff{}", 0), BadRow)
    assert isinstance(parse_row("message", None, 5_000_000), BadRow)


def test_long_replies_are_cut_with_a_note() -> None:
    text = cap_text("x" * (MAX_REPLY_CHARS + 10))
    assert text.startswith("x" * MAX_REPLY_CHARS) and "10 more characters" in text
    assert cap_text("short") == "short"


@pytest.fixture
def session_import(host_env: Path) -> tuple[OutboundImport, Any, Path]:
    settings = load_settings()
    engine = make_engine(settings.db_url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    with transaction(factory) as db:
        group = create_group(db, settings, "team")
        session = AgentSession(group_id=group.id)
        db.add(session)
        db.flush()
        db.add(
            Message(group_id=group.id, session_id=session.id, direction="in", channel="api", chat_id="team")
        )
    session_dir = settings.sessions_dir / "1"
    queues = SessionQueues(session_dir)
    importer = OutboundImport(
        factory,
        queues,
        session_id=1,
        group_id=1,
        folder=settings.groups_dir / "team",
        outbox=settings.data_dir / "outbox" / "1",
        on_tasks_changed=lambda db: None,
    )
    return importer, factory, session_dir


def hostile_writer(session_dir: Path) -> sqlite3.Connection:
    db = sqlite3.connect(session_dir / "outbound.db", isolation_level=None)
    db.executescript(
        "CREATE TABLE IF NOT EXISTS outbound (id INTEGER PRIMARY KEY, kind, payload, created_at);"
        "CREATE TABLE IF NOT EXISTS acks (inbound_id, status, reason, at);"
        "CREATE TABLE IF NOT EXISTS state (key, value);"
    )
    return db


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(column_values | kinds, column_values), min_size=1, max_size=6))
def test_any_rows_never_stop_the_import(
    session_import: tuple[OutboundImport, Any, Path], rows: list[tuple[Any, Any]]
) -> None:
    importer, factory, session_dir = session_import
    writer = hostile_writer(session_dir)
    for kind, payload in rows:
        writer.execute("INSERT INTO outbound (kind, payload, created_at) VALUES (?, ?, 0)", (kind, payload))
    writer.execute("INSERT INTO acks VALUES (?, ?, ?, 0)", (rows[0][1], rows[0][0], rows[-1][1]))
    writer.execute(
        "INSERT INTO outbound (kind, payload, created_at) VALUES ('message', ?, 0)", ('{"text": "ok"}',)
    )
    last = writer.execute("SELECT max(id) FROM outbound").fetchone()[0]
    writer.close()
    while importer.batch()[1]:
        pass
    with transaction(factory) as db:
        session = db.get(AgentSession, 1)
        assert session is not None and session.outbound_cursor == last  # every row passed, none blocked
        newest = db.scalars(
            select(Message.text).where(Message.direction == "out").order_by(Message.id.desc())
        ).first()
    assert newest == "ok"


def test_a_file_that_is_not_a_queue_is_unreadable_not_a_crash(
    session_import: tuple[OutboundImport, Any, Path],
) -> None:
    importer, _, session_dir = session_import
    (session_dir / "outbound.db").write_bytes(b"\x8f" * 8192)
    with pytest.raises(QueueUnreadable):
        importer.batch()


def test_a_queue_of_the_wrong_shape_is_unreadable(session_import: tuple[OutboundImport, Any, Path]) -> None:
    importer, _, session_dir = session_import
    db = sqlite3.connect(session_dir / "outbound.db", isolation_level=None)
    db.execute("CREATE TABLE outbound (id TEXT, kind)")
    db.execute("INSERT INTO outbound VALUES ('x', 'message')")
    db.close()
    with pytest.raises(QueueUnreadable):
        importer.batch()


def test_a_flood_of_live_steps_is_cut_and_never_stored(
    session_import: tuple[OutboundImport, Any, Path],
) -> None:
    importer, factory, session_dir = session_import
    writer = hostile_writer(session_dir)
    start = {"turn": "t", "phase": "start"}
    writer.execute(
        "INSERT INTO outbound (kind, payload, created_at) VALUES ('item', ?, 0)", (json.dumps(start),)
    )
    for n in range(150):
        step = {"turn": "t", "phase": "item", "item": {"id": f"s{n}", "type": "reasoning", "text": str(n)}}
        writer.execute(
            "INSERT INTO outbound (kind, payload, created_at) VALUES ('item', ?, 0)", (json.dumps(step),)
        )
    end = {"turn": "t", "phase": "end", "status": "completed"}
    writer.execute(
        "INSERT INTO outbound (kind, payload, created_at) VALUES ('item', ?, 0)", (json.dumps(end),)
    )
    writer.close()
    events, read = importer.batch()
    assert read
    phases = [e["phase"] for e in events if e["type"] == "item"]
    assert phases[0] == "start" and phases[-1] == "end" and phases.count("item") == MAX_ITEM_EVENTS
    shown = [e["item"]["id"] for e in events if e["type"] == "item" and e["phase"] == "item"]
    assert shown == [f"s{n}" for n in range(150 - MAX_ITEM_EVENTS, 150)]  # the newest
    with transaction(factory) as db:
        assert db.scalars(select(Message).where(Message.direction == "out")).all() == []


def test_the_live_feed_is_bounded_in_bytes_per_event_and_per_batch(
    session_import: tuple[OutboundImport, Any, Path],
) -> None:
    """Endless near-1 MB start rows and huge steps: each event is cut to a few KB, one batch
    publishes only its last start (and end), and the live bytes of a batch stay within the cap."""
    from nanohost.boundary import MAX_LIVE_BATCH_BYTES, MAX_LIVE_EVENT_BYTES, live_bytes

    importer, _, session_dir = session_import
    writer = hostile_writer(session_dir)
    big = "x" * 19_000
    for n in range(40):
        start = {"turn": f"t{n}", "phase": "start", "prompts": [big] * 20}
        writer.execute(
            "INSERT INTO outbound (kind, payload, created_at) VALUES ('item', ?, 0)", (json.dumps(start),)
        )
    changes = [{"path": "p" * 4000, "kind": "add", "diff": "\u0001" * 19_000} for _ in range(50)]
    for n in range(40):
        step = {
            "turn": "t39",
            "phase": "item",
            "item": {"id": f"s{n}", "type": "file_change", "text": big, "output": big, "changes": changes},
        }
        writer.execute(
            "INSERT INTO outbound (kind, payload, created_at) VALUES ('item', ?, 0)", (json.dumps(step),)
        )
    for _n in range(3):
        end = {"turn": "t39", "phase": "end", "status": "completed"}
        writer.execute(
            "INSERT INTO outbound (kind, payload, created_at) VALUES ('item', ?, 0)", (json.dumps(end),)
        )
    writer.close()
    published: list[dict[str, Any]] = []
    while True:
        events, read = importer.batch()
        if not read:
            break
        live = [e for e in events if e["type"] == "item"]
        assert sum(live_bytes(e) for e in live) <= MAX_LIVE_BATCH_BYTES
        assert [e["phase"] for e in live].count("start") <= 1 and [e["phase"] for e in live].count("end") <= 1
        published += live
    assert published and all(live_bytes(e) <= MAX_LIVE_EVENT_BYTES for e in published)
    assert all(e.get("cut") for e in published if e["phase"] != "end")  # the client knows to read the archive
    assert (published[-1]["phase"], published[-1]["status"], "cut" in published[-1]) == (
        "end",
        "completed",
        False,
    )
    assert [e["turn"] for e in published if e["phase"] == "start"][-1] == "t39"


def test_a_live_step_keeps_what_fits_before_falling_back_to_its_headline() -> None:
    from nanohost.boundary import MAX_LIVE_EVENT_BYTES, ItemRow, live_bytes, live_event

    changes = [{"path": f"f{n}.py", "kind": "update", "diff": "+" * 4_000} for n in range(50)]
    row = ItemRow.model_validate(
        {
            "kind": "item",
            "turn": "t",
            "phase": "item",
            "item": {"id": "c", "type": "file_change", "changes": changes},
        }
    )
    event = live_event(row)
    assert live_bytes(event) <= MAX_LIVE_EVENT_BYTES and event["cut"] is True
    assert 0 < len(event["item"]["changes"]) < 50  # some diffs still shown live
    small = ItemRow.model_validate(
        {"kind": "item", "turn": "t", "phase": "item", "item": {"id": "r", "type": "reasoning", "text": "hi"}}
    )
    assert live_event(small) == {
        "type": "item",
        "turn": "t",
        "phase": "item",
        "prompts": [],
        "item": {"id": "r", "type": "reasoning", "status": "completed", "text": "hi"},
    }


def _imported_cursor(session_dir: Path) -> str | None:
    db = sqlite3.connect(session_dir / "inbound.db")
    try:
        row = db.execute("SELECT value FROM host_state WHERE key='outbound_imported'").fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


def test_a_batch_hands_its_cursor_to_the_runner_at_the_next_batch(
    session_import: tuple[OutboundImport, Any, Path],
) -> None:
    """A reply's events come back without waiting for an inbound.db commit: the import cursor is
    recorded for the runner at the next batch (the pump always asks again after one that read
    rows), then at most every ``mark_every`` seconds, or at once by ``settle(force=True)``."""
    importer, _, session_dir = session_import
    now = [1000.0]
    importer.clock = lambda: now[0]
    writer = hostile_writer(session_dir)

    def reply(text: str) -> None:
        writer.execute(
            "INSERT INTO outbound (kind, payload, created_at) VALUES ('message', ?, 0)",
            (json.dumps({"text": text}),),
        )

    reply("a")
    reply("b")
    events, read = importer.batch()
    assert read and [e["type"] for e in events] == ["message", "message"]
    assert _imported_cursor(session_dir) is None
    assert importer.batch() == ([], False)
    assert _imported_cursor(session_dir) == "2"
    reply("c")
    assert importer.batch()[1]
    assert importer.batch() == ([], False)
    assert _imported_cursor(session_dir) == "2"  # written less than mark_every ago
    now[0] += importer.mark_every
    assert importer.batch() == ([], False)
    assert _imported_cursor(session_dir) == "3"
    reply("d")
    writer.close()
    assert importer.batch()[1]
    importer.settle(force=True)
    assert _imported_cursor(session_dir) == "4"


def test_live_steps_and_progress_take_no_savepoint(session_import: tuple[OutboundImport, Any, Path]) -> None:
    """Rows that are only shown (the viewer's steps, progress) issue no SQL, so the import gives
    them no savepoint of their own (each one flushed the session's cursor: an UPDATE per step); a
    reply still gets one (a refused row rolls back alone), and the cursor is written once."""
    from sqlalchemy import event

    importer, factory, session_dir = session_import
    writer = hostile_writer(session_dir)
    rows = [
        ("item", {"turn": "t", "phase": "start"}),
        ("item", {"turn": "t", "phase": "item", "item": {"id": "s", "type": "reasoning", "text": "x"}}),
        ("progress", {"text": "working"}),
        ("message", {"text": "done"}),
    ]
    for kind, payload in rows:
        writer.execute(
            "INSERT INTO outbound (kind, payload, created_at) VALUES (?, ?, 0)", (kind, json.dumps(payload))
        )
    writer.close()
    statements: list[str] = []
    engine = factory.kw["bind"]

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        events, read = importer.batch()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert read
    assert [e["type"] for e in events] == ["item", "item", "message", "progress"]
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 1
    (update,) = [s for s in statements if s.startswith("UPDATE sessions")]  # not one per row read
    assert "outbound_cursor" in update
    with transaction(factory) as db:
        assert db.scalars(select(Message.text).where(Message.direction == "out")).all() == ["done"]


def test_a_batch_with_nothing_new_takes_no_write_lock(
    session_import: tuple[OutboundImport, Any, Path],
) -> None:
    """No new row and no new acknowledgement: the import is not begun (no BEGIN IMMEDIATE). An
    acknowledgement without rows (a refused message) is still applied; a deleted session is
    still noticed."""
    from sqlalchemy import delete, event

    importer, factory, session_dir = session_import
    with transaction(factory) as db:
        (message,) = db.scalars(select(Message)).all()
        message.status = "queued"
        message_id = message.id
    writer = hostile_writer(session_dir)
    statements: list[str] = []
    engine = factory.kw["bind"]

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert importer.batch() == ([], False)
        assert importer.batch() == ([], False)
        assert "BEGIN IMMEDIATE" not in statements
        writer.execute("INSERT INTO acks VALUES (?, 'failed', 'refused', 0)", (message_id,))
        writer.close()
        events, read = importer.batch()
        assert (events, read) == ([{"type": "message", "id": message_id}], False)
        assert "BEGIN IMMEDIATE" in statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    with transaction(factory) as db:
        assert db.get(Message, message_id).status == "failed"  # type: ignore[union-attr]
        db.execute(delete(Message))
        db.execute(delete(AgentSession))
    with pytest.raises(LookupError):
        importer.batch()
