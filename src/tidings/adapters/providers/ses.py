"""The `ses` provider: e-mail through Amazon SES (API v2 SendEmail), one request per message.

Each message is tagged with its app, notification and delivery ids, so that the bounce,
complaint and delivery events SES publishes can be matched to the delivery they concern.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ...domain.delivery import Failed, OutboundMessage, Retry, SendResult, Sent
from .aws import AwsClient, ResultFor, error_result
from .http import gather_bounded
from .options import ProviderOptions

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _paused(reason: str) -> SendResult:
    return Retry(f"SES sending is paused for the account or configuration set: {reason}"[:300])


def _account(reason: str) -> SendResult:
    return Retry(f"the SES account is suspended: {reason}"[:300])


SEND: dict[str, ResultFor] = {
    "MessageRejected": Failed,
    "MailFromDomainNotVerifiedException": Failed,
    "NotFoundException": Failed,
    "BadRequestException": Failed,
    "SendingPausedException": _paused,
    "AccountSendingPausedException": _paused,
    "AccountSuspendedException": _account,
}  # TooManyRequestsException and LimitExceededException: throttling, read as for any service


def tag(name: str, value: str) -> dict[str, str]:
    """An SES message tag: names and values allow only letters, digits, '_' and '-'."""
    return {"Name": name, "Value": _TAG_UNSAFE.sub("_", value)[:256] or "_"}


def email_request(sender: str, m: OutboundMessage) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if m.body or not m.html:
        body["Text"] = {"Data": m.body or "", "Charset": "UTF-8"}
    if m.html:
        body["Html"] = {"Data": m.html, "Charset": "UTF-8"}
    return {
        "FromEmailAddress": sender,
        "Destination": {"ToAddresses": [m.target]},
        "Content": {"Simple": {"Subject": {"Data": m.title or "", "Charset": "UTF-8"},
                               "Body": body}},
        "EmailTags": [tag("tidings_app", m.app_id), tag("tidings_notification", m.notification_id),
                      tag("tidings_delivery", m.delivery_id)],
    }


class SesProvider:
    name = "ses"

    def __init__(self, config: dict[str, Any], options: ProviderOptions) -> None:
        self.max_concurrency = options.max_concurrency
        self._sender = str(config["from"])
        self._client = AwsClient("sesv2", config, options)

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        return await gather_bounded(messages, self.max_concurrency, self._send_one)

    async def close(self) -> None:
        await self._client.close()

    async def _send_one(self, m: OutboundMessage) -> SendResult:
        if m.channel != "email":
            return Failed(f"ses does not send {m.channel}")
        try:
            client = await self._client.get()
            answer = await client.send_email(**email_request(self._sender, m))
        except Exception as exc:  # noqa: BLE001 -- every failure becomes a result
            return error_result(exc, SEND)
        return Sent(answer.get("MessageId"))
