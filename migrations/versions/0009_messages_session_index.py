"""index messages by session, direction and status

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 03:50:00

Every import looks up a session's queued inbound messages; without this index that scans the
whole messages table, and reply latency grows with history (measured by bench/soak.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_session_status", "messages", ["session_id", "direction", "status"])


def downgrade() -> None:
    op.drop_index("ix_messages_session_status", table_name="messages")
