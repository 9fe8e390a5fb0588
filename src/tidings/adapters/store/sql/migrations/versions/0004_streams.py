"""streams: each user's numbered stream of inbox changes, for real-time resume

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("inbox_counters", sa.Column("stream_seq", sa.BigInteger(), nullable=False,
                                              server_default=sa.text("0")))
    op.create_table(
        "stream_events",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("data", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "user_id", "seq", name=op.f("pk_stream_events")),
    )
    op.create_index("ix_stream_events_created", "stream_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_stream_events_created", table_name="stream_events")
    op.drop_table("stream_events")
    with op.batch_alter_table("inbox_counters") as batch:
        batch.drop_column("stream_seq")
