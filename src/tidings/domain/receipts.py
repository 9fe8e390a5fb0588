"""Delivery receipts: what a provider reports after it accepted a message (delivered, bounced,
undelivered), and how that moves the delivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .notifications import DeliveryStatus


@dataclass(frozen=True)
class Receipt:
    provider: str
    provider_message_id: str
    status: DeliveryStatus  # DELIVERED or FAILED; None-like reports are not receipts
    at: datetime
    error: str | None = None
    # A hard bounce or a complaint: the address must not be mailed again.
    address_undeliverable: bool = False
    # Only the address is affected (a complaint after delivery): the delivery keeps its status.
    keep_status: bool = False


# Where a delivery may be when a receipt arrives, and where the receipt takes it. A receipt may
# overtake the worker's own record (Twilio can call back before the worker commits "sent"), so
# `sending` accepts it too; a final failure is not undone by a late "delivered".
_MOVES = {
    DeliveryStatus.DELIVERED: frozenset({DeliveryStatus.SENDING, DeliveryStatus.SENT}),
    DeliveryStatus.FAILED: frozenset({DeliveryStatus.SENDING, DeliveryStatus.SENT,
                                      DeliveryStatus.DELIVERED}),
}


def next_status(current: str, receipt: Receipt) -> DeliveryStatus | None:
    """The delivery's new status, or None when the receipt leaves it as it is."""
    if receipt.keep_status:
        return None
    allowed = _MOVES.get(receipt.status)
    if allowed is None or DeliveryStatus(current) not in allowed:
        return None
    return receipt.status
