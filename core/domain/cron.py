"""Five-field cron expressions in an IANA time zone, on cronsim, and the blackout windows they open.

The calendar arithmetic is cronsim's (docs/adr/0015-cron-on-cronsim.md): Vixie/Debian cron
semantics, day-of-month OR day-of-week when both are restricted, and Debian-style DST rules:

- a local time that does not exist (spring forward) fires at the first valid instant after
  the gap;
- a local time that occurs twice (fall back) fires once, at its first occurrence, unless the
  hour field is a wildcard or a step: then the expression follows elapsed time and fires in
  both hours (and a wall time that does not exist simply does not occur).

cronsim itself picks its DST mode by Debian's rule (fixed only when neither the minute nor the
hour field starts with '*'), so `_sim_expr` rewrites the expression to make it pick ours, keyed
on the hour field alone: "*/30 2 * * *" has a fixed hour, "0 1-23/2 * * *" a step. Elapsed
time is computed here, stretch by stretch of constant UTC offset (`_forward`, `_backward`), and
cronsim's walk of fixed local times is started and filtered so that it holds from any instant.

This module adds what Orch needs on top: macros, the 5-field rule, a zone check, "never
fires" as a clear error, UTC in and out, and blackout windows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from core.domain import errors

# Far enough to cover Feb 29 across a skipped leap year (2096 -> 2104); beyond it, we call it "never".
SEARCH_HORIZON: Final = timedelta(days=8 * 366)
# How far back prev_fire looks unless told otherwise.
PREV_HORIZON: Final = timedelta(days=366)
# Longest blackout: both the longest duration accepted and the cap on merging overlapping windows.
MAX_WINDOW: Final = timedelta(days=7)
MINUTE: Final = timedelta(minutes=1)
SECOND: Final = timedelta(seconds=1)
# How far apart a zone's UTC offset is probed for a change: no zone changes it twice in a day.
_PROBE: Final = timedelta(days=1)

MACROS: Final = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELD_NAMES: Final = ("minute", "hour", "day-of-month", "month", "day-of-week")


class CronError(errors.InvalidInput):
    """A cron expression that does not parse, or that never fires; or an unknown time zone."""


@functools.lru_cache(maxsize=512)
def zone(name: str) -> tzinfo:
    """The IANA zone `name` ("UTC", "Europe/Berlin"). Raises CronError for an unknown one."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise CronError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin") from None


@dataclass(frozen=True, slots=True)
class Cron:
    """A checked expression: `expr` is the normalised 5-field text (macros expanded, upper case,
    single spaces), `tz` the IANA zone its fields are read in. Build it with `parse`."""

    expr: str
    tz: str = "UTC"

    @classmethod
    def parse(cls, expr: str, tz: str = "UTC") -> Cron:
        return parse(expr, tz)


def parse(expr: str, tz: str = "UTC") -> Cron:
    """Parse "min hour dom month dow" or a macro (@hourly ... @annually) in zone `tz`.
    Raises CronError for bad syntax, an unknown zone, or an expression that never fires."""
    if not isinstance(expr, str):
        raise CronError("a cron expression must be text")
    text = expr.strip()
    if text.startswith("@"):
        expanded = MACROS.get(text.lower())
        if expanded is None:
            raise CronError(f"unknown cron macro {text!r}; known: {', '.join(MACROS)}")
        text = expanded
    parts = text.split()
    if len(parts) != len(_FIELD_NAMES):
        raise CronError(
            f"cron expression needs 5 fields (minute hour day-of-month month day-of-week), got {len(parts)} in {expr!r}"
        )
    normal = " ".join(parts).upper()
    where = zone(tz)
    try:
        it = CronSim(_sim_expr(normal), datetime(2000, 1, 1, tzinfo=where))
    except CronSimError as exc:
        raise CronError(f"bad cron expression {expr!r}: {str(exc).lower() or 'does not parse'}") from None
    # Syntax checked; make sure it fires at all (cronsim rejects "0 0 31 2 *" itself, but a
    # combination it accepts might still be empty).
    first = next(it, None)
    if first is None or first.astimezone(UTC) - datetime(2000, 1, 1, tzinfo=UTC) > SEARCH_HORIZON:
        raise CronError(f"cron {normal!r} never fires")
    return Cron(normal, tz)


