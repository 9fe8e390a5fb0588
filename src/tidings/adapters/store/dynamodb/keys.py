"""Every key of the single table, in one place (docs/dynamodb.md explains each).

Free-form parts (user ids, idempotency keys, addresses) are escaped, so that no value can end
one key and begin another: the user `x#WS` must not share a partition with the user `x`'s
WebSocket connections. `%` and `#` become `%25` and `%23`; ids and app ids never contain them.
Numbers in sort keys are zero-padded so that text order is numeric order."""

from __future__ import annotations

import zlib


def part(value: str) -> str:
    return value.replace("%", "%25").replace("#", "%23")


def num(value: int, width: int = 20) -> str:
    return str(value).zfill(width)


# Apps, keys ---------------------------------------------------------------------------------
APPS = "APPS"  # gsi1pk of every app, gsi1sk = app id


def app(app_id: str) -> str:
    return f"APP#{app_id}"


def app_keys(app_id: str | None) -> str:
    """The partition of an app's keys (`-`: the operator's admin keys; no app id is `-`)."""
    return f"A#{app_id or '-'}#KEYS"


def key_hash(digest: str) -> str:
    return f"KEY#{digest}"


def key_id(kid: str) -> str:
    return f"KEYID#{kid}"


APP_ITEM = "APP"  # sk of an app's item (pk = app(id))
KEY_BY_HASH = "KEY"  # sk of a key's copy under key_hash(digest)
KEY_BY_ID = "KEYID"  # sk of a key's copy under key_id(kid); the copy under app_keys has sk = id


# Users and what lives in a user's partition ---------------------------------------------------
def users(app_id: str) -> str:
    """The partition of an app's profiles, sk = part(user id): strongly consistent and listed
    in id order."""
    return f"A#{app_id}#USERS"


def user(app_id: str, user_id: str) -> str:
    """A user's partition: devices (`DEV#`), inbox (`N#`), counters (`COUNT`), preferences
    (`PREF`), subscriptions (`SUB#`)."""
    return f"A#{app_id}#U#{part(user_id)}"


def address(app_id: str, raw: str) -> str:
    """The inbox partition of notifications sent to a raw address instead of a user."""
    return f"A#{app_id}#ADDR#{part(raw)}"


def stream(app_id: str, user_id: str) -> str:
    return f"A#{app_id}#U#{part(user_id)}#S"


def connections(app_id: str, user_id: str) -> str:
    return f"A#{app_id}#U#{part(user_id)}#WS"


COUNT = "COUNT"
PREF = "PREF"


def device_sk(device_id: str) -> str:
    return f"DEV#{device_id}"


def inbox_sk(notification_id: str) -> str:
    return f"N#{notification_id}"


def subscription_sk(topic: str) -> str:
    return f"SUB#{topic}"


def connection_pointer(connection_id: str) -> str:
    """The pointer from a WebSocket connection to its user (sk CONNECTION_POINTER)."""
    return f"WS#{connection_id}"


CONNECTION_POINTER = "WS"


# Devices ---------------------------------------------------------------------------------------
def token(app_id: str, token_key: str) -> str:
    """One item per paired token: created with attribute_not_exists, so a token has one owner."""
    return f"A#{app_id}#TOKEN#{part(token_key)}"


def device(app_id: str, device_id: str) -> str:
    """A pointer from a device id to its owner's partition."""
    return f"A#{app_id}#DEVICE#{device_id}"


# Notifications and deliveries -----------------------------------------------------------------
def notification(app_id: str, notification_id: str) -> str:
    """A notification's own partition: the pointer `N` to its inbox item, and its deliveries
    (`D#<delivery id>`, the items the outbox stream forwards to the queue)."""
    return f"A#{app_id}#N#{notification_id}"


POINTER = "N"


def delivery_sk(delivery_id: str) -> str:
    return f"D#{delivery_id}"


def provider_message(app_id: str, provider: str, message_id: str) -> str:
    """gsi2pk of a sent delivery: a provider's receipt names the message it is about."""
    return f"A#{app_id}#PMID#{provider}#{part(message_id)}"


