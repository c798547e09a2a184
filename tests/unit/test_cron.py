"""Cron expressions in a time zone and blackout windows (core/domain/cron.py, on cronsim):
syntax, errors, Vixie day rules, search in UTC, the DST rules in real zones, merging windows,
and property tests against brute-force oracles (UTC fields, and zoneinfo across transitions)."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.domain import cron, errors

MIN = timedelta(minutes=1)
BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
SYDNEY = "Australia/Sydney"


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def fires(expr: str, after: datetime, count: int, tz: str = "UTC") -> list[datetime]:
    """The next `count` fire times after `after`, by repeated next_fire."""
    c, out = cron.parse(expr, tz), []
    for _ in range(count):
        after = cron.next_fire(c, after)
        out.append(after)
    return out


def between(expr: str, after: datetime, until: datetime, tz: str = "UTC") -> list[datetime]:
    return cron.fires_between(cron.parse(expr, tz), after, until, limit=10_000)


def walls(ts: list[datetime], tz: str) -> list[str]:
    """Local wall times with their UTC offsets, to read DST assertions by."""
    return [t.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M%z") for t in ts]


# --- syntax -------------------------------------------------------------------------------------


def minutes_of(field: str) -> list[int]:
    """The minutes "field * * * *" fires at, read off one hour of fire times."""
    return [t.minute for t in between(f"{field} * * * *", utc(2024, 1, 1, 0) - MIN, utc(2024, 1, 1, 0, 59))]


def hours_of(field: str) -> list[int]:
    return [t.hour for t in between(f"0 {field} * * *", utc(2024, 1, 1) - MIN, utc(2024, 1, 1, 23, 59))]


def months_of(field: str) -> list[int]:
    return [t.month for t in between(f"0 0 1 {field} *", utc(2025, 1, 1) - MIN, utc(2025, 12, 31))]


def weekdays_of(field: str) -> list[int]:
    """Weekdays (0 = Sunday) of "0 0 * * field" over the week Sun 2024-01-07 .. Sat 2024-01-13."""
    got = between(f"0 0 * * {field}", utc(2024, 1, 7) - MIN, utc(2024, 1, 13, 23, 59))
    return [t.isoweekday() % 7 for t in got]


def test_star_fires_every_minute() -> None:
    assert fires("* * * * *", utc(2024, 1, 1, 23, 58), 3) == [
        utc(2024, 1, 1, 23, 59),
        utc(2024, 1, 2),
        utc(2024, 1, 2, 0, 1),
    ]
    assert minutes_of("*") == list(range(60))
    assert hours_of("*") == list(range(24))
    assert months_of("*") == list(range(1, 13))
    assert weekdays_of("*") == list(range(7))


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("5", [5]),
        ("1-4", [1, 2, 3, 4]),
        ("1,5,3", [1, 3, 5]),
        ("1-3,10-11,3", [1, 2, 3, 10, 11]),
        ("*/15", [0, 15, 30, 45]),
        ("10-30/10", [10, 20, 30]),
        ("10-31/10", [10, 20, 30]),
        ("0-59/60", [0]),
        ("*/60", [0]),
        ("5,*/20", [0, 5, 20, 40]),
        ("59", [59]),
        ("7-7/10", [7]),  # a range of one value, even under a step (cronsim alone reads 7, 17, ...)
        ("5/20", [5, 25, 45]),  # cronsim's start-and-step, fine to allow
    ],
)
def test_minute_field_syntax(field: str, values: list[int]) -> None:
    assert minutes_of(field) == values


@pytest.mark.parametrize(
    ("field", "values"),
    [("0", [0]), ("23", [23]), ("9-17/4", [9, 13, 17]), ("*/6", [0, 6, 12, 18]), ("1,22", [1, 22])],
)
def test_hour_field_syntax(field: str, values: list[int]) -> None:
    assert hours_of(field) == values


def test_month_and_weekday_names_are_case_insensitive() -> None:
    assert months_of("jan,Mar-may,DEC") == [1, 3, 4, 5, 12]
    assert months_of("FEB-DEC/2") == [2, 4, 6, 8, 10, 12]
    assert weekdays_of("mon-Fri") == [1, 2, 3, 4, 5]
    assert weekdays_of("sun,SAT") == [0, 6]


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("7", [0]),
        ("0,7", [0]),
        ("5-7", [0, 5, 6]),
        ("MON-SUN", [0, 1, 2, 3, 4, 5, 6]),
        ("FRI-SUN", [0, 5, 6]),
        ("SAT-0", [0, 6]),
        ("SUN-SUN", [0]),
        ("MON-SUN/2", [0, 1, 3, 5]),
        ("*/2", [0, 2, 4, 6]),
        ("1-7/3", [0, 1, 4]),
    ],
)
def test_day_of_week_seven_is_sunday(field: str, values: list[int]) -> None:
    assert weekdays_of(field) == values


def test_cronsim_extensions_are_allowed() -> None:
    # Last day of the month, last Friday, second Monday: cronsim's extensions, fine to accept.
    assert fires("0 0 L * *", utc(2024, 1, 15), 3) == [utc(2024, 1, 31), utc(2024, 2, 29), utc(2024, 3, 31)]
    assert fires("0 0 * * 5L", utc(2024, 1, 1), 2) == [utc(2024, 1, 26), utc(2024, 2, 23)]
    assert fires("0 0 * * MON#2", utc(2024, 1, 1), 2) == [utc(2024, 1, 8), utc(2024, 2, 12)]


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
        ("@Hourly", "0 * * * *"),
    ],
)
def test_macros_expand(macro: str, expanded: str) -> None:
    c = cron.parse(macro)
    assert cron.describe(c) == expanded == c.expr
    assert c == cron.parse(expanded)
    assert cron.MACROS[macro.strip().lower()] == expanded


def test_macros_fire_when_they_say() -> None:
    at = utc(2024, 5, 15, 10, 30)
    assert cron.next_fire(cron.parse("@hourly"), at) == utc(2024, 5, 15, 11)
    assert cron.next_fire(cron.parse("@daily"), at) == utc(2024, 5, 16)
    assert cron.next_fire(cron.parse("@weekly"), at) == utc(2024, 5, 19)  # a Sunday
    assert cron.next_fire(cron.parse("@monthly"), at) == utc(2024, 6, 1)
    assert cron.next_fire(cron.parse("@annually"), at) == utc(2025, 1, 1)
    # In a zone, the macro's midnight is local midnight.
    assert cron.next_fire(cron.parse("@daily", BERLIN), at) == utc(2024, 5, 15, 22)


def test_describe_normalises_spacing_and_case_and_names_the_zone() -> None:
    assert cron.describe(cron.parse("  */5   9-17 * jan-mar  mon-fri ")) == "*/5 9-17 * JAN-MAR MON-FRI"
    assert cron.describe(cron.parse("30\t2 * * *", BERLIN)) == "30 2 * * * (Europe/Berlin)"
    assert cron.describe(cron.parse("@daily", "UTC")) == "0 0 * * *"
    assert cron.Cron.parse("0 0 * * *") == cron.parse("0 0 * * *") == cron.Cron("0 0 * * *", "UTC")
    assert cron.parse("0 0 * * *", NEW_YORK) == cron.Cron("0 0 * * *", NEW_YORK)


def test_zone_resolves_iana_names() -> None:
    assert cron.zone("UTC") is UTC
    assert cron.zone(BERLIN) == ZoneInfo(BERLIN)
    assert cron.parse("@hourly", "Etc/UTC").tz == "Etc/UTC"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "field"),
    [
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 0 *", "month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("1-70 * * * *", "minute"),
        ("*/0 * * * *", "minute"),
        ("*/x * * * *", "minute"),
        ("*/ * * * *", "minute"),
        ("30-10 * * * *", "minute"),
        ("1- * * * *", "minute"),
        ("-1 * * * *", "minute"),
        ("+1 * * * *", "minute"),
        ("1.5 * * * *", "minute"),
        ("1-2-3 * * * *", "minute"),
        ("1/2/3 * * * *", "minute"),
        ("1,,2 * * * *", "minute"),
        ("* * * FOO *", "month"),
        ("0 0 * JAN-DEC/0 *", "month"),
        ("* * * * FUNDAY", "day-of-week"),
        ("* * * * MON#6", "day-of-week"),
        ("JAN * * * *", "minute"),
        ("* * MON * *", "day-of-month"),
        ("* * ? * *", "day-of-month"),
        ("* * * * L", "day-of-week"),
        ("*-5 * * * *", "minute"),
        ("\u0663 * * * *", "minute"),  # Arabic-Indic three: a digit to str.isdigit, not to cron
    ],
)
def test_bad_fields_name_the_field(expr: str, field: str) -> None:
    with pytest.raises(cron.CronError) as info:
        cron.parse(expr)
    message = str(info.value)
    assert message.startswith(f"bad cron expression {expr!r}: bad {field}")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("expr", "count"),
    [("", 0), ("   ", 0), ("* * * *", 4), ("* * * * * *", 6), ("0 0 * * * *", 6), ("0 0 0 * * * *", 7)],
)
def test_wrong_field_count(expr: str, count: int) -> None:
    # 6 fields (cronsim's seconds) are refused: Orch's expressions have 5.
    with pytest.raises(cron.CronError, match=rf"needs 5 fields .*got {count} in") as info:
        cron.parse(expr)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("macro", ["@reboot", "@fortnightly", "@", "@daily extra", "@every 5m"])
def test_unknown_macro(macro: str) -> None:
    with pytest.raises(cron.CronError, match="unknown cron macro") as info:
        cron.parse(macro)
    assert "@hourly" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "expr",
    [
        "0 0 31 2 *",  # cronsim refuses it as a bad day-of-month
        "0 0 30 2 *",
        "0 0 31 4,6,9,11 *",
        "0 0 30-31 FEB *",
        "0 0 */15 2 MON#5",  # accepted by cronsim, but Feb's fifth Monday is the 29th, never 1, 16 or 31
    ],
)
def test_an_expression_that_never_fires_is_refused(expr: str) -> None:
    with pytest.raises(cron.CronError) as info:
        cron.parse(expr)
    assert "never fires" in str(info.value) or "bad day-of-month" in str(info.value)
    assert "\n" not in str(info.value)


def test_rare_but_possible_expressions_parse() -> None:
    assert cron.parse("0 0 29 2 *").expr == "0 0 29 2 *"
    assert cron.parse("0 0 31 2 MON").expr == "0 0 31 2 MON"  # both restricted: OR, so Feb Mondays


@pytest.mark.parametrize("expr", ["0 0 * 2 MON#5", "0 0 */31 2 MON"])
def test_parse_refuses_what_does_not_fire_within_the_horizon_after_2000(expr: str) -> None:
    # Feb 29 on a Monday (2016, 2044, ...), Feb 1 on a Monday (2010, 2016, 2021, 2027, 2038):
    # gaps longer than SEARCH_HORIZON, so next_fire could not promise them; parse says so.
    with pytest.raises(cron.CronError, match="never fires"):
        cron.parse(expr)


@pytest.mark.parametrize("tz", ["Mars/Base", "", "Europe/Berlin ", "../etc/passwd", "/etc/localtime", "CET/"])
def test_an_unknown_zone_is_refused(tz: str) -> None:
    with pytest.raises(cron.CronError, match="unknown time zone") as info:
        cron.parse("@hourly", tz)
    assert repr(tz) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(cron.CronError, match="unknown time zone"):
        cron.zone(tz)


def test_non_text_is_refused() -> None:
    with pytest.raises(cron.CronError, match="must be text"):
        cron.parse(None)  # type: ignore[arg-type]


def test_cron_error_is_invalid_input() -> None:
    assert issubclass(cron.CronError, errors.InvalidInput)


def test_naive_datetimes_are_refused() -> None:
    c = cron.parse("@hourly")
    naive = datetime(2024, 1, 1, 12, 0)
    aware = utc(2024, 1, 1)
    calls: list[Callable[[], object]] = [
        lambda: cron.next_fire(c, naive),
        lambda: cron.prev_fire(c, naive),
        lambda: cron.matches(c, naive),
        lambda: cron.window_at(c, timedelta(hours=1), naive),
        lambda: cron.fires_between(c, naive, aware, limit=5),
        lambda: cron.fires_between(c, aware, naive, limit=5),
    ]
    for call in calls:
        with pytest.raises(errors.InvalidInput, match="timezone-aware"):
            call()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789*/-,#LW?JANMOSUFRI@ \t", max_size=24))
def test_parse_returns_a_cron_or_raises_cron_error(text: str) -> None:
    try:
        c = cron.parse(text)
    except cron.CronError as exc:
        assert "\n" not in str(exc)
        return
    assert len(c.expr.split()) == 5
    assert cron.parse(c.expr) == c
    with contextlib.suppress(cron.CronError):  # anything else would be a crash
        assert cron.next_fire(c, utc(2024, 1, 1)) > utc(2024, 1, 1)


# --- day-of-month vs day-of-week ----------------------------------------------------------------


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


def test_matches_uses_the_minute_in_the_zone() -> None:
    c = cron.parse("30 9 * * MON-FRI")
    assert cron.matches(c, utc(2024, 1, 2, 9, 30, 59))
    assert not cron.matches(c, utc(2024, 1, 2, 9, 31))
    assert not cron.matches(c, utc(2024, 1, 6, 9, 30))  # Saturday
    ist = timezone(timedelta(hours=5, minutes=30))
    assert cron.matches(c, datetime(2024, 1, 2, 15, 0, tzinfo=ist))
    berlin = cron.parse("30 9 * * MON-FRI", BERLIN)
    assert cron.matches(berlin, utc(2024, 1, 2, 8, 30))  # 09:30 CET
    assert cron.matches(berlin, utc(2024, 7, 2, 7, 30))  # 09:30 CEST
    assert not cron.matches(berlin, utc(2024, 1, 2, 9, 30))


# --- next_fire / prev_fire / fires_between (UTC) ------------------------------------------------


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
    in_zone = cron.next_fire(cron.parse("0 2 * * *", NEW_YORK), datetime(2024, 1, 1, 20, 0, tzinfo=pst))
    assert in_zone == utc(2024, 1, 2, 7, 0) and in_zone.tzinfo is UTC  # 02:00 EST


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
    rare = [cron.parse(e) for e in ("0 0 29 2 *", "59 23 31 12 SUN", "0 0 29 2 MON", "0 0 * 2 MON#4")]
    started = time.perf_counter()
    for _ in range(25):
        for c in rare:
            with contextlib.suppress(cron.CronError):
                cron.next_fire(c, utc(2024, 3, 1))
    assert (time.perf_counter() - started) / 100 < 0.01


def test_next_fire_near_the_end_of_time_is_an_error_not_a_crash() -> None:
    with pytest.raises(cron.CronError, match="never fires within"):
        cron.next_fire(cron.parse("@yearly"), datetime(9999, 6, 1, tzinfo=UTC))
    with pytest.raises(cron.CronError, match="never fires within"):
        cron.next_fire(cron.parse("* * * * *", NEW_YORK), utc(9999, 12, 31, 23, 59))
    assert cron.fires_between(cron.parse("@hourly"), utc(9999, 12, 31, 22, 30), utc(9999, 12, 31, 23, 59), limit=5) == [
        utc(9999, 12, 31, 23)
    ]


def test_prev_fire_includes_the_given_minute() -> None:
    c = cron.parse("0 2 * * *")
    assert cron.prev_fire(c, utc(2024, 1, 5, 2, 0, 30)) == utc(2024, 1, 5, 2, 0)
    assert cron.prev_fire(c, utc(2024, 1, 5, 1, 59)) == utc(2024, 1, 4, 2, 0)
    assert cron.prev_fire(cron.parse("0 0 1 1 *"), utc(2024, 1, 1)) == utc(2024, 1, 1)
    assert cron.prev_fire(cron.parse("0 2 * * *", BERLIN), utc(2024, 1, 5, 1, 0)) == utc(2024, 1, 5, 1, 0)


def test_prev_fire_gives_up_after_its_horizon() -> None:
    assert cron.prev_fire(cron.parse("0 0 29 2 *"), utc(2025, 6, 1)) is None
    c = cron.parse("0 2 * * *")
    assert cron.prev_fire(c, utc(2024, 1, 5, 1, 0), within=timedelta(hours=23)) == utc(2024, 1, 4, 2, 0)
    assert cron.prev_fire(c, utc(2024, 1, 5, 1, 0), within=timedelta(hours=22)) is None
    assert cron.prev_fire(c, datetime(1, 1, 1, 1, 0, tzinfo=UTC)) is None
    assert cron.prev_fire(cron.parse("0 2 * * *", BERLIN), datetime(1, 1, 1, 1, 0, tzinfo=UTC)) is None


def test_fires_between_is_half_open_ordered_and_limited() -> None:
    c = cron.parse("0 * * * *")
    got = cron.fires_between(c, utc(2024, 1, 1, 1), utc(2024, 1, 1, 4), limit=10)
    assert got == [utc(2024, 1, 1, 2), utc(2024, 1, 1, 3), utc(2024, 1, 1, 4)]  # after < t <= until
    assert cron.fires_between(c, utc(2024, 1, 1, 1), utc(2024, 1, 1, 4), limit=2) == got[:2]
    assert cron.fires_between(c, utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 1, 59, 59), limit=10) == [utc(2024, 1, 1, 1)]
    assert cron.fires_between(c, utc(2024, 1, 1, 1, 0, 1), utc(2024, 1, 1, 2), limit=10) == [utc(2024, 1, 1, 2)]
    assert cron.fires_between(c, utc(2024, 1, 1, 4), utc(2024, 1, 1, 1), limit=10) == []
    assert cron.fires_between(c, utc(2024, 1, 1, 4), utc(2024, 1, 1, 4), limit=10) == []
    assert cron.fires_between(c, utc(2024, 1, 1, 1), utc(2024, 1, 1, 4), limit=0) == []
    assert cron.fires_between(cron.parse("0 0 29 2 *"), utc(2025, 1, 1), utc(2027, 1, 1), limit=10) == []


# --- DST: Europe/Berlin (2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) --------------------


def test_berlin_spring_forward_fixed_time_fires_at_the_end_of_the_gap() -> None:
    # 02:30 does not exist on 2026-03-29: it fires at 03:00 CEST (01:00Z), the first valid instant.
    got = fires("30 2 * * *", utc(2026, 3, 28, 12), 3, BERLIN)
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    assert walls(got, BERLIN) == ["03-29 03:00+0200", "03-30 02:30+0200", "03-31 02:30+0200"]
    c = cron.parse("30 2 * * *", BERLIN)
    assert cron.matches(c, utc(2026, 3, 29, 1, 0)) and not cron.matches(c, utc(2026, 3, 29, 1, 30))
    assert cron.prev_fire(c, utc(2026, 3, 29, 12)) == utc(2026, 3, 29, 1, 0)
    assert cron.prev_fire(c, utc(2026, 3, 29, 0, 59)) == utc(2026, 3, 28, 1, 30)  # 02:30 CET the day before


def test_berlin_spring_forward_times_in_the_gap_fire_once() -> None:
    # 02:00 and 02:30 both map to 03:00 CEST, and 03:00 itself exists: one fire at 01:00Z.
    assert between("0,30 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 30), BERLIN) == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 0),
    ]
    assert between("0 2,3 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 12), BERLIN) == [utc(2026, 3, 29, 1, 0)]
    # The hour is fixed even when the minute is a step: the whole 02:xx hour collapses onto 03:00.
    assert between("*/30 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 30, 1), BERLIN) == [
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 0),
        utc(2026, 3, 30, 0, 30),
    ]


def test_berlin_fall_back_fixed_time_fires_once_at_the_first_occurrence() -> None:
    # 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET): it fires at 00:30Z only.
    got = between("30 2 * * *", utc(2026, 10, 24, 12), utc(2026, 10, 26, 12), BERLIN)
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert walls(got, BERLIN) == ["10-25 02:30+0200", "10-26 02:30+0100"]
    c = cron.parse("30 2 * * *", BERLIN)
    assert cron.matches(c, utc(2026, 10, 25, 0, 30)) and not cron.matches(c, utc(2026, 10, 25, 1, 30))
    assert cron.prev_fire(c, utc(2026, 10, 25, 1, 30)) == utc(2026, 10, 25, 0, 30)
    # A fixed hour with a minute step also fires only in the first pass of the hour.
    assert between("*/30 2 * * *", utc(2026, 10, 24, 12), utc(2026, 10, 25, 12), BERLIN) == [
        utc(2026, 10, 25, 0, 0),
        utc(2026, 10, 25, 0, 30),
    ]


def test_berlin_fall_back_searches_from_the_second_pass_of_the_hour() -> None:
    # Regression: from 02:30 CET (01:30Z, the second pass) the 02:45 of the first pass (00:45Z)
    # is in the past, so the next fire is the next day's, and prev_fire must still see 00:45Z.
    c = cron.parse("45 2 * * *", BERLIN)
    assert cron.next_fire(c, utc(2026, 10, 25, 1, 30)) == utc(2026, 10, 26, 1, 45)
    assert cron.fires_between(c, utc(2026, 10, 25, 1, 30), utc(2026, 10, 27), limit=5) == [utc(2026, 10, 26, 1, 45)]
    assert cron.prev_fire(c, utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 25, 0, 45)
    assert cron.prev_fire(c, utc(2026, 10, 25, 1, 59)) == utc(2026, 10, 25, 0, 45)
    assert cron.prev_fire(c, utc(2026, 10, 25, 0, 44)) == utc(2026, 10, 24, 0, 45)
    # 03:15 CET (02:15Z) is after the repeat: the 02:45 wall times beyond it are not yet due.
    assert cron.prev_fire(cron.parse("15 3 * * *", BERLIN), utc(2026, 10, 25, 1, 59)) == utc(2026, 10, 24, 1, 15)


def test_berlin_hourly_and_half_hourly_follow_elapsed_time() -> None:
    # Spring: 01:00 CET, then 03:00 CEST one hour later; 02:xx never happens.
    assert between("0 * * * *", utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 2), BERLIN) == [
        utc(2026, 3, 29, 0),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 2),
    ]
    half = between("*/30 * * * *", utc(2026, 3, 28, 23), utc(2026, 3, 29, 3), BERLIN)
    assert half == [utc(2026, 3, 28, 23) + k * timedelta(minutes=30) for k in range(1, 9)]
    assert "02:" not in " ".join(walls(half, BERLIN))
    # Fall: 02:00 and 02:30 fire in both the CEST and the CET hour.
    got = between("0 * * * *", utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2), BERLIN)
    assert got == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2)]
    assert walls(got, BERLIN) == ["10-25 02:00+0200", "10-25 02:00+0100", "10-25 03:00+0100"]
    half = between("*/30 * * * *", utc(2026, 10, 24, 23), utc(2026, 10, 25, 3), BERLIN)
    assert half == [utc(2026, 10, 24, 23) + k * timedelta(minutes=30) for k in range(1, 9)]
    assert walls(half, BERLIN)[1:5] == ["10-25 02:00+0200", "10-25 02:30+0200", "10-25 02:00+0100", "10-25 02:30+0100"]


def test_berlin_hour_steps_follow_elapsed_time() -> None:
    # A step in the hour field, with or without '*', fires in both passes of 02:00 ...
    for expr in ("0 */2 * * *", "0 0-23/2 * * *"):
        assert walls(between(expr, utc(2026, 10, 24, 21), utc(2026, 10, 25, 4), BERLIN), BERLIN) == [
            "10-25 00:00+0200",
            "10-25 02:00+0200",
            "10-25 02:00+0100",
            "10-25 04:00+0100",
        ]
        # ... and a step hour that does not exist (02:00 on 03-29) does not happen.
        assert walls(between(expr, utc(2026, 3, 28, 21), utc(2026, 3, 29, 5), BERLIN), BERLIN) == [
            "03-29 00:00+0100",
            "03-29 04:00+0200",
            "03-29 06:00+0200",
        ]


# --- DST: America/New_York (2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00) ---------------


def test_new_york_spring_forward() -> None:
    assert fires("30 2 * * *", utc(2026, 3, 7, 12), 2, NEW_YORK) == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]
    assert walls(fires("30 2 * * *", utc(2026, 3, 7, 12), 2, NEW_YORK), NEW_YORK) == [
        "03-08 03:00-0400",
        "03-09 02:30-0400",
    ]
    assert between("0 * * * *", utc(2026, 3, 8, 5, 30), utc(2026, 3, 8, 8), NEW_YORK) == [
        utc(2026, 3, 8, 6),  # 01:00 EST
        utc(2026, 3, 8, 7),  # 03:00 EDT
        utc(2026, 3, 8, 8),
    ]


def test_new_york_fall_back() -> None:
    # 01:xx repeats; 02:30 happens once (EST), 01:30 fires at its first (EDT) occurrence only.
    assert between("30 2 * * *", utc(2026, 10, 31, 12), utc(2026, 11, 2, 12), NEW_YORK) == [
        utc(2026, 11, 1, 7, 30),
        utc(2026, 11, 2, 7, 30),
    ]
    assert between("30 1 * * *", utc(2026, 10, 31, 12), utc(2026, 11, 2, 12), NEW_YORK) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
    ]
    assert cron.prev_fire(cron.parse("30 1 * * *", NEW_YORK), utc(2026, 11, 1, 6, 45)) == utc(2026, 11, 1, 5, 30)
    got = between("0 * * * *", utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 7), NEW_YORK)
    assert walls(got, NEW_YORK) == ["11-01 01:00-0400", "11-01 01:00-0500", "11-01 02:00-0500"]
    half = between("*/30 * * * *", utc(2026, 11, 1, 4), utc(2026, 11, 1, 8), NEW_YORK)
    assert half == [utc(2026, 11, 1, 4) + k * timedelta(minutes=30) for k in range(1, 9)]


# --- DST: Australia/Sydney (2026-04-05 03:00 -> 02:00, 2026-10-04 02:00 -> 03:00) ---------------


def test_sydney_southern_hemisphere() -> None:
    # Spring forward in October: 02:30 AEST does not exist on 10-04 -> 03:00 AEDT (10-03 16:00Z).
    assert fires("30 2 * * *", utc(2026, 10, 3), 2, SYDNEY) == [utc(2026, 10, 3, 16), utc(2026, 10, 4, 15, 30)]
    # Fall back in April: 02:30 happens at 15:30Z (AEDT) and 16:30Z (AEST); it fires at 15:30Z.
    got = between("30 2 * * *", utc(2026, 4, 4), utc(2026, 4, 6, 12), SYDNEY)
    assert got == [utc(2026, 4, 4, 15, 30), utc(2026, 4, 5, 16, 30)]
    assert walls(got, SYDNEY) == ["04-05 02:30+1100", "04-06 02:30+1000"]
    hourly = between("0 * * * *", utc(2026, 4, 4, 14, 30), utc(2026, 4, 4, 17), SYDNEY)
    assert walls(hourly, SYDNEY) == ["04-05 02:00+1100", "04-05 02:00+1000", "04-05 03:00+1000"]


def test_fall_back_prev_fire_from_the_last_minute_of_the_first_pass() -> None:
    # Regression: at 02:59 CEST (00:59Z) the next minute is 02:00 CET, the second pass; the
    # search back must still find 02:30 CEST.
    assert cron.prev_fire(cron.parse("30 2 * * *", BERLIN), utc(2026, 10, 25, 0, 59)) == utc(2026, 10, 25, 0, 30)
    assert cron.prev_fire(cron.parse("30 1 * * *", NEW_YORK), utc(2026, 11, 1, 5, 59)) == utc(2026, 11, 1, 5, 30)


def test_half_hour_shift_lord_howe() -> None:
    # Australia/Lord_Howe falls back from 02:00 (+11) to 01:30 (+10:30) on 2025-04-06 (15:00Z).
    # Elapsed time: "* */2" fires through 02:00-02:29 after the repeat (regression: cronsim's
    # own stepping jumped from 01:59 to 02:30 there).
    c = cron.parse("* */2 * * *", "Australia/Lord_Howe")
    assert cron.next_fire(c, utc(2025, 4, 5, 15)) == utc(2025, 4, 5, 15, 30)  # 02:00 +1030
    # Fixed time: 01:45 happens twice (14:45Z and 15:15Z) and fires at the first.
    assert between("45 1 * * *", utc(2025, 4, 5, 12), utc(2025, 4, 6, 12), "Australia/Lord_Howe") == [
        utc(2025, 4, 5, 14, 45)
    ]


def test_repeated_hour_at_the_end_of_a_day_beirut() -> None:
    # Asia/Beirut falls back from Sunday 00:00 (+03) to Saturday 23:00 (+02) on 2025-10-26: Saturday
    # 23:xx happens twice, so an elapsed-time Saturday expression's last fire is 23:59 +02 (21:59Z).
    c = cron.parse("* * * * SAT", "Asia/Beirut")
    assert cron.prev_fire(c, utc(2025, 10, 25, 22)) == utc(2025, 10, 25, 21, 59)
    assert cron.next_fire(c, utc(2025, 10, 25, 20, 59)) == utc(2025, 10, 25, 21)
    assert cron.matches(c, utc(2025, 10, 25, 21, 30))


def test_data_interval_across_dst_is_real_elapsed_time() -> None:
    c = cron.parse("30 2 * * *", BERLIN)
    spring = utc(2026, 3, 29, 1, 0)
    assert spring - cron.prev_fire(c, spring - MIN) == timedelta(hours=23, minutes=30)  # type: ignore[operator]
    fall = utc(2026, 10, 26, 1, 30)
    assert fall - cron.prev_fire(c, fall - MIN) == timedelta(hours=25)  # type: ignore[operator]


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


def test_window_of_an_expression_that_never_fires_again_is_an_error() -> None:
    with pytest.raises(cron.CronError):
        cron.window_at(cron.parse("@yearly"), TWO_HOURS, datetime(9999, 6, 1, tzinfo=UTC))


# --- properties in UTC: what the fields say ----------------------------------------------------


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


OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2150, 1, 1), timezones=OFFSETS)


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


def parse_or_never(spec: Spec) -> cron.Cron | None:
    """The parsed spec; None (after checking it is true) when parse refuses it as not firing
    within SEARCH_HORIZON after 2000-01-01."""
    try:
        return cron.parse(spec.text)
    except cron.CronError:
        assert_no_fire_between(spec, utc(2000, 1, 1) - MIN, utc(2000, 1, 1) + cron.SEARCH_HORIZON)
        return None


PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(specs(), moments)
def test_parse_means_what_the_fields_say(spec: Spec, now: datetime) -> None:
    c = parse_or_never(spec)
    assume(c is not None)
    assert c is not None
    assert cron.matches(c, now) == spec.ok(minute_of(now))
    assert cron.parse(cron.describe(c)) == c


@PROPERTY
@given(specs(), moments)
def test_next_fire_is_the_first_match_after(spec: Spec, after: datetime) -> None:
    c, start = parse_or_never(spec), minute_of(after)
    assume(c is not None)
    assert c is not None
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
    c, end = parse_or_never(spec), minute_of(at)
    assume(c is not None)
    assert c is not None
    prev = cron.prev_fire(c, at)
    if prev is None:
        assert_no_fire_between(spec, end - cron.PREV_HORIZON - MIN, end + MIN)
        return
    assert prev <= at and prev.tzinfo is UTC and spec.ok(prev)
    assert_no_fire_between(spec, prev, end + MIN)
    assert cron.next_fire(c, prev) > at


durations = st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=2))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), durations, moments)
def test_window_at_agrees_with_walking_the_fire_times(spec: Spec, duration: timedelta, now: datetime) -> None:
    c = parse_or_never(spec)
    assume(c is not None)
    assert c is not None
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


# --- properties across DST transitions, against zoneinfo ---------------------------------------


@dataclass(frozen=True)
class ZoneSpec:
    """An expression whose days are restricted by day-of-week only, with the sets it means and
    whether its hour field is a wildcard or a step (then it follows elapsed time)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    weekdays: frozenset[int]
    elapsed: bool

    def ok(self, wall: datetime) -> bool:
        return wall.minute in self.minutes and wall.hour in self.hours and wall.isoweekday() % 7 in self.weekdays


