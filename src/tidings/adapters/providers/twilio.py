"""The `twilio` provider: SMS through Twilio's Programmable Messaging REST API (create a Message),
with HTTP Basic auth of the account SID and auth token, over one keep-alive pool per account.

Twilio takes one message per request, so a batch is sent as concurrent requests bounded by
`max_concurrency`. A phone number has no device behind it: a number Twilio refuses for good
(invalid, landline, opted out with STOP) fails the message without disabling anything.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from yarl import URL

from ...domain.delivery import Failed, OutboundMessage, Retry, SendResult, Sent
from ...domain.masking import mask_phone
from .http import LazySession, gather_bounded, retry_after
from .options import ProviderOptions

log = logging.getLogger("tidings.provider.twilio")

DEFAULT_ENDPOINT = "https://api.twilio.com"
API_VERSION = "2010-04-01"
MAX_BODY = 1600  # characters; Twilio refuses longer bodies with error 21617
MAX_VALIDITY = 14_400  # seconds: the longest ValidityPeriod Twilio accepts

# The number can never receive this SMS; an SMS target has no device to disable.
RECIPIENT_REFUSED = {
    21211: "invalid 'To' number",
    21614: "'To' is not a mobile number",
    21610: "the recipient opted out with STOP",
}
AUTH_FAILED = 20003
TOO_MANY_REQUESTS = 20429


def sms_text(m: OutboundMessage) -> str:
    if m.title and m.body:
        return f"{m.title}\n{m.body}"
    return m.title or m.body or ""


class TwilioProvider:
    name = "twilio"

    def __init__(self, config: dict[str, Any], options: ProviderOptions) -> None:
        self.account_sid: str = config["account_sid"]
        credentials = f"{self.account_sid}:{config['auth_token']}".encode()
        self._headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}
        sender: str = config["from"]
        # A Messaging Service SID lets Twilio pick the sending number from the service's pool.
        self._sender = ("MessagingServiceSid" if sender.startswith("MG") else "From", sender)
        endpoint = (config.get("endpoint") or DEFAULT_ENDPOINT).rstrip("/")
        self.url = URL(f"{endpoint}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json")
        self._callback_base = (f"{options.public_url.rstrip('/')}/v1/callbacks/twilio/"
                               if options.public_url else None)
        self.max_concurrency = options.max_concurrency
        self._session = LazySession(options)

    def form(self, m: OutboundMessage) -> dict[str, str]:
        """The Messages.json form fields for one delivery."""
        fields = {"To": m.target, self._sender[0]: self._sender[1], "Body": sms_text(m)}
        if m.ttl is not None:
            fields["ValidityPeriod"] = str(min(max(m.ttl, 1), MAX_VALIDITY))
        if self._callback_base:
            fields["StatusCallback"] = self._callback_base + m.app_id
        return fields

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if not messages:
            return []
        client = self._session.get()
        url, headers = self.url, self._headers

        async def one(m: OutboundMessage) -> SendResult:
            text = sms_text(m)
            if not text:
                return Failed("nothing to send: the SMS has neither title nor body")
            if len(text) > MAX_BODY:
                return Failed(f"the SMS text is {len(text)} characters; Twilio takes at most {MAX_BODY}")
            async with client.post(url, data=self.form(m), headers=headers) as resp:
                raw = await resp.read()
                if resp.status in (200, 201):
                    try:
                        sid = orjson.loads(raw)["sid"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        return Retry(f"Twilio answered {resp.status} without a message sid")
                    if isinstance(sid, str) and sid:
                        return Sent(sid)
                    return Retry(f"Twilio answered {resp.status} without a message sid")
                return self._failure(m, resp.status, raw, resp.headers.get("Retry-After"))

        return await gather_bounded(messages, self.max_concurrency, one)

    def _failure(self, m: OutboundMessage, status: int, raw: bytes, after_header: str | None) -> SendResult:
        after = retry_after(after_header)
        try:
            error = orjson.loads(raw)
            if not isinstance(error, dict):
                raise TypeError
        except (orjson.JSONDecodeError, TypeError):
            return Retry(f"Twilio answered {status} without a JSON error", after)
        code = error.get("code")
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        # Twilio's messages quote the number; the delivery's error keeps it masked.
        text = str(error.get("message") or "").replace(m.target, mask_phone(m.target)).strip()
        reason = (f"Twilio {code}: {text}" if code else f"Twilio {status}: {text}")[:300]
        if code in RECIPIENT_REFUSED:
            return Failed(f"{reason} ({RECIPIENT_REFUSED[code]}; no device to disable for an SMS number)")
        if status == 401 or code == AUTH_FAILED:
            # Credentials can be fixed with PUT /v1/apps/{id}; the message itself is fine.
            log.warning("twilio account %s: credentials refused (%s)", self.account_sid, code)
            return Retry(f"{reason} (check the twilio account_sid and auth_token)", after)
        if status == 429 or code == TOO_MANY_REQUESTS or status >= 500:
            return Retry(reason, after)
        if 400 <= status < 500 and status not in (403, 404, 408):
            return Failed(reason)
        # 403 (account suspended), 404 (unknown account) and the like are the setup's fault,
        # not the message's: keep it for a later attempt.
        return Retry(reason, after)

    async def close(self) -> None:
        await self._session.close()
