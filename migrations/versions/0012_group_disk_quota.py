"""a group's own disk quota (``groups config --disk-quota``)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 07:50:00.000000

Added in place (SQLite ``ALTER TABLE ADD COLUMN``): no table is copied (see 0010). NULL, as every
existing row gets, means the host's ``NANOHOST_GROUP_DISK_QUOTA``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("container_configs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disk_quota", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("container_configs", schema=None) as batch_op:
        batch_op.drop_column("disk_quota")
