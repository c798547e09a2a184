"""Schedules, pure (core/domain/schedules.py): durations, triggers (cron or interval) and their
data intervals, catch-up after downtime, overlap policies, names."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.domain import cron, errors
from core.domain import schedules as sched
from core.domain.schedules import Catchup, LateTick, Overlap, OverlapAction, Trigger

S = timedelta(seconds=1)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def every(d: timedelta, anchor: datetime | None = None, tz: str = "UTC") -> Trigger:
    return Trigger.of(cron_expr=None, every=d, tz=tz, anchor=anchor)


def cron_trigger(expr: str, tz: str = "UTC") -> Trigger:
    return Trigger.of(cron_expr=expr, every=None, tz=tz, anchor=None)


# --- parse_duration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("1h1m1s", timedelta(hours=1, minutes=1, seconds=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1d1d", timedelta(days=2)),
        ("90", timedelta(seconds=90)),  # plain seconds
        ("0.5", timedelta(milliseconds=500)),
        ("  10S ", timedelta(seconds=10)),
        ("2H", timedelta(hours=2)),
        ("0.000001s", timedelta(microseconds=1)),
    ],
)
def test_parse_duration_good(text: str, expected: timedelta) -> None:
    assert sched.parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "bad --every"),
        ("   ", "bad --every"),
        ("abc", "bad --every"),
        ("1x", "bad --every"),
        ("m", "bad --every"),
        ("1m30", "bad --every"),  # a number without a unit after the first term
        ("1h 30m", "bad --every"),
        ("-5s", "bad --every"),
        ("+5s", "bad --every"),
        ("1e3", "bad --every"),
        ("inf", "bad --every"),
        ("5 s", "bad --every"),
        ("0", "must be positive"),
        ("0s", "must be positive"),
        ("0.0m", "must be positive"),
        ("0.0000001s", "at least 1 microsecond"),  # positive, but a timedelta of 0
        ("9" * 30 + "d", "too long"),  # overflowed timedelta: InvalidInput, not OverflowError
        ("1" * 400 + "s", "too long"),  # infinite as a float
    ],
)
def test_parse_duration_bad(text: str, fragment: str) -> None:
    with pytest.raises(errors.InvalidInput) as info:
        sched.parse_duration(text, "--every")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_parse_duration_names_what_it_parses() -> None:
    with pytest.raises(errors.InvalidInput, match="bad duration 'x'"):
        sched.parse_duration("x")
    with pytest.raises(errors.InvalidInput, match="--catchup-window"):
        sched.parse_duration("soon", "--catchup-window")


@pytest.mark.parametrize(
    ("d", "text"),
    [
        (timedelta(seconds=30), "30s"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=15), "15m"),
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=36), "36h"),
        (timedelta(days=2), "2d"),
        (timedelta(days=1, seconds=1), "86401s"),
    ],
)
def test_format_duration_uses_the_largest_whole_unit(d: timedelta, text: str) -> None:
    assert sched.format_duration(d) == text
    assert sched.parse_duration(text) == d


def test_parse_enum() -> None:
    assert sched.parse_enum(Catchup, "latest", "catch-up policy") is Catchup.LATEST
    assert sched.parse_enum(Overlap, "buffer_all", "overlap policy") is Overlap.BUFFER_ALL
    with pytest.raises(errors.InvalidInput, match="unknown overlap policy 'queue'; use one of skip, buffer_one"):
        sched.parse_enum(Overlap, "queue", "overlap policy")
    with pytest.raises(errors.InvalidInput, match="none, latest, all"):
        sched.parse_enum(Catchup, "ALL", "catch-up policy")


# --- Trigger.of ---------------------------------------------------------------------------------


def test_trigger_needs_exactly_one_of_cron_and_interval() -> None:
    with pytest.raises(errors.InvalidInput, match="not both"):
        Trigger.of(cron_expr="@daily", every=H, tz="UTC", anchor=None)
    with pytest.raises(errors.InvalidInput, match=r"--cron.*--every"):
        Trigger.of(cron_expr=None, every=None, tz="UTC", anchor=None)


@pytest.mark.parametrize(
    "d",
    [timedelta(0), timedelta(seconds=-1), timedelta(milliseconds=999), timedelta(days=366, seconds=1)],
)
def test_interval_bounds(d: timedelta) -> None:
    with pytest.raises(errors.InvalidInput, match="between 1s and 366d"):
        every(d)


def test_interval_bounds_are_inclusive() -> None:
    assert every(timedelta(seconds=1)).every == timedelta(seconds=1)
    assert every(timedelta(days=366)).every == timedelta(days=366)


@pytest.mark.parametrize("d", [timedelta(seconds=1.5), timedelta(seconds=30, microseconds=1)])
def test_interval_must_be_whole_seconds(d: timedelta) -> None:
    with pytest.raises(errors.InvalidInput, match="whole number of seconds"):
        every(d)


def test_trigger_checks_the_zone_and_the_expression() -> None:
    with pytest.raises(cron.CronError, match="unknown time zone"):
        every(H, tz="Mars/Base")
    with pytest.raises(cron.CronError, match="unknown time zone"):
        cron_trigger("@daily", "Mars/Base")
    with pytest.raises(cron.CronError, match="5 fields"):
        cron_trigger("0 0 * * * *")
    with pytest.raises(cron.CronError):
        cron_trigger("0 0 31 2 *")
    assert issubclass(cron.CronError, errors.InvalidInput)


def test_interval_anchor_is_the_start_in_utc_whole_seconds_else_the_epoch() -> None:
    assert every(H).anchor == EPOCH
    cet = timezone(timedelta(hours=1))
    t = every(H, datetime(2024, 5, 1, 10, 7, 30, 123_456, tzinfo=cet))
    assert t.anchor == utc(2024, 5, 1, 9, 7, 30) and t.anchor.tzinfo is UTC
    assert t.cron is None and t.every == H


def test_cron_trigger_keeps_the_parsed_expression() -> None:
    t = cron_trigger("@daily", "Europe/Berlin")
    assert t.cron == cron.parse("0 0 * * *", "Europe/Berlin") and t.every is None


def test_describe() -> None:
    assert cron_trigger("0 2 * * *", "Europe/Berlin").describe() == "0 2 * * * (Europe/Berlin)"
    assert cron_trigger("@hourly").describe() == "0 * * * *"
    assert every(timedelta(seconds=30)).describe() == "every 30s"
    assert every(timedelta(minutes=15)).describe() == "every 15m"
    assert every(timedelta(minutes=90)).describe() == "every 90m"
    assert every(timedelta(days=1)).describe() == "every 1d"
    assert every(timedelta(seconds=3601)).describe() == "every 3601s"


# --- interval ticks -----------------------------------------------------------------------------


def test_interval_ticks_lie_on_the_epoch_by_default() -> None:
    t = every(timedelta(minutes=15))
    assert t.next_after(utc(2024, 1, 1, 10, 7)) == utc(2024, 1, 1, 10, 15)
    assert t.next_after(utc(2024, 1, 1, 10, 15)) == utc(2024, 1, 1, 10, 30)  # strictly after
    assert t.next_after(utc(2024, 1, 1, 10, 14, 59, 999_999)) == utc(2024, 1, 1, 10, 15)
    assert t.prev_before(utc(2024, 1, 1, 10, 15)) == utc(2024, 1, 1, 10, 0)  # strictly before
    assert t.prev_before(utc(2024, 1, 1, 10, 15, 0, 1)) == utc(2024, 1, 1, 10, 15)
    assert t.ticks(utc(2024, 1, 1, 10), utc(2024, 1, 1, 11), limit=10) == [
        utc(2024, 1, 1, 10, 15),
        utc(2024, 1, 1, 10, 30),
        utc(2024, 1, 1, 10, 45),
        utc(2024, 1, 1, 11, 0),
    ]


def test_interval_ticks_lie_on_the_start_when_given() -> None:
    t = every(timedelta(minutes=15), utc(2024, 1, 1, 10, 7))
    assert t.next_after(utc(2024, 1, 1, 10, 7)) == utc(2024, 1, 1, 10, 22)
    assert t.next_after(utc(2024, 1, 1, 12)) == utc(2024, 1, 1, 12, 7)
    assert t.prev_before(utc(2024, 1, 1, 10, 7)) == utc(2024, 1, 1, 9, 52)  # the lattice runs both ways
    assert t.ticks(utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 40), limit=10) == [
        utc(2024, 1, 1, 10, 7),
        utc(2024, 1, 1, 10, 22),
        utc(2024, 1, 1, 10, 37),
    ]


def test_interval_ticks_take_any_aware_time() -> None:
    t = every(H)
    ist = timezone(timedelta(hours=5, minutes=30))
    assert t.next_after(datetime(2024, 1, 1, 10, 0, tzinfo=ist)) == utc(2024, 1, 1, 5)


def test_interval_ticks_are_limited_and_half_open() -> None:
    t = every(MIN)
    assert t.ticks(utc(2024, 1, 1), utc(2024, 1, 1, 1), limit=3) == [utc(2024, 1, 1, 0, k) for k in (1, 2, 3)]
    assert t.ticks(utc(2024, 1, 1), utc(2024, 1, 1), limit=3) == []
    assert t.ticks(utc(2024, 1, 1, 1), utc(2024, 1, 1), limit=3) == []
    assert t.ticks(utc(2024, 1, 1), utc(2024, 1, 1, 1), limit=0) == []


def test_interval_ticks_are_exact_far_from_the_anchor() -> None:
    # Regression: the tick lattice was computed in float seconds, which lose the microsecond
    # some centuries out (a tick was skipped, or returned for "strictly before" itself).
    step = timedelta(seconds=7)
    t = every(step)
    tick = EPOCH + (utc(3000, 1, 1) - EPOCH) // step * step
    assert t.next_after(tick - timedelta(microseconds=1)) == tick
    assert t.prev_before(tick + timedelta(microseconds=1)) == tick
    assert t.prev_before(tick) == tick - step
    assert t.next_after(tick) == tick + step


# --- cron ticks and data intervals --------------------------------------------------------------


def test_cron_trigger_ticks_and_data_interval() -> None:
    t = cron_trigger("0 2 * * *")
    assert t.next_after(utc(2024, 1, 1, 2)) == utc(2024, 1, 2, 2)
    # The data interval of the tick at 2024-01-02 02:00 is [01-01 02:00, 01-02 02:00).
    assert t.prev_before(utc(2024, 1, 2, 2)) == utc(2024, 1, 1, 2)
    assert t.prev_before(utc(2024, 1, 2, 2, 0, 0, 1)) == utc(2024, 1, 2, 2)
    assert t.ticks(utc(2024, 1, 1), utc(2024, 1, 3, 2), limit=5) == [
        utc(2024, 1, 1, 2),
        utc(2024, 1, 2, 2),
        utc(2024, 1, 3, 2),
    ]


def test_cron_data_interval_across_dst() -> None:
    t = cron_trigger("30 2 * * *", "Europe/Berlin")
    spring = t.next_after(utc(2026, 3, 28, 12))
    assert spring == utc(2026, 3, 29, 1, 0)  # 02:30 does not exist: 03:00 CEST
    assert t.prev_before(spring) == utc(2026, 3, 28, 1, 30)  # 02:30 CET: a 23.5 h interval
    fall = t.next_after(utc(2026, 10, 25, 1))  # from 02:00 CET, the second pass
    assert fall == utc(2026, 10, 26, 1, 30)
    assert t.prev_before(fall) == utc(2026, 10, 25, 0, 30)  # the first 02:30, CEST: 25 h


def test_cron_data_interval_falls_back_to_a_day_without_a_fire_within_a_year() -> None:
    t = cron_trigger("0 0 29 2 *")
    assert t.prev_before(utc(2025, 3, 1)) == utc(2024, 2, 29)  # 366 days back: within the year
    assert t.prev_before(utc(2027, 2, 1)) == utc(2027, 1, 31)


# --- properties: ticks and data intervals -------------------------------------------------------

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
instants = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2600, 1, 1), timezones=OFFSETS)
intervals = st.one_of(
    st.sampled_from([1, 7, 30, 60, 900, 3600, 86400, 366 * 86400]),
    st.integers(1, 366 * 86400),
).map(lambda n: timedelta(seconds=n))


@PROPERTY
@given(intervals, st.none() | instants, instants)
def test_interval_ticks_are_exactly_spaced_and_inverse_consistent(
    step: timedelta, anchor: datetime | None, t: datetime
) -> None:
    trig = every(step, anchor)
    nxt, prev = trig.next_after(t), trig.prev_before(t)
    assert prev < t < nxt
    assert (nxt - trig.anchor) % step == timedelta(0) == (prev - trig.anchor) % step
    on_tick = (t - trig.anchor) % step == timedelta(0)
    assert nxt - prev == (2 * step if on_tick else step)
    assert trig.prev_before(nxt) == (t if on_tick else prev)
    assert trig.next_after(prev) == (t if on_tick else nxt)
    assert trig.next_after(trig.prev_before(nxt)) == nxt and trig.prev_before(trig.next_after(prev)) == prev
    ticks = trig.ticks(prev, nxt + 3 * step, limit=5)
    assert ticks[0] == (t if on_tick else nxt)
    assert all(b - a == step for a, b in itertools.pairwise(ticks))


CRON_TRIGGERS = st.sampled_from(
    [
        ("30 2 * * *", "Europe/Berlin"),
        ("0 * * * *", "Europe/Berlin"),
        ("*/30 * * * *", "America/New_York"),
        ("15 1 * * SUN", "America/New_York"),
        ("0 0-23/3 * * *", "Australia/Sydney"),
        ("45 2 * * *", "Australia/Sydney"),
        ("@daily", "UTC"),
    ]
)
around_dst = st.datetimes(min_value=datetime(2026, 3, 1), max_value=datetime(2026, 11, 30), timezones=st.just(UTC))


@PROPERTY
@given(CRON_TRIGGERS, around_dst)
def test_cron_ticks_and_data_intervals_are_inverse_consistent(which: tuple[str, str], t: datetime) -> None:
    trig = cron_trigger(*which)
    nxt = trig.next_after(t)
    start = trig.prev_before(nxt)  # the data interval of the next tick: [start, nxt)
    assert start <= t < nxt  # no tick in (t, nxt), so the last one before nxt is at or before t
    assert trig.next_after(start) == nxt
    assert trig.ticks(start, nxt, limit=3) == [nxt]
    assert trig.prev_before(start + timedelta(microseconds=1)) == start


# --- catch_up -----------------------------------------------------------------------------------

NOW = utc(2024, 6, 1, 12, 0)
WINDOW = timedelta(hours=24)
ON_TIME = NOW - timedelta(seconds=30)  # 30 s late: on time


def hourly_late(n: int) -> list[datetime]:
    """n hourly ticks, oldest first, the newest an hour before NOW: all late."""
    return [NOW - k * H for k in range(n, 0, -1)]


def fired(decisions: list[LateTick]) -> list[datetime]:
    return [d.scheduled_for for d in decisions if d.fire]


def decide(ticks: list[datetime], policy: Catchup, *, window: timedelta = WINDOW, max_runs: int = 25) -> list[LateTick]:
    out = sched.catch_up(ticks, NOW, policy, window=window, max_runs=max_runs)
    assert [d.scheduled_for for d in out] == ticks  # every tick decided, in order
    return out


def test_catch_up_none_fires_no_late_tick() -> None:
    assert fired(decide(hourly_late(5), Catchup.NONE)) == []
    assert fired(decide([*hourly_late(5), ON_TIME], Catchup.NONE)) == [ON_TIME]


def test_catch_up_latest_fires_only_the_newest_late_tick() -> None:
    ticks = hourly_late(5)
    assert fired(decide(ticks, Catchup.LATEST)) == [ticks[-1]]
    assert fired(decide(ticks[:1], Catchup.LATEST)) == ticks[:1]
    # The newest late tick fires even beyond the catch-up window: the window bounds `all` only.
    old = [NOW - timedelta(days=3), NOW - timedelta(days=2)]
    assert fired(decide(old, Catchup.LATEST)) == [old[-1]]


def test_catch_up_latest_with_an_on_time_tick_fires_that_one_only() -> None:
    # The on-time tick already is the newest run; no late one is added to it.
    ticks = [*hourly_late(3), ON_TIME]
    assert fired(decide(ticks, Catchup.LATEST)) == [ON_TIME]


def test_catch_up_all_fires_every_late_tick_within_the_window() -> None:
    ticks = hourly_late(30)  # 30 h back: the 6 oldest are beyond the 24 h window
    got = fired(decide(ticks, Catchup.ALL, max_runs=100))
    assert got == ticks[6:] and len(got) == 24


def test_catch_up_all_window_boundary_is_inclusive() -> None:
    edge = [NOW - WINDOW - timedelta(microseconds=1), NOW - WINDOW]
    assert fired(decide(edge, Catchup.ALL)) == [NOW - WINDOW]


def test_catch_up_all_fires_at_most_max_runs_the_newest() -> None:
    ticks = hourly_late(10)
    assert fired(decide(ticks, Catchup.ALL, max_runs=3)) == ticks[-3:]
    assert fired(decide(ticks, Catchup.ALL, max_runs=0)) == []
    assert fired(decide(ticks, Catchup.ALL, max_runs=10)) == ticks
    assert fired(decide(ticks, Catchup.ALL, max_runs=1000)) == ticks


@pytest.mark.parametrize(("late", "max_runs"), [(24, 25), (5, 8), (2, 3), (1, 2), (10, 11)])
def test_catch_up_all_with_room_to_spare_fires_every_late_tick(late: int, max_runs: int) -> None:
    # Regression: with fewer eligible ticks than max_runs (but more than half of it) the slice
    # start went negative and only the newest few fired: an hourly schedule down for a day
    # (24 late ticks, the default max of 25) caught up 1 tick.
    ticks = hourly_late(late)
    assert fired(decide(ticks, Catchup.ALL, max_runs=max_runs)) == ticks
    assert sched.DEFAULT_MAX_CATCHUP == 25 and sched.DEFAULT_CATCHUP_WINDOW == WINDOW
    defaults = sched.catch_up(
        hourly_late(24), NOW, Catchup.ALL, window=sched.DEFAULT_CATCHUP_WINDOW, max_runs=sched.DEFAULT_MAX_CATCHUP
    )
    assert all(d.fire for d in defaults)


def test_catch_up_all_counts_on_time_ticks_against_max_runs() -> None:
    ticks = [*hourly_late(10), ON_TIME]
    assert fired(decide(ticks, Catchup.ALL, max_runs=3)) == [*ticks[-3:-1], ON_TIME]
    assert fired(decide(ticks, Catchup.ALL, max_runs=1)) == [ON_TIME]


@pytest.mark.parametrize("policy", list(Catchup))
def test_on_time_ticks_always_fire(policy: Catchup) -> None:
    on_time = [NOW - sched.ON_TIME, NOW - timedelta(seconds=1), NOW]
    got = decide([*hourly_late(3), *on_time], policy, window=timedelta(minutes=10), max_runs=0)
    assert [d.fire for d in got] == [False, False, False, True, True, True]


@pytest.mark.parametrize("policy", list(Catchup))
def test_a_tick_just_over_on_time_is_late(policy: Catchup) -> None:
    just_late = NOW - sched.ON_TIME - timedelta(microseconds=1)
    got = decide([just_late], policy, window=timedelta(0), max_runs=25)
    assert got == [LateTick(just_late, policy is Catchup.LATEST)]  # outside the (empty) window for all


def test_catch_up_of_nothing() -> None:
    for policy in Catchup:
        assert decide([], policy) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 48 * 3600), max_size=30, unique=True),
    st.sampled_from(list(Catchup)),
    st.integers(0, 48 * 3600).map(lambda n: timedelta(seconds=n)),
    st.integers(0, 30),
)
def test_catch_up_properties(lateness: list[int], policy: Catchup, window: timedelta, max_runs: int) -> None:
    ticks = sorted(NOW - timedelta(seconds=s) for s in lateness)
    got = sched.catch_up(ticks, NOW, policy, window=window, max_runs=max_runs)
    assert [d.scheduled_for for d in got] == ticks
    on_time = [t for t in ticks if NOW - t <= sched.ON_TIME]
    late = [t for t in ticks if NOW - t > sched.ON_TIME]
    late_fired = [d.scheduled_for for d in got if d.fire and d.scheduled_for in late]
    assert all(d.fire for d in got if d.scheduled_for in on_time)
    if policy is Catchup.NONE:
        assert late_fired == []
    elif policy is Catchup.LATEST:
        assert late_fired == ([late[-1]] if late and not on_time else [])
    else:
        eligible = [t for t in late if NOW - t <= window]
        room = max(0, max_runs - len(on_time))
        assert late_fired == (eligible[-room:] if room else [])


# --- on_overlap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", list(Overlap))
def test_nothing_live_nothing_buffered_fires(policy: Overlap) -> None:
    assert sched.on_overlap(policy, previous_live=False, buffered=0) is OverlapAction.FIRE


@pytest.mark.parametrize(
    ("policy", "live", "buffered", "action"),
    [
        (Overlap.SKIP, True, 0, OverlapAction.SKIP),
        (Overlap.ALLOW_ALL, True, 0, OverlapAction.FIRE),
        (Overlap.ALLOW_ALL, True, 7, OverlapAction.FIRE),
        (Overlap.CANCEL_OTHER, True, 0, OverlapAction.CANCEL_AND_FIRE),
        (Overlap.BUFFER_ONE, True, 0, OverlapAction.BUFFER),
        (Overlap.BUFFER_ONE, True, 1, OverlapAction.SKIP),
        (Overlap.BUFFER_ONE, False, 1, OverlapAction.SKIP),  # the buffered one goes first
        (Overlap.BUFFER_ALL, True, 0, OverlapAction.BUFFER),
        (Overlap.BUFFER_ALL, True, 1, OverlapAction.BUFFER),
        (Overlap.BUFFER_ALL, False, 5, OverlapAction.BUFFER),
        (Overlap.BUFFER_ALL, True, sched.MAX_BUFFERED - 1, OverlapAction.BUFFER),
        (Overlap.BUFFER_ALL, True, sched.MAX_BUFFERED, OverlapAction.SKIP),
        (Overlap.BUFFER_ALL, True, sched.MAX_BUFFERED + 50, OverlapAction.SKIP),
    ],
)
def test_overlap_policies(policy: Overlap, live: bool, buffered: int, action: OverlapAction) -> None:
    assert sched.on_overlap(policy, previous_live=live, buffered=buffered) is action


def test_buffer_all_caps_at_max_buffered() -> None:
    assert sched.MAX_BUFFERED == 100
    actions = [sched.on_overlap(Overlap.BUFFER_ALL, previous_live=True, buffered=n) for n in range(150)]
    assert actions.count(OverlapAction.BUFFER) == 100 and actions[100:] == [OverlapAction.SKIP] * 50


def test_overlap_policy_names() -> None:
    assert [p.value for p in Overlap] == ["skip", "buffer_one", "buffer_all", "cancel_other", "allow_all"]
    assert [c.value for c in Catchup] == ["none", "latest", "all"]
    assert Overlap("skip") is Overlap.SKIP


# --- check_name ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "7", "nightly", "etl.daily_v2:eu-west-1", "A" * 128, "x-" * 64])
def test_good_names(name: str) -> None:
    assert sched.check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-x", ".x", "_x", ":x", "a b", "a/b", "a\tb", "A" * 129, "nightly\n", "\nnightly", "nïghtly", "a*"],
)
def test_bad_names(name: str) -> None:
    with pytest.raises(errors.InvalidInput, match="schedule name") as info:
        sched.check_name(name)
    assert "1 to 128" in str(info.value)


@pytest.mark.parametrize("name", [None, 7, b"nightly"])
def test_non_text_names(name: object) -> None:
    with pytest.raises(errors.InvalidInput, match="schedule name"):
        sched.check_name(name)  # type: ignore[arg-type]
