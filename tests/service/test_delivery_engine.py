"""The delivery engine end to end: accept over HTTP, deliver with the worker, read back."""

from __future__ import annotations

import asyncio

from tests.conftest import drain
from tidings.domain.delivery import Failed, Retry, Sent, TargetInvalid
from tidings.domain.ids import new_id


async def send(client, app, body):
    r = await client.post("/v1/notifications", json=body, headers=app["headers"])
    assert r.status_code == 202, r.text
    return r.json()["items"]


async def get(client, app, notification_id):
    r = await client.get(f"/v1/notifications/{notification_id}", headers=app["headers"])
    assert r.status_code == 200, r.text
    return r.json()


async def pair(client, app, user="u1", token="tok-1", platform="android", **extra):
    r = await client.post(f"/v1/users/{user}/devices",
                          json={"platform": platform, "token": token, **extra},
                          headers=app["headers"])
    assert r.status_code in (200, 201), r.text
    return r.json()


async def test_push_and_in_app_are_delivered(client, acme, container, providers):
    d1 = await pair(client, acme, token="a")
    d2 = await pair(client, acme, token="b")
    (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "title": "Hi", "body": "there",
                                     "data": {"k": "v"}, "priority": "high", "ttl": 60})
    assert n["status"] == "queued"
    by_channel = sorted((d["channel"], d["status"]) for d in n["deliveries"])
    assert by_channel == [("in_app", "sent"), ("push", "pending"), ("push", "pending")]
    assert await drain(container) == 2
    sent = providers.get("log").sent
    assert sorted(m.target for m in sent) == ["a", "b"]
    assert {m.device_id for m in sent} == {d1["id"], d2["id"]}
    assert all(m.title == "Hi" and m.data == {"k": "v"} and m.priority == "high" and m.ttl == 60
               for m in sent)
    after = await get(client, acme, n["id"])
    assert after["status"] == "sent"
    assert all(d["provider_message_id"] for d in after["deliveries"] if d["channel"] == "push")


async def test_retry_after_is_honoured(client, acme, container, providers, clock):
    await pair(client, acme)
    providers.get("log").script = lambda m: Retry("429 Too Many Requests", after=30)
    (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "channels": ["push"], "title": "x"})
    assert await drain(container) == 1
    d = (await get(client, acme, n["id"]))["deliveries"][0]
    assert (d["status"], d["attempts"], d["error"]) == ("pending", 1, "429 Too Many Requests")
    clock.advance(29)
    assert await container.dispatcher.run_once() == 0
    providers.get("log").script = lambda m: Sent("ok-1")
    clock.advance(1)
    assert await container.dispatcher.run_once() == 1
    d = (await get(client, acme, n["id"]))["deliveries"][0]
    assert (d["status"], d["attempts"], d["provider_message_id"]) == ("sent", 2, "ok-1")


async def test_back_off_grows_and_gives_up(client, acme, container, providers, clock):
    await pair(client, acme)
    providers.get("log").script = lambda m: Retry("503")
    (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "title": "x"})
    policy = container.dispatcher._policy
    for attempt in range(1, policy.max_attempts + 1):
        assert await container.dispatcher.run_once() == 1, attempt
        if attempt < policy.max_attempts:
            ceiling = min(policy.cap_seconds, policy.base_seconds * 2 ** (attempt - 1))
            # Not due before half the ceiling (full jitter over [ceiling/2, ceiling]) ...
            clock.advance(ceiling / 2 - 0.01)
            assert await container.dispatcher.run_once() == 0
            clock.advance(ceiling / 2 + 0.02)  # ... and due by the ceiling.
    final = await get(client, acme, n["id"])
    push = next(d for d in final["deliveries"] if d["channel"] == "push")
    assert push["status"] == "failed" and push["attempts"] == policy.max_attempts
    assert push["error"].startswith(f"gave up after {policy.max_attempts} attempts")
    assert final["status"] == "partially_failed"  # in_app made it, push did not


async def test_invalid_target_disables_until_registered_again(client, acme, container, providers):
    device = await pair(client, acme, token="dead")
    providers.get("log").script = lambda m: TargetInvalid("Unregistered")
    (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "channels": ["push"], "title": "x"})
    await drain(container)
    assert (await get(client, acme, n["id"]))["status"] == "failed"
    r = await client.get("/v1/users/u1/devices", headers=acme["headers"])
    listed = r.json()["items"][0]
    assert listed["enabled"] is False and listed["disabled_reason"] == "Unregistered"
    # Nothing is attempted while it is disabled ...
    (n2,) = await send(client, acme, {"to": {"user_id": "u1"}, "channels": ["push"], "title": "y"})
    assert n2["deliveries"][0]["status"] == "skipped"
    assert n2["deliveries"][0]["error"] == "no enabled device"
    # ... and registering the token again re-enables it (rule 4).
    again = await pair(client, acme, token="dead")
    assert again["id"] == device["id"] and again["enabled"] is True


async def test_permanent_failure_is_not_retried(client, acme, container, providers):
    await pair(client, acme)
    providers.get("log").script = lambda m: Failed("InvalidArgument: bad payload")
    (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "channels": ["push"], "title": "x"})
    assert await drain(container) == 1
    d = (await get(client, acme, n["id"]))["deliveries"][0]
    assert (d["status"], d["attempts"], d["error"]) == ("failed", 1, "InvalidArgument: bad payload")


