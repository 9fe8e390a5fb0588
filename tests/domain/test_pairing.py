"""The pairing rules of API.md (Devices) as `decide_pairing` decides them, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

from tidings.domain.devices import (
    Device,
    PairingAction,
    canonical_token,
    decide_pairing,
    token_key,
)

NOW = datetime(2026, 11, 21, 9, 3, 47, tzinfo=UTC)


def device(id: str = "01M7Y6Y2327WN1CRD5G5K9FTWM", user_id: str = "alice", token: str = "t1",
           enabled: bool = True, reason: str | None = None) -> Device:
    return Device(id=id, app_id="acme", user_id=user_id, platform="android", token=token,
                  token_key=token_key(token), provider=None, enabled=enabled, device_info=None,
                  app_version=None, created_at=NOW, last_seen_at=NOW, disabled_reason=reason)


def test_a_new_token_without_device_id_creates_a_device():
    decision = decide_pairing("alice", None, None)
    assert decision.action is PairingAction.CREATE
    assert decision.device is None and decision.remove is None


def test_rule_1_the_same_token_again_refreshes_the_row_it_is_on():
    mine = device(user_id="alice")
    decision = decide_pairing("alice", mine, None)
    assert decision.action is PairingAction.REFRESH
    assert decision.device is mine and decision.remove is None


def test_rule_2_a_token_of_another_user_moves_to_this_user():
    theirs = device(user_id="bob")
    decision = decide_pairing("alice", theirs, None)
    assert decision.action is PairingAction.MOVE
    # The row itself moves (no second row is created, none is removed): a token has one user.
    assert decision.device is theirs and decision.remove is None


def test_rule_3_device_id_with_a_new_token_rotates_that_device_in_place():
    mine = device(user_id="alice", token="old")
    decision = decide_pairing("alice", None, mine)
    assert decision.action is PairingAction.ROTATE
    assert decision.device is mine and decision.remove is None


def test_rule_3_device_id_with_its_own_token_is_a_refresh():
    mine = device(user_id="alice")
    same_row = device(user_id="alice")  # the same row, loaded twice
    decision = decide_pairing("alice", same_row, mine)
    assert decision.action is PairingAction.REFRESH
    assert decision.device is mine and decision.remove is None


def test_device_id_with_a_token_held_by_another_users_row_rotates_and_removes_that_row():
    mine = device(id="01M7Y6Y2327WN1CRD5G5K9FTW1", user_id="alice", token="mine")
    theirs = device(id="01M7Y6Y2327WN1CRD5G5K9FTW2", user_id="bob", token="theirs")
    decision = decide_pairing("alice", theirs, mine)
    assert decision.action is PairingAction.ROTATE
    assert decision.device is mine
    # The token ends up on the named device only: the row that held it goes.
    assert decision.remove is theirs


def test_device_id_with_a_token_on_another_row_of_the_same_user_removes_that_row():
    mine = device(id="01M7Y6Y2327WN1CRD5G5K9FTW1", user_id="alice", token="a")
    also_mine = device(id="01M7Y6Y2327WN1CRD5G5K9FTW2", user_id="alice", token="b")
    decision = decide_pairing("alice", also_mine, mine)
    assert decision.action is PairingAction.ROTATE
    assert decision.device is mine and decision.remove is also_mine


def test_rule_4_registering_a_disabled_token_again_takes_its_row_back():
    # A token the provider reported invalid: registering it again updates (and, in the
    # service, re-enables) that row; it does not create a second row for the same token.
    dead = device(user_id="alice", enabled=False, reason="Unregistered")
    decision = decide_pairing("alice", dead, None)
    assert decision.action is PairingAction.REFRESH and decision.device is dead
    moved = decide_pairing("bob", dead, None)
    assert moved.action is PairingAction.MOVE and moved.device is dead


# --- token identity ---------------------------------------------------------------------------
def subscription(endpoint: str = "https://push.example.com/send/abc", p256dh: str = "B" * 87,
                 auth: str = "A" * 22, **extra):
    return {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}, **extra}


def test_token_key_of_a_web_push_subscription_depends_only_on_its_endpoint():
    first = subscription()
    rotated_keys = subscription(p256dh="C" * 87, auth="D" * 22, expirationTime=1_800_000_000)
    reordered = {"keys": first["keys"], "endpoint": first["endpoint"]}
    assert token_key(first) == token_key(rotated_keys) == token_key(reordered)
    assert token_key(first) != token_key(subscription(endpoint="https://push.example.com/send/xyz"))


def test_token_key_of_a_provider_token_is_a_stable_sha256():
    key = token_key("fcm-token-1")
    assert key == token_key("fcm-token-1")
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    assert key != token_key("fcm-token-2")


def test_canonical_token_keeps_strings_and_sorts_subscription_keys():
    assert canonical_token("t1") == "t1"
    a = canonical_token(subscription())
    b = canonical_token({"keys": {"auth": "A" * 22, "p256dh": "B" * 87},
                         "endpoint": "https://push.example.com/send/abc"})
    assert a == b and " " not in a
