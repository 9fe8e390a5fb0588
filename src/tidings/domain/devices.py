"""Devices and the pairing rules that tie a provider token to exactly one user.

The rules (API.md, Devices) decided here, without I/O; the service layer looks up the two
candidate rows and applies the decision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any


@dataclass
class Device:
    id: str
    app_id: str
    user_id: str
    platform: str
    token: str  # a provider token, or a Web Push subscription as canonical JSON
    token_key: str
    provider: str | None
    enabled: bool
    device_info: str | None
    app_version: str | None
    created_at: datetime
    last_seen_at: datetime
    disabled_reason: str | None = None
    provider_ref: str | None = None  # what the provider knows the device by (an SNS endpoint)


def canonical_token(token: str | dict[str, Any]) -> str:
    if isinstance(token, str):
        return token
    return json.dumps(token, sort_keys=True, separators=(",", ":"))


def token_key(token: str | dict[str, Any]) -> str:
    """The identity of a token: a Web Push subscription is identified by its endpoint alone,
    since the browser may rotate its keys for the same endpoint."""
    identity = token["endpoint"] if isinstance(token, dict) else token
    return hashlib.sha256(str(identity).encode()).hexdigest()


class PairingAction(Enum):
    REFRESH = "refresh"  # rule 1: same token, same user
    MOVE = "move"  # rule 2: the token belonged to another user
    ROTATE = "rotate"  # rule 3: device_id with a new token
    CREATE = "create"


@dataclass(frozen=True)
class PairingDecision:
    action: PairingAction
    device: Device | None  # the row to update, when not creating
    remove: Device | None = None  # a row that must go so that the token stays unique


def decide_pairing(
    user_id: str, by_token: Device | None, by_id: Device | None
) -> PairingDecision:
    """Which row a registration updates.

    `by_token` is the app's device holding this token (any user); `by_id` is the caller's own
    device named by `device_id`, if it exists and belongs to this user.
    """
    if by_id is not None:
        if by_token is None:
            return PairingDecision(PairingAction.ROTATE, by_id)
        if by_token.id == by_id.id:
            return PairingDecision(PairingAction.REFRESH, by_id)
        # The token sits on another row: it moves onto the named device, the other row goes.
        return PairingDecision(PairingAction.ROTATE, by_id, remove=by_token)
    if by_token is None:
        return PairingDecision(PairingAction.CREATE, None)
    if by_token.user_id == user_id:
        return PairingDecision(PairingAction.REFRESH, by_token)
    return PairingDecision(PairingAction.MOVE, by_token)
