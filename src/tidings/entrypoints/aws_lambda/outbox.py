"""`tidings.entrypoints.aws_lambda.outbox.handler`: the table's stream, forwarded to the queue.

Accepting a send writes the notification and its deliveries in one transaction (the outbox);
this function turns each delivery item the stream reports inserted (`sk` = `D#…`, status
`pending`) into one SQS message `{"app_id", "notification_id", "delivery_id"}`, delayed until
the delivery is due (SQS delays at most 15 minutes; the worker holds a message that comes back
early until the delivery's time). Nothing else in the stream matters here: updates, removals
and every other item are skipped.

A batch that cannot be queued whole fails the invocation (after one retry of the entries SQS
refused), so that Lambda hands the same records again: the records that were queued are then
queued twice, which the worker absorbs (a delivery is claimed once; the second message finds
it done and is dropped). Losing one would leave a delivery pending for ever.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from . import events, runtime

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("tidings.lambda")

DELIVERY_PREFIX = "D#"
MAX_DELAY_SECONDS = 900  # SQS's limit
BATCH = 10  # SendMessageBatch's limit
CALLS_AT_ONCE = 8


class NotQueued(Exception):
    """SQS refused some messages twice; the invocation fails and the stream retries it."""


@dataclass(frozen=True)
class Outgoing:
    body: str
    delay: int
    delivery_id: str


def message(app_id: str, notification_id: str, delivery_id: str, delay: int = 0) -> Outgoing:
    """The queue message of a delivery: its ids, which the worker reads it by."""
    body = orjson.dumps({"app_id": app_id, "notification_id": notification_id,
                         "delivery_id": delivery_id}).decode()
    return Outgoing(body, delay, delivery_id)


def _text(image: dict[str, dict[str, Any]], name: str) -> str | None:
    value = image.get(name, {}).get("S")
    return value if isinstance(value, str) and value else None


def outgoing(record: events.StreamRecord, now_ms: int) -> Outgoing | None:
    """The message for a stream record, or None when the record is not a new pending delivery."""
    image = record.new_image
    if record.name != "INSERT" or image is None:
        return None
    sk = _text(record.keys, "sk") or _text(image, "sk")
    if sk is None or not sk.startswith(DELIVERY_PREFIX) or _text(image, "status") != "pending":
        return None
    app_id, notification_id, delivery_id = (
        _text(image, name) for name in ("app_id", "notification_id", "delivery_id"))
    if app_id is None or notification_id is None or delivery_id is None:
        log.error("a delivery item without its ids was inserted (record %s); not queued",
                  record.event_id)
        return None
    due = image.get("due_ms", {}).get("N")
    try:
        wait_ms = int(due) - now_ms if due is not None else 0
    except ValueError:
        wait_ms = 0
    delay = min(MAX_DELAY_SECONDS, max(0, math.ceil(wait_ms / 1000)))
    return message(app_id, notification_id, delivery_id, delay)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rt = runtime.current()
    with rt.invocation("outbox", context):
        records = events.checked(events.dynamodb_stream, event)
        return rt.run(forward(rt, records))


async def forward(rt: Runtime, records: Sequence[events.StreamRecord]) -> dict[str, Any]:
    now_ms = int(rt.clock.now().timestamp() * 1000)
    messages = [m for m in (outgoing(r, now_ms) for r in records) if m is not None]
    if messages:
        await send_all(await rt.sqs(), rt.queue_url(), messages)
    summary = {"records": len(records), "queued": len(messages),
               "skipped": len(records) - len(messages)}
    log.info("forwarded %d new deliveries to the queue", len(messages), extra={"fields": summary})
    return summary


async def send_all(sqs: Any, queue_url: str, messages: Sequence[Outgoing]) -> None:
    """Send `messages` in batches of BATCH, CALLS_AT_ONCE batches at a time; NotQueued when
    SQS refused some twice."""
    calls = asyncio.Semaphore(CALLS_AT_ONCE)

    async def send(chunk: Sequence[Outgoing]) -> None:
        async with calls:
            await _send_batch(sqs, queue_url, chunk)

    await asyncio.gather(*(send(messages[i:i + BATCH]) for i in range(0, len(messages), BATCH)))


async def _send_batch(sqs: Any, queue_url: str, chunk: Sequence[Outgoing]) -> None:
    entries = {str(i): {"Id": str(i), "MessageBody": m.body, "DelaySeconds": m.delay}
               for i, m in enumerate(chunk)}
    failed: list[dict[str, Any]] = []
    for attempt in (1, 2):
        answer = await sqs.send_message_batch(QueueUrl=queue_url, Entries=list(entries.values()))
        failed = list(answer.get("Failed") or ())
        if not failed:
            return
        log.warning("SQS refused %d of %d messages (attempt %d): %s", len(failed), len(entries),
                    attempt, sorted({str(f.get("Code")) for f in failed}))
        entries = {f["Id"]: entries[f["Id"]] for f in failed if f.get("Id") in entries}
        if not entries:
            break
    codes = sorted({str(f.get("Code")) for f in failed})
    raise NotQueued(f"SQS refused {len(failed)} messages twice ({', '.join(codes)})")
