"""The `smtp` provider against a real SMTP server (aiosmtpd) on loopback: the message the server
receives, AUTH, STARTTLS and implicit TLS with a test CA, the connection pool, how refusals map
onto deliveries, and the whole path through the HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from tests.conftest import create_app_with_key, drain
from tests.fakes.smtp_double import DATA_452, DEFER_451, DROP, REFUSE_550, SmtpDouble
from tests.fakes.tls import loopback_tls
from tests.integration.providers.conftest import delivery, notify
from tidings.adapters.providers.options import ProviderOptions
from tidings.adapters.providers.smtp import POOL_CAP, SmtpProvider
from tidings.domain.delivery import Failed, OutboundMessage, Retry, Sent

ADA = "ada@example.com"
OPTIONS = ProviderOptions(timeout=3.0, max_concurrency=16, ssl_context=loopback_tls().client_context())


@pytest.fixture
def provider_options(provider_options: ProviderOptions) -> ProviderOptions:
    return replace(provider_options, ssl_context=loopback_tls().client_context())


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpDouble]:
    """The usual submission server: STARTTLS required, then AUTH required."""
    async with SmtpDouble(credentials=("acme-mailer", "s3cret"), starttls=True) as double:
        yield double


@pytest.fixture
async def plain() -> AsyncIterator[SmtpDouble]:
    """A relay on the local network: no TLS, no AUTH."""
    async with SmtpDouble() as double:
        yield double


def email(to: str = ADA, n: int = 0, **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "delivery_id": f"dlv-{n}", "notification_id": f"ntf-{n}", "app_id": "acme", "user_id": "u1",
        "channel": "email", "provider": "smtp", "target": to, "platform": None,
        "title": "Your invoice", "body": "Hello Ada,\nyour invoice is ready."}
    values.update(fields)
    return OutboundMessage(**values)


async def send(config: dict[str, Any], messages: list[OutboundMessage],
               options: ProviderOptions = OPTIONS) -> list[Any]:
    provider = SmtpProvider(config, options)
    try:
        return list(await provider.send(messages))
    finally:
        await provider.close()


# --- the message the server receives ------------------------------------------------------------


async def test_message_has_text_and_html_parts_and_headers(smtp: SmtpDouble) -> None:
    (result,) = await send(smtp.settings(), [email(html="<p>Hello Ada, <b>your invoice</b></p>")])
    assert isinstance(result, Sent)
    (received,) = smtp.received
    assert (received.mail_from, received.rcpt_tos) == ("no-reply@acme.test", [ADA])
    assert received.tls and received.login == "acme-mailer"
    msg = received.message
    assert msg["From"] == "Acme <no-reply@acme.test>" and msg["To"] == ADA
    assert msg["Subject"] == "Your invoice"
    assert msg["Message-ID"].strip() == f"<{result.message_id}>"
    assert result.message_id and result.message_id.endswith("@acme.test")
    assert msg["Date"] and msg["Date"].datetime is not None
    assert (msg["X-Tidings-Notification"], msg["X-Tidings-Delivery"]) == ("ntf-0", "dlv-0")
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and text.get_content() == "Hello Ada,\nyour invoice is ready.\n"
    assert html is not None and html.get_content() == "<p>Hello Ada, <b>your invoice</b></p>\n"


async def test_text_only_message_and_unicode(plain: SmtpDouble) -> None:
    results = await send(plain.settings(), [
        email(n=1, title=None, body="just text"),
        email(n=2, title="Fattura n° 7 — pronta\r\nBcc: x@evil.test", body="Grazie, è pronta ✓")])
    assert all(isinstance(r, Sent) for r in results), results
    # The two go out on parallel connections, so they may arrive in either order.
    by_delivery = {r.message["X-Tidings-Delivery"]: r.message for r in plain.received}
    first, second = by_delivery["dlv-1"], by_delivery["dlv-2"]
    assert first["Subject"] == "" and first.get_content_type() == "text/plain"
    assert first.get_content() == "just text\n"
    # A line break in the title cannot add a header.
    assert second["Subject"] == "Fattura n° 7 — pronta Bcc: x@evil.test" and second["Bcc"] is None
    assert second.get_content() == "Grazie, è pronta ✓\n"


# --- AUTH and TLS -------------------------------------------------------------------------------


async def test_wrong_password_is_retried_with_a_reason(smtp: SmtpDouble) -> None:
    (result,) = await send(smtp.settings(password="wrong"), [email()])
    assert isinstance(result, Retry) and "535" in result.reason and "password" in result.reason
    assert smtp.failed_logins >= 1 and not smtp.logins and not smtp.received


async def test_missing_credentials_are_retried_with_a_reason() -> None:
    async with SmtpDouble(credentials=("acme-mailer", "s3cret")) as double:
        config = double.settings()
        del config["username"], config["password"]
        (result,) = await send(config, [email()])
        assert isinstance(result, Retry) and "530" in result.reason and "username" in result.reason
        assert not double.received


async def test_starttls_needs_a_trusted_certificate(smtp: SmtpDouble) -> None:
    (untrusted,) = await send(smtp.settings(), [email()], replace(OPTIONS, ssl_context=None))
    assert isinstance(untrusted, Retry) and "CERTIFICATE_VERIFY_FAILED" in untrusted.reason
    (cleartext,) = await send(smtp.settings(starttls=False), [email()])
    assert isinstance(cleartext, Retry) and "STARTTLS" in cleartext.reason
    assert not smtp.received and not smtp.logins


async def test_implicit_tls() -> None:
    async with SmtpDouble(credentials=("acme-mailer", "s3cret"), implicit_tls=True) as double:
        (result,) = await send(double.settings(starttls=True), [email()])
        assert isinstance(result, Sent)
        assert double.received[0].tls and double.logins == ["acme-mailer"]
        (untrusted,) = await send(double.settings(), [email()], replace(OPTIONS, ssl_context=None))
        assert isinstance(untrusted, Retry)


async def test_unreachable_server_is_retried(plain: SmtpDouble) -> None:
    config = plain.settings()
    await plain.close()
    (result,) = await send(config, [email()])
    assert isinstance(result, Retry) and "connect" in result.reason


# --- the pool -----------------------------------------------------------------------------------


async def test_connections_are_pooled_and_reused(smtp: SmtpDouble) -> None:
    provider = SmtpProvider(smtp.settings(), OPTIONS)
    assert provider.max_concurrency == POOL_CAP < OPTIONS.max_concurrency
    try:
        results = await provider.send([email(f"user{i}@example.com", i) for i in range(50)])
        assert all(isinstance(r, Sent) for r in results), results
        assert len(smtp.received) == 50
        assert {r.rcpt_tos[0] for r in smtp.received} == {f"user{i}@example.com" for i in range(50)}
        assert 1 < smtp.connections <= POOL_CAP
        assert len(smtp.logins) == smtp.connections  # one login per connection, not per message
        opened = smtp.connections
        again = await provider.send([email(f"again{i}@example.com", 100 + i) for i in range(20)])
        assert all(isinstance(r, Sent) for r in again)
        assert smtp.connections == opened
        assert len({r.message_id for r in results + again if isinstance(r, Sent)}) == 70
    finally:
        await provider.close()
    for _ in range(20):  # QUIT closes them on the server's side too
        if not smtp.live:
            break
        await asyncio.sleep(0.01)
    assert not smtp.live


# --- refusals -----------------------------------------------------------------------------------


async def test_refusals_map_to_failed_or_retry_and_keep_the_connection(plain: SmtpDouble) -> None:
    plain.script("gone@example.com", REFUSE_550)
    plain.script("busy@example.com", DEFER_451)
    plain.script("full@example.com", DATA_452, at="DATA")
    provider = SmtpProvider(plain.settings(), replace(OPTIONS, max_concurrency=1))
    try:
        results = await provider.send([email("gone@example.com", 1), email("busy@example.com", 2),
                                       email("full@example.com", 3), email(ADA, 4)])
    finally:
        await provider.close()
    gone, busy, full, ok = results
    assert isinstance(gone, Failed) and gone.reason.startswith("SMTP 550")
    assert "gone@example.com" not in gone.reason  # the server's text quotes it; the reason masks it
    assert isinstance(busy, Retry) and busy.reason.startswith("SMTP 451")
    assert isinstance(full, Retry) and full.reason.startswith("SMTP 452")
    assert isinstance(ok, Sent)
    assert [r.rcpt_tos for r in plain.received] == [[ADA]]
    assert plain.connections == 1  # after each refusal the envelope was reset, not the connection


async def test_a_connection_dropped_while_idle_is_replaced(plain: SmtpDouble) -> None:
    provider = SmtpProvider(plain.settings(), replace(OPTIONS, max_concurrency=1))
    try:
        assert isinstance((await provider.send([email(n=1)]))[0], Sent)
        plain.drop_at_mail(1)  # the server timed the pooled connection out
        (result,) = await provider.send([email(n=2)])
        assert isinstance(result, Sent)
        assert plain.connections == 2 and len(plain.received) == 2
    finally:
        await provider.close()


async def test_a_connection_that_keeps_dropping_is_retried(plain: SmtpDouble) -> None:
    plain.script("flaky@example.com", DROP)
    provider = SmtpProvider(plain.settings(), replace(OPTIONS, max_concurrency=1))
    try:
        (result,) = await provider.send([email("flaky@example.com")])
        assert isinstance(result, Retry) and "dropped" in result.reason
        assert plain.connections == 2  # reconnected once, then gave the message back
        (after,) = await provider.send([email(n=2)])
        assert isinstance(after, Sent)
    finally:
        await provider.close()
    assert [r.rcpt_tos for r in plain.received] == [[ADA]]


# --- through the HTTP API ------------------------------------------------------------------------


async def test_email_through_the_api(client: Any, container: Any, smtp: SmtpDouble) -> None:
    app = await create_app_with_key(client, "acme", providers={"smtp": smtp.settings()},
                                    routing={"email": "smtp"})
    r = await client.put("/v1/users/u1", json={"email": ADA}, headers=app["headers"])
    assert r.status_code in (200, 201), r.text
    to_user = await notify(client, app, {"to": {"user_id": "u1"}, "channels": ["email"],
                                         "title": "Welcome", "body": "Hello Ada"})
    raw = await notify(client, app, {"to": {"email": "bob@example.com"}, "title": "Hi Bob", "body": "…"})
    assert await drain(container) == 2
    for notification, rcpt in ((to_user, ADA), (raw, "bob@example.com")):
        d = await delivery(client, app, notification["id"])
        assert (d["status"], d["provider"], d["attempts"]) == ("sent", "smtp", 1)
        (received,) = smtp.to(rcpt)
        assert received.message["Message-ID"].strip() == f"<{d['provider_message_id']}>"
        assert received.message["X-Tidings-Notification"] == notification["id"]
        assert received.message["X-Tidings-Delivery"] == d["id"]
    assert smtp.received[0].tls and smtp.logins


async def test_refused_address_fails_and_deferred_stays_pending(client: Any, container: Any,
                                                                plain: SmtpDouble) -> None:
    app = await create_app_with_key(client, "acme", providers={"smtp": plain.settings()},
                                    routing={"email": "smtp"})
    plain.script("gone@example.com", REFUSE_550)
    plain.script("busy@example.com", DEFER_451)
    gone = await notify(client, app, {"to": {"email": "gone@example.com"}, "title": "x"})
    busy = await notify(client, app, {"to": {"email": "busy@example.com"}, "title": "x"})
    assert await drain(container) == 2
    d = await delivery(client, app, gone["id"])
    assert (d["status"], d["attempts"]) == ("failed", 1) and "550" in d["error"]
    d = await delivery(client, app, busy["id"])
    assert (d["status"], d["attempts"]) == ("pending", 1) and "451" in d["error"]
    assert not plain.received