def describe(cron: Cron) -> str:
    """The normalised expression, with its zone when that is not UTC."""
    return cron.expr if cron.tz == "UTC" else f"{cron.expr} ({cron.tz})"


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise errors.InvalidInput(f"cron times must be timezone-aware, got naive {at.isoformat()}")
    return at.astimezone(UTC)


def _minute(at: datetime) -> datetime:
    return _utc(at).replace(second=0, microsecond=0)


def _elapsed(expr: str) -> bool:
    """Whether the hour field is a wildcard or a step: the expression follows elapsed time."""
    hour = expr.split()[1]
    return "*" in hour or "/" in hour


_MONTH_NAMES: Final = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES: Final = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def _value(token: str, field: int) -> int | None:
    if token.isascii() and token.isdigit():
        return int(token)
    if field == 3 and token in _MONTH_NAMES:
        return _MONTH_NAMES.index(token) + 1
    if field == 4 and token in _DAY_NAMES:
        return _DAY_NAMES.index(token)
    return None


def _sim_field(text: str, field: int) -> str:
    """One field (0 = minute ... 4 = day-of-week) rewritten where cronsim reads it otherwise:
    - a step over a one-value range ("5-5/10") is that value, not cronsim's start-and-step
      (5, 15, 25, ...);
    - a day-of-week range closing on Sunday ("MON-SUN", "5-0") ends on day 7, as Orch has
      always read it (cronsim reads SUN only as 0, so the range would run backwards)."""
    items = []
    for item in text.split(","):
        base, slash, step = item.partition("/")
        lo, dash, hi = base.partition("-")
        a, b = _value(lo, field), _value(hi, field)
        if dash and field == 4 and b == 0 and a is not None and a > 0:
            base, b = f"{lo}-7", 7
        if dash and slash and a is not None and a == b:
            items.append(lo)
        else:
            items.append(base + slash + step)
    return ",".join(items)


@functools.lru_cache(maxsize=512)
def _sim_expr(expr: str) -> str:
    """The text to give cronsim for the normalised `expr`, so that it applies our rules.
    Elapsed time (see the module docstring): a 6-field form (seconds "0"), which cronsim
    never fixes up. Fixed local times: the minute field must not start with '*' for cronsim
    to fix them up, and "0-59" means what "*" means, also under a step."""
    parts = [_sim_field(text, field) for field, text in enumerate(expr.split())]
    if _elapsed(expr):
        return " ".join(["0", *parts])
    return " ".join([parts[0].replace("*", "0-59"), *parts[1:]])


def _offset(where: tzinfo, t: datetime) -> timedelta:
    offset = t.astimezone(where).utcoffset()
    assert offset is not None
    return offset


def _first_change(where: tzinfo, lo: datetime, hi: datetime, offset: timedelta) -> datetime | None:
    """The first instant in (lo, hi] at which `where` is not at `offset` (it is at `lo`), to
    the second; None if there is none. Probes a day apart, then bisects."""
    a = lo
    while a < hi:
        b = min(a + _PROBE, hi)
        if _offset(where, b) != offset:
            good, bad = 0, math.ceil((b - a) / SECOND)
            while bad - good > 1:
                mid = (good + bad) // 2
                good, bad = (good, mid) if _offset(where, a + mid * SECOND) != offset else (mid, bad)
            return min(a + bad * SECOND, b)
        a = b
    return None


def _last_change(where: tzinfo, lo: datetime, hi: datetime, offset: timedelta) -> datetime | None:
    """The last instant in [lo, hi) at which `where` is not at `offset` (it is at `hi`), to the
    second; None if there is none."""
    b = hi
    while b > lo:
        a = max(b - _PROBE, lo)
        if _offset(where, a) != offset:
            bad, good = 0, math.ceil((b - a) / SECOND)
            while good - bad > 1:
                mid = (good + bad) // 2
                bad, good = (mid, good) if _offset(where, a + mid * SECOND) != offset else (bad, mid)
            return a + bad * SECOND
        b = a
    return None


