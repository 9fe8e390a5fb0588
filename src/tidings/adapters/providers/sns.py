"""The `sns` provider: Amazon SNS mobile push through platform endpoints, and SMS by phone number.

Push follows AWS's token-management workflow, lazily, in the worker: a device without a stored
endpoint ARN gets one (CreatePlatformEndpoint answers the existing ARN for a known token), is
re-enabled with its current token when SNS had disabled it or holds an older token, and the
ARN goes back to the engine in `Sent.target_ref` to be kept with the device. A device with a
stored ARN is published to directly: SNS disabling that endpoint (the platform said the token
is gone) disables the device; an endpoint deleted meanwhile is created again and published to
once more in the same call.

SMS is published as Transactional: a notification is something its recipient expects (a code,
an alert, a receipt), and Promotional messages may be held for quiet hours or dropped by
carriers that filter marketing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from ...domain.delivery import Failed, OutboundMessage, Retry, SendResult, Sent, TargetInvalid
from .aws import AwsClient, ResultFor, error_code, error_message, error_result
from .http import gather_bounded
from .options import ProviderOptions

APNS_KINDS = frozenset({"APNS", "APNS_SANDBOX", "MACOS", "MACOS_SANDBOX"})
# Platforms whose TTL SNS takes as a message attribute, by platform application kind.
TTL_ATTRIBUTE = {"GCM": "AWS.SNS.MOBILE.FCM.TTL", "APNS": "AWS.SNS.MOBILE.APNS.TTL",
                 "APNS_SANDBOX": "AWS.SNS.MOBILE.APNS_SANDBOX.TTL", "ADM": "AWS.SNS.MOBILE.ADM.TTL",
                 "BAIDU": "AWS.SNS.MOBILE.BAIDU.TTL", "WNS": "AWS.SNS.MOBILE.WNS.TTL"}
# APNs request headers (in FCM-shaped overrides) and the SNS attributes that set them.
APNS_HEADERS = {"apns-push-type": "PUSH_TYPE", "apns-priority": "PRIORITY",
                "apns-collapse-id": "COLLAPSE_ID", "apns-topic": "TOPIC"}

_APP_KIND = re.compile(r":app/([A-Za-z_]+)/")
_EXISTING = re.compile(r"Endpoint (arn:[^\s]+) already exists")


def platform_kind(application_arn: str) -> str:
    """GCM, APNS, APNS_SANDBOX, … from arn:aws:sns:<region>:<account>:app/<KIND>/<name>."""
    found = _APP_KIND.search(application_arn)
    return found.group(1).upper() if found else ""


def merged(base: dict[str, Any], extra: Any) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested objects merged key by key."""
    if not isinstance(extra, Mapping):
        return base
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def _string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _attribute(value: Any) -> dict[str, str]:
    return {"DataType": "String", "StringValue": str(value)}


def fcm_message(m: OutboundMessage) -> dict[str, Any]:
    """An FCM HTTP v1 `message` (without its token: SNS adds the endpoint's)."""
    message: dict[str, Any] = {}
    notification = {k: v for k, v in (("title", m.title), ("body", m.body)) if v}
    if notification:
        message["notification"] = notification
    if m.data:
        message["data"] = {str(k): _string(v) for k, v in m.data.items()}  # FCM takes strings only
    android: dict[str, Any] = {"priority": "high" if m.priority == "high" else "normal"}
    if m.collapse_key:
        android["collapse_key"] = m.collapse_key
    message["android"] = merged(android, m.overrides.get("android"))
    return message


def apns_payload(m: OutboundMessage) -> tuple[dict[str, Any], dict[str, str]]:
    """The APNs payload, and the APNs headers SNS is asked to set (by attribute)."""
    aps: dict[str, Any] = {}
    alert = {k: v for k, v in (("title", m.title), ("body", m.body)) if v}
    if alert:
        aps["alert"] = alert
        headers = {"apns-push-type": "alert", "apns-priority": "10" if m.priority == "high" else "5"}
    else:
        aps["content-available"] = 1
        headers = {"apns-push-type": "background", "apns-priority": "5"}
    if m.collapse_key:
        headers["apns-collapse-id"] = m.collapse_key
    payload = {k: v for k, v in m.data.items() if k != "aps"}
    payload["aps"] = aps
    apns = m.overrides.get("apns")
    if isinstance(apns, Mapping):
        payload = merged(payload, apns.get("payload"))
        if isinstance(apns.get("headers"), Mapping):
            headers.update({str(k).lower(): str(v) for k, v in apns["headers"].items()})
    return payload, headers


def push_publication(kind: str, m: OutboundMessage) -> tuple[str, dict[str, dict[str, str]]]:
    """The Publish `Message` (MessageStructure=json: a default text plus the platform's own
    payload) and its MessageAttributes."""
    doc: dict[str, str] = {"default": m.body or m.title or ""}
    attributes: dict[str, dict[str, str]] = {}
    if kind == "GCM":
        doc["GCM"] = json.dumps({"fcmV1Message": {"message": fcm_message(m)}},
                                separators=(",", ":"))
    elif kind in APNS_KINDS:
        payload, headers = apns_payload(m)
        doc[kind] = json.dumps(payload, separators=(",", ":"))
        for header, value in headers.items():
            if header in APNS_HEADERS:
                attributes[f"AWS.SNS.MOBILE.APNS.{APNS_HEADERS[header]}"] = _attribute(value)
    if m.ttl is not None and kind in TTL_ATTRIBUTE:
        attributes[TTL_ATTRIBUTE[kind]] = _attribute(m.ttl)
    return json.dumps(doc, separators=(",", ":")), attributes


