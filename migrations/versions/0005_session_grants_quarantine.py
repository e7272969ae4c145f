"""session grants held host-side; quarantined sessions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gateway_placeholder", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("gateway_egress", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("quarantined_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("quarantined_at")
        batch_op.drop_column("gateway_egress")
        batch_op.drop_column("gateway_placeholder")
