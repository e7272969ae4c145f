"""Models and migrations: the migrated schema is the models' schema, and SQLite is set up to share."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError

from nanohost.db import (
    AgentGroup,
    Base,
    ChatBinding,
    ContainerConfig,
    Message,
    make_engine,
    make_session_factory,
    migrate,
)
from nanohost.db.engine import transaction
from nanohost.group_config import ConfigEdit, apply_edit
from nanohost.groups import get_group


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'host.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _group(session, name: str = "g") -> AgentGroup:  # type: ignore[no-untyped-def]
    group = AgentGroup(name=name, folder=name, agent_provider="mock", config=ContainerConfig())
    session.add(group)
    session.flush()
    return group


def test_empty_database_upgrades_to_head_with_no_drift(engine: Engine) -> None:
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as connection:
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []
    tables = set(inspect(engine).get_table_names())
    assert {
        "agent_groups",
        "container_configs",
        "chat_bindings",
        "sessions",
        "messages",
        "scheduled_tasks",
    } <= tables


def test_upgrade_is_idempotent(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_inbound_platform_ids_are_unique_per_channel(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        group = _group(session)
        common = {"group_id": group.id, "chat_id": "c", "text": "hi"}
        session.add(Message(direction="in", channel="telegram", platform_message_id="42", **common))
        # the same id on another channel, outbound rows and rows with no id are all fine
        session.add(Message(direction="in", channel="slack", platform_message_id="42", **common))
        session.add(Message(direction="out", channel="telegram", platform_message_id="42", **common))
        session.add(Message(direction="in", channel="web", platform_message_id=None, **common))
        session.add(Message(direction="in", channel="web", platform_message_id=None, **common))
    with pytest.raises(IntegrityError), transaction(factory) as session:
        session.add(
            Message(
                direction="in",
                channel="telegram",
                platform_message_id="42",
                group_id=group.id,
                chat_id="c",
                text="again",
            )
        )
    with factory() as session:
        assert session.query(Message).count() == 5


def test_a_chat_binds_to_one_group(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        a, b = _group(session, "a"), _group(session, "b")
        session.add(ChatBinding(channel="slack", chat_id="C1", group=a))
    with pytest.raises(IntegrityError), transaction(factory) as session:
        session.add(ChatBinding(channel="slack", chat_id="C1", group_id=b.id))


def test_deleting_a_group_removes_its_rows(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        group = _group(session)
        session.add(ChatBinding(channel="web", chat_id="x", group=group))
        session.add(Message(direction="in", channel="web", chat_id="x", group_id=group.id, text="hi"))
    with transaction(factory) as session:
        session.delete(session.get(AgentGroup, group.id))
    with engine.connect() as connection:
        for table in ("container_configs", "chat_bindings", "messages"):
            assert connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() == 0


def test_trigger_mode_needs_a_trigger_word(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with pytest.raises(IntegrityError), transaction(factory) as session:
        group = _group(session)
        group.config.engage_mode = "trigger"


def test_concurrent_edits_all_land(engine: Engine) -> None:
    """Operators editing while the host writes: no edit fails and none is lost."""
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        _group(session)
    errors: list[BaseException] = []

    def editor(worker: int) -> None:
        try:
            for i in range(10):
                with transaction(factory) as session:
                    apply_edit(get_group(session, "g"), ConfigEdit(allow_senders=[f"w{worker}-{i}"]))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=editor, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with factory() as session:
        senders = session.scalar(select(ContainerConfig.allowed_senders))
    assert sorted(senders) == sorted(f"w{n}-{i}" for n in range(4) for i in range(10))


def test_a_read_takes_no_write_lock_and_sees_the_last_commit(engine: Engine) -> None:
    """``reading`` begins without the write lock: it does not wait for a writer holding it (a
    transaction would, for the whole busy timeout) and sees what was committed before; what it
    loaded stays loaded after it ends."""
    import sqlite3

    from sqlalchemy import event

    from nanohost.db.engine import reading

    factory = make_session_factory(engine)
    with transaction(factory) as db:
        _group(db, "before")
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cur, sql, *args: statements.append(sql))
    writer = sqlite3.connect(str(engine.url.database), isolation_level=None, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    writer.execute("UPDATE agent_groups SET folder = 'changing'")
    try:
        with reading(factory) as db:
            group = db.scalars(select(AgentGroup)).one()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert (group.name, group.folder) == ("before", "before")  # loaded, and not the uncommitted edit
    assert statements[0] == "BEGIN"
