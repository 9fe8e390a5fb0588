"""When a notification goes: wall-clock times in a user's zone, explicit instants, quiet hours.

"At 09:00" means 09:00 on the recipient's own wall clock, so these rules reason in local time
and turn into UTC only at the end. Daylight-saving gaps and folds, half-hour and 45-minute
offsets and the odd day a zone skipped altogether (Pacific/Apia, 2011-12-30) are settled here,
once, so that neither the scheduler nor the worker has to think about them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ValidationFailed
from .validation import is_timezone

HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
# A send_at a little in the past is a clock skew or a slow client, not a mistake: it goes now.
PAST_GRACE = timedelta(seconds=60)
MAX_AHEAD = timedelta(days=366)
FALLBACK_ZONE = "UTC"
_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)
_MINUTE = timedelta(minutes=1)


def parse_local_time(text: str, field: str) -> time:
    """A time of day as people write it; seconds are refused because sends are per minute."""
    match = HH_MM.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValidationFailed.on(field, "must be a time of day as HH:MM, from 00:00 to 23:59")
    return time(int(match[1]), int(match[2]))


def zone_for(user_tz: str | None, app_tz: str | None) -> ZoneInfo:
    """The zone a user lives in. A stored name this machine's tz database does not know (an old
    record, a newer tzdata elsewhere) must not stop the send, so it falls back instead of raising."""
    for name in (user_tz, app_tz):
        if isinstance(name, str) and is_timezone(name):
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo(FALLBACK_ZONE)


def next_local(now: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The next moment, at or after `now`, when the wall clock in `zone` reads `at`, in UTC.

    Minute precision: if `now` is already within the minute `at` (09:00:30 for 09:00), that is
    now, so a send made at 09:00:30 for 09:00 goes at once rather than tomorrow. An ambiguous
    time (clocks going back) happens only at its first occurrence, so a daily send never goes
    twice; a time that does not exist that day (clocks going forward) goes the moment the clocks
    jump, the first valid minute after it (02:30 in Europe/Rome on the last Sunday of March goes
    at 03:00). A day the zone skipped altogether has no occurrence at all.
    """
    return _next_wall(now, at, zone, second_pass=False)


def _next_wall(now: datetime, at: time, zone: ZoneInfo, *, second_pass: bool) -> datetime:
    now = _utc(now, "now")
    floor = now.replace(second=0, microsecond=0)
    wall_time = at.replace(second=0, microsecond=0, tzinfo=None)
    # From the day before: where clocks go back across midnight, yesterday's wall time may
    # come round again after `now`.
    day = now.astimezone(zone).date() - _DAY
    while True:
        for instant in _occurrences(day, wall_time, zone, second_pass=second_pass):
            if instant >= floor:
                return max(instant, now)
        day += _DAY


def _occurrences(day: date, at: time, zone: ZoneInfo, *, second_pass: bool) -> list[datetime]:
    """The instants of `day` whose wall clock reads `at`, in order (two in a fold)."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _reads(first, zone) == wall:
        again = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        return [first, again] if second_pass and again != first else [first]
    jump = _clocks_jump(wall, zone)
    if _reads(jump, zone).date() > day and _reads(jump - _SECOND, zone).date() < day:
        # The jump began before `day` and ended after it: nobody lived through that date, and
        # its "first valid minute" would be tomorrow's midnight, the worst time to send.
        return []
    return [jump]


def _clocks_jump(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clocks jump over the non-existent `wall`: with fold=1 it maps to just
    before the jump and with fold=0 just after (PEP 495), so a bisection between them finds it."""
    low, high = sorted(int(wall.replace(tzinfo=zone, fold=f).timestamp()) for f in (0, 1))
    while high - low > 1:
        middle = (low + high) // 2
        if _reads(datetime.fromtimestamp(middle, UTC), zone) > wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _reads(instant: datetime, zone: ZoneInfo) -> datetime:
    """What the wall clock in `zone` shows at `instant` (naive, so it compares as wall time)."""
    return instant.astimezone(zone).replace(tzinfo=None)


