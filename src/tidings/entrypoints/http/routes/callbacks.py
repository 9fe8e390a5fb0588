"""Delivery receipts that providers POST back: Twilio status callbacks and Amazon SNS HTTP
notifications (SES events, SNS SMS delivery status). No credential of ours: each request is
proven by the provider's own signature, checked before anything is read from it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from ....adapters.providers.twilio_signature import valid_twilio_signature
from ....adapters.receipts.sns import (
    SnsCertificateUnavailable,
    SnsMessageError,
    SnsVerifier,
    confirm_subscription,
    parse_body,
    receipts_from,
)
from ....domain.errors import BadRequest, Forbidden, NotFound, Unavailable
from ....domain.notifications import DeliveryStatus
from ....domain.receipts import Receipt
from ....service.apps import provider_settings
from ..deps import services

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])
log = logging.getLogger("tidings.callbacks")

# Twilio's MessageStatus values that end a message; the others (queued, sending, sent, …) are
# steps on the way and change nothing here.
_TWILIO_FINAL = {"delivered": DeliveryStatus.DELIVERED, "undelivered": DeliveryStatus.FAILED,
                 "failed": DeliveryStatus.FAILED}
MAX_CALLBACK_BYTES = 64 * 1024


async def _settings(request: Request, app_id: str, *providers: str) -> dict[str, dict[str, Any]]:
    """The app's settings of those providers; an app without any of them (or no app) has no
    such callback, and is told apart from one that exists by nothing."""
    container = services(request)
    try:
        app = await container.apps.cached(app_id)
    except NotFound:
        raise NotFound("no such callback") from None
    settings = provider_settings(app, container.box)
    found = {name: settings[name] for name in providers if name in settings}
    if not found:
        raise NotFound("no such callback")
    return found


async def _body(request: Request) -> bytes:
    body = await request.body()
    if len(body) > MAX_CALLBACK_BYTES:
        raise BadRequest(f"a callback body is at most {MAX_CALLBACK_BYTES} bytes")
    return body


@router.post("/twilio/{app_id}", status_code=204, response_class=Response)
async def twilio_status(app_id: str, request: Request) -> Response:
    """Twilio's StatusCallback: `delivered` moves the SMS delivery to delivered, `undelivered`
    and `failed` to failed (with Twilio's error code)."""
    settings = (await _settings(request, app_id, "twilio"))["twilio"]
    body = await _body(request)
    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise BadRequest("the body must be form-encoded UTF-8") from None
    public = services(request).settings.public_url
    url = f"{public.rstrip('/')}{request.url.path}" if public else str(request.url)
    signature = request.headers.get("x-twilio-signature", "")
    if not signature or not valid_twilio_signature(settings["auth_token"], url, params, signature):
        raise Forbidden("X-Twilio-Signature does not match this request")
    if params.get("AccountSid") and params["AccountSid"] != settings["account_sid"]:
        raise Forbidden("the callback is for another Twilio account")
    sid = params.get("MessageSid") or params.get("SmsSid")
    status = _TWILIO_FINAL.get(params.get("MessageStatus") or params.get("SmsStatus") or "")
    if sid and status is not None:
        code = params.get("ErrorCode")
        error = f"twilio: {params.get('MessageStatus')}" + (f" (error {code})" if code else "")
        await services(request).receipts.apply(app_id, [Receipt(
            "twilio", sid, status, datetime.now(UTC),
            error=error if status == DeliveryStatus.FAILED else None)])
    return Response(status_code=204)


class SnsEndpoint:
    """What the SNS callback needs beyond the request: the verifier (it caches Amazon's signing
    certificates) and how to visit a SubscribeURL. One per app instance, closed with it."""

    def __init__(self, verifier: SnsVerifier | None = None,
                 get: Callable[[str], Awaitable[int]] | None = None) -> None:
        self.verifier = verifier or SnsVerifier()
        self.get = get or _visit

    async def close(self) -> None:
        await self.verifier.close()


async def _visit(url: str) -> int:
    import aiohttp  # at the first subscription, not at start-up

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, \
            session.get(url, allow_redirects=False) as resp:
        return resp.status


@router.post("/sns/{app_id}", status_code=204, response_class=Response)
async def sns_notification(app_id: str, request: Request) -> Response:
    """Amazon SNS HTTP(S) subscription endpoint for the app's SES event and SNS SMS status
    topics: the message signature is verified, a subscription confirmation is confirmed, and
    receipts update their deliveries."""
    container = services(request)
    settings = await _settings(request, app_id, "ses", "sns")
    endpoint: SnsEndpoint = request.app.state.sns
    try:
        doc = parse_body(await _body(request))
    except SnsMessageError as exc:
        raise BadRequest(f"the body must be an Amazon SNS message: {exc}") from None
    try:
        await endpoint.verifier.verify(doc)
    except SnsCertificateUnavailable as exc:
        # Amazon's certificate could not be read now: 503 makes SNS deliver the message again.
        raise Unavailable(f"cannot verify the message yet: {exc}") from None
    except SnsMessageError as exc:
        raise Forbidden(f"not a verifiable Amazon SNS message: {exc}") from None
    allowed = {arn for found in settings.values() for arn in found.get("receipt_topic_arns") or ()}
    if allowed and doc.get("TopicArn") not in allowed:
        raise Forbidden("messages from this topic are not accepted for this app")
    kind = doc.get("Type")
    if kind == "SubscriptionConfirmation":
        try:
            await confirm_subscription(doc, endpoint.get)
        except SnsMessageError as exc:
            raise BadRequest(f"the subscription could not be confirmed: {exc}") from None
        log.info("confirmed the SNS subscription of app %s to %s", app_id, doc.get("TopicArn"))
    elif kind == "Notification":
        try:
            receipts = receipts_from(doc)
        except SnsMessageError as exc:
            raise BadRequest(str(exc)) from None
        if receipts:
            await container.receipts.apply(app_id, receipts)
    return Response(status_code=204)