async def test_a_crashing_provider_means_retry(client, acme, container, providers, clock):
    await pair(client, acme)

    def boom(m):
        raise ConnectionError("reset")

    providers.get("log").script = boom
    (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "channels": ["push"], "title": "x"})
    assert await container.dispatcher.run_once() == 1
    d = (await get(client, acme, n["id"]))["deliveries"][0]
    assert d["status"] == "pending" and "ConnectionError" in d["error"]


async def test_expired_lease_is_recovered(client, acme, container, providers, clock):
    """A worker that dies after claiming leaves a lease that expires; another worker sends."""
    await pair(client, acme)
    (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "channels": ["push"], "title": "x"})
    async with container.store.transaction() as tx:  # the worker that will die
        assert len(await tx.deliveries.claim(clock.now(), 10, 60, new_id())) == 1
    assert await container.dispatcher.run_once() == 0
    clock.advance(61)
    assert await container.dispatcher.run_once() == 1
    d = (await get(client, acme, n["id"]))["deliveries"][0]
    assert (d["status"], d["attempts"]) == ("sent", 2)


async def test_unconfigured_provider_fails_clearly(client, acme, container):
    await pair(client, acme, provider="fcm")
    (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "channels": ["push"], "title": "x"})
    assert n["deliveries"][0]["provider"] == "fcm"
    await drain(container)
    d = (await get(client, acme, n["id"]))["deliveries"][0]
    assert d["status"] == "failed" and "not configured" in d["error"]


async def test_sms_and_email_use_the_profile_or_skip(client, acme, container, providers):
    r = await client.put("/v1/users/u1", json={"phone": "+393331234567", "email": "ada@example.com"},
                         headers=acme["headers"])
    assert r.status_code == 201
    items = await send(client, acme, {"to": {"user_ids": ["u1", "u2"]}, "channels": ["sms", "email"],
                                      "title": "x"})
    first = {d["channel"]: d for d in items[0]["deliveries"]}
    assert first["sms"]["target"] == "+393331234567" and first["email"]["target"] == "ada@example.com"
    second = {d["channel"]: (d["status"], d["error"]) for d in items[1]["deliveries"]}
    assert second == {"sms": ("skipped", "no phone number"), "email": ("skipped", "no email address")}
    assert items[1]["status"] == "failed"
    await drain(container)
    assert sorted(m.target for m in providers.get("log").sent) == ["+393331234567", "ada@example.com"]


async def test_raw_addresses(client, acme, container, providers):
    (sms,) = await send(client, acme, {"to": {"phone": "+14155550100"}, "body": "code 1234"})
    assert sms["channels"] == ["sms"] and sms["user_id"] is None
    (mail,) = await send(client, acme, {"to": {"email": "bob@example.com"}, "title": "Welcome"})
    assert mail["channels"] == ["email"]
    r = await client.post("/v1/notifications", json={"to": {"phone": "+14155550100"},
                          "channels": ["push"], "body": "x"}, headers=acme["headers"])
    assert r.status_code == 422
    await drain(container)
    r = await client.get("/v1/notifications", params={"to": "+14155550100"}, headers=acme["headers"])
    assert [n["id"] for n in r.json()["items"]] == [sms["id"]]
    assert r.json()["items"][0]["status"] == "sent"


async def test_many_recipients_and_concurrent_sends(client, acme, container, providers):
    users = [f"user-{i}" for i in range(300)]
    for u in users[:50]:
        await pair(client, acme, user=u, token=f"tok-{u}")
    items = await send(client, acme, {"to": {"user_ids": users}, "title": "hello"})
    assert len(items) == 300 and [n["user_id"] for n in items] == users
    results = await asyncio.gather(*(client.post(
        "/v1/notifications", json={"to": {"user_id": u}, "title": "again"}, headers=acme["headers"])
        for u in users[:50]))
    assert all(r.status_code == 202 for r in results)
    await drain(container, rounds=50)
    assert len(providers.get("log").sent) == 100
    r = await client.get("/v1/users/user-7/notifications", headers=acme["headers"])
    assert [n["title"] for n in r.json()["items"]] == ["again", "hello"]


async def test_deliveries_of_a_removed_device_are_skipped(client, acme, container):
    device = await pair(client, acme)
    (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "channels": ["push"], "title": "x"})
    r = await client.delete(f"/v1/users/u1/devices/{device['id']}", headers=acme["headers"])
    assert r.status_code == 204
    await drain(container)
    d = (await get(client, acme, n["id"]))["deliveries"][0]
    assert d["status"] == "skipped" and "removed" in d["error"]


async def test_worker_loop_wakes_on_send(client, acme, container, providers):
    await pair(client, acme)
    stop = asyncio.Event()
    container.dispatcher._poll = 30  # only the wake-up can make it fast
    task = asyncio.create_task(container.dispatcher.run(stop))
    try:
        await asyncio.sleep(0.05)
        (n,) = await send(client, acme, {"to": {"user_id": "u1"}, "channels": ["push"], "title": "x"})
        for _ in range(100):
            if (await get(client, acme, n["id"]))["status"] == "sent":
                break
            await asyncio.sleep(0.02)
        assert (await get(client, acme, n["id"]))["status"] == "sent"
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)



async def test_housekeeping_runs_every_clean_up_even_after_one_fails(container) -> None:
    from tidings.service.delivery import Dispatcher

    ran: list[str] = []

    async def broken() -> None:
        ran.append("broken")
        raise RuntimeError("disk full")

    async def fine() -> int:
        ran.append("fine")
        return 0

    d = Dispatcher(container.store, container.clock, container.providers,
                   container.dispatcher._policy, housekeeping=(broken, fine))
    await d.housekeeping()
    assert ran == ["broken", "fine"]
