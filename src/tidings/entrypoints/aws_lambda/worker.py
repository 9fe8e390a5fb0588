"""`tidings.entrypoints.aws_lambda.worker.handler`: the delivery queue's consumer (SQS event
source with `ReportBatchItemFailures`).

Each message names one delivery. The batch's deliveries are claimed by id under a lease (the
lease, not the message, decides who sends: a message SQS hands out twice sends once), sent by
the same engine as the pollers (`Dispatcher.deliver`), and each message then ends one of three
ways:

- done: the delivery was sent, failed for good, was skipped, or is gone (deleted, already done
  by an earlier copy of the message) -- the message is acknowledged (deleted by Lambda);
- later: the delivery goes back to the queue (the provider asked to retry, honouring its
  Retry-After) or is not due yet (held by quiet hours, backing off, leased by a worker that may
  have died) -- the message's visibility is set to the time it is due (at most the 12 hours SQS
  allows: a message that comes back early is held again) and it is reported failed, so that SQS
  hands it out again then;
- broken: the body is not a delivery's ids -- it can never succeed, and is reported failed
  without a delay. Each receive counts towards the queue's maxReceiveCount, after which SQS's
  redrive moves it to the dead-letter queue, where an operator can read it. (Acknowledging it
  would drop it without a trace.)

Since holds and retries count as receives too, the queue's maxReceiveCount must exceed the
engine's attempts (TIDINGS_RETRY_MAX_ATTEMPTS) plus the 12-hour holds a delivery may need.
An error that is not one delivery's (the store unreachable) fails the invocation: every message
of the batch comes back after the queue's visibility timeout, which must be longer than the
lease (TIDINGS_WORKER_LEASE_SECONDS) for the deliveries claimed meanwhile to be claimable again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ...domain.ids import new_id
from ...domain.notifications import DeliveryStatus
from . import events, runtime

if TYPE_CHECKING:
    from .runtime import DeliveryKey, Runtime

log = logging.getLogger("tidings.lambda")

MAX_VISIBILITY_SECONDS = 43200  # SQS's limit, from the receive
MARGIN_SECONDS = 5
BATCH = 10  # ChangeMessageVisibilityBatch's limit
_ID_LIMIT = 200


@dataclass(frozen=True)
class Job:
    message: events.QueueMessage
    key: DeliveryKey | None  # None: the body is not a delivery's ids


def parse(message: events.QueueMessage) -> Job:
    try:
        doc = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        doc = None
    names = ("app_id", "notification_id", "delivery_id")
    if isinstance(doc, dict) and all(
            isinstance(doc.get(n), str) and 0 < len(doc[n]) <= _ID_LIMIT for n in names):
        return Job(message, (doc["app_id"], doc["notification_id"], doc["delivery_id"]))
    log.error("message %s (received %d times) is not a delivery's ids (%d bytes); it goes to "
              "the dead-letter queue after the queue's maxReceiveCount",
              message.message_id, message.receive_count, len(message.body))
    return Job(message, None)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rt = runtime.current()
    with rt.invocation("worker", context):
        messages = events.checked(events.sqs, event)
        return rt.run(work(rt, messages))


async def work(rt: Runtime, messages: Sequence[events.QueueMessage]) -> dict[str, Any]:
    started = time.monotonic()
    jobs = [parse(m) for m in messages]
    owner: dict[str, str] = {}  # delivery id -> the message that carries it in this batch
    keys: list[DeliveryKey] = []
    for job in jobs:
        if job.key is not None and job.key[2] not in owner:
            owner[job.key[2]] = job.message.message_id
            keys.append(job.key)
    outcomes: dict[str, tuple[DeliveryStatus, datetime | None]] = {}
    not_due: dict[str, datetime] = {}
    claimed: set[str] = set()
    if keys:
        container = await rt.container()
        claim = await rt.claims()
        claims, not_due = await claim(keys, container.clock.now(),
                                      container.settings.worker_lease_seconds, new_id())
        claimed = {c.delivery_id for c in claims}
        if claims:
            for o in await container.dispatcher.deliver(claims):
                outcomes[o.delivery_id] = (o.status, o.due_at)
    now = rt.clock.now()
    cap = MAX_VISIBILITY_SECONDS - MARGIN_SECONDS - math.ceil(time.monotonic() - started)
    failures: list[str] = []
    holds: list[tuple[events.QueueMessage, int]] = []
    done = later = 0
    for job in jobs:
        message = job.message
        if job.key is None:
            failures.append(message.message_id)
            continue
        delivery_id = job.key[2]
        due: datetime | None = None
        if owner[delivery_id] != message.message_id:
            log.info("message %s repeats delivery %s of message %s; dropped", message.message_id,
                     delivery_id, owner[delivery_id])
        elif delivery_id in outcomes:
            status, due = outcomes[delivery_id]
            if status != DeliveryStatus.PENDING:
                due = None
            elif due is None:  # pending without a time: should not be, try again soon
                failures.append(message.message_id)
                later += 1
                continue
        elif delivery_id in claimed:  # claimed but no outcome: the engine dropped it
            failures.append(message.message_id)
            later += 1
            continue
        elif delivery_id in not_due:
            due = not_due[delivery_id]
        if due is None:
            done += 1
            continue
        failures.append(message.message_id)
        later += 1
        holds.append((message, min(cap, max(0, math.ceil((due - now).total_seconds())))))
    if holds:
        await _hold(rt, holds)
    broken = sum(1 for j in jobs if j.key is None)
    log.info("delivery batch: %d done, %d later, %d broken", done, later, broken,
             extra={"fields": {"messages": len(jobs), "claimed": len(claimed)}})
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failures]}


async def _hold(rt: Runtime, holds: Sequence[tuple[events.QueueMessage, int]]) -> None:
    """Each message invisible until its delivery is due. A change SQS refuses leaves that
    message on the queue's own visibility timeout: it comes back early and is held again."""
    sqs = await rt.sqs()
    queue_url = rt.queue_url()
    for i in range(0, len(holds), BATCH):
        chunk = holds[i:i + BATCH]
        entries = [{"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                   for n, (m, seconds) in enumerate(chunk)]
        try:
            answer = await sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except Exception as exc:  # noqa: BLE001 -- the messages come back early, not lost
            log.warning("could not hold %d messages until their deliveries are due: %s",
                        len(chunk), exc)
            continue
        for failed in answer.get("Failed") or ():
            message = chunk[int(failed["Id"])][0]
            log.warning("could not hold message %s: %s %s", message.message_id,
                        failed.get("Code"), str(failed.get("Message", ""))[:200])
