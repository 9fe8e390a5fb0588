"""Standard Webhooks signing: the spec's published vector, secrets, headers, verification with
key rotation and the timestamp tolerance, and the event envelope."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from tidings.domain import webhooks
from tidings.domain.errors import Unauthenticated
from tidings.domain.webhooks import WebhookVerificationError

# The vector of the standard-webhooks reference libraries' tests.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def signed(secret: str = SECRET, timestamp: int = TIMESTAMP) -> dict[str, str]:
    return webhooks.headers(secret, MSG_ID, timestamp, BODY)


def test_sign_matches_the_published_vector() -> None:
    assert webhooks.sign(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE


def test_the_prefix_is_optional_when_reading_a_secret() -> None:
    assert webhooks.sign(SECRET.removeprefix("whsec_"), MSG_ID, TIMESTAMP, BODY) == SIGNATURE


def test_any_change_changes_the_signature() -> None:
    assert webhooks.sign(SECRET, MSG_ID, TIMESTAMP + 1, BODY) != SIGNATURE
    assert webhooks.sign(SECRET, MSG_ID + "x", TIMESTAMP, BODY) != SIGNATURE
    assert webhooks.sign(SECRET, MSG_ID, TIMESTAMP, BODY + b" ") != SIGNATURE


def test_headers_carry_id_timestamp_and_signature() -> None:
    assert signed() == {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP),
                        "webhook-signature": SIGNATURE}


def test_new_secrets_are_whsec_base64_of_random_bytes() -> None:
    one, two = webhooks.new_secret(), webhooks.new_secret()
    assert one != two
    assert one.startswith("whsec_")
    assert len(base64.b64decode(one.removeprefix("whsec_"))) == 32
    assert len(webhooks.secret_key(webhooks.new_secret(24))) == 24
    assert len(webhooks.secret_key(webhooks.new_secret(64))) == 64
    with pytest.raises(ValueError):
        webhooks.new_secret(16)
    assert webhooks.is_secret(one)


@pytest.mark.parametrize("secret", [
    "", "whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"x" * 23).decode(),
    "whsec_" + base64.b64encode(b"x" * 65).decode(), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
])
def test_malformed_secrets_are_not_secrets(secret: str) -> None:
    assert not webhooks.is_secret(secret)


def test_a_malformed_secret_cannot_sign() -> None:
    with pytest.raises(ValueError):
        webhooks.sign("whsec_short", MSG_ID, TIMESTAMP, BODY)


@pytest.mark.parametrize("msg_id", ["", "a.b", "a b"])
def test_ids_that_would_blur_the_signed_content_are_refused(msg_id: str) -> None:
    with pytest.raises(ValueError):
        webhooks.sign(SECRET, msg_id, TIMESTAMP, BODY)


def test_verify_accepts_a_good_signature_within_tolerance() -> None:
    webhooks.verify(SECRET, signed(), BODY, now=TIMESTAMP)
    webhooks.verify(SECRET, signed(), BODY, now=TIMESTAMP + 300)
    webhooks.verify(SECRET, signed(), BODY, now=TIMESTAMP - 300)
    webhooks.verify(SECRET, signed(), BODY, now=datetime.fromtimestamp(TIMESTAMP + 10, UTC))


def test_header_names_are_case_insensitive() -> None:
    upper = {k.upper(): v for k, v in signed().items()}
    webhooks.verify(SECRET, upper, BODY, now=TIMESTAMP)


@pytest.mark.parametrize("now", [TIMESTAMP + 301, TIMESTAMP - 301])
def test_verify_refuses_a_timestamp_outside_the_tolerance(now: int) -> None:
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(SECRET, signed(), BODY, now=now)
    webhooks.verify(SECRET, signed(), BODY, now=now, tolerance=600)


def test_verify_refuses_a_tampered_body_or_another_secret() -> None:
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(SECRET, signed(), b'{"test": 2432232315}', now=TIMESTAMP)
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(webhooks.new_secret(), signed(), BODY, now=TIMESTAMP)


def test_verify_refuses_the_published_near_miss() -> None:
    # The reference tests' invalid signature: the last character differs.
    near = {**signed(), "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(SECRET, near, BODY, now=TIMESTAMP)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_needs_every_header(missing: str) -> None:
    partial = {k: v for k, v in signed().items() if k != missing}
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(SECRET, partial, BODY, now=TIMESTAMP)


def test_verify_refuses_a_non_integer_timestamp() -> None:
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(SECRET, {**signed(), "webhook-timestamp": "hello"}, BODY, now=TIMESTAMP)


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    new = webhooks.new_secret()
    both = webhooks.headers([new, SECRET], MSG_ID, TIMESTAMP, BODY)
    first, second = both["webhook-signature"].split(" ")
    assert second == SIGNATURE
    assert first == webhooks.sign(new, MSG_ID, TIMESTAMP, BODY)
    webhooks.verify(SECRET, both, BODY, now=TIMESTAMP)
    webhooks.verify(new, both, BODY, now=TIMESTAMP)
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(webhooks.new_secret(), both, BODY, now=TIMESTAMP)


def test_verify_skips_other_versions_and_junk_among_signatures() -> None:
    mixed = " ".join(["v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
                      "v2," + SIGNATURE.partition(",")[2], "junk", SIGNATURE])
    webhooks.verify(SECRET, {**signed(), "webhook-signature": mixed}, BODY, now=TIMESTAMP)
    only_other_version = {**signed(), "webhook-signature": "v1a," + SIGNATURE.partition(",")[2]}
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(SECRET, only_other_version, BODY, now=TIMESTAMP)


def test_a_verification_failure_is_an_authentication_error() -> None:
    assert issubclass(WebhookVerificationError, Unauthenticated)


def test_event_envelope() -> None:
    at = datetime(2026, 11, 21, 9, 3, 47, 15000, tzinfo=UTC)
    assert webhooks.event("delivery.sent", {"id": "d1"}, at) == {
        "type": "delivery.sent", "timestamp": "2026-11-21T09:03:47.015Z", "data": {"id": "d1"}}
    assert webhooks.event("x.y", {}, TIMESTAMP)["timestamp"] == "2021-02-25T15:02:10.000Z"
