"""Five-field cron expressions (Vixie semantics, always UTC) and the blackout windows they open.

Parsing, matching, next/previous fire time and the merged window relevant at a given `now`.
"""

from __future__ import annotations

import bisect
import calendar
import itertools
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta
from typing import Final

from core.domain import errors

# Far enough to cover Feb 29 across a skipped leap year (2096 -> 2104); beyond it, we call it "never".
SEARCH_HORIZON: Final = timedelta(days=8 * 366)
# How far back prev_fire looks unless told otherwise.
PREV_HORIZON: Final = timedelta(days=366)
# Longest blackout: both the longest duration accepted and the cap on merging overlapping windows.
MAX_WINDOW: Final = timedelta(days=7)

_MACROS: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS: Final = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS: Final = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


class CronError(errors.InvalidInput):
    """A cron expression that does not parse, or that never fires."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: dict[str, int]


# 7 is Sunday as well as 0; values are folded to 0-6 after expansion.
_DOW: Final = _Field("day-of-week", 0, 7, {n: i for i, n in enumerate(_WEEKDAYS)})
_FIELDS: Final = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, {n: i for i, n in enumerate(_MONTHS, start=1)}),
    _DOW,
)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression: the allowed values of each field, sorted (weekdays 0-6, 0 = Sunday).

    Build it with `Cron.parse` (or the module's `parse`); `expr` is the normalised text.
    `dom_star`/`dow_star` record whether that field was written starting with `*`, which is
    what Vixie cron uses to choose between AND and OR of the two day fields.
    """

    expr: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    dom_star: bool
    dow_star: bool

    @classmethod
    def parse(cls, expr: str) -> Cron:
        """Parse "min hour dom month dow" or a macro (@hourly ... @annually). Raises CronError."""
        text = expr.strip()
        if text.startswith("@"):
            expanded = _MACROS.get(text.lower())
            if expanded is None:
                raise CronError(f"unknown cron macro {text!r}; known: {', '.join(_MACROS)}")
            text = expanded
        parts = text.split()
        if len(parts) != len(_FIELDS):
            raise CronError(
                f"cron expression needs 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts)} in {expr!r}"
            )
        values = [_parse_field(part, spec) for part, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = tuple(sorted({v % 7 for v in values[4]}))
        return cls(
            expr=" ".join(parts).upper(),
            minutes=values[0],
            hours=values[1],
            days=values[2],
            months=values[3],
            weekdays=weekdays,
            dom_star=parts[2].startswith("*"),
            dow_star=parts[4].startswith("*"),
        )


def parse(expr: str) -> Cron:
    """Same as `Cron.parse`. Raises CronError."""
    return Cron.parse(expr)


def describe(cron: Cron) -> str:
    """The normalised expression: macros expanded, names upper-cased, single spaces."""
    return cron.expr


def matches(cron: Cron, at: datetime) -> bool:
    """Whether the UTC minute containing `at` is a fire time. Raises InvalidInput if `at` is naive."""
    t = _utc_minute(at)
    in_day = t.month in cron.months and _day_matches(cron, t.year, t.month, t.day)
    return in_day and t.hour in cron.hours and t.minute in cron.minutes


def next_fire(cron: Cron, after: datetime) -> datetime:
    """The first fire time (UTC, whole minute) strictly after `after`.

    Skips whole months, days and hours that cannot match, so a rare expression costs at most a
    few thousand cheap steps. Raises InvalidInput if `after` is naive, CronError if nothing fires
    within SEARCH_HORIZON (e.g. "0 0 31 2 *").
    """
    after_utc = _utc_minute(after)
    if after_utc >= datetime(MAXYEAR, 12, 31, 23, 59, tzinfo=UTC) - SEARCH_HORIZON:
        raise _never(cron, after_utc)
    start = after_utc + timedelta(minutes=1)
    limit = start + SEARCH_HORIZON
    y, mo, d, h, mi = start.year, start.month, start.day, start.hour, start.minute
    while datetime(y, mo, d, tzinfo=UTC) <= limit:
        if mo not in cron.months:
            i = bisect.bisect_right(cron.months, mo)
            if i == len(cron.months):
                y, mo = y + 1, cron.months[0]
            else:
                mo = cron.months[i]
            d, h, mi = 1, 0, 0
            continue
        day = _next_day(cron, y, mo, d)
        if day is None:
            y, mo = (y + 1, 1) if mo == 12 else (y, mo + 1)
            d, h, mi = 1, 0, 0
            continue
        if day != d:
            d, h, mi = day, 0, 0
        i = bisect.bisect_left(cron.hours, h)
        if i == len(cron.hours):
            y, mo, d = _day_after(y, mo, d)
            h, mi = 0, 0
            continue
        if cron.hours[i] != h:
            h, mi = cron.hours[i], 0
        i = bisect.bisect_left(cron.minutes, mi)
        if i == len(cron.minutes):
            h, mi = h + 1, 0
            if h == 24:
                y, mo, d = _day_after(y, mo, d)
                h = 0
            continue
        found = datetime(y, mo, d, h, cron.minutes[i], tzinfo=UTC)
        if found > limit:
            break
        return found
    raise _never(cron, after_utc)


def _never(cron: Cron, after: datetime) -> CronError:
    return CronError(f"cron {cron.expr!r} never fires within {SEARCH_HORIZON.days} days after {after.isoformat()}")


def prev_fire(cron: Cron, at_or_before: datetime, *, within: timedelta = PREV_HORIZON) -> datetime | None:
    """The last fire time (UTC, whole minute) at or before `at_or_before`, or None if there is none
    in the `within` before it. Raises InvalidInput if `at_or_before` is naive.
    """
    end = _utc_minute(at_or_before)
    earliest = datetime.min.replace(tzinfo=UTC)
    limit = end - within if end - earliest > within else earliest
    y, mo, d, h, mi = end.year, end.month, end.day, end.hour, end.minute
    while y >= 1 and datetime(y, mo, d, 23, 59, tzinfo=UTC) >= limit:
        if mo not in cron.months:
            i = bisect.bisect_left(cron.months, mo)
            if i == 0:
                y, mo = y - 1, cron.months[-1]
            else:
                mo = cron.months[i - 1]
            if y < 1:
                return None
            d, h, mi = calendar.monthrange(y, mo)[1], 23, 59
            continue
        day = _prev_day(cron, y, mo, d)
        if day is None:
            y, mo = (y - 1, 12) if mo == 1 else (y, mo - 1)
            if y < 1:
                return None
            d, h, mi = calendar.monthrange(y, mo)[1], 23, 59
            continue
        if day != d:
            d, h, mi = day, 23, 59
        i = bisect.bisect_right(cron.hours, h)
        if i == 0:
            y, mo, d = _day_before(y, mo, d)
            h, mi = 23, 59
            continue
        if cron.hours[i - 1] != h:
            h, mi = cron.hours[i - 1], 59
        i = bisect.bisect_right(cron.minutes, mi)
        if i == 0:
            h, mi = h - 1, 59
            if h < 0:
                y, mo, d = _day_before(y, mo, d)
                h = 23
            continue
        found = datetime(y, mo, d, h, cron.minutes[i - 1], tzinfo=UTC)
        return found if found >= limit else None
    return None


def window_at(cron: Cron, duration: timedelta, now: datetime) -> tuple[datetime, datetime]:
    """The blackout window (start, end), UTC, that matters at `now`: half-open, start <= t < end.

    If `now` is inside a window, start is the latest fire time f with f <= now < f + duration;
    otherwise start is next_fire(now). Either way `end` is merged: while another fire time
    starts at or before the current end (touching windows count, so nothing is dispatched in
    the instant between them), the end moves to that fire time + duration, capped at
    start + MAX_WINDOW. So `end` is when dispatch may really resume.
    Raises InvalidInput for a naive `now` or a duration outside (0, MAX_WINDOW]; CronError if
    the expression never fires.
    """
    if not timedelta(0) < duration <= MAX_WINDOW:
        raise errors.InvalidInput(f"blackout duration must be > 0 and <= {MAX_WINDOW}, got {duration}")
    now_utc = _utc(now)
    last = prev_fire(cron, now_utc, within=duration)
    start = last if last is not None and now_utc < last + duration else next_fire(cron, now_utc)
    return start, _merged_end(cron, start, duration)


def _merged_end(cron: Cron, start: datetime, duration: timedelta) -> datetime:
    cap = start + MAX_WINDOW
    # When the duration bridges every gap between fires inside an hour (or a day), a chain that
    # reaches a fire runs on to the last fire of that hour (day): jump there rather than hop fire
    # by fire, so "* * * * *" with one minute costs a few steps, not 10,080.
    minute_gap = timedelta(minutes=_max_gap(cron.minutes))
    hour_step = timedelta(minutes=cron.minutes[0] - cron.minutes[-1])
    day_gap = max([minute_gap, *(timedelta(hours=b - a) + hour_step for a, b in itertools.pairwise(cron.hours))])
    latest = start
    while True:
        if duration >= day_gap:
            latest = latest.replace(hour=cron.hours[-1], minute=cron.minutes[-1])
        elif duration >= minute_gap:
            latest = latest.replace(minute=cron.minutes[-1])
        end = latest + duration
        if end >= cap:
            return cap
        # The latest fire at or before the current end; if it is newer than the one that set
        # the end, its window reaches further (touching windows merge).
        f = prev_fire(cron, end, within=duration)
        if f is None or f <= latest:
            return end
        latest = f


def _max_gap(values: tuple[int, ...]) -> int:
    return max((b - a for a, b in itertools.pairwise(values)), default=0)


def _parse_field(text: str, spec: _Field) -> tuple[int, ...]:
    out: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or not 1 <= int(step_text) <= spec.hi - spec.lo + 1:
                raise CronError(
                    f"{spec.name} field: bad step {step_text!r} in {text!r} "
                    f"(needs a whole number from 1 to {spec.hi - spec.lo + 1})"
                )
            step = int(step_text)
        if base == "*":
            lo, hi = spec.lo, spec.hi
            if spec is _DOW:
                hi = 6  # 7 would only repeat Sunday
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = _parse_value(a, text, spec), _parse_value(b, text, spec)
            if spec is _DOW and hi == 0 < lo:
                hi = 7  # MON-SUN: Sunday closing a range is day 7
            if lo > hi:
                raise CronError(f"{spec.name} field: range {base!r} in {text!r} runs backwards")
        elif slash:
            raise CronError(f"{spec.name} field: step {item!r} needs a range or * before the '/'")
        else:
            lo = hi = _parse_value(base, text, spec)
        out.update(range(lo, hi + 1, step))
    return tuple(sorted(out))


def _parse_value(value: str, text: str, spec: _Field) -> int:
    if value.isascii() and value.isdigit():
        n = int(value)
        if not spec.lo <= n <= spec.hi:
            raise CronError(f"{spec.name} field: {value} in {text!r} is outside {spec.lo}-{spec.hi}")
        return n
    if value.upper() in spec.names:
        return spec.names[value.upper()]
    hint = f" or a name ({'/'.join(spec.names)})" if spec.names else ""
    raise CronError(f"{spec.name} field: bad value {value!r} in {text!r} (expected a number{hint})")


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise errors.InvalidInput(f"cron times must be timezone-aware, got naive {at.isoformat()}")
    return at.astimezone(UTC)


def _utc_minute(at: datetime) -> datetime:
    return _utc(at).replace(second=0, microsecond=0)


def _day_matches(cron: Cron, y: int, mo: int, d: int) -> bool:
    dom_ok = d in cron.days
    dow_ok = (calendar.weekday(y, mo, d) + 1) % 7 in cron.weekdays
    # Vixie cron: if either day field starts with '*', both must match; otherwise either may.
    if cron.dom_star or cron.dow_star:
        return dom_ok and dow_ok
    return dom_ok or dow_ok


def _next_day(cron: Cron, y: int, mo: int, d: int) -> int | None:
    for day in range(d, calendar.monthrange(y, mo)[1] + 1):
        if _day_matches(cron, y, mo, day):
            return day
    return None


def _prev_day(cron: Cron, y: int, mo: int, d: int) -> int | None:
    for day in range(d, 0, -1):
        if _day_matches(cron, y, mo, day):
            return day
    return None


def _day_after(y: int, mo: int, d: int) -> tuple[int, int, int]:
    if d < calendar.monthrange(y, mo)[1]:
        return y, mo, d + 1
    return (y + 1, 1, 1) if mo == 12 else (y, mo + 1, 1)


def _day_before(y: int, mo: int, d: int) -> tuple[int, int, int]:
    if d > 1:
        return y, mo, d - 1
    y, mo = (y - 1, 12) if mo == 1 else (y, mo - 1)
    return y, mo, calendar.monthrange(max(y, 1), mo)[1]
