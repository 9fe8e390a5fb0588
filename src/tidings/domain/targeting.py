"""What an app's settings and a user's profile say about how one send reaches that user:
opted-out channels, quiet hours, and the timezone a local time is read in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .preferences import held_channels, mandatory
from .schedule import QuietHours, held_until, zone_for


@dataclass(frozen=True)
class AppRules:
    """Read once per batch from the app's defaults (validated when they were written)."""

    mandatory: frozenset[str]
    held: frozenset[str]  # channels quiet hours hold back
    quiet_hours: QuietHours | None
    timezone: str | None

    @classmethod
    def of(cls, defaults: Mapping[str, Any]) -> AppRules:
        quiet = defaults.get("quiet_hours")
        return cls(mandatory(defaults), held_channels(defaults),
                   QuietHours.from_doc(quiet), defaults.get("timezone"))

    def zone(self, user_timezone: str | None) -> ZoneInfo:
        return zone_for(user_timezone, self.timezone)

    def quiet_until(self, now: datetime, user_quiet: Mapping[str, Any] | None,
                    user_timezone: str | None) -> datetime | None:
        """When the quiet hours holding a send at `now` end (the user's own window wins over
        the app's); None when it is not quiet for the user."""
        quiet = QuietHours.from_doc(user_quiet) or self.quiet_hours
        if quiet is None:
            return None
        return held_until(now, quiet, self.zone(user_timezone))


NO_RULES = AppRules(frozenset(), frozenset(), None, None)

