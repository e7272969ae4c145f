"""Migration 0010: the provider CHECK constraint goes, the rows stay, and a stored name that no
package registers is refused where it is used (the wake, the config edit), saying what is known."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, MetaData, Table, inspect, text

from nanohost.db import AgentGroup, ContainerConfig, make_engine, make_session_factory, migrate
from nanohost.db.engine import transaction
from nanohost.providers.registry import UnknownProvider, check_provider, names


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'host.db'}")
    yield engine
    engine.dispose()


def _to(engine: Engine, revision: str, *, down: bool = False) -> None:
    config = migrate.alembic_config(str(engine.url))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def test_upgrade_drops_the_check_and_keeps_every_row(engine: Engine) -> None:
    _to(engine, "0009")
    assert [c["name"] for c in inspect(engine).get_check_constraints("agent_groups")] == ["ck_group_provider"]
    # rows written as 0009's schema has them (reflected: the models have later columns)
    tables = MetaData()
    groups = Table("agent_groups", tables, autoload_with=engine)
    configs = Table("container_configs", tables, autoload_with=engine)
    now = datetime.now()
    with engine.begin() as connection:
        for group_id, provider in enumerate(("codex", "mock"), start=1):
            connection.execute(
                groups.insert().values(
                    id=group_id,
                    name=f"g-{provider}",
                    folder=provider,
                    agent_provider=provider,
                    created_at=now,
                    updated_at=now,
                )
            )
            connection.execute(
                configs.insert().values(
                    group_id=group_id,
                    mcp_servers={},
                    env={},
                    skills=[],
                    additional_mounts=[],
                    allowed_senders=[],
                    engage_mode="always",
                    updated_at=now,
                )
            )
    with engine.begin() as connection, pytest.raises(Exception, match="CHECK constraint failed"):
        connection.execute(
            text(
                "INSERT INTO agent_groups (id, name, folder, agent_provider, created_at, updated_at) "
                "VALUES (9, 'x', 'x', 'opencode', '2026-12-01', '2026-12-01')"
            )
        )
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert inspect(engine).get_check_constraints("agent_groups") == []
    with engine.begin() as connection:
        rows = connection.execute(text("SELECT name, agent_provider FROM agent_groups ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [("g-codex", "codex"), ("g-mock", "mock")]
        configs = connection.execute(text("SELECT count(*) FROM container_configs")).scalar()
        assert configs == 2  # the table copy kept the rows that point at the groups
        connection.execute(
            text(
                "INSERT INTO agent_groups (id, name, folder, agent_provider, created_at, updated_at) "
                "VALUES (3, 'later', 'later', 'someday', '2026-12-01', '2026-12-01')"
            )
        )


def test_downgrade_restores_the_check(engine: Engine) -> None:
    migrate.upgrade(engine)
    _to(engine, "0009", down=True)
    assert [c["name"] for c in inspect(engine).get_check_constraints("agent_groups")] == ["ck_group_provider"]


def test_downgrade_refuses_while_a_group_uses_another_provider(engine: Engine) -> None:
    migrate.upgrade(engine)
    with transaction(make_session_factory(engine)) as db:
        db.add(AgentGroup(name="new", folder="new", agent_provider="opencode", config=ContainerConfig()))
    with pytest.raises(RuntimeError, match="1 group\\(s\\) use a provider other than codex or mock"):
        _to(engine, "0009", down=True)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_an_unregistered_name_is_refused_saying_what_is_registered() -> None:
    with pytest.raises(UnknownProvider) as refused:
        check_provider("someday")
    assert "someday" in str(refused.value)
    for name in names():
        assert name in str(refused.value)
    assert check_provider("MOCK") == "mock"