def fires_at(spec: ZoneSpec, before: datetime, local: datetime) -> bool:
    """The promised rule, for the UTC minute whose local time is `local` (`before` is the local
    time one minute earlier, both from zoneinfo):
    - elapsed time: the wall time matches (so a repeated hour fires twice, a skipped one never);
    - fixed local times: the wall time matches in its first occurrence (fold=0), or this is the
      first valid instant after a gap that swallowed a matching wall time."""
    if spec.elapsed:
        return spec.ok(local)
    if local.fold == 0 and spec.ok(local):
        return True
    wall, skipped = local.replace(tzinfo=None, fold=0), before.replace(tzinfo=None, fold=0) + MIN
    while skipped < wall:  # only after a gap: wall times that never happen
        if spec.ok(skipped):
            return True
        skipped += MIN
    return False


ORACLE_LIMIT = timedelta(days=15)


def oracle_next(spec: ZoneSpec, tz: tzinfo, after: datetime) -> datetime:
    u = minute_of(after)
    before = u.astimezone(tz)
    for _ in range(int(ORACLE_LIMIT / MIN)):
        u += MIN
        local = u.astimezone(tz)
        if fires_at(spec, before, local):
            return u
        before = local
    raise AssertionError(f"{spec.text} does not fire within {ORACLE_LIMIT} after {after}")


