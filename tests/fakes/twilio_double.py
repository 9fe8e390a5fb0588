"""Twilio's Messages REST API for the `twilio` provider's tests, on 127.0.0.1 port 0.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` checks what Twilio checks: HTTP Basic
auth with the account SID and auth token, the account in the path, a form body with an E.164
`To`, one of `From` or `MessagingServiceSid`, a `Body` of at most 1600 characters and a valid
`ValidityPeriod`; it answers 201 with the message resource, or Twilio's JSON errors. A test can
script any answer for a `To` number. `send_status_callback` then plays Twilio's status callback
to the message's `StatusCallback`, signed with `X-Twilio-Signature`.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.loopback import AiohttpDouble, take
from tidings.adapters.providers.twilio_signature import twilio_signature

API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
MESSAGING_SERVICE = re.compile(r"^MG[0-9a-f]{32}$")


def new_account_sid() -> str:
    return "AC" + secrets.token_hex(16)


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


def twilio_error(status: int, code: int, message: str, **headers: str) -> Answer:
    return Answer(status, {"code": code, "message": message,
                           "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
                  headers)


# Twilio's answers, as scripted per `To` number.
INVALID_TO = twilio_error(400, 21211, "Invalid 'To' Phone Number: {to}")
NOT_MOBILE = twilio_error(400, 21614, "'To' number {to} is not a valid mobile number")
UNSUBSCRIBED = twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
SERVER_ERROR = twilio_error(500, 20500, "An internal server error has occurred")
UNAVAILABLE = Answer(503, "<html><body>Service Unavailable</body></html>")
GARBAGE = Answer(201, "{\"sid\": \"SM")  # a truncated body


def too_many_requests(retry_after: int | None = None) -> Answer:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return twilio_error(429, 20429, "Too Many Requests", **headers)


@dataclass
class Message:
    sid: str
    form: dict[str, str]
    resource: dict[str, Any]


@dataclass
class _Script:
    answer: Answer
    times: int | None


class TwilioDouble(AiohttpDouble):
    def __init__(self, account_sid: str | None = None, auth_token: str | None = None, *,
                 deliver: Any = None) -> None:
        """`deliver` carries status callbacks: an httpx-style client (its `post` is called) or an
        async callable `(url, form, headers)`; by default they are POSTed with aiohttp."""
        super().__init__()
        self.account_sid = account_sid or new_account_sid()
        self.auth_token = auth_token or secrets.token_hex(16)
        self.deliver = deliver
        self.messages: dict[str, Message] = {}
        self.requests: list[dict[str, Any]] = []  # every create request: headers and form
        self._scripts: dict[str, list[_Script]] = {}

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._create)
        return app

    # --- what the tests use ------------------------------------------------------------------

    def settings(self, sender: str = "+15005550006", **extra: Any) -> dict[str, Any]:
        """The app's `twilio` provider settings for this double."""
        return {"account_sid": self.account_sid, "auth_token": self.auth_token, "from": sender,
                "endpoint": self.base_url, **extra}

    def script(self, to: str, answer: Answer, *, times: int | None = None) -> None:
        """Answer `answer` to messages for `to`, `times` times (None: until told otherwise)."""
        self._scripts.setdefault(to, []).append(_Script(answer, times))

    def message(self, sid: str | None) -> Message:
        assert sid is not None and sid in self.messages, f"no message {sid}"
        return self.messages[sid]

    def to(self, number: str) -> list[Message]:
        return [m for m in self.messages.values() if m.form.get("To") == number]

    async def send_status_callback(self, sid: str, status: str = "delivered",
                                   error_code: int | None = None) -> Any:
        """POST the message's status to its StatusCallback, as Twilio does; returns the
        response of whatever carried it."""
        message = self.messages[sid]
        url = message.form["StatusCallback"]
        params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": self.account_sid,
                  "MessageStatus": status, "SmsStatus": status, "To": message.form["To"],
                  "ApiVersion": API_VERSION}
        if "From" in message.form:
            params["From"] = message.form["From"]
        else:
            params["MessagingServiceSid"] = message.form["MessagingServiceSid"]
            params["From"] = "+15005550006"  # the number the service picked
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        message.resource["status"] = status
        headers = {"X-Twilio-Signature": twilio_signature(self.auth_token, url, params),
                   "User-Agent": "TwilioProxy/1.1",
                   "Content-Type": "application/x-www-form-urlencoded"}
        if self.deliver is None:
            async with aiohttp.ClientSession() as session, \
                    session.post(url, data=params, headers=headers) as resp:
                await resp.read()
                return resp
        post = getattr(self.deliver, "post", None)
        if post is not None:
            return await post(url, data=params, headers=headers)
        return await self.deliver(url, params, headers)

    # --- the API -------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(login.encode(), self.account_sid.encode()) and \
            secrets.compare_digest(password.encode(), self.auth_token.encode())

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            answer = twilio_error(401, 20003, "Authenticate")
            answer.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return self._respond(answer, {})
        if request.match_info["account"] != self.account_sid:
            return self._respond(twilio_error(
                404, 20404, f"The requested resource {request.path} was not found"), {})
        if request.content_type != "application/x-www-form-urlencoded":
            return self._respond(twilio_error(400, 20001, "Expected a form-encoded body"), {})
        posted = await request.post()
        form = {k: str(v) for k, v in posted.items()}
        self.requests.append({"headers": dict(request.headers), "form": form})
        to = form.get("To", "")
        scripted = take(self._scripts.get(to))
        if scripted is not None:
            return self._respond(scripted.answer, form)
        problem = self._check(form)
        if problem is not None:
            return self._respond(problem, form)
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        service = form.get("MessagingServiceSid")
        resource = {
            "sid": sid, "account_sid": self.account_sid, "to": to, "from": form.get("From"),
            "messaging_service_sid": service, "body": form["Body"],
            "status": "accepted" if service and "From" not in form else "queued",
            "num_segments": str(max(1, -(-len(form["Body"]) // 153))), "num_media": "0",
            "direction": "outbound-api", "api_version": API_VERSION, "price": None,
            "price_unit": "USD", "error_code": None, "error_message": None,
            "date_created": now, "date_updated": now, "date_sent": None,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
        }
        self.messages[sid] = Message(sid, form, resource)
        return web.json_response(resource, status=201)

    @staticmethod
    def _check(form: dict[str, str]) -> Answer | None:
        to = form.get("To")
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if not E164.match(to):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
        if sender and not E164.match(sender):
            return twilio_error(400, 21212, f"Invalid From Number: {sender}")
        if service and not MESSAGING_SERVICE.match(service):
            return twilio_error(400, 21701, f"The Messaging Service Sid {service} is invalid.")
        body = form.get("Body", "")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        validity = form.get("ValidityPeriod")
        if validity is not None and not (validity.isdigit() and 1 <= int(validity) <= 14_400):
            return twilio_error(400, 21623, "ValidityPeriod must be between 1 and 14400 seconds.")
        callback = form.get("StatusCallback")
        if callback is not None and not re.match(r"^https?://[^\s]+$", callback):
            return twilio_error(400, 21609, "Invalid StatusCallback url")
        unknown = set(form) - {"To", "From", "MessagingServiceSid", "Body", "ValidityPeriod",
                               "StatusCallback", "MediaUrl", "MaxPrice", "ProvideFeedback",
                               "Attempt", "ForceDelivery", "ApplicationSid", "SmartEncoded",
                               "ShortenUrls", "ScheduleType", "SendAt", "SendAsMms"}
        if unknown:
            return twilio_error(400, 20001, f"Unknown parameters: {', '.join(sorted(unknown))}")
        return None

    @staticmethod
    def _respond(answer: Answer, form: dict[str, str]) -> web.Response:
        if isinstance(answer.body, str):
            return web.Response(status=answer.status, text=answer.body, headers=answer.headers,
                                content_type="text/html")
        body = {k: v.format(to=form.get("To", "")) if isinstance(v, str) else v
                for k, v in answer.body.items()}
        return web.json_response(body, status=answer.status, headers=answer.headers)