def _utc(value: datetime, name: str) -> datetime:
    # A naive `now` would silently be read as the server's local time: a bug, never user input.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def check_send_at(send_at: datetime, now: datetime, field: str = "send_at") -> datetime | None:
    """An explicit send time, in UTC; None means "now". A time without an offset is refused
    rather than guessed: the server's zone and the caller's are rarely the same. A year and a
    day is the horizon, so yearly reminders fit and typos like 2206 do not."""
    if send_at.tzinfo is None or send_at.utcoffset() is None:
        raise ValidationFailed.on(field, "must carry a timezone offset, e.g. Z")
    now = _utc(now, "now")
    try:
        instant = send_at.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset that leaves the calendar
        raise ValidationFailed.on(field, "is not a time this service can schedule") from None
    if instant < now - PAST_GRACE:
        raise ValidationFailed.on(field, "is more than 60 seconds in the past")
    if instant > now + MAX_AHEAD:
        raise ValidationFailed.on(field, "is more than 366 days ahead")
    return None if instant <= now else instant


@dataclass(frozen=True)
class QuietHours:
    """A daily window of wall-clock time, [start, end), that wraps midnight when end < start.

    It is wall time throughout: where clocks go back inside the window, the repeated hour is
    quiet twice, because the user's clock says it is night both times.
    """

    start: time
    end: time

    @classmethod
    def parse(cls, doc: object, field: str) -> QuietHours:
        if not isinstance(doc, Mapping):
            raise ValidationFailed.on(field, 'must be an object {"start": "HH:MM", "end": "HH:MM"}')
        for key in doc:
            if key not in ("start", "end"):
                raise ValidationFailed.on(f"{field}.{key}", "is not a field of quiet hours (start, end)")
        bounds: list[time] = []
        for key in ("start", "end"):
            name = f"{field}.{key}"
            if key not in doc:
                raise ValidationFailed.on(name, "is required")
            value = doc[key]
            if not isinstance(value, str):
                raise ValidationFailed.on(name, "must be a time of day as HH:MM, from 00:00 to 23:59")
            bounds.append(parse_local_time(value, name))
        start, end = bounds
        if start == end:
            raise ValidationFailed.on(f"{field}.end", "must differ from start")
        return cls(start, end)

    @classmethod
    def from_doc(cls, doc: object) -> QuietHours | None:
        """Stored quiet hours, or None: a record that no longer parses must not block sends."""
        if not doc:  # most users have none: no exception raised and caught per recipient
            return None
        try:
            return cls.parse(doc, "quiet_hours")
        except ValidationFailed:
            return None

    def to_doc(self) -> dict[str, str]:
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")}

    def covers(self, wall: time) -> bool:
        minute = wall.replace(second=0, microsecond=0, tzinfo=None)
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def held_until(now: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime | None:
    """When a send that is due `now` may go (UTC), or None if it is not quiet now.

    That is the first moment the wall clock shows a time outside the window: normally the next
    time it reads `end` (the second pass of a repeated hour counts, and a gap over `end` ends it
    at the jump), but clocks set back to before `start` end it at once, and a jump that lands
    back inside the window does not.
    """
    now = _utc(now, "now")
    release = now
    while quiet.covers(release.astimezone(zone).time()):
        release = _leaves(release, quiet, zone)
    return None if release == now else release


def _leaves(inside: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime:
    # From the next minute: this one is quiet, so it does not read `end`, and a jump that landed
    # here inside the window must not be found again.
    end = _next_wall(inside.replace(second=0, microsecond=0) + _MINUTE, quiet.end, zone, second_pass=True)
    back = _clocks_back(inside, end, zone)
    if back is not None and not quiet.covers(back.astimezone(zone).time()):
        return back
    return end


def _clocks_back(after: datetime, before: datetime, zone: ZoneInfo) -> datetime | None:
    """The instant in (after, before] at which the clocks were set back, if they were."""
    offset = _offset(after, zone)
    if _offset(before, zone) >= offset:
        return None
    low, high = int(after.timestamp()), int(before.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(datetime.fromtimestamp(middle, UTC), zone) == offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta(0)