def oracle_prev(spec: ZoneSpec, tz: tzinfo, at: datetime) -> datetime:
    u = minute_of(at)
    local = u.astimezone(tz)
    for _ in range(int(ORACLE_LIMIT / MIN)):
        before = (u - MIN).astimezone(tz)
        if fires_at(spec, before, local):
            return u
        u, local = u - MIN, before
    raise AssertionError(f"{spec.text} does not fire within {ORACLE_LIMIT} before {at}")


def oracle_between(spec: ZoneSpec, tz: tzinfo, after: datetime, until: datetime) -> list[datetime]:
    out, u = [], minute_of(after)
    before = u.astimezone(tz)
    while u + MIN <= until:
        u += MIN
        local = u.astimezone(tz)
        if fires_at(spec, before, local):
            out.append(u)
        before = local
    return out


def transitions(name: str, years: range) -> list[datetime]:
    """The UTC minutes at which `name` changes its offset, found with zoneinfo (a day at a
    time, then bisected: these zones change at most once a day)."""
    tz, out = ZoneInfo(name), []
    t, end = datetime(years.start, 1, 1, tzinfo=UTC), datetime(years.stop, 1, 1, tzinfo=UTC)
    while t < end:
        lo, hi = t, t + timedelta(days=1)
        before = lo.astimezone(tz).utcoffset()
        if hi.astimezone(tz).utcoffset() != before:
            while hi - lo > MIN:
                mid = lo + (hi - lo) // MIN // 2 * MIN
                lo, hi = (mid, hi) if mid.astimezone(tz).utcoffset() == before else (lo, mid)
            out.append(hi)
        t += timedelta(days=1)
    return out