def _endpoint_gone(exc: ClientError) -> bool:
    """The endpoint ARN names nothing any more (moto says NotFound; SNS says InvalidParameter
    'No endpoint found for the target arn specified')."""
    code = error_code(exc)
    return code == "NotFound" or (code == "InvalidParameter"
                                  and "no endpoint found" in error_message(exc).lower())


def _token_error(reason: str) -> SendResult:
    # CreatePlatformEndpoint refusing the token itself: the device can never be reached.
    return TargetInvalid(reason) if "Token" in reason else Failed(reason)


def _operator(reason: str) -> SendResult:
    return Retry(f"platform application disabled (its credentials need renewing): {reason}"[:300])


PUBLISH: dict[str, ResultFor] = {
    "EndpointDisabled": TargetInvalid,
    "InvalidParameter": Failed,
    "ParameterValueInvalid": Failed,
    "ValidationException": Failed,
    "OptedOut": Failed,
    "NotFound": Retry,
    "PlatformApplicationDisabled": _operator,
}
CREATE: dict[str, ResultFor] = {
    "InvalidParameter": _token_error,
    "NotFound": lambda reason: Failed(f"SNS platform application not found: {reason}"),
    "PlatformApplicationDisabled": _operator,
}


class SnsProvider:
    name = "sns"

    def __init__(self, config: dict[str, Any], options: ProviderOptions) -> None:
        self.max_concurrency = options.max_concurrency
        self._applications: dict[str, str] = dict(config.get("platform_applications") or {})
        self._client = AwsClient("sns", config, options)

    async def send(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        return await gather_bounded(messages, self.max_concurrency, self._send_one)

    async def close(self) -> None:
        await self._client.close()

    async def _send_one(self, m: OutboundMessage) -> SendResult:
        try:
            if m.channel == "push":
                return await self._push(m)
            if m.channel == "sms":
                return await self._sms(m)
        except Exception as exc:  # noqa: BLE001 -- every failure becomes a result
            return error_result(exc, PUBLISH)
        return Failed(f"sns does not send {m.channel}")

    async def _sms(self, m: OutboundMessage) -> SendResult:
        client = await self._client.get()
        text = "\n".join(part for part in (m.title, m.body) if part)
        answer = await client.publish(
            PhoneNumber=m.target, Message=text,
            MessageAttributes={"AWS.SNS.SMS.SMSType": _attribute("Transactional")})
        return Sent(answer.get("MessageId"))

    async def _push(self, m: OutboundMessage) -> SendResult:
        application = self._applications.get(m.platform or "")
        if not application:
            return Failed(f"no SNS platform application for {m.platform}")
        message, attributes = push_publication(platform_kind(application), m)
        client = await self._client.get()
        arn = m.target_ref
        if arn is None:
            made = await self._endpoint(client, application, m)
            if not isinstance(made, str):
                return made
            arn = made
        try:
            answer = await self._publish(client, arn, message, attributes)
        except ClientError as exc:
            if m.target_ref is None or not _endpoint_gone(exc):
                return error_result(exc, PUBLISH)
            made = await self._endpoint(client, application, m)
            if not isinstance(made, str):
                return made
            arn = made
            answer = await self._publish(client, arn, message, attributes)
        return Sent(answer.get("MessageId"), target_ref=arn)

    @staticmethod
    async def _publish(client: Any, arn: str, message: str,
                       attributes: dict[str, dict[str, str]]) -> dict[str, Any]:
        params: dict[str, Any] = {"TargetArn": arn, "MessageStructure": "json", "Message": message}
        if attributes:
            params["MessageAttributes"] = attributes
        answer: dict[str, Any] = await client.publish(**params)
        return answer

    @staticmethod
    async def _endpoint(client: Any, application: str, m: OutboundMessage) -> str | SendResult:
        """The endpoint ARN for the device's token, enabled and holding that token."""
        params = {"PlatformApplicationArn": application, "Token": m.target}
        if m.user_id:
            params["CustomUserData"] = m.user_id
        try:
            arn = str((await client.create_platform_endpoint(**params))["EndpointArn"])
        except ClientError as exc:
            # The token has an endpoint whose attributes differ (disabled, another user's):
            # that endpoint is the device's, and is brought up to date.
            existing = _EXISTING.search(error_message(exc))
            if error_code(exc) != "InvalidParameter" or existing is None:
                return error_result(exc, CREATE)
            arn = existing.group(1).rstrip(".")
            stale = True
        else:
            # Same token and user data: SNS may still hold it disabled, or an older token.
            attributes = (await client.get_endpoint_attributes(EndpointArn=arn)).get("Attributes", {})
            stale = (attributes.get("Token") != m.target
                     or str(attributes.get("Enabled", "true")).lower() != "true")
        if stale:
            update = {"Token": m.target, "Enabled": "true"}
            if m.user_id:
                update["CustomUserData"] = m.user_id
            await client.set_endpoint_attributes(EndpointArn=arn, Attributes=update)
        return arn