# Topics, broadcasts, idempotency, app events -------------------------------------------------
def topics(app_id: str) -> str:
    return f"A#{app_id}#TOPICS"


def topic(app_id: str, key: str) -> str:
    """A topic's subscribers, sk = part(user id)."""
    return f"A#{app_id}#T#{key}"


def topic_newest(app_id: str, key: str) -> str:
    """gsi1pk of a topic's subscriptions, newest last by gsi1sk = subscribed(ms, user id)."""
    return f"{topic(app_id, key)}#NEW"


def subscribed(at_ms: int, user_id: str) -> str:
    """In milliseconds, the unit of the subscribers' cursor (see domain.topics): the index
    orders (ms, user) as the cursor does."""
    return f"{num(at_ms)}#{part(user_id)}"


def broadcasts(app_id: str) -> str:
    return f"A#{app_id}#BC"


def recipients(app_id: str, broadcast_id: str) -> str:
    """One item per recipient a broadcast has reached: a second expansion cannot double one."""
    return f"A#{app_id}#BC#{broadcast_id}"


def idempotency(scope: str, key: str) -> str:
    return f"IDEM#{part(scope)}#{part(key)}"


IDEMPOTENCY_ITEM = "IDEM"  # sk of an idempotency record


def idempotency_scope(scope: str) -> str:
    """The beginning of the pk of every idempotency record of a scope (an app)."""
    return f"IDEM#{part(scope)}#"


def events(app_id: str) -> str:
    return f"A#{app_id}#EV"


def event(event_id: str) -> str:
    """gsi2pk of an app event: an outcome names the event by id alone, not by app."""
    return f"EV#{event_id}"


def broadcast(broadcast_id: str) -> str:
    """gsi2pk of a broadcast: the sweep names the broadcast by id alone, not by app."""
    return f"BC#{broadcast_id}"


# Sparse index partitions of work that comes due -------------------------------------------
DUE_DELIVERIES = "DUE#D"
DUE_SCHEDULED = "DUE#N"
DUE_BROADCASTS = "DUE#B"
DUE_EVENTS = "DUE#E"
# App events sent or given up, by when (gsi1sk = due(updated, id)): what `purge` forgets.
DONE_EVENTS = "DONE#E"
# Idempotency records by expiry (gsi1sk = due(expires, scope, key)): what `purge` forgets.
EXPIRING_IDEMPOTENCY = "EXP#I"
# Journals of large units by the end of their writer's lease (journal.py).
JOURNALS = "DUE#J"


def journal(journal_id: str) -> str:
    return f"JOURNAL#{journal_id}"


def due(at_us: int, *rest: str) -> str:
    return "#".join([num(at_us), *rest])


# The partitions above that take an index write for every delivery, app event, scheduled
# notification or keyed request are spread over SHARDS partitions by the item's id: one
# partition key of an index takes about 1,000 writes a second, and a table write whose index
# write is throttled is throttled too. A reader queries every shard (`shards`).
SHARDS = 16


def sharded(partition: str, item_id: str) -> str:
    """The shard of `partition` that the item named `item_id` is listed in."""
    return f"{partition}#{zlib.crc32(item_id.encode()) % SHARDS:02d}"


def shards(partition: str) -> list[str]:
    return [f"{partition}#{n:02d}" for n in range(SHARDS)]


def in_shards(value: str | None, partition: str) -> bool:
    """Whether `value` is one of `partition`'s shards."""
    return value is not None and value.startswith(partition + "#") and \
        len(value) == len(partition) + 3


# Stream events by day, for their purge (gsi2; see stream.py) ---------------------------------
STREAM_PURGE = "STREAMPURGE"  # the purge's progress (sk `P`): the first day it has to look at
STREAM_SHARDS = 8


def stream_day(day: str, shard: int) -> str:
    """The gsi2 partition of the stream events of one UTC day (`yyyy-mm-dd`), spread by user
    over STREAM_SHARDS partitions so that no one index partition takes every event's write."""
    return f"STREAMDAY#{day}#{shard}"


def stream_shard(app_id: str, user_id: str) -> int:
    return zlib.crc32(f"{app_id}#{user_id}".encode()) % STREAM_SHARDS