# Beyond the three the examples use: Santiago and Beirut change at midnight (the repeated hour
# of Beirut's fall back ends a day), Lord Howe by half an hour.
DST_ZONES = (BERLIN, NEW_YORK, SYDNEY, "America/Santiago", "Asia/Beirut", "Australia/Lord_Howe")
TRANSITIONS = {name: transitions(name, range(2025, 2028)) for name in DST_ZONES}


def test_the_zones_have_the_transitions_the_dst_tests_expect() -> None:
    assert utc(2026, 3, 29, 1) in TRANSITIONS[BERLIN] and utc(2026, 10, 25, 1) in TRANSITIONS[BERLIN]
    assert utc(2026, 3, 8, 7) in TRANSITIONS[NEW_YORK] and utc(2026, 11, 1, 6) in TRANSITIONS[NEW_YORK]
    assert utc(2026, 4, 4, 16) in TRANSITIONS[SYDNEY] and utc(2026, 10, 3, 16) in TRANSITIONS[SYDNEY]
    assert all(len(ts) == 6 for ts in TRANSITIONS.values())


HOURS_NEAR_TRANSITIONS = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 23]), st.integers(0, 23))


@st.composite
def zone_specs(draw: st.DrawFn) -> ZoneSpec:
    mkind = draw(st.sampled_from(["star", "star_step", "one", "list", "range", "range_step"]))
    if mkind == "star":
        mtext, minutes = "*", set(range(60))
    elif mkind == "star_step":
        n = draw(st.sampled_from([1, 5, 7, 15, 20, 30, 45]))
        mtext, minutes = f"*/{n}", set(range(0, 60, n))
    elif mkind == "one":
        m = draw(st.sampled_from([0, 30, 59]) | st.integers(0, 59))
        mtext, minutes = str(m), {m}
    elif mkind == "list":
        ms = draw(st.lists(st.integers(0, 59), min_size=2, max_size=4, unique=True))
        mtext, minutes = ",".join(map(str, ms)), set(ms)
    else:
        a = draw(st.integers(0, 59))
        b = draw(st.integers(a, 59))
        n = draw(st.integers(1, 30)) if mkind == "range_step" else 1
        mtext, minutes = (f"{a}-{b}/{n}" if n > 1 else f"{a}-{b}"), set(range(a, b + 1, n))

    hkind = draw(st.sampled_from(["one", "list", "range", "star", "star_step", "range_step"]))
    if hkind == "one":
        h = draw(HOURS_NEAR_TRANSITIONS)
        htext, hours = str(h), {h}
    elif hkind == "list":
        hs = draw(st.lists(HOURS_NEAR_TRANSITIONS, min_size=2, max_size=3, unique=True))
        htext, hours = ",".join(map(str, hs)), set(hs)
    elif hkind == "range":
        a = draw(HOURS_NEAR_TRANSITIONS)
        b = draw(st.integers(a, min(23, a + 3)))
        htext, hours = f"{a}-{b}", set(range(a, b + 1))
    elif hkind == "star":
        htext, hours = "*", set(range(24))
    elif hkind == "star_step":
        n = draw(st.integers(1, 12))
        htext, hours = f"*/{n}", set(range(0, 24, n))
    else:
        a = draw(st.integers(0, 4))
        b = draw(st.integers(a, 23))
        n = draw(st.integers(1, 6))
        htext, hours = f"{a}-{b}/{n}", set(range(a, b + 1, n))

    if draw(st.integers(0, 3)) == 0:
        days = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4, unique=True))
        dtext, weekdays = ",".join(DAY_NAMES[d] for d in days), set(days)
    else:
        dtext, weekdays = "*", set(range(7))
    return ZoneSpec(
        f"{mtext} {htext} * * {dtext}",
        frozenset(minutes),
        frozenset(hours),
        frozenset(weekdays),
        elapsed=hkind in ("star", "star_step", "range_step"),
    )


