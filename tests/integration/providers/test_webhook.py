"""The `webhook` provider against a loopback receiver that verifies Standard Webhooks signatures:
the guard against private targets, the adapter alone (payload, signature, answers, concurrency,
connection reuse), then end to end through the HTTP API and the delivery worker."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.conftest import ADMIN, drain, make_settings
from tests.fakes.webhook_receiver import WebhookReceiver, check_signature
from tests.integration.providers.conftest import (
    assert_due_after,
    delivery,
    device_of,
    notify,
    notify_and_deliver,
    register_device,
)
from tidings.adapters.providers.http import session
from tidings.adapters.providers.options import ProviderOptions
from tidings.adapters.providers.ssrf import (
    PrivateAddressError,
    PublicOnlyResolver,
    check_public_url,
    is_public,
    literal_problem,
    refusal,
)
from tidings.adapters.providers.webhook import WebhookProvider
from tidings.domain import webhooks
from tidings.domain.delivery import Failed, OutboundMessage, Retry, Sent, TargetInvalid
from tidings.domain.ids import new_id

OPTIONS = ProviderOptions(timeout=0.5, max_concurrency=8, allow_private_webhooks=True)
GUARDED = ProviderOptions(timeout=0.5, max_concurrency=8, allow_private_webhooks=False)


# -- the guard against private targets --------------------------------------------------------

PRIVATE = [
    "10.1.2.3", "172.16.0.1", "192.168.1.1",  # RFC 1918
    "127.0.0.1", "127.255.0.9", "::1",  # loopback
    "169.254.169.254", "169.254.0.1", "fe80::1",  # link-local, cloud metadata
    "224.0.0.251", "239.1.1.1", "ff02::1",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "0.0.0.0", "::",  # unspecified
    "100.64.0.1", "100.127.255.254",  # shared address space (CGNAT)
    "fc00::1", "fd12:3456::1",  # unique local
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped private
    "2002:7f00:1::1", "64:ff9b::a9fe:a9fe",  # 6to4 and NAT64 around private IPv4
    "192.0.2.10", "198.18.0.1",  # documentation, benchmarking
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8",
          "100.128.0.1", "172.32.0.1"]


@pytest.mark.parametrize("address", PRIVATE)
def test_private_addresses_are_not_public(address):
    assert not is_public(address)
    host = f"[{address}]" if ":" in address else address
    problem = literal_problem(f"https://{host}/hook")
    assert problem is not None and problem.startswith("refused: ") and "is a private address" in problem


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert is_public(address)
    host = f"[{address}]" if ":" in address else address
    assert literal_problem(f"https://{host}:8443/hook") is None


def test_a_host_name_is_left_to_the_resolver():
    assert literal_problem("https://hooks.example.com/x") is None
    assert literal_problem("https://localhost/x") is None  # a name: the resolver refuses it


class FakeResolver(AbstractResolver):
    """Answers from a table, and can change its answer (DNS rebinding)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return [ResolveResult(hostname=host, host=ip, port=port,
                              family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST) for ip in self.table[host]]

    async def close(self) -> None:
        return None


async def test_the_resolver_keeps_only_public_addresses():
    resolver = PublicOnlyResolver(FakeResolver({"mixed.test": ["10.0.0.7", "8.8.8.8", "::1"]}))
    assert [a["host"] for a in await resolver.resolve("mixed.test", 443)] == ["8.8.8.8"]


async def test_the_resolver_refuses_a_name_with_only_private_addresses():
    resolver = PublicOnlyResolver(FakeResolver({"meta.test": ["169.254.169.254", "fd00::1"]}))
    with pytest.raises(PrivateAddressError, match=r"^refused: meta.test resolves to a private address$"):
        await resolver.resolve("meta.test", 80)


async def test_the_real_resolver_refuses_localhost():
    with pytest.raises(PrivateAddressError, match="refused: localhost resolves to a private address"):
        await PublicOnlyResolver().resolve("localhost", 80, socket.AF_UNSPEC)


