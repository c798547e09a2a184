"""Cron expressions and blackout windows (core/domain/cron.py): syntax, Vixie day rules, search, merging."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.domain import cron, errors

MIN = timedelta(minutes=1)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


# --- syntax -------------------------------------------------------------------------------------


def test_star_means_every_value_and_weekdays_are_0_to_6() -> None:
    c = cron.parse("* * * * *")
    assert c.minutes == tuple(range(60))
    assert c.hours == tuple(range(24))
    assert c.days == tuple(range(1, 32))
    assert c.months == tuple(range(1, 13))
    assert c.weekdays == tuple(range(7))
    assert c.dom_star and c.dow_star


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("5", (5,)),
        ("1-4", (1, 2, 3, 4)),
        ("1,5,3", (1, 3, 5)),
        ("1-3,10-11,3", (1, 2, 3, 10, 11)),
        ("*/15", (0, 15, 30, 45)),
        ("10-30/10", (10, 20, 30)),
        ("10-31/10", (10, 20, 30)),
        ("0-59/60", (0,)),
        ("*/60", (0,)),
        ("5,*/20", (0, 5, 20, 40)),
    ],
)
def test_minute_field_syntax(field: str, values: tuple[int, ...]) -> None:
    assert cron.parse(f"{field} * * * *").minutes == values


def test_month_and_weekday_names_are_case_insensitive() -> None:
    c = cron.parse("0 0 * jan,Mar-may,DEC mon-Fri")
    assert c.months == (1, 3, 4, 5, 12)
    assert c.weekdays == (1, 2, 3, 4, 5)
    assert cron.parse("0 0 * FEB-DEC/2 *").months == (2, 4, 6, 8, 10, 12)
    assert cron.parse("0 0 * * sun,SAT").weekdays == (0, 6)


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("7", (0,)),
        ("0,7", (0,)),
        ("5-7", (0, 5, 6)),
        ("MON-SUN", (0, 1, 2, 3, 4, 5, 6)),
        ("FRI-SUN", (0, 5, 6)),
        ("*/2", (0, 2, 4, 6)),
        ("1-7/3", (0, 1, 4)),
    ],
)
def test_day_of_week_seven_is_sunday(field: str, values: tuple[int, ...]) -> None:
    assert cron.parse(f"0 0 * * {field}").weekdays == values


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("  @DAILY ", "0 0 * * *"),
    ],
)
def test_macros_expand(macro: str, expanded: str) -> None:
    c = cron.parse(macro)
    assert cron.describe(c) == expanded
    assert c == cron.parse(expanded)


def test_describe_normalises_spacing_and_case() -> None:
    assert cron.describe(cron.parse("  */5   9-17 * jan-mar  mon-fri ")) == "*/5 9-17 * JAN-MAR MON-FRI"
    assert cron.Cron.parse("0 0 * * *") == cron.parse("0 0 * * *")


@pytest.mark.parametrize(
    ("expr", "fragments"),
    [
        ("", ["5 fields", "got 0"]),
        ("* * * *", ["5 fields", "got 4"]),
        ("* * * * * *", ["5 fields", "got 6"]),
        ("60 * * * *", ["minute", "60", "0-59"]),
        ("* 24 * * *", ["hour", "24", "0-23"]),
        ("* * 0 * *", ["day-of-month", "0", "1-31"]),
        ("* * 32 * *", ["day-of-month", "32"]),
        ("* * * 0 *", ["month", "0", "1-12"]),
        ("* * * 13 *", ["month", "13"]),
        ("* * * * 8", ["day-of-week", "8", "0-7"]),
        ("1-70 * * * *", ["minute", "70"]),
        ("*/0 * * * *", ["minute", "step", "'0'"]),
        ("*/x * * * *", ["minute", "step", "'x'"]),
        ("*/ * * * *", ["minute", "step"]),
        ("*/61 * * * *", ["minute", "step", "'61'"]),
        ("* */25 * * *", ["hour", "step", "'25'"]),
        ("5/2 * * * *", ["minute", "'5/2'", "range or *"]),
        ("30-10 * * * *", ["minute", "'30-10'", "backwards"]),
        ("1- * * * *", ["minute", "bad value ''"]),
        ("-1 * * * *", ["minute", "bad value ''"]),
        ("1-2-3 * * * *", ["minute", "'2-3'"]),
        ("1,,2 * * * *", ["minute", "bad value ''"]),
        ("* * * FOO *", ["month", "'FOO'", "JAN"]),
        ("* * * * FUNDAY", ["day-of-week", "'FUNDAY'", "SUN"]),
        ("JAN * * * *", ["minute", "'JAN'"]),
        ("* * MON * *", ["day-of-month", "'MON'"]),
        ("* * ? * *", ["day-of-month", "'?'"]),
        ("* * * * L", ["day-of-week", "'L'"]),
        ("*-5 * * * *", ["minute", "'*'"]),
        ("\u0663 * * * *", ["minute"]),  # Arabic-Indic three: a digit to str.isdigit, not to cron
        ("@reboot", ["macro", "'@reboot'"]),
        ("@fortnightly", ["macro"]),
    ],
)
def test_bad_expressions_name_the_field_and_value(expr: str, fragments: list[str]) -> None:
    with pytest.raises(cron.CronError) as info:
        cron.parse(expr)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_cron_error_is_invalid_input() -> None:
    assert issubclass(cron.CronError, errors.InvalidInput)


def test_naive_datetimes_are_refused() -> None:
    c = cron.parse("@hourly")
    naive = datetime(2024, 1, 1, 12, 0)
    for call in (
        lambda: cron.next_fire(c, naive),
        lambda: cron.prev_fire(c, naive),
        lambda: cron.matches(c, naive),
        lambda: cron.window_at(c, timedelta(hours=1), naive),
    ):
        with pytest.raises(errors.InvalidInput, match="timezone-aware"):
            call()


# --- day-of-month vs day-of-week ----------------------------------------------------------------


def fires(expr: str, after: datetime, count: int) -> list[datetime]:
    c, out = cron.parse(expr), []
    for _ in range(count):
        after = cron.next_fire(c, after)
        out.append(after)
    return out


def test_both_day_fields_restricted_means_either() -> None:
    # September 2023: the 13th is a Wednesday; Fridays are the 1st, 8th, 15th, 22nd, 29th.
    days = [f.day for f in fires("0 0 13 * FRI", utc(2023, 8, 31), 6)]
    assert days == [1, 8, 13, 15, 22, 29]


def test_a_star_day_field_means_both_must_match() -> None:
    assert [f.day for f in fires("0 0 * * FRI", utc(2023, 8, 31), 3)] == [1, 8, 15]
    assert [f.day for f in fires("0 0 13 * *", utc(2023, 8, 31), 2)] == [13, 13]
    # Vixie: a field *starting* with '*' counts as unrestricted, so */2 ANDs with Monday:
    # odd days that are Mondays (Sep 2023 Mondays: 4, 11, 18, 25; Oct: 2, 9, 16, 23, 30).
    assert [(f.month, f.day) for f in fires("0 0 */2 * MON", utc(2023, 8, 31), 3)] == [(9, 11), (9, 25), (10, 9)]


def test_matches_uses_the_utc_minute() -> None:
    c = cron.parse("30 9 * * MON-FRI")
    assert cron.matches(c, utc(2024, 1, 2, 9, 30, 59))
    assert not cron.matches(c, utc(2024, 1, 6, 9, 30))  # Saturday
    ist = timezone(timedelta(hours=5, minutes=30))
    assert cron.matches(c, datetime(2024, 1, 2, 15, 0, tzinfo=ist))


# --- next_fire / prev_fire ----------------------------------------------------------------------


def test_next_fire_is_strictly_after_and_truncates_seconds() -> None:
    c = cron.parse("* * * * *")
    assert cron.next_fire(c, utc(2024, 1, 1, 12, 0)) == utc(2024, 1, 1, 12, 1)
    assert cron.next_fire(c, utc(2024, 1, 1, 12, 0, 59, 999_999)) == utc(2024, 1, 1, 12, 1)
    assert cron.next_fire(cron.parse("0 0 1 1 *"), utc(2023, 12, 31, 23, 59, 59)) == utc(2024, 1, 1)


def test_next_fire_converts_to_utc() -> None:
    pst = timezone(timedelta(hours=-8))
    got = cron.next_fire(cron.parse("0 2 * * *"), datetime(2024, 1, 1, 20, 0, tzinfo=pst))
    assert got == utc(2024, 1, 3, 2, 0)
    assert got.tzinfo is UTC


def test_next_fire_rolls_over_month_and_year_ends() -> None:
    assert fires("59 23 31 * *", utc(2024, 1, 31, 23, 59), 2) == [utc(2024, 3, 31, 23, 59), utc(2024, 5, 31, 23, 59)]
    assert fires("0 0 * DEC SAT", utc(2024, 12, 28), 1) == [utc(2025, 12, 6)]


def test_feb_29_only_in_leap_years_and_not_2100() -> None:
    c = cron.parse("0 0 29 2 *")
    assert cron.next_fire(c, utc(2023, 3, 1)) == utc(2024, 2, 29)
    assert cron.next_fire(c, utc(2024, 2, 29)) == utc(2028, 2, 29)
    assert cron.next_fire(c, utc(2096, 3, 1)) == utc(2104, 2, 29)
    assert cron.prev_fire(c, utc(2025, 1, 1)) == utc(2024, 2, 29)


def test_rare_expressions_are_fast() -> None:
    rare = [cron.parse(e) for e in ("0 0 29 2 *", "0 0 31 2 *", "59 23 31 12 SUN", "0 0 */31 2 MON")]
    started = time.perf_counter()
    for _ in range(25):
        for c in rare:
            with contextlib.suppress(cron.CronError):
                cron.next_fire(c, utc(2024, 3, 1))
    assert (time.perf_counter() - started) / 100 < 0.01


@pytest.mark.parametrize("expr", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30-31 FEB *"])
def test_an_expression_that_never_fires_is_an_error(expr: str) -> None:
    with pytest.raises(cron.CronError, match="never fires"):
        cron.next_fire(cron.parse(expr), utc(2024, 1, 1))


def test_next_fire_near_the_end_of_time_is_an_error_not_a_crash() -> None:
    with pytest.raises(cron.CronError):
        cron.next_fire(cron.parse("@yearly"), datetime(9999, 6, 1, tzinfo=UTC))


def test_prev_fire_includes_the_given_minute() -> None:
    c = cron.parse("0 2 * * *")
    assert cron.prev_fire(c, utc(2024, 1, 5, 2, 0, 30)) == utc(2024, 1, 5, 2, 0)
    assert cron.prev_fire(c, utc(2024, 1, 5, 1, 59)) == utc(2024, 1, 4, 2, 0)
    assert cron.prev_fire(cron.parse("0 0 1 1 *"), utc(2024, 1, 1)) == utc(2024, 1, 1)


def test_prev_fire_gives_up_after_its_horizon() -> None:
    assert cron.prev_fire(cron.parse("0 0 29 2 *"), utc(2025, 6, 1)) is None
    assert cron.prev_fire(cron.parse("0 0 31 2 *"), utc(2025, 6, 1)) is None
    c = cron.parse("0 2 * * *")
    assert cron.prev_fire(c, utc(2024, 1, 5, 1, 0), within=timedelta(hours=23)) == utc(2024, 1, 4, 2, 0)
    assert cron.prev_fire(c, utc(2024, 1, 5, 1, 0), within=timedelta(hours=22)) is None
    assert cron.prev_fire(c, datetime(1, 1, 1, 1, 0, tzinfo=UTC)) is None


# --- window_at ----------------------------------------------------------------------------------

NIGHTLY = cron.parse("0 2 * * *")
TWO_HOURS = timedelta(hours=2)


@pytest.mark.parametrize(
    ("now", "window"),
    [
        (utc(2024, 1, 5, 1, 59, 59), (utc(2024, 1, 5, 2), utc(2024, 1, 5, 4))),  # before: the next one
        (utc(2024, 1, 5, 2, 0), (utc(2024, 1, 5, 2), utc(2024, 1, 5, 4))),  # at the start: inside
        (utc(2024, 1, 5, 3, 0), (utc(2024, 1, 5, 2), utc(2024, 1, 5, 4))),  # inside
        (utc(2024, 1, 5, 3, 59, 59, 999_999), (utc(2024, 1, 5, 2), utc(2024, 1, 5, 4))),
        (utc(2024, 1, 5, 4, 0), (utc(2024, 1, 6, 2), utc(2024, 1, 6, 4))),  # at the end: over
    ],
)
def test_window_at_inside_outside_and_boundaries(now: datetime, window: tuple[datetime, datetime]) -> None:
    assert cron.window_at(NIGHTLY, TWO_HOURS, now) == window


def test_window_at_with_sub_minute_duration() -> None:
    c = cron.parse("* * * * *")
    assert cron.window_at(c, timedelta(seconds=30), utc(2024, 1, 1, 12, 0, 29)) == (
        utc(2024, 1, 1, 12, 0),
        utc(2024, 1, 1, 12, 0, 30),
    )
    assert cron.window_at(c, timedelta(seconds=30), utc(2024, 1, 1, 12, 0, 30)) == (
        utc(2024, 1, 1, 12, 1),
        utc(2024, 1, 1, 12, 1, 30),
    )


@pytest.mark.parametrize("duration", [timedelta(0), timedelta(seconds=-1), timedelta(days=7, microseconds=1)])
def test_window_duration_must_be_positive_and_at_most_a_week(duration: timedelta) -> None:
    with pytest.raises(errors.InvalidInput, match="duration"):
        cron.window_at(NIGHTLY, duration, utc(2024, 1, 1))


def test_week_long_window_is_allowed() -> None:
    weekly = cron.parse("@weekly")
    assert cron.window_at(weekly, timedelta(days=7), utc(2024, 1, 10)) == (utc(2024, 1, 7), utc(2024, 1, 14))


def test_overlapping_windows_merge_to_the_real_end() -> None:
    c = cron.parse("0,30 9-17 * * *")
    # Inside: the window that started last is 10:00; windows chain every 30 min until 17:30 + 45.
    assert cron.window_at(c, timedelta(minutes=45), utc(2024, 1, 1, 10, 15)) == (
        utc(2024, 1, 1, 10, 0),
        utc(2024, 1, 1, 18, 15),
    )
    # Outside: the next window, merged the same way.
    assert cron.window_at(c, timedelta(minutes=45), utc(2024, 1, 1, 8, 0)) == (
        utc(2024, 1, 1, 9, 0),
        utc(2024, 1, 1, 18, 15),
    )
    # Shorter than the gap: no merging.
    assert cron.window_at(c, timedelta(minutes=29), utc(2024, 1, 1, 10, 15)) == (
        utc(2024, 1, 1, 10, 0),
        utc(2024, 1, 1, 10, 29),
    )


def test_of_overlapping_windows_the_latest_started_one_is_returned() -> None:
    c = cron.parse("0 9,10 * * *")
    # [09:00, 10:30) and [10:00, 11:30) both contain 10:15.
    assert cron.window_at(c, timedelta(minutes=90), utc(2024, 1, 1, 10, 15)) == (
        utc(2024, 1, 1, 10, 0),
        utc(2024, 1, 1, 11, 30),
    )


def test_touching_windows_merge() -> None:
    c = cron.parse("0 9,10 * * *")
    assert cron.window_at(c, timedelta(hours=1), utc(2024, 1, 1, 9, 30)) == (utc(2024, 1, 1, 9), utc(2024, 1, 1, 11))


@pytest.mark.parametrize(
    ("expr", "duration"),
    [("* * * * *", timedelta(minutes=1)), ("0 * * * *", timedelta(minutes=90)), ("0 */6 * * *", timedelta(hours=6))],
)
def test_endless_merging_stops_at_a_week(expr: str, duration: timedelta) -> None:
    start, end = cron.window_at(cron.parse(expr), duration, utc(2024, 1, 1, 12, 5))
    assert start <= utc(2024, 1, 1, 12, 5) < end
    assert end == start + cron.MAX_WINDOW


# --- properties ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """An expression together with the sets it must mean, built independently of the parser."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    dom_star: bool
    dow_star: bool

    def day_ok(self, d: date) -> bool:
        dom_ok, dow_ok = d.day in self.days, d.isoweekday() % 7 in self.weekdays
        day = dom_ok and dow_ok if self.dom_star or self.dow_star else dom_ok or dow_ok
        return d.month in self.months and day

    def ok(self, t: datetime) -> bool:
        return self.day_ok(t.date()) and t.hour in self.hours and t.minute in self.minutes


