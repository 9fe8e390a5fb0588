"""inbox counters: exact unread counts per user, filled from the notifications already there

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_counters",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("unread", sa.Integer(), nullable=False),
        sa.Column("unread_push", sa.Integer(), nullable=False),
        sa.Column("unread_in_app", sa.Integer(), nullable=False),
        sa.Column("unread_sms", sa.Integer(), nullable=False),
        sa.Column("unread_email", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "user_id", name=op.f("pk_inbox_counters")),
    )
    op.execute(
        "INSERT INTO inbox_counters (app_id, user_id, unread, unread_push, unread_in_app, "
        "unread_sms, unread_email) "
        "SELECT app_id, user_id, count(*), "
        "sum(CASE WHEN (channel_mask & 1) != 0 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN (channel_mask & 2) != 0 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN (channel_mask & 4) != 0 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN (channel_mask & 8) != 0 THEN 1 ELSE 0 END) "
        "FROM notifications WHERE user_id IS NOT NULL AND read_at IS NULL "
        "GROUP BY app_id, user_id"
    )


def downgrade() -> None:
    op.drop_table("inbox_counters")