def _forward(cron: Cron, after_utc: datetime) -> Iterator[datetime]:
    """Fire times (UTC) strictly after `after_utc`, strictly increasing, until cronsim gives
    up (50 years) or the calendar ends."""
    where, expr = zone(cron.tz), _sim_expr(cron.expr)
    try:
        if where is UTC or not _elapsed(cron.expr):
            floor = after_utc
            for t in CronSim(expr, after_utc.astimezone(where)):
                t_utc = t.astimezone(UTC)
                # For fixed local times cronsim walks wall time: started in the second pass of
                # a repeated hour, it yields that hour's first pass, before `after_utc`.
                if t_utc > floor:
                    floor = t_utc
                    yield t_utc
            return
        # Elapsed time: the wall times of the UTC offset in force, stretch by stretch (cronsim's
        # own stepping in a zone skips fires when an offset changes by half an hour, or at
        # midnight).
        start = after_utc
        while True:
            checked = start + SECOND
            offset = _offset(where, checked)
            for t in CronSim(expr, start.astimezone(timezone(offset))):
                t_utc = t.astimezone(UTC)
                change = _first_change(where, checked, t_utc, offset)
                if change is not None:
                    start = change - SECOND
                    break
                checked = t_utc
                yield t_utc
            else:
                return
    except OverflowError:  # past year 9999
        return


def _backward(cron: Cron, at_utc: datetime) -> Iterator[datetime]:
    """Fire times (UTC) at or before the whole minute `at_utc`, strictly decreasing, until
    cronsim gives up (50 years) or the calendar ends."""
    where, expr = zone(cron.tz), _sim_expr(cron.expr)
    end = at_utc + MINUTE  # fires are whole minutes: before `end` is at or before `at_utc`
    try:
        if where is UTC or not _elapsed(cron.expr):
            start, local = end, end.astimezone(where)
            if local.fold:
                # In the second pass of a repeated hour, cronsim (walking wall time, reading it
                # as the first pass) would miss the first-pass fires after this wall time,
                # which are before `end`: start the walk later by the repeat, drop what is late.
                first, second = local.replace(fold=0).utcoffset(), local.utcoffset()
                if first is not None and second is not None and first > second:
                    start += first - second
            ceiling = end
            for t in CronSim(expr, start.astimezone(where), reverse=True):
                t_utc = t.astimezone(UTC)
                if t_utc < ceiling:
                    ceiling = t_utc
                    yield t_utc
            return
        while True:
            checked = end - SECOND
            offset = _offset(where, checked)
            for t in CronSim(expr, end.astimezone(timezone(offset)), reverse=True):
                t_utc = t.astimezone(UTC)
                change = _last_change(where, t_utc, checked, offset)
                if change is not None:
                    end = change + SECOND
                    break
                checked = t_utc
                yield t_utc
            else:
                return
    except OverflowError:  # before year 1
        return


def next_fire(cron: Cron, after: datetime) -> datetime:
    """The first fire time (UTC, whole minute) strictly after `after`. Raises InvalidInput if
    `after` is naive, CronError if nothing fires within SEARCH_HORIZON."""
    start = _minute(after)
    found = next(_forward(cron, start), None)
    if found is None or found - start > SEARCH_HORIZON:
        raise CronError(f"cron {cron.expr!r} never fires within {SEARCH_HORIZON.days} days after {start.isoformat()}")
    return found


def fires_between(cron: Cron, after: datetime, until: datetime, *, limit: int) -> list[datetime]:
    """Fire times t (UTC) with after < t <= until, oldest first, at most `limit` of them."""
    out: list[datetime] = []
    end = _utc(until)
    if limit <= 0 or end <= _utc(after):
        return out
    for t in _forward(cron, _minute(after)):
        if t > end:
            break
        out.append(t)
        if len(out) >= limit:
            break
    return out


def prev_fire(cron: Cron, at_or_before: datetime, *, within: timedelta = PREV_HORIZON) -> datetime | None:
    """The last fire time (UTC, whole minute) at or before `at_or_before`, or None if there is
    none in the `within` before it. Raises InvalidInput if `at_or_before` is naive."""
    end = _minute(at_or_before)
    found = next(_backward(cron, end), None)
    return found if found is not None and end - found <= within else None


def matches(cron: Cron, at: datetime) -> bool:
    """Whether the minute containing `at` is a fire time. Raises InvalidInput if `at` is naive."""
    return prev_fire(cron, at, within=timedelta(0)) is not None


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
    cap = start + MAX_WINDOW
    end = start + duration
    for t in _forward(cron, start):
        if t > end or end >= cap:
            break
        end = max(end, t + duration)
    return start, min(end, cap)