@st.composite
def near_transitions(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and an instant within a day and a half of one of its transitions, mostly closer."""
    name = draw(st.sampled_from(DST_ZONES))
    edge = draw(st.sampled_from(TRANSITIONS[name]))
    seconds = draw(st.integers(-3 * 3600, 3 * 3600) | st.integers(-36 * 3600, 36 * 3600))
    return name, edge + timedelta(seconds=seconds, microseconds=draw(st.sampled_from([0, 0, 1, 999_999])))


ZONE_PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ZONE_PROPERTY
@given(zone_specs(), near_transitions())
def test_next_and_prev_fire_across_dst_agree_with_zoneinfo(spec: ZoneSpec, where: tuple[str, datetime]) -> None:
    name, t = where
    c, tz = cron.parse(spec.text, name), ZoneInfo(name)
    nxt = cron.next_fire(c, t)
    assert nxt == oracle_next(spec, tz, t), walls([nxt, oracle_next(spec, tz, t)], name)
    assert nxt > t and nxt.tzinfo is UTC
    prev = cron.prev_fire(c, t)
    assert prev == oracle_prev(spec, tz, t), walls([p for p in (prev, oracle_prev(spec, tz, t)) if p], name)
    assert cron.matches(c, t) == (prev == minute_of(t))
    assert cron.prev_fire(c, nxt) == nxt and cron.matches(c, nxt)


@ZONE_PROPERTY
@given(zone_specs(), near_transitions(), st.integers(1, 26 * 60))
def test_fires_between_across_dst_agree_with_zoneinfo(
    spec: ZoneSpec, where: tuple[str, datetime], minutes: int
) -> None:
    name, after = where
    until = after + timedelta(minutes=minutes)
    c, tz = cron.parse(spec.text, name), ZoneInfo(name)
    got = cron.fires_between(c, after, until, limit=100_000)
    assert got == oracle_between(spec, tz, after, until)
    assert all(after < t <= until for t in got)
    assert all(a < b for a, b in itertools.pairwise(got))
    assert cron.fires_between(c, after, until, limit=3) == got[:3]
    if got:
        assert cron.next_fire(c, after) == got[0]
        assert cron.prev_fire(c, until) == got[-1]
