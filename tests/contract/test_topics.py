"""The TopicRepo contract, on every store through the port alone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tidings.adapters.store.sql import topics as sql_topics
from tidings.domain.apps import App
from tidings.domain.errors import NotFound
from tidings.domain.topics import Topic, epoch_ms

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def topic(key: str = "news", app_id: str = "acme", name: str | None = "News",
          at: datetime = NOW) -> Topic:
    return Topic(app_id=app_id, key=key, name=name, created_at=at, updated_at=at)


async def put(store, *topics: Topic) -> list[bool]:
    async with store.transaction() as tx:
        return [await tx.topics.put(t) for t in topics]


async def subscribe(store, key: str, *users: str, app_id: str = "acme",
                    at: datetime = NOW) -> list[bool]:
    async with store.transaction() as tx:
        return [await tx.topics.subscribe(app_id, key, u, at) for u in users]


async def test_put_creates_then_updates_the_name(store):
    assert await put(store, topic()) == [True]
    later = NOW + timedelta(minutes=5)
    assert await put(store, topic(name="Daily news", at=later)) == [False]
    async with store.reader() as tx:
        got = await tx.topics.get("acme", "news")
        assert await tx.topics.get("acme", "missing") is None
    assert got is not None
    assert (got.name, got.created_at, got.updated_at) == ("Daily news", NOW, later)
    assert await put(store, topic(name=None, at=later)) == [False]
    async with store.reader() as tx:
        cleared = await tx.topics.get("acme", "news")
    assert cleared is not None and cleared.name is None


async def test_list_pages_by_key(store):
    await put(store, *(topic(k) for k in ("c", "a", "e", "b", "d")), topic("zz", app_id="other"))
    async with store.reader() as tx:
        first = await tx.topics.list("acme", 2, None)
        second = await tx.topics.list("acme", 2, first[-1].key)
        rest = await tx.topics.list("acme", 10, second[-1].key)
    assert [t.key for t in first] == ["a", "b"]
    assert [t.key for t in second] == ["c", "d"]
    assert [t.key for t in rest] == ["e"]


async def test_delete_removes_the_topic_and_its_subscriptions(store):
    await put(store, topic("news"), topic("sport"))
    await subscribe(store, "news", "u1", "u2")
    await subscribe(store, "sport", "u1")
    async with store.transaction() as tx:
        assert await tx.topics.delete("acme", "news") is True
        assert await tx.topics.delete("acme", "news") is False
    async with store.reader() as tx:
        assert await tx.topics.get("acme", "news") is None
        assert await tx.topics.count("acme", "news") == 0
        assert await tx.topics.subscriber_ids("acme", "news", None, 10) == []
        assert [s.topic for s in await tx.topics.of_user("acme", "u1", 10, None)] == ["sport"]
    # A topic made again under the same key starts empty.
    await put(store, topic("news"))
    async with store.reader() as tx:
        assert await tx.topics.count("acme", "news") == 0


async def test_subscribe_twice_and_unsubscribe(store):
    await put(store, topic())
    assert await subscribe(store, "news", "u1") == [True]
    assert await subscribe(store, "news", "u1", at=NOW + timedelta(hours=1)) == [False]
    async with store.reader() as tx:
        (sub,) = await tx.topics.subscribers("acme", "news", 10, None)
        assert await tx.topics.count("acme", "news") == 1
    assert (sub.app_id, sub.topic, sub.user_id, sub.created_at) == ("acme", "news", "u1", NOW)
    async with store.transaction() as tx:
        assert await tx.topics.unsubscribe("acme", "news", "u1") is True
        assert await tx.topics.unsubscribe("acme", "news", "u1") is False
    async with store.reader() as tx:
        assert await tx.topics.count("acme", "news") == 0


async def test_subscribing_to_a_missing_topic_is_not_found(store):
    with pytest.raises(NotFound):
        await subscribe(store, "ghost", "u1")
    async with store.reader() as tx:
        assert await tx.topics.of_user("acme", "u1", 10, None) == []


async def test_subscribers_newest_first_in_pages(store):
    await put(store, topic())
    # Three in the same millisecond: the user id breaks the tie, and no page skips or repeats.
    await subscribe(store, "news", "a", "b", "c")
    await subscribe(store, "news", "d", at=NOW + timedelta(seconds=1))
    await subscribe(store, "news", "e", at=NOW - timedelta(seconds=1))
    seen = []
    before = None
    async with store.reader() as tx:
        while True:
            page = await tx.topics.subscribers("acme", "news", 2, before)
            if not page:
                break
            seen.extend(page)
            before = (epoch_ms(page[-1].created_at), page[-1].user_id)
    assert [s.user_id for s in seen] == ["d", "c", "b", "a", "e"]
    assert seen[0].created_at == NOW + timedelta(seconds=1)


async def test_subscriber_ids_in_user_order_after_a_cursor(store):
    await put(store, topic(), topic("other"), topic(app_id="globex"))
    users = [f"user-{i:03d}" for i in range(25)]
    await subscribe(store, "news", *reversed(users))
    await subscribe(store, "other", "user-000a")
    await subscribe(store, "news", "user-000b", app_id="globex")
    got: list[str] = []
    after = None
    async with store.reader() as tx:
        while True:
            batch = await tx.topics.subscriber_ids("acme", "news", after, 10)
            assert len(batch) <= 10
            if not batch:
                break
            got.extend(batch)
            after = batch[-1]
    assert got == users
    async with store.reader() as tx:
        assert await tx.topics.subscriber_ids("acme", "news", "user-019", 3) == [
            "user-020", "user-021", "user-022"]
        assert await tx.topics.subscriber_ids("acme", "news", "user-024", 3) == []


async def test_of_user_lists_its_topics_by_key_in_pages(store):
    keys = ["t5", "t1", "t3", "t2", "t4"]
    await put(store, *(topic(k) for k in keys))
    for k in keys:
        await subscribe(store, k, "ada")
    await subscribe(store, "t1", "bob")
    async with store.reader() as tx:
        first = await tx.topics.of_user("acme", "ada", 3, None)
        rest = await tx.topics.of_user("acme", "ada", 3, first[-1].topic)
        bob = await tx.topics.of_user("acme", "bob", 10, None)
    assert [s.topic for s in first] == ["t1", "t2", "t3"]
    assert [s.topic for s in rest] == ["t4", "t5"]
    assert all(s.user_id == "ada" and s.created_at == NOW for s in first + rest)
    assert [(s.topic, s.user_id) for s in bob] == [("t1", "bob")]


async def test_count(store):
    await put(store, topic(), topic("empty"))
    await subscribe(store, "news", *(f"u{i}" for i in range(7)))
    async with store.reader() as tx:
        assert await tx.topics.count("acme", "news") == 7
        assert await tx.topics.count("acme", "empty") == 0
        assert await tx.topics.count("acme", "missing") == 0


async def test_apps_do_not_see_each_other(store):
    await put(store, topic(name="Acme news"), topic(app_id="globex", name="Globex news"))
    await subscribe(store, "news", "u1", "u2")
    await subscribe(store, "news", "u3", app_id="globex")
    async with store.reader() as tx:
        acme = await tx.topics.get("acme", "news")
        globex = await tx.topics.get("globex", "news")
        assert await tx.topics.subscriber_ids("globex", "news", None, 10) == ["u3"]
        assert [s.user_id for s in await tx.topics.subscribers("globex", "news", 10, None)] == [
            "u3"]
        assert await tx.topics.of_user("globex", "u1", 10, None) == []
        assert [t.key for t in await tx.topics.list("globex", 10, None)] == ["news"]
    assert acme is not None and acme.name == "Acme news"
    assert globex is not None and globex.name == "Globex news"
    async with store.transaction() as tx:
        assert await tx.topics.unsubscribe("globex", "news", "u1") is False
        assert await tx.topics.delete("globex", "news") is True
    async with store.reader() as tx:
        assert await tx.topics.count("acme", "news") == 2
        with pytest.raises(NotFound):
            await tx.topics.subscribe("globex", "news", "u1", NOW)


async def test_forget_a_user(store):
    await put(store, topic("news"), topic("sport"), topic("news", app_id="globex"))
    await subscribe(store, "news", "u1", "u2")
    await subscribe(store, "sport", "u1")
    await subscribe(store, "news", "u1", app_id="globex")
    async with store.transaction() as tx:
        for app_id in ("acme", "globex"):
            await tx.users.ensure(app_id, "u1", NOW)
    async with store.transaction() as tx:
        assert await tx.users.delete("acme", "u1")
    async with store.reader() as tx:
        assert await tx.topics.of_user("acme", "u1", 10, None) == []
        assert await tx.topics.subscriber_ids("acme", "news", None, 10) == ["u2"]
        assert await tx.topics.get("acme", "sport") is not None  # topics stay
        assert [s.topic for s in await tx.topics.of_user("globex", "u1", 10, None)] == ["news"]


async def test_forget_an_app(store):
    async with store.transaction() as tx:
        for app_id in ("acme", "globex"):
            await tx.apps.add(App(id=app_id, name=app_id, created_at=NOW, updated_at=NOW))
    await put(store, topic("news"), topic("sport"), topic("news", app_id="globex"))
    await subscribe(store, "news", "u1", "u2")
    await subscribe(store, "news", "u1", app_id="globex")
    async with store.transaction() as tx:
        assert await tx.apps.delete("acme")
    async with store.reader() as tx:
        assert await tx.topics.list("acme", 10, None) == []
        assert await tx.topics.count("acme", "news") == 0
        assert await tx.topics.of_user("acme", "u1", 10, None) == []
        assert await tx.topics.count("globex", "news") == 1
        assert [t.key for t in await tx.topics.list("globex", 10, None)] == ["news"]


async def test_concurrent_subscribes_of_the_same_user_do_not_fail(store):
    await put(store, topic())

    async def one() -> bool:
        async with store.transaction() as tx:
            created = await tx.topics.subscribe("acme", "news", "u1", NOW)
            await asyncio.sleep(0.01)  # keep the transaction open while the others insert
            return created

    results = await asyncio.gather(*(one() for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    async with store.reader() as tx:
        assert await tx.topics.count("acme", "news") == 1


async def test_concurrent_first_puts_of_a_topic_do_not_fail(store):
    async def one(i: int) -> bool:
        async with store.transaction() as tx:
            created = await tx.topics.put(topic(name=f"name {i}"))
            await asyncio.sleep(0.01)
            return created

    results = await asyncio.gather(*(one(i) for i in range(4)))
    assert sorted(results) == [False, False, False, True]


@pytest.mark.parametrize("deleted_first", [True, False], ids=["delete-first", "subscribe-first"])
async def test_a_subscribe_racing_a_delete_leaves_no_subscription(store, deleted_first):
    """Whichever commits first, no subscription outlives its topic."""
    await put(store, topic())
    started = asyncio.Event()

    async def delete() -> None:
        if not deleted_first:
            await started.wait()
        async with store.transaction() as tx:
            started.set()
            await tx.topics.delete("acme", "news")
            await asyncio.sleep(0.05)

    async def sub() -> bool:
        if deleted_first:
            await started.wait()
        async with store.transaction() as tx:
            started.set()
            created = await tx.topics.subscribe("acme", "news", "u1", NOW)
            await asyncio.sleep(0.05)
            return created

    outcome = await asyncio.gather(delete(), sub(), return_exceptions=True)
    if deleted_first:
        assert isinstance(outcome[1], NotFound)
    else:
        assert outcome == [None, True]
    async with store.reader() as tx:
        assert await tx.topics.get("acme", "news") is None
        assert await tx.topics.of_user("acme", "u1", 10, None) == []
        assert await tx.topics.count("acme", "news") == 0


async def test_sqlite_walks_the_indexes(tmp_path):
    """Without statistics SQLite picks indexes by rule; these are the plans the hot reads need
    (a broadcast's expansion above all: the primary key, in user order, no sort)."""
    from sqlalchemy.dialects import sqlite

    from tidings.adapters.store.sql.store import SqlStore

    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}")
    await store.migrate()
    params = {"app": "a", "key": "k", "user": "u", "after": "", "before_ms": 1,
              "before_user": "u", "limit": 5, "param_1": 0}

    def plan(raw, statement) -> str:
        sql = statement.text if hasattr(statement, "text") else str(
            statement.compile(dialect=sqlite.dialect(paramstyle="named")))
        return " ".join(r[-1] for r in raw.execute("EXPLAIN QUERY PLAN " + sql, params))

    try:
        async with store.reader() as tx:
            raw = tx.connection._conn.connection.driver_connection
            ids = plan(raw, sql_topics._SUBSCRIBER_IDS)
            recent = plan(raw, sql_topics._SUBSCRIBERS)
            mine = plan(raw, sql_topics._OF_USER_SQLITE)
    finally:
        await store.close()
    assert "sqlite_autoindex_topic_subscriptions_1 (app_id=? AND topic=? AND user_id>?)" in ids
    assert "ix_topic_subscriptions_recent" in recent and "(created_at,user_id)<(?,?)" in recent
    assert "ix_topic_subscriptions_user (app_id=? AND user_id=? AND topic>?)" in mine
    assert "TEMP B-TREE" not in ids + recent + mine  # no sort: the index gives the order
