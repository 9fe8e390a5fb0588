"""Local-time scheduling: wall-clock times across DST, odd offsets and skipped days; send_at;
quiet hours."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.domain.errors import ValidationFailed
from tidings.domain.schedule import (
    QuietHours,
    check_send_at,
    held_until,
    next_local,
    parse_local_time,
    zone_for,
)

ROME = ZoneInfo("Europe/Rome")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
APIA = ZoneInfo("Pacific/Apia")
MINUTE = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def wall(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    """An instant given as the wall clock in `zone` shows it, in UTC."""
    return datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)


def reads(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def field_of(exc: pytest.ExceptionInfo[ValidationFailed]) -> str:
    assert len(exc.value.errors) == 1
    return exc.value.errors[0].field


# --- parse_local_time -------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("00:00", time(0, 0)), ("23:59", time(23, 59)), ("09:05", time(9, 5)), ("12:30", time(12, 30)),
    ("19:00", time(19, 0)), ("20:00", time(20, 0)),
])
def test_parse_local_time_accepts(text, expected):
    assert parse_local_time(text, "send_at.local_time") == expected


@pytest.mark.parametrize("text", [
    "", "24:00", "23:60", "9:00", "09:0", "0900", "09:00:00", "09.00", " 09:00", "09:00 ", "09:00\n",
    "-1:00", "+9:00", "ab:cd", "\u0660\u0669:\u0660\u0660", "09:5a", "99:99",
])
def test_parse_local_time_refuses(text):
    with pytest.raises(ValidationFailed) as exc:
        parse_local_time(text, "send_at.local_time")
    assert field_of(exc) == "send_at.local_time"
    assert "HH:MM" in exc.value.errors[0].message


@pytest.mark.parametrize("value", [None, 900, 9.0, ["09:00"]])
def test_parse_local_time_refuses_what_is_not_text(value):
    with pytest.raises(ValidationFailed) as exc:
        parse_local_time(value, "at")
    assert field_of(exc) == "at"


# --- zone_for ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("user_tz", "app_tz", "expected"), [
    ("Asia/Kathmandu", "Europe/Rome", "Asia/Kathmandu"),
    (None, "Europe/Rome", "Europe/Rome"),
    ("Mars/Olympus_Mons", "Europe/Rome", "Europe/Rome"),
    ("", "Europe/Rome", "Europe/Rome"),
    ("europe/rome", "America/New_York", "America/New_York"),  # names are case-sensitive
    ("Europe/Rome ", None, "UTC"),
    ("../../etc/passwd", None, "UTC"),
    (None, None, "UTC"),
    ("Nowhere/At_All", "Nor/Here", "UTC"),
    ("UTC", "Europe/Rome", "UTC"),
])
def test_zone_for_falls_back_from_user_to_app_to_utc(user_tz, app_tz, expected):
    assert zone_for(user_tz, app_tz).key == expected


def test_zone_for_never_raises_on_junk_from_a_stored_record():
    assert zone_for(5, ["Europe/Rome"]).key == "UTC"
    assert zone_for("\x00", "Europe/Rome").key == "Europe/Rome"


# --- next_local: ordinary days ----------------------------------------------------------------
def test_later_today_in_summer_time():
    now = wall(ROME, 2024, 6, 10, 8, 0)
    assert next_local(now, time(9, 0), ROME) == utc(2024, 6, 10, 7, 0)


def test_already_past_today_means_tomorrow():
    now = wall(ROME, 2024, 6, 10, 10, 0)
    assert next_local(now, time(9, 0), ROME) == utc(2024, 6, 11, 7, 0)


def test_winter_time_uses_the_winter_offset():
    now = wall(ROME, 2024, 1, 10, 6, 0)
    assert next_local(now, time(9, 0), ROME) == utc(2024, 1, 10, 8, 0)


@pytest.mark.parametrize("seconds", [0, 30, 59])
def test_within_the_minute_is_now(seconds):
    now = wall(ROME, 2024, 6, 10, 9, 0) + timedelta(seconds=seconds, microseconds=seconds * 1000)
    assert next_local(now, time(9, 0), ROME) == now


def test_the_minute_after_is_tomorrow():
    now = wall(ROME, 2024, 6, 10, 9, 1)
    assert next_local(now, time(9, 0), ROME) == wall(ROME, 2024, 6, 11, 9, 0)


def test_the_result_is_utc_whatever_zone_now_was_given_in():
    now = datetime(2024, 6, 10, 15, 0, tzinfo=timezone(timedelta(hours=9)))  # 06:00Z
    result = next_local(now, time(9, 0), ROME)
    assert result == utc(2024, 6, 10, 7, 0)
    assert result.tzinfo is UTC


def test_seconds_in_at_are_ignored():
    now = wall(ROME, 2024, 6, 10, 8, 0)
    assert next_local(now, time(9, 0, 45), ROME) == utc(2024, 6, 10, 7, 0)


def test_a_naive_now_is_a_bug():
    with pytest.raises(ValueError, match="now"):
        next_local(datetime(2024, 6, 10, 8, 0), time(9, 0), ROME)


def test_midnight_is_the_start_of_the_next_day():
    now = wall(NEW_YORK, 2024, 6, 10, 23, 59)
    assert next_local(now, time(0, 0), NEW_YORK) == wall(NEW_YORK, 2024, 6, 11, 0, 0)


@pytest.mark.parametrize(("zone", "now", "at", "expected"), [
    (KATHMANDU, utc(2024, 6, 10, 0, 0), time(9, 0), utc(2024, 6, 10, 3, 15)),
    (KATHMANDU, utc(2024, 6, 10, 3, 16), time(9, 0), utc(2024, 6, 11, 3, 15)),
    (KATHMANDU, utc(2024, 6, 10, 0, 0), time(0, 0), utc(2024, 6, 10, 18, 15)),
    (ZoneInfo("Asia/Kolkata"), utc(2024, 6, 10, 0, 0), time(9, 0), utc(2024, 6, 10, 3, 30)),
    (ZoneInfo("America/St_Johns"), utc(2024, 1, 10, 0, 0), time(9, 0), utc(2024, 1, 10, 12, 30)),
    (ZoneInfo("Pacific/Chatham"), utc(2024, 6, 10, 0, 0), time(9, 0), utc(2024, 6, 10, 20, 15)),
])
def test_half_and_three_quarter_hour_offsets(zone, now, at, expected):
    assert next_local(now, at, zone) == expected


# --- next_local: daylight saving --------------------------------------------------------------
def test_rome_spring_gap_goes_when_the_clocks_jump():
    # 2024-03-31: 02:00 CET becomes 03:00 CEST, at 01:00Z.
    now = utc(2024, 3, 30, 12, 0)
    for at in (time(2, 0), time(2, 30), time(2, 59), time(3, 0)):
        result = next_local(now, time(at.hour, at.minute), ROME)
        assert result == utc(2024, 3, 31, 1, 0), at
        assert result.astimezone(ROME).strftime("%H:%M") == "03:00"
    assert next_local(now, time(1, 59), ROME) == utc(2024, 3, 31, 0, 59)
    assert next_local(now, time(9, 0), ROME) == utc(2024, 3, 31, 7, 0)


def test_rome_spring_gap_within_the_jump_minute_is_now():
    now = utc(2024, 3, 31, 1, 0, 20)
    assert next_local(now, time(2, 30), ROME) == now
    # Past the jump it is the next day's 02:30, which exists.
    assert next_local(utc(2024, 3, 31, 1, 1), time(2, 30), ROME) == utc(2024, 4, 1, 0, 30)


def test_rome_autumn_fold_is_the_first_occurrence():
    # 2024-10-27: 03:00 CEST becomes 02:00 CET, at 01:00Z; 02:30 happens at 00:30Z and 01:30Z.
    assert next_local(utc(2024, 10, 26, 12, 0), time(2, 30), ROME) == utc(2024, 10, 27, 0, 30)
    # Between the two passes: the second one does not count, so tomorrow.
    assert next_local(utc(2024, 10, 27, 0, 45), time(2, 30), ROME) == utc(2024, 10, 28, 1, 30)
    assert next_local(utc(2024, 10, 27, 1, 30, 20), time(2, 30), ROME) == utc(2024, 10, 28, 1, 30)
    assert next_local(utc(2024, 10, 26, 12, 0), time(9, 0), ROME) == utc(2024, 10, 27, 8, 0)


def test_new_york_spring_and_autumn():
    # 2024-03-10 02:00 EST -> 03:00 EDT (07:00Z); 2024-11-03 02:00 EDT -> 01:00 EST (06:00Z).
    assert next_local(utc(2024, 3, 9, 12), time(2, 30), NEW_YORK) == utc(2024, 3, 10, 7, 0)
    assert next_local(utc(2024, 3, 9, 18), time(9, 0), NEW_YORK) == utc(2024, 3, 10, 13, 0)  # EDT
    assert next_local(utc(2024, 11, 2, 12), time(1, 30), NEW_YORK) == utc(2024, 11, 3, 5, 30)
    assert next_local(utc(2024, 11, 3, 5, 45), time(1, 30), NEW_YORK) == utc(2024, 11, 4, 6, 30)
    assert next_local(utc(2024, 11, 2, 18), time(9, 0), NEW_YORK) == utc(2024, 11, 3, 14, 0)  # EST


def test_lord_howe_half_hour_daylight_saving():
    # 2024-10-06: 02:00 +10:30 becomes 02:30 +11 (15:30Z the day before).
    assert next_local(utc(2024, 10, 5, 0), time(2, 15), LORD_HOWE) == utc(2024, 10, 5, 15, 30)
    assert next_local(utc(2024, 10, 5, 0), time(2, 0), LORD_HOWE) == utc(2024, 10, 5, 15, 30)
    assert next_local(utc(2024, 10, 5, 0), time(2, 30), LORD_HOWE) == utc(2024, 10, 5, 15, 30)
    assert next_local(utc(2024, 10, 5, 0), time(1, 59), LORD_HOWE) == utc(2024, 10, 5, 15, 29)
    # 2024-04-07: 02:00 +11 becomes 01:30 +10:30 (15:00Z the day before); 01:45 happens twice.
    assert next_local(utc(2024, 4, 6, 0), time(1, 45), LORD_HOWE) == utc(2024, 4, 6, 14, 45)
    assert next_local(utc(2024, 4, 6, 14, 50), time(1, 45), LORD_HOWE) == utc(2024, 4, 7, 15, 15)


def test_apia_skipped_the_30th_of_december_2011():
    # 2011-12-29 23:59:59 -10:00 was followed by 2011-12-31 00:00:00 +14:00 (10:00Z on the 30th).
    now = wall(APIA, 2011, 12, 29, 10, 0)
    assert now == utc(2011, 12, 29, 20, 0)
    nine = next_local(now, time(9, 0), APIA)
    assert nine == utc(2011, 12, 30, 19, 0)
    assert reads(nine, APIA) == datetime(2011, 12, 31, 9, 0)
    assert next_local(now, time(23, 0), APIA) == utc(2011, 12, 30, 9, 0)  # the 29th's 23:00
    assert next_local(now, time(0, 0), APIA) == utc(2011, 12, 30, 10, 0)  # the 31st's midnight
    assert next_local(utc(2011, 12, 30, 10, 0), time(0, 0), APIA) == utc(2011, 12, 30, 10, 0)
    for minute in range(0, 24 * 60, 7):
        result = next_local(now, time(minute // 60, minute % 60), APIA)
        assert reads(result, APIA).date() != date(2011, 12, 30)
        assert reads(result, APIA).time() == time(minute // 60, minute % 60)


# --- next_local: the property ------------------------------------------------------------------
ZONES = [ROME, NEW_YORK, LORD_HOWE, KATHMANDU, APIA, ZoneInfo("Pacific/Chatham"),
         ZoneInfo("America/St_Johns"), ZoneInfo("America/Santiago"), ZoneInfo("Europe/Dublin"),
         ZoneInfo("Africa/Casablanca"), ZoneInfo("America/Havana"), ZoneInfo("Asia/Tehran"),
         ZoneInfo("Australia/Sydney"), ZoneInfo("UTC")]


def _transitions(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The instants at which `zone` changed offset between start and end, to aim examples at."""
    found = []
    day = start
    while day < end:
        low, high = day, day + timedelta(days=1)
        if low.astimezone(zone).utcoffset() != high.astimezone(zone).utcoffset():
            while high - low > MINUTE:
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high.replace(second=0, microsecond=0))
        day += timedelta(days=1)
    return found


