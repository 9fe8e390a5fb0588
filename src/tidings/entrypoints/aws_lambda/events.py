"""The events each function accepts, checked before anything is read or written.

An event of the wrong shape means the function was wired to the wrong source (a REST API
instead of an HTTP API, payload format 1.0, a test invocation with `{}`), not a bad request from
a user. It is refused whole: an HTTP or WebSocket function answers 400, the queue, stream and
schedule functions raise `BadEvent`, so that Lambda marks the invocation failed and the source
retries it and, in the end, sets it aside (the dead-letter queue, the stream's on-failure
destination). What is logged of it is its shape (keys and types, never values): events carry
credentials (`Authorization`, `?token=`) and personal data.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("tidings.lambda")

_MAX_KEYS = 24
_MAX_DEPTH = 4


T = TypeVar("T")


class BadEvent(Exception):
    """The event is not shaped like the events of the source this function serves."""

    def __init__(self, source: str, problem: str, event: Any) -> None:
        super().__init__(f"not {source} event: {problem}")
        self.source = source
        self.problem = problem
        self.shape = shape(event)


def shape(value: Any, depth: int = 0) -> Any:
    """`value` with every string, number and flag replaced by its type (strings by their
    length): what an event looked like, with nothing in it that could be a secret."""
    if isinstance(value, dict):
        if depth >= _MAX_DEPTH:
            return f"object[{len(value)}]"
        keys = list(value)[:_MAX_KEYS]
        out: dict[str, Any] = {str(k)[:40]: shape(value[k], depth + 1) for k in keys}
        if len(value) > _MAX_KEYS:
            out["…"] = f"{len(value) - _MAX_KEYS} more"
        return out
    if isinstance(value, list):
        if not value or depth >= _MAX_DEPTH:
            return f"array[{len(value)}]"
        return [shape(value[0], depth + 1), f"{len(value)} items"]
    if isinstance(value, str):
        return f"string[{len(value)}]"
    if value is None:
        return "null"
    return type(value).__name__


def checked(parse: Callable[[Any], T], event: Any) -> T:
    """`parse(event)`; a BadEvent is logged (with the event's shape, none of its values) on
    its way to the handler, which fails the invocation or answers as its source expects."""
    try:
        return parse(event)
    except BadEvent as exc:
        log.error("refused an event that is not %s: %s", exc.source, exc.problem,
                  extra={"fields": {"event_shape": exc.shape}})
        raise


def _records(event: Any, source: str, event_source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The `Records` of a batch event from `event_source`, each with its place for errors."""
    records = _field(_object(event, source), "Records", list, source, event)
    for i, record in enumerate(records):
        where = f"Records[{i}]."
        if not isinstance(record, dict):
            raise BadEvent(source, f"`Records[{i}]` is not an object", event)
        if record.get("eventSource") != event_source:
            raise BadEvent(source, f"`{where}eventSource` is not {event_source}", event)
        yield where, record


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], source: str,
           event: Any, *, required: bool = True, where: str = "") -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise BadEvent(source, f"`{where}{key}` is missing", event)
        return None
    if not isinstance(value, kind):
        raise BadEvent(source, f"`{where}{key}` is not {_kind_name(kind)}", event)
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", dict: "an object", list: "an array", bool: "a boolean",
             int: "a number", float: "a number"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _object(event: Any, source: str) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise BadEvent(source, f"the event is {_kind_name(type(event))}, not an object", event)
    return event


def _strings(obj: Any, source: str, where: str, event: Any) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise BadEvent(source, f"`{where}` is not an object of strings", event)
    return {str(k): v for k, v in obj.items()}


def _decoded(body: str, source: str, event: Any) -> bytes:
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadEvent(source, "`body` is marked base64 but is not", event) from None


# HTTP API (payload format 2.0) ---------------------------------------------------------------
HTTP = "an API Gateway HTTP API (payload format 2.0)"


def http_request(event: Any) -> None:
    """What Mangum reads of an HTTP API request, checked, so that a wrong event is a 400 here
    rather than a KeyError (a 502 from API Gateway) inside the adapter."""
    event = _object(event, HTTP)
    if event.get("version") != "2.0":
        raise BadEvent(HTTP, "`version` is not \"2.0\" (is the integration's payload format 1.0?)",
                       event)
    path = _field(event, "rawPath", str, HTTP, event)
    if not path.startswith("/"):
        raise BadEvent(HTTP, "`rawPath` does not start with /", event)
    _field(event, "rawQueryString", str, HTTP, event, required=False)
    _strings(event.get("headers"), HTTP, "headers", event)
    cookies = _field(event, "cookies", list, HTTP, event, required=False)
    if cookies is not None and not all(isinstance(c, str) for c in cookies):
        raise BadEvent(HTTP, "`cookies` is not an array of strings", event)
    context = _field(event, "requestContext", dict, HTTP, event)
    http = _field(context, "http", dict, HTTP, event, where="requestContext.")
    for key in ("method", "path", "sourceIp"):
        _field(http, key, str, HTTP, event, where="requestContext.http.")
    body = _field(event, "body", str, HTTP, event, required=False)
    encoded = _field(event, "isBase64Encoded", bool, HTTP, event, required=False)
    if body and encoded:
        _decoded(body, HTTP, event)


