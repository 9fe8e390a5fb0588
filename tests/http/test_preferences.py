"""Preferences: per user, per category and channel; opted-out channels become skipped
deliveries with the error `preference`; mandatory categories cannot be opted out of."""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN, create_app_with_key, user_token


async def put_prefs(client, headers, doc, user="u1", expect=200):
    r = await client.put(f"/v1/users/{user}/preferences", json=doc, headers=headers)
    assert r.status_code == expect, r.text
    return r.json()


async def send(client, app, **body):
    body.setdefault("to", {"user_id": "u1"})
    body.setdefault("title", "Hello")
    r = await client.post("/v1/notifications", json=body, headers=app["headers"])
    assert r.status_code == 202, r.text
    return r.json()["items"][0]


def outcome(n):
    return {d["channel"]: (d["status"], d["error"]) for d in n["deliveries"]}


@pytest.fixture
async def secure(client):
    return await create_app_with_key(client, "secure",
                                     defaults={"mandatory_categories": ["security"]})


async def test_a_user_reads_and_writes_their_own_preferences(client, acme):
    me = await user_token(client, acme, "u1")
    empty = (await client.get("/v1/users/me/preferences", headers=me)).json()
    assert empty == {"channels": {}, "categories": {}, "mandatory_categories": []}
    doc = {"channels": {"sms": False},
           "categories": {"marketing": {"enabled": False},
                          "billing": {"channels": {"email": False}}}}
    saved = await put_prefs(client, me, doc, user="me")
    assert saved["channels"] == {"sms": False}
    assert saved["categories"]["marketing"]["enabled"] is False
    assert saved["categories"]["billing"]["channels"] == {"email": False}
    again = (await client.get("/v1/users/u1/preferences", headers=acme["headers"])).json()
    assert again == saved
    other = await client.get("/v1/users/u2/preferences", headers=me)
    assert other.status_code == 404


async def test_opted_out_channels_are_skipped_with_reason_preference(client, acme):
    h = acme["headers"]
    await client.put("/v1/users/u1", json={"phone": "+393331234567", "email": "a@example.com"},
                     headers=h)
    await put_prefs(client, h, {"channels": {"sms": False},
                                "categories": {"marketing": {"enabled": False},
                                               "billing": {"channels": {"email": False,
                                                                        "sms": True},
                                                           "enabled": True}}})
    everything = ["in_app", "sms", "email"]
    plain = await send(client, acme, channels=everything)
    assert outcome(plain) == {"in_app": ("sent", None), "sms": ("skipped", "preference"),
                              "email": ("pending", None)}
    promo = await send(client, acme, channels=everything, category="marketing")
    assert {c: s for c, (s, _) in outcome(promo).items()} == dict.fromkeys(everything, "skipped")
    assert promo["status"] == "failed"
    bill = await send(client, acme, channels=everything, category="billing")
    # The category's own channel setting wins over the channel-wide opt-out: billing by SMS is
    # wanted (`enabled: true` alone would not have undone the SMS opt-out).
    assert outcome(bill) == {"in_app": ("sent", None), "sms": ("pending", None),
                             "email": ("skipped", "preference")}


async def test_an_opted_out_in_app_notice_stays_out_of_the_feed(client, acme):
    h = acme["headers"]
    await put_prefs(client, h, {"categories": {"marketing": {"channels": {"in_app": False}}}})
    await send(client, acme, channels=["in_app", "push"], category="marketing", title="promo")
    await send(client, acme, channels=["in_app"], title="real")
    feed = (await client.get("/v1/users/u1/notifications", params={"channel": "in_app"},
                             headers=h)).json()
    assert [n["title"] for n in feed["items"]] == ["real"] and feed["unread_count"] == 1
    everything = (await client.get("/v1/users/u1/notifications", headers=h)).json()
    assert [n["title"] for n in everything["items"]] == ["real", "promo"]


async def test_mandatory_categories_cannot_be_opted_out_of(client, secure):
    h = secure["headers"]
    r = await client.put("/v1/users/u1/preferences",
                         json={"categories": {"security": {"enabled": False}}}, headers=h)
    assert r.status_code == 422 and "security" in r.text
    r = await client.put("/v1/users/u1/preferences",
                         json={"categories": {"security": {"channels": {"push": False}}}},
                         headers=h)
    assert r.status_code == 422
    saved = await put_prefs(client, h, {"channels": {"push": False, "in_app": False}})
    assert saved["mandatory_categories"] == ["security"]
    alert = await send(client, secure, channels=["push", "in_app"], category="security")
    assert outcome(alert)["in_app"] == ("sent", None)
    assert outcome(alert)["push"] == ("skipped", "no enabled device")  # not "preference"
    other = await send(client, secure, channels=["push", "in_app"], category="news")
    assert outcome(other) == {"push": ("skipped", "preference"), "in_app": ("skipped", "preference")}


async def test_a_category_made_mandatory_later_overrides_an_earlier_opt_out(client, acme):
    h = acme["headers"]
    await put_prefs(client, h, {"categories": {"security": {"enabled": False}}})
    r = await client.put("/v1/apps/acme", json={"defaults": {"mandatory_categories": ["security"]}},
                         headers=ADMIN)
    assert r.status_code == 200, r.text
    alert = await send(client, acme, channels=["in_app"], category="security")
    assert outcome(alert) == {"in_app": ("sent", None)}


@pytest.mark.parametrize("doc", [
    {"channels": {"fax": False}},
    {"channels": {"sms": "no"}},
    {"categories": {"bad key!": {"enabled": False}}},
    {"categories": {"news": {"enabled": "false"}}},
    {"categories": {"news": {"channels": {"pigeon": False}}}},
    {"categories": {"news": {"mute": True}}},
    {"colour": "blue"},
    [],
])
async def test_bad_preferences_are_422_and_change_nothing(client, acme, doc):
    h = acme["headers"]
    await put_prefs(client, h, {"channels": {"sms": False}})
    r = await client.put("/v1/users/u1/preferences", json=doc, headers=h)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert (await client.get("/v1/users/u1/preferences", headers=h)).json()["channels"] == {
        "sms": False}


async def test_preferences_of_another_app_are_not_reachable(client, acme, globex):
    await put_prefs(client, acme["headers"], {"channels": {"sms": False}})
    theirs = (await client.get("/v1/users/u1/preferences", headers=globex["headers"])).json()
    assert theirs["channels"] == {}


async def test_deleting_a_user_forgets_their_preferences_and_subscriptions(client, acme):
    h = acme["headers"]
    await put_prefs(client, h, {"channels": {"sms": False}})
    assert (await client.put("/v1/topics/news", json={}, headers=h)).status_code == 201
    assert (await client.put("/v1/topics/news/subscribers/u1", headers=h)).status_code == 201
    assert (await client.delete("/v1/users/u1", headers=h)).status_code == 204
    assert (await client.get("/v1/users/u1/preferences", headers=h)).json()["channels"] == {}
    subscribers = (await client.get("/v1/topics/news/subscribers", headers=h)).json()
    assert subscribers["items"] == []