@st.composite
def fields(draw: st.DrawFn, lo: int, hi: int, names: tuple[str, ...] = (), first: int = 0) -> tuple[str, set[int]]:
    """One field as (text, values); names[i] spells the value first + i."""

    def value(n: int) -> str:
        if n - first < len(names) and draw(st.booleans()):
            name = names[n - first]
            return draw(st.sampled_from([name, name.lower(), name.title()]))
        return str(n)

    def item() -> tuple[str, set[int]]:
        a = draw(st.integers(lo, hi))
        kind = draw(st.sampled_from(["one", "range", "step"]))
        if kind == "one":
            return value(a), {a}
        b = draw(st.integers(a, hi))
        if kind == "range":
            return f"{value(a)}-{value(b)}", set(range(a, b + 1))
        n = draw(st.integers(1, hi - lo + 1))
        return f"{value(a)}-{value(b)}/{n}", set(range(a, b + 1, n))

    kind = draw(st.sampled_from(["star", "star_step", "item", "list"]))
    if kind == "star":
        return "*", set(range(lo, hi + 1))
    if kind == "star_step":
        n = draw(st.integers(1, hi - lo + 1))
        return f"*/{n}", set(range(lo, hi + 1, n))
    items = [item() for _ in range(1 if kind == "item" else draw(st.integers(2, 3)))]
    return ",".join(t for t, _ in items), set().union(*(v for _, v in items))


MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # 7 stays a number: SUN-SUN is not 0-7


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    mi, h = draw(fields(0, 59)), draw(fields(0, 23))
    dom, mon = draw(fields(1, 31)), draw(fields(1, 12, MONTH_NAMES, first=1))
    dow = draw(fields(0, 7, DAY_NAMES))
    return Spec(
        text=" ".join(t for t, _ in (mi, h, dom, mon, dow)),
        minutes=frozenset(mi[1]),
        hours=frozenset(h[1]),
        days=frozenset(dom[1]),
        months=frozenset(mon[1]),
        weekdays=frozenset(v % 7 for v in dow[1]),
        dom_star=dom[0].startswith("*"),
        dow_star=dow[0].startswith("*"),
    )


ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2150, 1, 1), timezones=ZONES)


def assert_no_fire_between(spec: Spec, lo: datetime, hi: datetime) -> None:
    """No fire time t with lo < t < hi (both whole UTC minutes): whole days by the day rule, the rest by minute."""
    t = lo + MIN
    while t < hi:
        if t.hour == 0 and t.minute == 0 and t + timedelta(days=1) <= hi:
            # Hours and minutes are never empty, so a matching day has a fire time in it.
            assert not spec.day_ok(t.date()), t
            t += timedelta(days=1)
        else:
            assert not spec.ok(t), t
            t += MIN