# WebSocket API -------------------------------------------------------------------------------
WEBSOCKET = "an API Gateway WebSocket API"


@dataclass(frozen=True)
class WebSocketEvent:
    route: str  # $connect, $disconnect, $default (or a custom route key)
    connection_id: str
    request_id: str | None
    headers: dict[str, str]  # names in lower case ($connect only)
    query: dict[str, str]  # $connect only
    body: str | None  # the frame's text; None for a binary frame or no frame
    binary: bool
    connected_at_ms: int | None


def websocket(event: Any) -> WebSocketEvent:
    event = _object(event, WEBSOCKET)
    context = _field(event, "requestContext", dict, WEBSOCKET, event)
    route = _field(context, "routeKey", str, WEBSOCKET, event, where="requestContext.")
    connection_id = _field(context, "connectionId", str, WEBSOCKET, event, where="requestContext.")
    if not connection_id:
        raise BadEvent(WEBSOCKET, "`requestContext.connectionId` is empty", event)
    _field(context, "eventType", str, WEBSOCKET, event, where="requestContext.")
    request_id = _field(context, "requestId", str, WEBSOCKET, event, required=False,
                        where="requestContext.")
    connected_at = _field(context, "connectedAt", int, WEBSOCKET, event, required=False,
                          where="requestContext.")
    headers = {k.lower(): v for k, v in
               _strings(event.get("headers"), WEBSOCKET, "headers", event).items()}
    query = _strings(event.get("queryStringParameters"), WEBSOCKET, "queryStringParameters", event)
    body = _field(event, "body", str, WEBSOCKET, event, required=False)
    encoded = bool(_field(event, "isBase64Encoded", bool, WEBSOCKET, event, required=False))
    binary = False
    if body is not None and encoded:
        raw = _decoded(body, WEBSOCKET, event)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            body, binary = None, True
    return WebSocketEvent(route, connection_id, request_id, headers, query, body, binary,
                          connected_at)


# SQS ------------------------------------------------------------------------------------------
SQS = "an SQS batch"


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


def sqs(event: Any) -> list[QueueMessage]:
    out = []
    for where, record in _records(event, SQS, "aws:sqs"):
        message_id = _field(record, "messageId", str, SQS, event, where=where)
        handle = _field(record, "receiptHandle", str, SQS, event, where=where)
        body = _field(record, "body", str, SQS, event, where=where)
        attributes = _strings(record.get("attributes"), SQS, f"{where}attributes", event)
        count = attributes.get("ApproximateReceiveCount", "1")
        if not message_id or not handle or not count.isdigit():
            raise BadEvent(SQS, f"`{where}` has an empty id, receipt handle or receive count",
                           event)
        out.append(QueueMessage(message_id, handle, body, int(count)))
    return out


# DynamoDB Streams -----------------------------------------------------------------------------
STREAM = "a DynamoDB stream batch"
_NAMES = frozenset({"INSERT", "MODIFY", "REMOVE"})


@dataclass(frozen=True)
class StreamRecord:
    event_id: str | None
    name: str  # INSERT, MODIFY or REMOVE
    keys: dict[str, dict[str, Any]]
    new_image: dict[str, dict[str, Any]] | None  # DynamoDB JSON: {"attr": {"S": "…"}}


def _image(value: Any, where: str, event: Any) -> dict[str, dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(v, dict) and len(v) == 1 for v in value.values()):
        raise BadEvent(STREAM, f"`{where}` is not an item in DynamoDB JSON", event)
    return value


def dynamodb_stream(event: Any) -> list[StreamRecord]:
    out = []
    for where, record in _records(event, STREAM, "aws:dynamodb"):
        name = _field(record, "eventName", str, STREAM, event, where=where)
        if name not in _NAMES:
            raise BadEvent(STREAM, f"`{where}eventName` is not INSERT, MODIFY or REMOVE", event)
        data = _field(record, "dynamodb", dict, STREAM, event, where=where)
        keys = _image(data.get("Keys"), f"{where}dynamodb.Keys", event)
        if not keys:
            raise BadEvent(STREAM, f"`{where}dynamodb.Keys` is missing", event)
        new = _image(data.get("NewImage"), f"{where}dynamodb.NewImage", event)
        event_id = _field(record, "eventID", str, STREAM, event, required=False, where=where)
        out.append(StreamRecord(event_id, name, keys, new))
    return out


# EventBridge schedule -------------------------------------------------------------------------
SCHEDULE = "an EventBridge scheduled event"
_SCHEDULERS = frozenset({"aws.events", "aws.scheduler"})


@dataclass(frozen=True)
class Schedule:
    id: str
    time: str


def scheduled(event: Any) -> Schedule:
    event = _object(event, SCHEDULE)
    if event.get("detail-type") != "Scheduled Event" or event.get("source") not in _SCHEDULERS:
        raise BadEvent(SCHEDULE, "`detail-type` is not \"Scheduled Event\" from aws.events", event)
    return Schedule(_field(event, "id", str, SCHEDULE, event),
                    _field(event, "time", str, SCHEDULE, event))
