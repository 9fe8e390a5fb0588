"""targeting: topics, segments over indexed attributes, broadcasts, scheduling, preferences

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from tidings.domain.segments import attribute_rows

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Ms = sa.BigInteger()


def _backfill_attributes() -> None:
    """Index the attributes of the users that exist already, a page of users at a time."""
    conn = op.get_bind()
    table = sa.table("user_attributes", sa.column("app_id"), sa.column("user_id"),
                     sa.column("path"), sa.column("kind"), sa.column("text"), sa.column("num"))
    after = ("", "")
    while True:
        page = conn.execute(sa.text(
            "SELECT app_id, id, attributes FROM users WHERE app_id > :app OR "
            "(app_id = :app AND id > :id) ORDER BY app_id, id LIMIT 2000"),
            {"app": after[0], "id": after[1]}).all()
        if not page:
            return
        batch: list[dict[str, object]] = []
        for app_id, user_id, attributes in page:
            if isinstance(attributes, str | bytes):
                attributes = orjson.loads(attributes)
            batch.extend({"app_id": app_id, "user_id": user_id, "path": path, "kind": kind,
                          "text": text, "num": num}
                         for path, kind, text, num in attribute_rows(attributes or {}))
        if batch:
            conn.execute(sa.insert(table), batch)
        after = (page[-1][0], page[-1][1])


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("quiet_hours", Json, nullable=True))
    op.create_index("ix_users_timezone", "users", ["app_id", "timezone"])
    op.create_index("ix_users_locale", "users", ["app_id", "locale"])
    op.create_index("ix_users_created", "users", ["app_id", "created_at"])
    op.create_table(
        "user_attributes",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("path", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("text", sa.String(length=256), nullable=True),
        sa.Column("num", sa.Double(), nullable=True),
    )
    op.create_index("ix_user_attributes_user", "user_attributes",
                    ["app_id", "user_id", "path", "kind", "text", "num"])
    op.create_index("ix_user_attributes_text", "user_attributes",
                    ["app_id", "path", "kind", "text", "user_id"])
    op.create_index("ix_user_attributes_num", "user_attributes",
                    ["app_id", "path", "kind", "num", "user_id"])
    op.create_table(
        "preferences",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("doc", Json, nullable=False),
        sa.Column("updated_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("app_id", "user_id", name=op.f("pk_preferences")),
    )
    op.create_table(
        "topics",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", Ms, nullable=False),
        sa.Column("updated_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("app_id", "key", name=op.f("pk_topics")),
    )
    op.create_table(
        "topic_subscriptions",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=False),
        sa.Column("created_at", Ms, nullable=False),
        sa.PrimaryKeyConstraint("app_id", "topic", "user_id", name=op.f("pk_topic_subscriptions")),
    )
    op.create_index("ix_topic_subscriptions_user", "topic_subscriptions",
                    ["app_id", "user_id", "topic"])
    op.create_index("ix_topic_subscriptions_recent", "topic_subscriptions",
                    ["app_id", "topic", "created_at", "user_id"])
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("audience", Json, nullable=False),
        sa.Column("message", Json, nullable=False),
        sa.Column("send_at", Ms, nullable=True),
        sa.Column("local_time", sa.String(length=5), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.String(length=256), nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=True),
        sa.Column("expanded", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", Ms, nullable=False),
        sa.Column("updated_at", Ms, nullable=False),
        sa.Column("due_at", Ms, nullable=True),
        sa.Column("lease_id", sa.String(length=26), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    op.create_index("ix_broadcasts_app", "broadcasts", ["app_id", "id"])
    op.create_index("ix_broadcasts_queue", "broadcasts", ["due_at"],
                    sqlite_where=sa.text("due_at IS NOT NULL"),
                    postgresql_where=sa.text("due_at IS NOT NULL"))
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("broadcast_id", sa.String(length=26), nullable=True))
    op.create_index("ix_notifications_scheduled", "notifications", ["send_at"],
                    sqlite_where=sa.text("status = 'scheduled'"),
                    postgresql_where=sa.text("status = 'scheduled'"))
    op.create_index("uq_notifications_broadcast", "notifications", ["broadcast_id", "user_id"],
                    unique=True, sqlite_where=sa.text("broadcast_id IS NOT NULL"),
                    postgresql_where=sa.text("broadcast_id IS NOT NULL"))
    _backfill_attributes()


def downgrade() -> None:
    # Before this revision nothing was scheduled: what still waits (or was canceled before it
    # went) would otherwise show in inboxes and never go.
    op.execute("DELETE FROM notifications WHERE status IN ('scheduled', 'canceled') "
               "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = notifications.id)")
    op.drop_index("uq_notifications_broadcast", table_name="notifications")
    op.drop_index("ix_notifications_scheduled", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("broadcast_id")
    op.drop_index("ix_broadcasts_queue", table_name="broadcasts")
    op.drop_index("ix_broadcasts_app", table_name="broadcasts")
    op.drop_table("broadcasts")
    op.drop_index("ix_topic_subscriptions_recent", table_name="topic_subscriptions")
    op.drop_index("ix_topic_subscriptions_user", table_name="topic_subscriptions")
    op.drop_table("topic_subscriptions")
    op.drop_table("topics")
    op.drop_table("preferences")
    op.drop_index("ix_user_attributes_num", table_name="user_attributes")
    op.drop_index("ix_user_attributes_text", table_name="user_attributes")
    op.drop_index("ix_user_attributes_user", table_name="user_attributes")
    op.drop_table("user_attributes")
    op.drop_index("ix_users_created", table_name="users")
    op.drop_index("ix_users_locale", table_name="users")
    op.drop_index("ix_users_timezone", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("quiet_hours")
