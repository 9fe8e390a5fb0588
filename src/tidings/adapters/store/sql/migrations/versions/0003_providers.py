"""providers: device references, sending options, receipts, bounces and the webhook outbox

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("apps", sa.Column("webhook_secret", sa.Text(), nullable=True))
    op.add_column("users", sa.Column("email_undeliverable_at", sa.BigInteger(), nullable=True))
    op.add_column("users", sa.Column("email_undeliverable_reason", sa.String(length=300),
                                     nullable=True))
    op.add_column("devices", sa.Column("provider_ref", sa.String(length=512), nullable=True))
    op.add_column("notifications", sa.Column("options", Json, nullable=True))
    op.create_index("ix_deliveries_provider_message", "deliveries", ["provider_message_id"],
                    sqlite_where=sa.text("provider_message_id IS NOT NULL"),
                    postgresql_where=sa.text("provider_message_id IS NOT NULL"))
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=True),
        sa.Column("lease_id", sa.String(length=26), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    op.create_index("ix_webhook_events_queue", "webhook_events", ["due_at"],
                    sqlite_where=sa.text("due_at IS NOT NULL"),
                    postgresql_where=sa.text("due_at IS NOT NULL"))
    op.create_index("ix_webhook_events_app", "webhook_events", ["app_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_app", table_name="webhook_events")
    op.drop_index("ix_webhook_events_queue", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_index("ix_deliveries_provider_message", table_name="deliveries")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("options")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("provider_ref")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_undeliverable_reason")
        batch.drop_column("email_undeliverable_at")
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("webhook_secret")