TRANSITIONS = {z.key: _transitions(z, utc(2010, 1, 1), utc(2030, 1, 1)) for z in ZONES}


@st.composite
def moments(draw):
    """A zone and a `now`, often within two days of one of its clock changes."""
    zone = draw(st.sampled_from(ZONES))
    near = TRANSITIONS[zone.key]
    if near and draw(st.booleans()):
        base = draw(st.sampled_from(near))
        now = base + timedelta(seconds=draw(st.integers(-50 * 3600, 50 * 3600)))
    else:
        now = draw(st.datetimes(min_value=datetime(2010, 1, 1), max_value=datetime(2029, 12, 1),
                                timezones=st.just(UTC)))
    return zone, now


@st.composite
def local_times(draw, zone, now):
    """Any time of day, or one the wall clock shows near `now` (so near the clock change)."""
    if draw(st.booleans()):
        shown = reads(now + timedelta(minutes=draw(st.integers(-3000, 3000))), zone)
        return time(shown.hour, shown.minute)
    return time(draw(st.integers(0, 23)), draw(st.integers(0, 59)))


def _first_reading(now: datetime, at: time, zone: ZoneInfo) -> datetime:
    """By brute force, minute after minute: the first minute whose wall clock reaches `at` on its
    first pass, walking forward onto it or jumping over it on the same or the previous date."""
    minute = now.replace(second=0, microsecond=0)
    before = reads(minute - MINUTE, zone)
    for _ in range(50 * 60):
        shown = minute.astimezone(zone)
        current = shown.replace(tzinfo=None)
        targets = {datetime.combine(current.date(), at), datetime.combine(before.date(), at)}
        if shown.fold == 0 and any(before < t <= current for t in targets):
            return max(minute, now)
        before, minute = current, minute + MINUTE
    raise AssertionError("no reading in 50 hours")


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_next_local_is_the_first_time_the_clock_reaches_at(data):
    zone, now = data.draw(moments())
    at = data.draw(local_times(zone, now))
    result = next_local(now, at, zone)
    assert result.tzinfo is UTC
    assert now <= result < now + timedelta(hours=49)
    shown = result.astimezone(zone)
    if (shown.hour, shown.minute) == (at.hour, at.minute):
        assert shown.fold == 0
    else:
        # Only where the clocks jumped over `at`: then it goes at the jump.
        jump = result.replace(second=0, microsecond=0)
        before, after = reads(jump - timedelta(seconds=1), zone), reads(jump, zone)
        assert any(before < datetime.combine(d, at) < after for d in (before.date(), after.date()))
    assert result == _first_reading(now, at, zone)


