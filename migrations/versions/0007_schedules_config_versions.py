"""group time zones, config versions, error times

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 02:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("container_configs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("config_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("restart_requested", sa.Boolean(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_error_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("last_error_at")
        batch_op.drop_column("restart_requested")
        batch_op.drop_column("config_version")
    with op.batch_alter_table("container_configs", schema=None) as batch_op:
        batch_op.drop_column("version")
        batch_op.drop_column("timezone")