async def test_a_name_that_turns_private_after_the_check_is_refused_at_connect_time():
    names = FakeResolver({"rebind.test": ["93.184.215.14"]})
    assert await check_public_url("http://rebind.test/hook", False, resolver=names) is None
    names.table["rebind.test"] = ["127.0.0.1"]  # the attacker's DNS answer changes
    client = session(GUARDED, resolver=PublicOnlyResolver(names))
    try:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await client.post("http://rebind.test/hook", data=b"{}")
    finally:
        await client.close()
    assert refusal(caught.value) == "refused: rebind.test resolves to a private address"
    assert names.asked == ["rebind.test", "rebind.test"]


@pytest.mark.parametrize(("url", "problem"), [
    ("http://127.0.0.1:8080/x", "refused: 127.0.0.1 is a private address"),
    ("https://[::1]/x", "refused: ::1 is a private address"),
    ("http://169.254.169.254/latest/meta-data", "refused: 169.254.169.254 is a private address"),
    ("http://localhost:9000/x", "refused: localhost resolves to a private address"),
    ("ftp://hooks.example.com/x", "must be an http:// or https:// URL with a host"),
    ("http:///x", "must be an http:// or https:// URL with a host"),
    ("https://8.8.8.8/hook", None),
])
async def test_check_public_url(url, problem):
    assert await check_public_url(url, allow_private=False) == problem


async def test_check_public_url_with_private_allowed():
    assert await check_public_url("http://127.0.0.1:8080/x", allow_private=True) is None
    assert await check_public_url("http://localhost/x", allow_private=True) is None
    assert await check_public_url("gopher://localhost/x", allow_private=True) is not None


async def test_check_public_url_refuses_a_name_with_any_private_address():
    names = FakeResolver({"half.test": ["8.8.8.8", "10.0.0.1"], "fine.test": ["8.8.4.4"]})
    assert await check_public_url("https://half.test/", False, resolver=names) == \
        "refused: half.test resolves to a private address"
    assert await check_public_url("https://fine.test/", False, resolver=names) is None
    # Not resolvable now: accepted, since every connection is checked again.
    assert await check_public_url("https://nowhere.test/", False, resolver=names) is None


# -- the adapter ------------------------------------------------------------------------------

@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(slow_seconds=2.0) as r:
        yield r


@pytest.fixture
def make(receiver: WebhookReceiver, closing: Any) -> Any:
    def build(options: ProviderOptions = OPTIONS, **config: Any) -> WebhookProvider:
        config.setdefault("url", receiver.url("/app"))
        config.setdefault("secret", receiver.secret)
        return closing(WebhookProvider({k: v for k, v in config.items() if v is not None}, options))

    return build


@pytest.fixture
def provider(make: Any) -> WebhookProvider:
    return make()


