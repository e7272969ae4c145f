"""group auth mode (api-key or chatgpt), and the mode granted with each session's placeholder

Revision ID: 0011
Create Date: 2026-12-01 04:30:00.000000

Both columns are added in place (SQLite ``ALTER TABLE ADD COLUMN``): no table is copied, so no
``ON DELETE CASCADE`` can empty a child table (see 0010).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("container_configs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth", sa.String(length=16), server_default="api-key", nullable=False))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gateway_auth", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("gateway_auth")
    with op.batch_alter_table("container_configs", schema=None) as batch_op:
        batch_op.drop_column("auth")
