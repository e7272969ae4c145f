"""drop the provider CHECK constraint: provider names come from the registry

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 04:30:00

A group's provider used to be checked against a fixed list in the schema, so adding a provider
took a migration. Names now come from the provider registry (entry points), and a stored name is
checked where it is used (an unregistered one fails that group's wake, saying which providers are
registered; the CLI refuses it).

On SQLite a batch table copy would drop ``agent_groups`` and, with foreign keys on (the host's
engine turns them on, and they cannot be turned off inside the migration's transaction), its
``ON DELETE CASCADE`` would empty the config, binding and session tables. So SQLite takes the
documented route for removing a constraint instead (https://sqlite.org/lang_altertable.html,
"other kinds of table schema changes"): the stored ``CREATE TABLE`` text is edited in place,
which touches no row. Other databases drop the constraint by name.
"""

import re
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_CHECK = "agent_provider IN ('codex', 'mock')"
_CLAUSE = re.compile(r",\s*CONSTRAINT ck_group_provider CHECK \(agent_provider IN \([^()]*\)\)")


def _rewrite_sqlite_schema(edit: Callable[[str], str]) -> None:
    bind = op.get_bind()
    select = sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'agent_groups'")
    old = bind.execute(select).scalar_one()
    new = edit(old)
    if new == old:
        return
    version = bind.execute(sa.text("PRAGMA schema_version")).scalar_one()
    bind.execute(sa.text("PRAGMA writable_schema = ON"))
    bind.execute(
        sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'agent_groups'"),
        {"sql": new},
    )
    bind.execute(sa.text(f"PRAGMA schema_version = {int(version) + 1}"))
    bind.execute(sa.text("PRAGMA writable_schema = OFF"))
    problems = bind.execute(sa.text("PRAGMA integrity_check")).scalars().all()
    if problems != ["ok"]:
        raise RuntimeError(f"agent_groups after rewriting its schema: {problems}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rewrite_sqlite_schema(lambda sql: _CLAUSE.sub("", sql))
    else:
        op.drop_constraint("ck_group_provider", "agent_groups", type_="check")


def downgrade() -> None:
    bind = op.get_bind()
    others = bind.execute(sa.text(f"SELECT count(*) FROM agent_groups WHERE NOT ({OLD_CHECK})")).scalar_one()
    if others:
        raise RuntimeError(
            f"{others} group(s) use a provider other than codex or mock; change them first "
            "(`nanohost groups config NAME --provider mock`)"
        )
    if bind.dialect.name == "sqlite":

        def add(sql: str) -> str:
            if "ck_group_provider" in sql:
                return sql
            head, _, tail = sql.rpartition("PRIMARY KEY (id)")
            return f"{head}PRIMARY KEY (id), \n\tCONSTRAINT ck_group_provider CHECK ({OLD_CHECK}){tail}"

        _rewrite_sqlite_schema(add)
    else:
        op.create_check_constraint("ck_group_provider", "agent_groups", OLD_CHECK)
