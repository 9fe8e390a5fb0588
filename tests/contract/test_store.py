"""The Store contract: every store adapter (SQLite, PostgreSQL, and later DynamoDB) passes
these same tests through the port alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tidings.domain.apps import ApiKey, App, CredentialKind
from tidings.domain.delivery import Claim, Outcome
from tidings.domain.devices import Device
from tidings.domain.errors import IdempotencyRace, StoreConflict
from tidings.domain.idempotency import IdempotencyRecord
from tidings.domain.ids import new_id
from tidings.domain.notifications import DeliveryStatus, Message
from tidings.domain.planning import Recipient, plan_notification
from tidings.domain.segments import from_query
from tidings.domain.users import AttributeEquals, User, parse_query_value
from tidings.ports import InboxQuery

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def app(app_id: str = "acme") -> App:
    return App(id=app_id, name=app_id, created_at=NOW, updated_at=NOW)


def device(user_id: str = "u1", token: str = "tok", app_id: str = "acme") -> Device:
    return Device(id=new_id(), app_id=app_id, user_id=user_id, platform="android", token=token,
                  token_key="k-" + token, provider=None, enabled=True, device_info=None,
                  app_version=None, created_at=NOW, last_seen_at=NOW)


async def seed_app(store, app_id: str = "acme") -> App:
    a = app(app_id)
    async with store.transaction() as tx:
        await tx.apps.add(a)
    return a


async def test_apps_round_trip_and_conflict(store):
    await seed_app(store)
    async with store.reader() as tx:
        got = await tx.apps.get("acme")
    assert got is not None and got.name == "acme" and got.created_at == NOW
    with pytest.raises(StoreConflict):
        async with store.transaction() as tx:
            await tx.apps.add(app("acme"))
    async with store.transaction() as tx:
        got.name = "Acme Inc"
        got.routing = {"push": {"ios": "apns"}}
        await tx.apps.update(got)
    async with store.reader() as tx:
        again = await tx.apps.get("acme")
        listed = await tx.apps.list(10, None)
    assert again.name == "Acme Inc" and again.routing == {"push": {"ios": "apns"}}
    assert [a.id for a in listed] == ["acme"]


async def test_a_failed_transaction_writes_nothing(store):
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.apps.add(app("ghost"))
            raise RuntimeError("boom")
    async with store.reader() as tx:
        assert await tx.apps.get("ghost") is None


async def test_keys_by_hash_active_and_revoke(store):
    await seed_app(store)
    key = ApiKey(id=new_id(), kind=CredentialKind.APP, app_id="acme", prefix="tds_abc",
                 key_hash="h1", signing_secret="sealed", created_at=NOW)
    admin = ApiKey(id=new_id(), kind=CredentialKind.ADMIN, app_id=None, prefix="tda_abc",
                   key_hash="h2", signing_secret=None, created_at=NOW)
    async with store.transaction() as tx:
        await tx.keys.add(key)
        await tx.keys.add(admin)
    async with store.reader() as tx:
        assert (await tx.keys.by_hash("h1")).id == key.id
        assert [k.id for k in await tx.keys.active("acme")] == [key.id]
        assert [k.id for k in await tx.keys.active(None)] == [admin.id]
    async with store.transaction() as tx:
        assert await tx.keys.revoke(key.id, NOW)
        assert not await tx.keys.revoke(key.id, NOW)
    async with store.reader() as tx:
        assert await tx.keys.active("acme") == []
        assert (await tx.keys.by_hash("h1")).revoked_at == NOW


async def test_users_upsert_filter_and_delete_everything(store):
    await seed_app(store)
    async with store.transaction() as tx:
        assert await tx.users.upsert(User("acme", "u1", email="a@b.co", attributes={
            "plan": "pro", "seats": 5, "beta": True}, created_at=NOW, updated_at=NOW))
        assert await tx.users.upsert(User("acme", "u2", attributes={"plan": "free", "seats": "5"},
                                          created_at=NOW, updated_at=NOW))
        assert not await tx.users.upsert(User("acme", "u1", email="c@d.co", attributes={
            "plan": "pro", "seats": 5, "beta": True}, created_at=NOW, updated_at=NOW))
        await tx.users.ensure("acme", "u3", NOW)
        await tx.users.ensure("acme", "u1", NOW)

    async def ids(*filters):
        async with store.reader() as tx:
            return [u.id for u in await tx.users.list("acme", from_query(list(filters)), 50, None)]

    assert await ids() == ["u1", "u2", "u3"]
    assert await ids(AttributeEquals("plan", parse_query_value("pro"))) == ["u1"]
    assert await ids(AttributeEquals("seats", parse_query_value("5"))) == ["u1", "u2"]
    assert await ids(AttributeEquals("beta", parse_query_value("true"))) == ["u1"]
    assert await ids(AttributeEquals("plan", parse_query_value("pro")),
                     AttributeEquals("seats", parse_query_value("6"))) == []
    async with store.reader() as tx:
        assert (await tx.users.get("acme", "u1")).email == "c@d.co"
        assert (await tx.users.list("acme", None, 2, "u1"))[0].id == "u2"

    # Deleting a user takes its devices and inbox along.
    n = plan_notification(app(), Recipient(user_id="u1"), Message(("in_app",), title="t"), NOW)
    async with store.transaction() as tx:
        await tx.devices.add(device("u1"))
        await tx.notifications.add_many([n])
    async with store.transaction() as tx:
        assert await tx.users.delete("acme", "u1")
        assert not await tx.users.delete("acme", "nobody")
    async with store.reader() as tx:
        assert await tx.users.get("acme", "u1") is None
        assert await tx.devices.for_user("acme", "u1") == []
        assert await tx.notifications.get("acme", n.id) is None


async def test_a_token_is_paired_once_per_app(store):
    await seed_app(store)
    await seed_app(store, "globex")
    async with store.transaction() as tx:
        await tx.devices.add(device("u1", "same"))
        await tx.devices.add(device("u9", "same", app_id="globex"))  # another app: fine
    with pytest.raises(StoreConflict):
        async with store.transaction() as tx:
            await tx.devices.add(device("u2", "same"))
    async with store.reader() as tx:
        found = await tx.devices.by_token("acme", "k-same")
        by_users = await tx.devices.for_users("acme", ["u1", "u2"])
    assert found.user_id == "u1"
    assert [d.id for d in by_users["u1"]] == [found.id] and by_users["u2"] == []


async def test_inbox_pages_counts_and_reads(store):
    await seed_app(store)
    a = app()
    made = []
    for i in range(7):
        channels = ("in_app",) if i % 2 == 0 else ("push",)
        made.append(plan_notification(a, Recipient(user_id="u1"), Message(channels, title=str(i)),
                                      NOW + timedelta(seconds=i)))
    other = plan_notification(a, Recipient(user_id="u2"), Message(("in_app",), title="x"), NOW)
    async with store.transaction() as tx:
        await tx.notifications.add_many([*made, other])

    async with store.reader() as tx:
        page = await tx.notifications.inbox("acme", "u1", InboxQuery(), 3)
        assert [n.title for n in page] == ["6", "5", "4"]
        assert page[0].deliveries and page[0].deliveries[0].channel == "in_app"
        rest = await tx.notifications.inbox("acme", "u1", InboxQuery(before_id=page[-1].id), 10)
        assert [n.title for n in rest] == ["3", "2", "1", "0"]
        in_app = await tx.notifications.inbox("acme", "u1", InboxQuery(channel="in_app"), 10)
        assert [n.title for n in in_app] == ["6", "4", "2", "0"]
        # A cursor older than `since` (a client that moved `since` on): an empty range.
        empty = InboxQuery(after_id=made[5].id, before_id=made[2].id)
        assert await tx.notifications.inbox("acme", "u1", empty, 10) == []
        assert await tx.notifications.unread_count("acme", "u1", None) == 7
        assert await tx.notifications.unread_count("acme", "u1", "push") == 3

    async with store.transaction() as tx:
        first, first_read = await tx.notifications.mark_read("acme", "u1", made[6].id, NOW)
        again, again_read = await tx.notifications.mark_read("acme", "u1", made[6].id,
                                                             NOW + timedelta(hours=1))
        assert first.read_at == NOW and again.read_at == NOW  # the first read_at is kept
        assert first_read and not again_read
        assert await tx.notifications.mark_read("acme", "u2", made[5].id, NOW) is None
    async with store.reader() as tx:
        unread = await tx.notifications.inbox("acme", "u1", InboxQuery(unread_only=True), 10)
        assert len(unread) == 6
    async with store.transaction() as tx:
        assert await tx.notifications.mark_all_read("acme", "u1", "in_app", None, NOW) == 3
        # Older than made[3] and still unread: only made[1] (0 and 2 were read with in_app).
        assert await tx.notifications.mark_all_read("acme", "u1", None, made[3].id, NOW) == 1
    async with store.reader() as tx:
        assert await tx.notifications.unread_count("acme", "u1", None) == 2
        assert await tx.notifications.unread_count("acme", "u2", None) == 1


async def test_by_address(store):
    await seed_app(store)
    a = app()
    sms = [plan_notification(a, Recipient(phone="+393331234567"), Message(("sms",), body=str(i)),
                             NOW) for i in range(3)]
    async with store.transaction() as tx:
        await tx.notifications.add_many(sms)
    async with store.reader() as tx:
        got = await tx.notifications.by_address("acme", "+393331234567", 2, None)
        assert [n.body for n in got] == ["2", "1"]
        assert got[0].deliveries[0].target == "+393331234567"
        assert await tx.notifications.by_address("globex", "+393331234567", 2, None) == []


async def _queue_one(store, user: str = "u1") -> tuple[str, str]:
    await seed_app(store)
    d = device(user, "tok-" + user)
    n = plan_notification(app(), Recipient(user_id=user, devices=(d,)), Message(("push",), title="t"),
                          NOW)
    async with store.transaction() as tx:
        await tx.devices.add(d)
        await tx.notifications.add_many([n])
    return n.id, d.id


async def _claim(store, at: datetime, lease: float = 60) -> list[Claim]:
    async with store.transaction() as tx:
        return await tx.deliveries.claim(at, 100, lease, new_id())


def _outcome(c: Claim, status: DeliveryStatus, at: datetime, **kw) -> Outcome:
    return Outcome(c.delivery_id, c.notification_id, c.lease_id, status, at, kw.pop("due_at", None),
                   **kw)


async def test_claim_lease_expiry_and_record(store):
    note_id, device_id = await _queue_one(store)
    claims = await _claim(store, NOW)
    assert len(claims) == 1 and claims[0].attempts == 1
    msg = claims[0].message
    assert msg.target == "tok-u1" and msg.platform == "android" and msg.device_id == device_id
    assert await _claim(store, NOW + timedelta(seconds=30)) == []  # leased
    # The lease expires (the worker died): it is claimable again, as attempt 2.
    again = await _claim(store, NOW + timedelta(seconds=61))
    assert len(again) == 1 and again[0].attempts == 2
    # The first worker's late outcome is dropped: it no longer holds the lease.
    async with store.transaction() as tx:
        assert await tx.deliveries.record([_outcome(claims[0], DeliveryStatus.SENT, NOW)]) == 0
        assert await tx.deliveries.record([_outcome(again[0], DeliveryStatus.SENT, NOW,
                                                    provider_message_id="m1")]) == 1
    async with store.reader() as tx:
        n = await tx.notifications.get("acme", note_id)
    assert n.status == "sent" and n.deliveries[0].provider_message_id == "m1"
    assert n.deliveries[0].due_at is None
    assert await _claim(store, NOW + timedelta(days=1)) == []


async def test_retry_later_and_disable_device(store):
    note_id, device_id = await _queue_one(store)
    (c,) = await _claim(store, NOW)
    async with store.transaction() as tx:
        await tx.deliveries.record([_outcome(c, DeliveryStatus.PENDING, NOW, error="503",
                                             due_at=NOW + timedelta(seconds=30))])
    assert await _claim(store, NOW + timedelta(seconds=29)) == []
    (c,) = await _claim(store, NOW + timedelta(seconds=30))
    assert c.attempts == 2
    async with store.transaction() as tx:
        await tx.deliveries.record([_outcome(c, DeliveryStatus.FAILED, NOW, error="gone",
                                             disable_device=device_id, disable_reason="Unregistered")])
    async with store.reader() as tx:
        d = await tx.devices.get("acme", device_id)
        n = await tx.notifications.get("acme", note_id)
    assert not d.enabled and d.disabled_reason == "Unregistered"
    assert n.status == "failed"


async def test_claims_do_not_overlap(store):
    await seed_app(store)
    a = app()
    devices = [device(f"u{i}", f"t{i}") for i in range(40)]
    notes = [plan_notification(a, Recipient(user_id=d.user_id, devices=(d,)),
                               Message(("push",), title="t"), NOW) for d in devices]
    async with store.transaction() as tx:
        for d in devices:
            await tx.devices.add(d)
        await tx.notifications.add_many(notes)
    import asyncio

    async def claim_some():
        async with store.transaction() as tx:
            return await tx.deliveries.claim(NOW, 15, 60, new_id())

    batches = await asyncio.gather(*(claim_some() for _ in range(4)))
    ids = [c.delivery_id for b in batches for c in b]
    assert len(ids) == 40 and len(set(ids)) == 40


async def test_idempotency_records(store):
    rec = IdempotencyRecord("acme", "k1", "fp", 202, b'{"a":1}', NOW, NOW + timedelta(hours=24))
    async with store.transaction() as tx:
        await tx.idempotency.put(rec)
    with pytest.raises(IdempotencyRace):
        async with store.transaction() as tx:
            await tx.idempotency.put(rec)
    async with store.reader() as tx:
        got = await tx.idempotency.get("acme", "k1")
        assert got.body == b'{"a":1}' and got.status_code == 202
        assert await tx.idempotency.get("globex", "k1") is None
    # An expired record gives way to a new one with the same key.
    later = IdempotencyRecord("acme", "k1", "fp2", 202, b"{}", NOW + timedelta(hours=25),
                              NOW + timedelta(hours=49))
    async with store.transaction() as tx:
        await tx.idempotency.put(later)
        assert await tx.idempotency.purge(NOW + timedelta(days=3)) == 1


async def test_deleting_an_app_removes_everything(store):
    note_id, _ = await _queue_one(store)
    async with store.transaction() as tx:
        assert await tx.apps.delete("acme")
        assert not await tx.apps.delete("acme")
    async with store.reader() as tx:
        assert await tx.notifications.get("acme", note_id) is None
        assert await tx.devices.for_user("acme", "u1") == []
    assert await _claim(store, NOW) == []


async def test_unread_counts_stay_exact(store):
    """The unread count is kept beside the rows; every path that writes read state moves it."""
    await seed_app(store)
    a = app()

    def note(user, channels, at=0):
        return plan_notification(a, Recipient(user_id=user), Message(channels, title="t"),
                                 NOW + timedelta(seconds=at))

    first = [note("u1", ("push", "in_app"), i) for i in range(5)] + [note("u2", ("sms",))]
    raw = plan_notification(a, Recipient(phone="+393331234567"), Message(("sms",), body="x"), NOW)
    async with store.transaction() as tx:
        await tx.notifications.add_many([*first, raw])

    async def counts(user):
        async with store.reader() as tx:
            return [await tx.notifications.unread_count("acme", user, c)
                    for c in (None, "push", "in_app", "sms", "email")]

    assert await counts("u1") == [5, 5, 5, 0, 0]
    assert await counts("u2") == [1, 0, 0, 1, 0]
    async with store.transaction() as tx:
        await tx.notifications.mark_read("acme", "u1", first[0].id, NOW)
        await tx.notifications.mark_read("acme", "u1", first[0].id, NOW)  # again: no change
        assert await tx.notifications.mark_all_read("acme", "u1", "push", first[3].id, NOW) == 2
    assert await counts("u1") == [2, 2, 2, 0, 0]
    async with store.transaction() as tx:
        assert await tx.users.delete("acme", "u1")
    assert await counts("u1") == [0, 0, 0, 0, 0]
    async with store.transaction() as tx:
        await tx.notifications.add_many([note("u1", ("email",))])
    assert await counts("u1") == [1, 0, 0, 0, 1]
    async with store.transaction() as tx:
        assert await tx.apps.delete("acme")
    assert await counts("u2") == [0, 0, 0, 0, 0]


async def test_a_provider_reference_is_kept_and_options_reach_the_message(store):
    await seed_app(store)
    d = device("u1", "tok-u1")
    message = Message(("push",), title="t", html="<b>t</b>", collapse_key="score",
                      overrides={"apns": {"headers": {"apns-priority": "5"}}})
    n = plan_notification(app(), Recipient(user_id="u1", devices=(d,)), message, NOW)
    async with store.transaction() as tx:
        await tx.devices.add(d)
        await tx.notifications.add_many([n])
    (c,) = await _claim(store, NOW)
    assert c.message.target_ref is None
    assert c.message.collapse_key == "score" and c.message.html == "<b>t</b>"
    assert c.message.overrides == {"apns": {"headers": {"apns-priority": "5"}}}
    async with store.transaction() as tx:
        await tx.deliveries.record([_outcome(c, DeliveryStatus.PENDING, NOW, error="503",
                                             due_at=NOW, device_ref=(d.id, "arn:endpoint/1"))])
    (c,) = await _claim(store, NOW + timedelta(seconds=1))
    assert c.message.target_ref == "arn:endpoint/1"
    async with store.reader() as tx:
        assert (await tx.devices.get("acme", d.id)).provider_ref == "arn:endpoint/1"


async def test_receipts_move_deliveries_of_their_app_only(store):
    from tidings.domain.receipts import Receipt

    note_id, _ = await _queue_one(store)
    (c,) = await _claim(store, NOW)
    async with store.transaction() as tx:
        await tx.deliveries.record([_outcome(c, DeliveryStatus.SENT, NOW, provider_message_id="m1")])
    delivered = Receipt("log", "m1", DeliveryStatus.DELIVERED, NOW + timedelta(seconds=5))
    async with store.transaction() as tx:
        assert await tx.deliveries.receipt("globex", delivered) is None  # not theirs
        assert await tx.deliveries.receipt("acme", Receipt("fcm", "m1", DeliveryStatus.DELIVERED,
                                                            NOW)) is None  # another provider
        done, changed = await tx.deliveries.receipt("acme", delivered)
    assert changed and done.status == "delivered" and done.notification_id == note_id
    async with store.reader() as tx:
        n = await tx.notifications.get("acme", note_id)
    assert n.status == "sent" and n.deliveries[0].status == "delivered"
    # A bounce after delivery fails it; a late "delivered" does not undo the failure.
    async with store.transaction() as tx:
        failed, failed_changed = await tx.deliveries.receipt("acme", Receipt(
            "log", "m1", DeliveryStatus.FAILED, NOW, error="bounced"))
        again, again_changed = await tx.deliveries.receipt("acme", delivered)
    assert failed_changed and failed.status == "failed" and failed.error == "bounced"
    assert not again_changed and again.status == "failed"
    async with store.reader() as tx:
        assert (await tx.notifications.get("acme", note_id)).status == "failed"


async def test_an_address_is_marked_undeliverable_only_while_it_is_the_users(store):
    await seed_app(store)
    async with store.transaction() as tx:
        await tx.users.upsert(User("acme", "u1", email="a@example.com", created_at=NOW,
                                   updated_at=NOW))
        assert not await tx.users.mark_email_undeliverable("acme", "u1", "old@example.com",
                                                           "bounce", NOW)
        assert await tx.users.mark_email_undeliverable("acme", "u1", "a@example.com",
                                                       "bounce: 5.1.1", NOW)
    async with store.reader() as tx:
        u = await tx.users.get("acme", "u1")
    assert u.email_undeliverable_at == NOW and u.email_undeliverable_reason == "bounce: 5.1.1"


async def test_the_event_outbox_leases_retries_and_purges(store):
    from tidings.domain.events import AppEvent, after_attempt

    await seed_app(store)
    events = [AppEvent(new_id(), "acme", "delivery.sent", {"type": "delivery.sent", "n": i}, NOW)
              for i in range(3)]
    async with store.transaction() as tx:
        await tx.events.add(events)
        claimed = await tx.events.claim(NOW, 10, 60, "lease-1")
    assert [e.id for e in claimed] == sorted(e.id for e in events)
    assert all(e.attempts == 1 for e in claimed)
    async with store.transaction() as tx:
        assert await tx.events.claim(NOW, 10, 60, "lease-2") == []  # leased
        outcomes = [after_attempt(claimed[0], "lease-1", True, None, NOW),
                    after_attempt(claimed[1], "lease-1", False, "HTTP 500", NOW)]
        assert await tx.events.record(outcomes) == 2
    async with store.transaction() as tx:
        # The third lease expired; the second is due after its 5 s wait.
        due = await tx.events.claim(NOW + timedelta(seconds=61), 10, 60, "lease-3")
    assert {e.id for e in due} == {claimed[1].id, claimed[2].id}
    async with store.transaction() as tx:
        assert await tx.events.purge(NOW + timedelta(days=1)) == 1  # only the sent one


async def test_the_stream_log_numbers_each_user_without_holes(store):
    from tidings.ports import StreamEntry

    await seed_app(store)
    await seed_app(store, "globex")
    in_app = Message(channels=("in_app",), title="t")
    async with store.reader() as tx:
        empty = await tx.stream.head("acme", "u1")
    assert (empty.seq, empty.unread, empty.unread_in_app, empty.oldest) == (0, 0, 0, 1)
    async with store.transaction() as tx:
        await tx.notifications.add_many([plan_notification(app(), Recipient(user_id=u), in_app, NOW)
                                         for u in ("u1", "u2")])
        first = await tx.stream.append("acme", [
            StreamEntry("u2", "notification.created", {"n": 1}),
            StreamEntry("u1", "notification.created", {"n": 2}),
            StreamEntry("u1", "notification.read", {"n": 3})], NOW)
    by_user = {(e.user_id, e.seq): e for e in first}
    assert set(by_user) == {("u1", 1), ("u1", 2), ("u2", 1)}  # each user counts on its own
    assert by_user["u1", 1].data == {"n": 2} and by_user["u1", 2].data == {"n": 3}  # in order
    assert (by_user["u1", 2].unread, by_user["u1", 2].unread_in_app) == (1, 1)  # counts after
    later = NOW + timedelta(hours=1)
    async with store.transaction() as tx:
        again = await tx.stream.append("acme", [StreamEntry("u1", "notification.read", {"n": 4})],
                                       later)
        other_app = await tx.stream.append("globex", [StreamEntry("u1", "x", {})], later)
    assert [e.seq for e in again] == [3] and [e.seq for e in other_app] == [1]
    with pytest.raises(RuntimeError):  # a rolled-back append takes no number
        async with store.transaction() as tx:
            await tx.stream.append("acme", [StreamEntry("u1", "x", {})], later)
            raise RuntimeError("rollback")
    async with store.reader() as tx:
        head = await tx.stream.head("acme", "u1")
        replay = await tx.stream.since("acme", "u1", 1, None, 10)
        bounded = await tx.stream.since("acme", "u1", 0, 2, 1)
    assert (head.seq, head.oldest) == (3, 1)
    assert [(e.seq, e.type, e.data) for e in replay] == [
        (2, "notification.read", {"n": 3}), (3, "notification.read", {"n": 4})]
    assert [e.seq for e in bounded] == [1]
    async with store.transaction() as tx:
        assert await tx.stream.purge(NOW + timedelta(minutes=1)) == 3  # acme u1 1-2, u2 1
    async with store.reader() as tx:
        head = await tx.stream.head("acme", "u1")
        gone = await tx.stream.head("acme", "u2")
    assert (head.seq, head.oldest) == (3, 3)
    assert (gone.seq, gone.oldest) == (1, 2)  # nothing kept: the next would be the oldest
    async with store.transaction() as tx:
        await tx.users.ensure("acme", "u1", NOW)
        assert await tx.users.delete("acme", "u1")
    async with store.reader() as tx:
        after_delete = await tx.stream.head("acme", "u1")
        left = await tx.stream.since("acme", "u1", 0, None, 10)
    assert after_delete.seq == 3 and after_delete.unread == 0 and left == []  # numbers kept
