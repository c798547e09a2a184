"""Five-field cron expressions in an IANA time zone, on cronsim, and the blackout windows they open.

The calendar arithmetic is cronsim's (docs/adr/0015-cron-on-cronsim.md): Vixie/Debian cron
semantics, day-of-month OR day-of-week when both are restricted, and Debian's DST rules:

- a local time that does not exist (spring forward) fires at the first valid instant after
  the gap;
- a local time that occurs twice (fall back) fires once, at its first occurrence, unless the
  hour field is a wildcard or a step: then the expression follows elapsed time and fires in
  both hours.

This module adds what Orch needs on top: macros, the 5-field rule, a zone check, "never
fires" as a clear error, UTC in and out, and blackout windows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
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
        it = CronSim(normal, datetime(2000, 1, 1, tzinfo=where))
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


def _iter(cron: Cron, start_utc: datetime, *, reverse: bool = False) -> CronSim:
    return CronSim(cron.expr, start_utc.astimezone(zone(cron.tz)), reverse=reverse)


def next_fire(cron: Cron, after: datetime) -> datetime:
    """The first fire time (UTC, whole minute) strictly after `after`. Raises InvalidInput if
    `after` is naive, CronError if nothing fires within SEARCH_HORIZON."""
    start = _minute(after)
    found = next(_iter(cron, start), None)
    if found is None or found.astimezone(UTC) - start > SEARCH_HORIZON:
        raise CronError(f"cron {cron.expr!r} never fires within {SEARCH_HORIZON.days} days after {start.isoformat()}")
    return found.astimezone(UTC)


def fires_between(cron: Cron, after: datetime, until: datetime, *, limit: int) -> list[datetime]:
    """Fire times t (UTC) with after < t <= until, oldest first, at most `limit` of them."""
    out: list[datetime] = []
    end = _utc(until)
    if limit <= 0 or end <= _utc(after):
        return out
    for t in _iter(cron, _minute(after)):
        t_utc = t.astimezone(UTC)
        if t_utc > end:
            break
        out.append(t_utc)
        if len(out) >= limit:
            break
    return out


def prev_fire(cron: Cron, at_or_before: datetime, *, within: timedelta = PREV_HORIZON) -> datetime | None:
    """The last fire time (UTC, whole minute) at or before `at_or_before`, or None if there is
    none in the `within` before it. Raises InvalidInput if `at_or_before` is naive."""
    end = _minute(at_or_before)
    found = next(_iter(cron, end + MINUTE, reverse=True), None)
    if found is None:
        return None
    found_utc = found.astimezone(UTC)
    return found_utc if end - found_utc <= within else None


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
    for t in _iter(cron, start):
        t_utc = t.astimezone(UTC)
        if t_utc > end or end >= cap:
            break
        end = max(end, t_utc + duration)
    return start, min(end, cap)