# --- check_send_at ----------------------------------------------------------------------------
NOW = utc(2026, 5, 1, 12, 0)


def test_send_at_in_the_future_is_that_instant_in_utc():
    later = datetime(2026, 5, 2, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    result = check_send_at(later, NOW)
    assert result == utc(2026, 5, 2, 7, 0)
    assert result is not None and result.tzinfo is UTC


@pytest.mark.parametrize("ago", [timedelta(0), timedelta(seconds=1), timedelta(seconds=59.999),
                                 timedelta(seconds=60)])
def test_send_at_now_or_just_past_means_now(ago):
    assert check_send_at(NOW - ago, NOW) is None


def test_send_at_a_microsecond_ahead_is_scheduled():
    assert check_send_at(NOW + timedelta(microseconds=1), NOW) == NOW + timedelta(microseconds=1)


def test_send_at_the_far_edge_is_accepted():
    assert check_send_at(NOW + timedelta(days=366), NOW) == NOW + timedelta(days=366)


@pytest.mark.parametrize(("send_at", "message"), [
    (datetime(2026, 5, 2, 9, 0), "must carry a timezone offset, e.g. Z"),
    (NOW - timedelta(seconds=60, microseconds=1), "is more than 60 seconds in the past"),
    (NOW - timedelta(days=3), "is more than 60 seconds in the past"),
    (NOW + timedelta(days=366, microseconds=1), "is more than 366 days ahead"),
    (utc(2206, 5, 1), "is more than 366 days ahead"),
])
def test_send_at_refused(send_at, message):
    with pytest.raises(ValidationFailed) as exc:
        check_send_at(send_at, NOW, "items.0.send_at")
    assert field_of(exc) == "items.0.send_at"
    assert exc.value.errors[0].message == message


def test_send_at_field_defaults_to_send_at():
    with pytest.raises(ValidationFailed) as exc:
        check_send_at(datetime(2026, 5, 2, 9, 0), NOW)
    assert field_of(exc) == "send_at"


def test_send_at_offsets_are_compared_as_instants():
    # 13:00:30+01:00 is 12:00:30Z: thirty seconds ahead of now.
    ahead = datetime(2026, 5, 1, 13, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert check_send_at(ahead, NOW) == utc(2026, 5, 1, 12, 0, 30)


# --- QuietHours.parse -------------------------------------------------------------------------
def test_quiet_hours_parse_and_to_doc_round_trip():
    quiet = QuietHours.parse({"start": "22:00", "end": "07:30"}, "quiet_hours")
    assert quiet == QuietHours(time(22, 0), time(7, 30))
    assert quiet.to_doc() == {"start": "22:00", "end": "07:30"}
    assert QuietHours.parse(quiet.to_doc(), "quiet_hours") == quiet


@pytest.mark.parametrize(("doc", "field"), [
    (None, "quiet_hours"),
    ("22:00-07:00", "quiet_hours"),
    (["22:00", "07:00"], "quiet_hours"),
    ({"end": "07:00"}, "quiet_hours.start"),
    ({"start": "22:00"}, "quiet_hours.end"),
    ({}, "quiet_hours.start"),
    ({"start": "22:00", "end": "07:00", "days": "weekdays"}, "quiet_hours.days"),
    ({"start": "24:00", "end": "07:00"}, "quiet_hours.start"),
    ({"start": "22:00", "end": "7:00"}, "quiet_hours.end"),
    ({"start": 22, "end": "07:00"}, "quiet_hours.start"),
    ({"start": "22:00", "end": None}, "quiet_hours.end"),
    ({"start": "22:00", "end": "22:00"}, "quiet_hours.end"),
])
def test_quiet_hours_parse_refuses(doc, field):
    with pytest.raises(ValidationFailed) as exc:
        QuietHours.parse(doc, "quiet_hours")
    assert field_of(exc) == field


def test_quiet_hours_same_start_and_end_says_so():
    with pytest.raises(ValidationFailed) as exc:
        QuietHours.parse({"start": "22:00", "end": "22:00"}, "defaults.quiet_hours")
    assert exc.value.errors[0].field == "defaults.quiet_hours.end"
    assert exc.value.errors[0].message == "must differ from start"


def test_quiet_hours_from_doc_is_lenient():
    assert QuietHours.from_doc({"start": "22:00", "end": "07:00"}) == QuietHours(time(22), time(7))
    assert QuietHours.from_doc(None) is None
    assert QuietHours.from_doc({"start": "22:00"}) is None
    assert QuietHours.from_doc({"start": "22:00", "end": "22:00"}) is None
    assert QuietHours.from_doc("junk") is None


@pytest.mark.parametrize(("start", "end", "inside", "outside"), [
    (time(22), time(7), [time(22), time(23, 59), time(0), time(6, 59)], [time(7), time(12), time(21, 59)]),
    (time(13), time(15), [time(13), time(14, 59)], [time(12, 59), time(15), time(0), time(23, 59)]),
    (time(0), time(6), [time(0), time(5, 59)], [time(6), time(23, 59)]),
    (time(23, 59), time(0), [time(23, 59)], [time(0), time(23, 58)]),
])
def test_quiet_hours_cover_start_not_end_and_wrap_midnight(start, end, inside, outside):
    quiet = QuietHours(start, end)
    assert all(quiet.covers(t) for t in inside)
    assert not any(quiet.covers(t) for t in outside)


# --- held_until -------------------------------------------------------------------------------
NIGHT = QuietHours(time(22), time(7))


def test_not_held_outside_the_window():
    assert held_until(wall(ROME, 2024, 6, 10, 12, 0), NIGHT, ROME) is None
    assert held_until(wall(ROME, 2024, 6, 10, 7, 0), NIGHT, ROME) is None
    assert held_until(wall(ROME, 2024, 6, 10, 21, 59, 59), NIGHT, ROME) is None


def test_held_before_midnight_until_tomorrow_morning():
    assert held_until(wall(ROME, 2024, 6, 10, 22, 0), NIGHT, ROME) == wall(ROME, 2024, 6, 11, 7, 0)
    assert held_until(wall(ROME, 2024, 6, 10, 23, 30), NIGHT, ROME) == utc(2024, 6, 11, 5, 0)


def test_held_after_midnight_until_this_morning():
    assert held_until(wall(ROME, 2024, 6, 11, 3, 0), NIGHT, ROME) == wall(ROME, 2024, 6, 11, 7, 0)
    assert held_until(wall(ROME, 2024, 6, 11, 6, 59, 59), NIGHT, ROME) == utc(2024, 6, 11, 5, 0)


def test_a_window_within_the_day():
    lunch = QuietHours(time(13), time(15))
    assert held_until(wall(KATHMANDU, 2024, 6, 10, 14, 0), lunch, KATHMANDU) == utc(2024, 6, 10, 9, 15)
    assert held_until(wall(KATHMANDU, 2024, 6, 10, 15, 0), lunch, KATHMANDU) is None


def test_the_user_zone_decides_whether_it_is_quiet():
    now = utc(2024, 6, 10, 23, 0)  # 01:00 in Rome, 19:00 in New York
    assert held_until(now, NIGHT, ROME) == utc(2024, 6, 11, 5, 0)
    assert held_until(now, NIGHT, NEW_YORK) is None


def test_night_with_the_spring_change_is_an_hour_shorter():
    # Rome, night of 2024-03-30/31: 22:00 CET is 21:00Z, 07:00 CEST is 05:00Z.
    assert held_until(wall(ROME, 2024, 3, 30, 22, 0), NIGHT, ROME) == utc(2024, 3, 31, 5, 0)
    assert held_until(wall(ROME, 2024, 3, 31, 3, 30), NIGHT, ROME) == utc(2024, 3, 31, 5, 0)


def test_night_with_the_autumn_change_is_an_hour_longer():
    # New York, night of 2024-11-02/03: 22:00 EDT is 02:00Z, 07:00 EST is 12:00Z.
    assert held_until(wall(NEW_YORK, 2024, 11, 2, 22, 0), NIGHT, NEW_YORK) == utc(2024, 11, 3, 12, 0)
    assert held_until(wall(NEW_YORK, 2024, 11, 3, 1, 30, fold=1), NIGHT, NEW_YORK) == utc(2024, 11, 3, 12, 0)


def test_a_window_ending_in_the_gap_ends_at_the_jump():
    quiet = QuietHours(time(0), time(2, 30))
    assert held_until(wall(ROME, 2024, 3, 31, 1, 15), quiet, ROME) == utc(2024, 3, 31, 1, 0)
    lord_howe = QuietHours(time(22), time(2, 15))
    assert held_until(utc(2024, 10, 5, 13, 0), lord_howe, LORD_HOWE) == utc(2024, 10, 5, 15, 30)


def test_a_window_ending_in_the_repeated_hour_counts_the_second_pass():
    quiet = QuietHours(time(23), time(1, 30))
    # 01:10 EDT (first pass): quiet until 01:30 EDT.
    assert held_until(utc(2024, 11, 3, 5, 10), quiet, NEW_YORK) == utc(2024, 11, 3, 5, 30)
    # 01:10 EST (second pass, after the clocks went back): quiet again, until 01:30 EST.
    assert held_until(utc(2024, 11, 3, 6, 10), quiet, NEW_YORK) == utc(2024, 11, 3, 6, 30)
    # Between the passes (01:40 EDT) it is not quiet.
    assert held_until(utc(2024, 11, 3, 5, 40), quiet, NEW_YORK) is None


def test_clocks_set_back_to_before_the_start_end_the_window():
    quiet = QuietHours(time(1, 45), time(3))
    # 01:50 EDT; at 06:00Z the clock reads 01:00 EST, outside the window.
    assert held_until(utc(2024, 11, 3, 5, 50), quiet, NEW_YORK) == utc(2024, 11, 3, 6, 0)
    lord_howe = QuietHours(time(1, 40), time(6))
    # 01:50 +11 on 2024-04-07; at 15:00Z the clock reads 01:30 +10:30, outside the window.
    assert held_until(utc(2024, 4, 6, 14, 50), lord_howe, LORD_HOWE) == utc(2024, 4, 6, 15, 0)


def test_a_jump_landing_inside_the_window_does_not_end_it():
    # Quiet all day but 02:30-02:45; on 2024-03-31 Rome has no 02:30-02:45 at all.
    quiet = QuietHours(time(2, 45), time(2, 30))
    assert held_until(wall(ROME, 2024, 3, 31, 1, 50), quiet, ROME) == wall(ROME, 2024, 4, 1, 2, 30)


def test_quiet_through_apias_missing_day():
    # 23:00 on the 29th: the window runs past midnight into the 31st, and ends at 07:00 there.
    result = held_until(wall(APIA, 2011, 12, 29, 23, 0), NIGHT, APIA)
    assert result == wall(APIA, 2011, 12, 31, 7, 0)
    assert result == utc(2011, 12, 30, 17, 0)


def test_held_until_refuses_a_naive_now():
    with pytest.raises(ValueError, match="now"):
        held_until(datetime(2024, 6, 10, 23, 0), NIGHT, ROME)


@st.composite
def windows(draw):
    start = draw(st.integers(0, 24 * 60 - 1))
    end = draw(st.integers(0, 24 * 60 - 1).filter(lambda m: m != start))
    return QuietHours(time(start // 60, start % 60), time(end // 60, end % 60))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_held_until_is_the_first_moment_outside_the_window(data):
    zone, now = data.draw(moments())
    quiet = data.draw(windows())
    result = held_until(now, quiet, zone)
    if not quiet.covers(now.astimezone(zone).time()):
        assert result is None
        return
    assert result is not None
    assert result > now
    assert result.second == 0 and result.microsecond == 0
    assert not quiet.covers(result.astimezone(zone).time())
    minute = now.replace(second=0, microsecond=0) + MINUTE
    while minute < result:
        assert quiet.covers(minute.astimezone(zone).time()), minute
        minute += MINUTE