def minute_of(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(specs(), moments)
def test_parse_means_what_the_fields_say(spec: Spec, now: datetime) -> None:
    c = cron.parse(spec.text)
    assert set(c.minutes) == spec.minutes and set(c.hours) == spec.hours and set(c.days) == spec.days
    assert set(c.months) == spec.months and set(c.weekdays) == spec.weekdays
    assert (c.dom_star, c.dow_star) == (spec.dom_star, spec.dow_star)
    assert cron.matches(c, now) == spec.ok(minute_of(now))
    assert cron.parse(cron.describe(c)) == c


@PROPERTY
@given(specs(), moments)
def test_next_fire_is_the_first_match_after(spec: Spec, after: datetime) -> None:
    c, start = cron.parse(spec.text), minute_of(after)
    try:
        nxt = cron.next_fire(c, after)
    except cron.CronError:
        # Only if nothing fires in the whole horizon (checked a day short of each end).
        assert_no_fire_between(spec, start + timedelta(days=1), start + cron.SEARCH_HORIZON - timedelta(days=1))
        return
    assert nxt > after and nxt.tzinfo is UTC and nxt.second == 0 == nxt.microsecond
    assert spec.ok(nxt) and cron.matches(c, nxt)
    assert_no_fire_between(spec, start, nxt)
    assert cron.prev_fire(c, nxt) == nxt
    assert cron.prev_fire(c, nxt - MIN, within=nxt - MIN - start) in (None, start)


@PROPERTY
@given(specs(), moments)
def test_prev_fire_is_the_last_match_at_or_before(spec: Spec, at: datetime) -> None:
    c, end = cron.parse(spec.text), minute_of(at)
    prev = cron.prev_fire(c, at)
    if prev is None:
        assert_no_fire_between(spec, end - cron.PREV_HORIZON - MIN, end + MIN)
        return
    assert prev <= at and prev.tzinfo is UTC and spec.ok(prev)
    assert_no_fire_between(spec, prev, end + MIN)
    assert cron.next_fire(c, prev) > at


durations = st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=2))


@PROPERTY
@given(specs(), durations, moments)
def test_window_at_agrees_with_walking_the_fire_times(spec: Spec, duration: timedelta, now: datetime) -> None:
    c = cron.parse(spec.text)
    try:
        start, end = cron.window_at(c, duration, now)
    except cron.CronError:
        assume(False)
        return
    prev = cron.prev_fire(c, now, within=duration)
    if prev is not None and now < prev + duration:
        assert start == prev  # inside: the window that started last
    else:
        assert start == cron.next_fire(c, now)
    # Walk fire by fire: a window starting at or before the current end extends it.
    cap, merged, f = start + cron.MAX_WINDOW, start + duration, start
    while merged < cap:
        try:
            g = cron.next_fire(c, f)
        except cron.CronError:  # no later fire within the search horizon: nothing to merge
            break
        if g > merged:
            break
        merged, f = g + duration, g
    assert end == min(merged, cap)