def msg(target: str, delivery_id: str | None = None, **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {"title": "Invoice", "body": "Due today", "platform": "webhook",
                              "channel": "push"}
    values.update(fields)
    return OutboundMessage(delivery_id=delivery_id or new_id(), notification_id=new_id(),
                           app_id="acme", user_id="u1", provider="webhook", target=target,
                           **values)


async def test_posts_a_signed_notification_event(provider, receiver):
    m = msg(receiver.url("/dev/1"), data={"invoice": 42}, category="billing", priority="high",
            device_id="dev-1")
    before = int(time.time())
    (result,) = await provider.send([m])
    assert result == Sent(m.delivery_id)
    assert receiver.rejected == []
    (got,) = receiver.received
    assert got.path == "/dev/1" and got.id == m.delivery_id
    assert got.headers["content-type"] == "application/json"
    assert before <= int(got.headers["webhook-timestamp"]) <= int(time.time())
    # The service's own verification agrees with the receiver's.
    webhooks.verify(receiver.secret, got.headers, got.body, now=time.time())
    assert got.json["type"] == "notification"
    assert got.json["timestamp"].endswith("Z")
    assert got.json["data"] == {
        "id": m.notification_id, "delivery_id": m.delivery_id, "app_id": "acme", "user_id": "u1",
        "channel": "push", "title": "Invoice", "body": "Due today", "data": {"invoice": 42},
        "category": "billing", "priority": "high", "attempt": 1, "device_id": "dev-1"}


async def test_the_event_time_is_the_notifications_and_the_id_survives_retries(provider, receiver):
    first = msg(receiver.url("/dev/1"))
    again = OutboundMessage(**{**first.__dict__, "attempt": 2})
    await provider.send([first])
    await provider.send([again])
    a, b = receiver.received
    assert a.id == b.id == first.delivery_id
    assert a.json["timestamp"] == b.json["timestamp"]
    assert (a.json["data"]["attempt"], b.json["data"]["attempt"]) == (1, 2)


async def test_a_target_that_is_not_a_url_goes_to_the_apps_url(provider, receiver):
    m = msg("+393331234567", channel="sms", platform=None)
    assert isinstance((await provider.send([m]))[0], Sent)
    (got,) = receiver.received
    assert got.path == "/app" and got.json["data"]["to"] == "+393331234567"


async def test_a_wrong_secret_is_caught_by_the_receiver(make, receiver):
    provider = make(secret=webhooks.new_secret())
    (result,) = await provider.send([msg(receiver.url("/dev/1"))])
    assert isinstance(result, Failed) and "401" in result.reason
    assert receiver.received == [] and receiver.rejected[0].reason == "no valid v1 signature"


async def test_settings_that_cannot_work_fail_every_message(make, receiver):
    assert await make(url=None).send([msg("not-a-url")]) == [Failed("no webhook URL")]
    assert await make(secret=None).send([msg(receiver.url())]) == [Failed("webhook secret not set")]
    (bad,) = await make(secret="not-a-secret").send([msg(receiver.url())])
    assert bad == Failed("webhook secret is not a whsec_ secret")
    assert receiver.received == [] and receiver.rejected == []


@pytest.mark.parametrize(("kind", "extra", "expected", "reason", "after"), [
    ("ok", {}, Sent, None, None),
    ("no_content", {}, Sent, None, None),
    ("truncated", {}, Sent, None, None),
    ("gone", {}, TargetInvalid, "webhook answered 410: this endpoint is gone", None),
    ("error", {}, Retry, "webhook answered 500: internal error", None),
    ("unavailable", {"retry_after": "45"}, Retry, "webhook answered 503: unavailable", 45.0),
    ("rate_limited", {"retry_after": "30"}, Retry, "webhook answered 429: slow down", 30.0),
    ("conflict", {}, Retry, "webhook answered 409: busy with this id", None),
    ("status", {"status": 408}, Retry, "webhook answered 408: scripted", None),
    ("status", {"status": 425}, Retry, "webhook answered 425: scripted", None),
    ("status", {"status": 502}, Retry, "webhook answered 502: scripted", None),
    ("bad_request", {}, Failed, "webhook answered 400: unexpected payload", None),
    ("status", {"status": 404}, Failed, "webhook answered 404: scripted", None),
    ("status", {"status": 422}, Failed, "webhook answered 422: scripted", None),
    ("redirect", {"location": "https://new.example/hook"}, Failed,
     "webhook answered 301: redirects are not followed; location https://new.example/hook", None),
    ("redirect", {"status": 307}, Failed,
     "webhook answered 307: redirects are not followed; location https://elsewhere.example/hook", None),
])
async def test_each_answer_is_mapped(provider, receiver, kind, extra, expected, reason, after):
    receiver.answer("/dev/1", kind, **extra)
    m = msg(receiver.url("/dev/1"))
    (result,) = await provider.send([m])
    assert type(result) is expected, result
    if expected is Sent:
        assert result.message_id == m.delivery_id
    else:
        assert result.reason == reason
    if expected is Retry:
        assert result.after == after
    assert len(receiver.received) == 1  # redirects were not followed


async def test_410_from_the_apps_url_fails_without_a_device_to_disable(provider, receiver):
    receiver.answer("/app", "gone")
    (result,) = await provider.send([msg("fcm-token-of-a-phone", platform="android")])
    assert result == Failed("webhook answered 410: this endpoint is gone")


@pytest.mark.parametrize("kind", ["slow", "garbage"])
async def test_no_readable_answer_is_a_retry(provider, receiver, kind):
    receiver.answer("/dev/1", kind)
    (result,) = await provider.send([msg(receiver.url("/dev/1"))])
    assert isinstance(result, Retry) and result.reason


async def test_a_url_that_cannot_be_called_fails(make):
    (allowed,) = await make(OPTIONS).send([msg("http://:80/x")])
    (guarded,) = await make(GUARDED).send([msg("http://:80/x")])
    assert allowed == guarded == Failed("not a valid webhook URL")
    assert literal_problem("http://:80/x") == "not a valid URL"


async def test_an_unreachable_url_is_a_retry(provider, receiver):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (result,) = await provider.send([msg(f"http://127.0.0.1:{port}/hook")])
    assert isinstance(result, Retry) and "Connect" in result.reason


async def test_private_targets_are_refused_unless_allowed(make, receiver):
    guarded = make(GUARDED)
    port = receiver.base_url.rsplit(":", 1)[1]
    results = await guarded.send([
        msg(receiver.url("/dev/1")),
        msg(f"http://localhost:{port}/dev/2"),
        msg(f"http://[::ffff:127.0.0.1]:{port}/dev/3"),
        msg("not-a-url"),  # goes to the app's URL, which is on loopback too
    ])
    assert results == [
        Failed("refused: 127.0.0.1 is a private address"),
        Failed("refused: localhost resolves to a private address"),
        Failed("refused: ::ffff:7f00:1 is a private address"),
        Failed("refused: 127.0.0.1 is a private address"),
    ]
    assert receiver.received == [] and receiver.rejected == []
    # The same URLs go through when the operator allows private webhooks.
    allowed = await make(OPTIONS).send([msg(f"http://localhost:{port}/dev/2")])
    assert isinstance(allowed[0], Sent)


async def test_a_batch_is_sent_concurrently_within_the_bound(make, receiver):
    provider = make(ProviderOptions(timeout=3.0, max_concurrency=4, allow_private_webhooks=True))
    receiver.slow_seconds = 0.2
    receiver.answer("/dev/1", "slow")
    messages = [msg(receiver.url("/dev/1")) for _ in range(12)]
    started = time.monotonic()
    results = await provider.send(messages)
    elapsed = time.monotonic() - started
    assert [r.message_id for r in results] == [m.delivery_id for m in messages]  # type: ignore[union-attr]
    assert receiver.max_in_flight == 4
    assert elapsed < 12 * 0.2 / 2  # three rounds of four, not twelve one after another


async def test_connections_are_kept_alive_and_reused(provider, receiver):
    for _ in range(5):
        await provider.send([msg(receiver.url("/dev/1"))])
    assert len(receiver.received) == 5 and len(receiver.peers) == 1


async def test_close_releases_the_pool_and_a_later_send_reopens_it(provider, receiver):
    await provider.send([msg(receiver.url("/dev/1"))])
    await provider.close()
    assert isinstance((await provider.send([msg(receiver.url("/dev/1"))]))[0], Sent)
    assert len(receiver.peers) == 2


async def test_an_empty_batch_sends_nothing(provider, receiver):
    assert await provider.send([]) == []
    assert receiver.received == []


# -- end to end: HTTP API, worker, store ------------------------------------------------------

@pytest.fixture
def settings():
    # The receiver listens on loopback: the API must let the app save such a URL.
    return make_settings(allow_private_webhooks=True)


@pytest.fixture
def provider_options(request) -> ProviderOptions:
    allow = getattr(request, "param", True)
    return ProviderOptions(timeout=1.0, max_concurrency=16, allow_private_webhooks=allow,
                           public_url="http://tidings.test")


async def configure(client, receiver: WebhookReceiver) -> None:
    body = {"name": "Acme",
            "providers": {"webhook": {"url": receiver.url("/app"), "secret": receiver.secret}},
            "routing": {"push": {"webhook": "webhook"}, "sms": "webhook"}}
    r = await client.put("/v1/apps/acme", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text


async def test_e2e_a_push_is_posted_to_the_devices_url(client, acme, container, receiver):
    await configure(client, receiver)
    device = await register_device(client, acme, "webhook", receiver.url("/users/u1/hook"))
    n, d = await notify_and_deliver(client, container, acme, data={"invoice": 42}, category="billing",
                                    priority="high")
    assert (d["status"], d["provider"], d["target"]) == ("sent", "webhook", device["id"])
    (got,) = receiver.received
    assert receiver.rejected == []
    assert check_signature(receiver.secret, got.headers, got.body, time.time()) is None
    assert got.path == "/users/u1/hook" and got.id == d["id"] == d["provider_message_id"]
    data = got.json["data"]
    assert (data["id"], data["delivery_id"], data["app_id"], data["user_id"]) == (n["id"], d["id"], "acme", "u1")
    assert (data["title"], data["body"], data["data"], data["category"], data["priority"]) == \
        ("Invoice", "Due", {"invoice": 42}, "billing", "high")
    assert data["device_id"] == device["id"] and "to" not in data


async def test_e2e_an_sms_routed_to_the_webhook_goes_to_the_apps_url(client, acme, container, receiver):
    await configure(client, receiver)
    await notify(client, acme, {"to": {"phone": "+393331234567"}, "channels": ["sms"], "body": "Code 1234"})
    assert await drain(container) == 1
    (got,) = receiver.received
    assert got.path == "/app" and got.json["data"]["to"] == "+393331234567"
    assert got.json["data"]["channel"] == "sms" and got.json["data"]["body"] == "Code 1234"


async def test_e2e_410_disables_the_device(client, acme, container, receiver):
    await configure(client, receiver)
    device = await register_device(client, acme, "webhook", receiver.url("/gone"))
    receiver.answer("/gone", "gone")
    _, d = await notify_and_deliver(client, container, acme)
    assert d["status"] == "failed" and "410" in d["error"]
    assert (await device_of(client, acme, device["id"]))["enabled"] is False


async def test_e2e_429_waits_for_retry_after_and_keeps_the_id(client, acme, container, receiver, clock):
    await configure(client, receiver)
    await register_device(client, acme, "webhook", receiver.url("/busy"))
    receiver.answer("/busy", "rate_limited", times=1, retry_after="120")
    n, d = await notify_and_deliver(client, container, acme)
    assert (d["status"], d["attempts"]) == ("pending", 1) and "429" in d["error"]
    await assert_due_after(container, clock, 120)
    d = await delivery(client, acme, n["id"])
    assert (d["status"], d["attempts"], d["provider_message_id"]) == ("sent", 2, d["id"])
    first, second = receiver.received
    assert first.id == second.id == d["id"]
    assert (first.json["data"]["attempt"], second.json["data"]["attempt"]) == (1, 2)


@pytest.mark.parametrize("provider_options", [False], indirect=True)
async def test_e2e_a_private_url_is_refused_when_not_allowed(client, acme, container, receiver):
    await configure(client, receiver)
    device = await register_device(client, acme, "webhook", receiver.url("/internal"))
    _, d = await notify_and_deliver(client, container, acme)
    assert (d["status"], d["error"]) == ("failed", "refused: 127.0.0.1 is a private address")
    assert receiver.received == []
    assert (await device_of(client, acme, device["id"]))["enabled"] is True

