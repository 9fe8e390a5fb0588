"""The `webhook` provider: a delivery channel that POSTs each notification as JSON, signed per
Standard Webhooks, to a URL the app controls: the device's own URL (a device registered with
platform "webhook" and the URL as its token), else the app-wide `url` of the settings.

Answers, following the spec's advice to senders: 2xx is sent; 410 Gone disables the device
whose URL it was (the app-wide URL has no device: the message fails); 408, 409, 425, 429 and
5xx are retried, honouring Retry-After; any other 4xx fails for good, since the receiver refused
this very message; a redirect is not followed (the app should update its URL) and fails with
the location. URLs that are, or resolve to, private addresses are refused unless the operator
allows private webhooks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from yarl import URL

from ...domain import webhooks
from ...domain.delivery import Failed, OutboundMessage, Retry, SendResult, Sent, TargetInvalid
from ...domain.ids import is_ulid, timestamp_ms
from .http import TRANSPORT_ERRORS, LazySession, gather_bounded, retry_after, transport_retry
from .options import ProviderOptions
from .ssrf import literal_problem, refusal

EVENT_TYPE = "notification"
RETRIED_4XX = frozenset({408, 409, 425, 429})
MAX_ANSWER = 64 * 1024  # bytes of an answer read to keep the connection reusable


def target_url(m: OutboundMessage) -> str | None:
    """The device's own URL, when its token is one."""
    target = m.target.strip()
    return target if target.startswith(("https://", "http://")) else None


def occurred_at(m: OutboundMessage) -> datetime:
    """When the notification was created (its ULID says so), so a retry carries the same
    event time; the signature's timestamp is the attempt's own."""
    if is_ulid(m.notification_id):
        return datetime.fromtimestamp(timestamp_ms(m.notification_id) / 1000, UTC)
    return datetime.now(UTC)


def payload(m: OutboundMessage, own_url: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": m.notification_id, "delivery_id": m.delivery_id, "app_id": m.app_id,
        "user_id": m.user_id, "channel": m.channel, "title": m.title, "body": m.body,
        "data": m.data, "category": m.category, "priority": m.priority, "attempt": m.attempt,
    }
    if not own_url:
        # Routed here for a phone, an e-mail or another platform's token: the receiver needs
        # the address to act on.
        data["to"] = m.target
    if m.device_id:
        data["device_id"] = m.device_id
    return webhooks.event(EVENT_TYPE, data, occurred_at(m))


async def _answer(resp: aiohttp.ClientResponse) -> bytes:
    """The start of the answer's body, for the reason of a failure. The status has decided
    already (a 2xx is a success however its body ends), so a body that breaks off is no error."""
    try:
        return await resp.content.read(MAX_ANSWER)
    except TRANSPORT_ERRORS:
        return b""


class WebhookProvider:
    name = "webhook"

    def __init__(self, config: dict[str, Any], options: ProviderOptions) -> None:
        self._url: str | None = config.get("url") or None
        secret = config.get("secret") or None
        self._secret: str | None = secret
        self._unusable: str | None = None
        if secret is None:
            self._unusable = "webhook secret not set"
        elif not webhooks.is_secret(secret):
            self._unusable = "webhook secret is not a whsec_ secret"
        self.max_concurrency = options.max_concurrency
        self._allow_private = options.allow_private_webhooks
        self._session = LazySession(options, public_only=True)

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if not messages:
            return []
        if self._unusable is not None:
            return [Failed(self._unusable) for _ in messages]
        client = self._session.get()

        async def one(m: OutboundMessage) -> SendResult:
            return await self._post(client, m)

        return await gather_bounded(messages, self.max_concurrency, one)

    async def _post(self, client: aiohttp.ClientSession, m: OutboundMessage) -> SendResult:
        own = target_url(m)
        given = own or self._url
        if not given:
            return Failed("no webhook URL")
        try:
            url = URL(given)
        except ValueError:
            return Failed("not a valid webhook URL")
        if not url.host:
            return Failed("not a valid webhook URL")
        if not self._allow_private:
            problem = literal_problem(url)
            if problem:
                return Failed(problem)
        assert self._secret is not None
        body = orjson.dumps(payload(m, own is not None))
        # The id stays the same across retries: receivers use it to drop duplicates.
        msg_id = m.delivery_id
        headers = webhooks.headers(self._secret, msg_id, int(time.time()), body)
        headers["Content-Type"] = "application/json"
        try:
            async with client.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                return self._result(resp, await _answer(resp), msg_id, own is not None)
        except aiohttp.InvalidURL:
            return Failed("not a valid webhook URL")
        except TRANSPORT_ERRORS as exc:
            refused = refusal(exc)
            if refused:
                return Failed(refused)
            return transport_retry(exc)

    @staticmethod
    def _result(resp: aiohttp.ClientResponse, answer: bytes, msg_id: str,
                own_url: bool) -> SendResult:
        status = resp.status
        if 200 <= status < 300:
            return Sent(msg_id)
        what = f"webhook answered {status}"
        detail = " ".join(answer[:200].decode("utf-8", "replace").split())
        reason = f"{what}: {detail}" if detail else what
        if 300 <= status < 400:
            return Failed(f"{what}: redirects are not followed; location "
                          f"{resp.headers.get('Location', '(none)')}")
        if status == 410:
            # Only a device's own URL can be disabled; the app-wide URL has no device.
            return TargetInvalid(reason) if own_url else Failed(reason)
        if status in RETRIED_4XX or status >= 500:
            return Retry(reason, after=retry_after(resp.headers.get("Retry-After")))
        if 400 <= status < 500:
            return Failed(reason)
        return Retry(reason)

    async def close(self) -> None:
        await self._session.close()
