"""Tables of the SQL store. Times are integer milliseconds since the epoch (UTC): compact,
portable between SQLite and PostgreSQL, and cheap to compare in the hot queue and inbox
indexes."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import JSON

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")
Ms = BigInteger

apps = Table(
    "apps", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("routing", Json, nullable=False),
    Column("defaults", Json, nullable=False),
    Column("webhook", Json, nullable=True),
    Column("providers_secret", Text, nullable=True),
    Column("provider_names", Json, nullable=False),
    Column("webhook_secret", Text, nullable=True),  # encrypted, signs outgoing events
    Column("created_at", Ms, nullable=False),
    Column("updated_at", Ms, nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(26), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("app_id", String(64), nullable=True),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("signing_secret", Text, nullable=True),
    Column("created_at", Ms, nullable=False),
    Column("revoked_at", Ms, nullable=True),
    Index("ix_api_keys_app", "app_id"),
)

users = Table(
    "users", metadata,
    Column("app_id", String(64), primary_key=True),
    Column("id", String(256), primary_key=True),
    Column("email", String(254), nullable=True),
    Column("phone", String(16), nullable=True),
    Column("timezone", String(64), nullable=True),
    Column("locale", String(35), nullable=True),
    Column("attributes", Json, nullable=False),
    Column("created_at", Ms, nullable=False),
    Column("updated_at", Ms, nullable=False),
    # Set when a hard bounce or complaint said the address must not be mailed again.
    Column("email_undeliverable_at", Ms, nullable=True),
    Column("email_undeliverable_reason", String(300), nullable=True),
    # {"start": "22:00", "end": "07:00"}: push and SMS in that window wait for its end.
    Column("quiet_hours", Json, nullable=True),
    # Segments select on these as well as on the attributes.
    Index("ix_users_timezone", "app_id", "timezone"),
    Index("ix_users_locale", "app_id", "locale"),
    Index("ix_users_created", "app_id", "created_at"),
)

# Every attribute value of every user, one row per (path, value), so that a segment's
# conditions are index lookups whatever attribute they name: `kind` is s(tring), n(umber),
# b(oolean, in `num`), z (null), o(bject), a(rray), l(ong string, kept but not comparable).
user_attributes = Table(
    "user_attributes", metadata,
    Column("app_id", String(64), nullable=False),
    Column("user_id", String(256), nullable=False),
    Column("path", String(300), nullable=False),
    Column("kind", String(1), nullable=False),
    Column("text", String(256), nullable=True),
    Column("num", Double, nullable=True),
    # Each user's rows, whole: "has this user a value in this range", "has this user this
    # path" are read here without touching the table.
    Index("ix_user_attributes_user", "app_id", "user_id", "path", "kind", "text", "num"),
    # user_id last: one value's users come out in id order (a set that is cheap to build),
    # and "has this user this value" is one seek.
    Index("ix_user_attributes_text", "app_id", "path", "kind", "text", "user_id"),
    Index("ix_user_attributes_num", "app_id", "path", "kind", "num", "user_id"),
)

# What each user opted out of, per channel and per category (see domain.preferences).
preferences = Table(
    "preferences", metadata,
    Column("app_id", String(64), primary_key=True),
    Column("user_id", String(256), primary_key=True),
    Column("doc", Json, nullable=False),
    Column("updated_at", Ms, nullable=False),
)

topics = Table(
    "topics", metadata,
    Column("app_id", String(64), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("name", String(200), nullable=True),
    Column("created_at", Ms, nullable=False),
    Column("updated_at", Ms, nullable=False),
)

topic_subscriptions = Table(
    "topic_subscriptions", metadata,
    Column("app_id", String(64), primary_key=True),
    Column("topic", String(128), primary_key=True),
    Column("user_id", String(256), primary_key=True),
    Column("created_at", Ms, nullable=False),
    # A user's topics, and removing a user's subscriptions with the user.
    Index("ix_topic_subscriptions_user", "app_id", "user_id", "topic"),
    # Subscribers newest first (the list endpoint).
    Index("ix_topic_subscriptions_recent", "app_id", "topic", "created_at", "user_id"),
)

# A send to a topic, a segment or everyone, expanded by the worker in batches into one
# notification per recipient. `cursor` is the last user id expanded: a batch and the cursor
# move in one transaction, so a crash mid-expansion neither loses nor doubles a recipient.
broadcasts = Table(
    "broadcasts", metadata,
    Column("id", String(26), primary_key=True),
    Column("app_id", String(64), nullable=False),
    Column("audience", Json, nullable=False),
    Column("message", Json, nullable=False),
    Column("send_at", Ms, nullable=True),
    Column("local_time", String(5), nullable=True),
    Column("status", String(16), nullable=False),
    Column("cursor", String(256), nullable=True),
    Column("recipients", Integer, nullable=True),
    Column("expanded", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("created_at", Ms, nullable=False),
    Column("updated_at", Ms, nullable=False),
    Column("due_at", Ms, nullable=True),  # when a worker may take it on; NULL once ended
    Column("lease_id", String(26), nullable=True),
    Index("ix_broadcasts_app", "app_id", "id"),
    Index("ix_broadcasts_queue", "due_at",
          sqlite_where=text("due_at IS NOT NULL"), postgresql_where=text("due_at IS NOT NULL")),
)

devices = Table(
    "devices", metadata,
    Column("id", String(26), primary_key=True),
    Column("app_id", String(64), nullable=False),
    Column("user_id", String(256), nullable=False),
    Column("platform", String(32), nullable=False),
    Column("token", Text, nullable=False),
    Column("token_key", String(64), nullable=False),
    Column("provider", String(32), nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(200), nullable=True),
    Column("device_info", String(512), nullable=True),
    Column("app_version", String(64), nullable=True),
    Column("created_at", Ms, nullable=False),
    Column("last_seen_at", Ms, nullable=False),
    # What the provider knows this device by (an SNS endpoint ARN); cleared when the token
    # changes or the device is re-enabled, so the provider checks it again.
    Column("provider_ref", String(512), nullable=True),
    UniqueConstraint("app_id", "token_key", name="uq_devices_token"),
    Index("ix_devices_user", "app_id", "user_id"),
)

notifications = Table(
    "notifications", metadata,
    Column("id", String(26), primary_key=True),
    Column("app_id", String(64), nullable=False),
    Column("user_id", String(256), nullable=True),
    Column("to_address", String(254), nullable=True),
    Column("recipient", Json, nullable=False),
    Column("channels", Json, nullable=False),
    Column("channel_mask", Integer, nullable=False),
    Column("title", Text, nullable=True),
    Column("body", Text, nullable=True),
    Column("data", Json, nullable=False),
    Column("category", String(64), nullable=True),
    Column("created_at", Ms, nullable=False),
    Column("send_at", Ms, nullable=True),
    Column("status", String(20), nullable=False),
    Column("read_at", Ms, nullable=True),
    Column("sender_id", String(256), nullable=True),
    Column("ttl", Integer, nullable=True),
    Column("priority", String(8), nullable=False),
    # Sending options that only providers read: {"html", "collapse_key", "overrides"}.
    Column("options", Json, nullable=True),
    Column("broadcast_id", String(26), nullable=True),
    # The inbox: a user's notifications newest first, by id (ids sort by creation time).
    Index("ix_notifications_inbox", "app_id", "user_id", "id"),
    # Unread counts and read-all touch only the unread rows.
    Index("ix_notifications_unread", "app_id", "user_id", "id",
          sqlite_where=text("read_at IS NULL"), postgresql_where=text("read_at IS NULL")),
    Index("ix_notifications_address", "app_id", "to_address", "id",
          sqlite_where=text("to_address IS NOT NULL"), postgresql_where=text("to_address IS NOT NULL")),
    # The scheduler's queue: notifications waiting for their send_at.
    Index("ix_notifications_scheduled", "send_at",
          sqlite_where=text("status = 'scheduled'"), postgresql_where=text("status = 'scheduled'")),
    # One notification per recipient of a broadcast, whatever happens to its expansion.
    Index("uq_notifications_broadcast", "broadcast_id", "user_id", unique=True,
          sqlite_where=text("broadcast_id IS NOT NULL"),
          postgresql_where=text("broadcast_id IS NOT NULL")),
)

deliveries = Table(
    "deliveries", metadata,
    Column("id", String(26), primary_key=True),
    Column("notification_id", String(26), nullable=False),
    Column("app_id", String(64), nullable=False),
    Column("user_id", String(256), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("target", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("provider_message_id", String(256), nullable=True),
    Column("created_at", Ms, nullable=False),
    Column("updated_at", Ms, nullable=False),
    # When a worker may claim the delivery: the next attempt while pending, the lease expiry
    # while sending, NULL once final. The queue index holds only the open rows.
    Column("due_at", Ms, nullable=True),
    Column("lease_id", String(26), nullable=True),
    Index("ix_deliveries_notification", "notification_id"),
    # Receipts (Twilio status callbacks, SES/SNS events) find a delivery by the provider's id.
    Index("ix_deliveries_provider_message", "provider_message_id",
          sqlite_where=text("provider_message_id IS NOT NULL"),
          postgresql_where=text("provider_message_id IS NOT NULL")),
    Index("ix_deliveries_queue", "due_at",
          sqlite_where=text("due_at IS NOT NULL"), postgresql_where=text("due_at IS NOT NULL")),
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("scope", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", Ms, nullable=False),
    Column("expires_at", Ms, nullable=False),
    Index("ix_idempotency_keys_expires", "expires_at"),
)

# Unread counts kept exact as notifications are written and read: counting a user's unread
# rows grew with the user (a heavy inbox of 40,000 unread cost milliseconds on every page).
inbox_counters = Table(
    "inbox_counters", metadata,
    Column("app_id", String(64), primary_key=True),
    Column("user_id", String(256), primary_key=True),
    Column("unread", Integer, nullable=False),
    Column("unread_push", Integer, nullable=False),
    Column("unread_in_app", Integer, nullable=False),
    Column("unread_sms", Integer, nullable=False),
    Column("unread_email", Integer, nullable=False),
    # The user's stream: the number of the last event (stream_events.seq), taken on this row so
    # that one user's events are numbered in commit order, without holes.
    Column("stream_seq", BigInteger, nullable=False, server_default=text("0")),
)

# Each user's stream of inbox changes, kept for a while so that a client that was away can be
# brought up to date (`Last-Event-ID`, `?after=`).
stream_events = Table(
    "stream_events", metadata,
    Column("app_id", String(64), primary_key=True),
    Column("user_id", String(256), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("data", Json, nullable=False),
    Column("created_at", Ms, nullable=False),
    Index("ix_stream_events_created", "created_at"),
)

# Outgoing app webhooks (Standard Webhooks): an outbox written in the transaction of the change
# it reports, sent by the worker with retries on its own schedule.
webhook_events = Table(
    "webhook_events", metadata,
    Column("id", String(26), primary_key=True),
    Column("app_id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("payload", Json, nullable=False),
    Column("created_at", Ms, nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("updated_at", Ms, nullable=False),
    Column("due_at", Ms, nullable=True),  # NULL once sent or given up
    Column("lease_id", String(26), nullable=True),
    Index("ix_webhook_events_queue", "due_at",
          sqlite_where=text("due_at IS NOT NULL"), postgresql_where=text("due_at IS NOT NULL")),
    Index("ix_webhook_events_app", "app_id", "id"),
)
