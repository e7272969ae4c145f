"""Engine and session helpers.

SQLite is the default store and is shared with operators' CLI edits while the host runs, so
every connection gets WAL (readers never block the writer), foreign keys, and a busy timeout
that turns a momentary lock into a short wait instead of an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 5000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see _begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


READ_ONLY = "nanohost_read_only"
"""Execution option of a connection that only reads (``reading``): it begins without the write lock."""


def _begin_immediate(connection: Any) -> None:
    # A deferred transaction that reads and then writes fails with SQLITE_BUSY_SNAPSHOT when
    # another writer got in between, and the busy timeout cannot help. Taking the write lock at
    # BEGIN makes concurrent edits (CLI while the host runs) queue up instead of failing.
    # A transaction that only reads (``reading``) needs no lock: WAL gives it a snapshot.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite, create the file's directory and set the pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions keep loaded attributes after commit so results can be shown after the transaction."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One short unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def core_transaction(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """``transaction`` without the ORM, for SQLAlchemy Core statements on a hot path: a Session
    costs ~40 µs a transaction more than its connection (the router's path per chat message)."""
    engine: Engine = factory.kw["bind"]
    with engine.begin() as connection:
        yield connection


def new_id(inserted: CursorResult[Any]) -> int:
    """The primary key a Core insert of one row gave it."""
    key = inserted.inserted_primary_key
    assert key is not None
    return int(key[0])


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work that only reads: one consistent snapshot, begun without taking the write
    lock (``BEGIN``, not ``BEGIN IMMEDIATE``), so it never waits for a writer (the import thread,
    the CLI) and none waits for it: with the write lock, a reader that met a writer slept in
    SQLite's busy handler (1 ms, then 2, 5, ...). For reads only: a write in it could fail
    with SQLITE_BUSY_SNAPSHOT. It ends with a commit, so what was loaded stays loaded."""
    with factory() as session, session.begin():
        session.connection(execution_options={READ_ONLY: True})
        yield session
