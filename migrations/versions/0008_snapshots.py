"""workspace snapshots, and each group's snapshot settings

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("continuation", sa.String(length=128), nullable=True),
        sa.Column("threads", sa.JSON(), nullable=False),
        sa.Column("archive", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_bytes", sa.BigInteger(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("restored_at", sa.DateTime(), nullable=True),
        sa.Column("restore_token", sa.String(length=32), nullable=True),
        sa.CheckConstraint(
            "reason IN ('manual', 'before-restore', 'idle', 'daily')", name="ck_snapshot_reason"
        ),
        sa.ForeignKeyConstraint(["group_id"], ["agent_groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_snapshots_group_id"), ["group_id"], unique=False)
    with op.batch_alter_table("container_configs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("snapshot_excludes", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("snapshot_on", sa.String(length=8), server_default="off", nullable=False)
        )
        batch_op.add_column(sa.Column("snapshot_keep", sa.Integer(), server_default="10", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("container_configs", schema=None) as batch_op:
        batch_op.drop_column("snapshot_keep")
        batch_op.drop_column("snapshot_on")
        batch_op.drop_column("snapshot_excludes")
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshots_group_id"))
    op.drop_table("snapshots")
