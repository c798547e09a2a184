"""Schedules, pure: when a trigger (cron or interval) ticks, each tick's data interval, which
late ticks a catch-up policy fires, and what an overlap policy does with a tick whose
previous firing has not ended. The ledger and the scheduler pass apply these decisions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from core.domain import cron, errors

#: A tick is on time while it is at most this late; beyond, it is "late" and its catch-up
#: policy decides (a pass runs every second, so only real downtime or a pause makes a tick late).
ON_TIME: Final = timedelta(seconds=60)
MIN_EVERY: Final = timedelta(seconds=1)
MAX_EVERY: Final = timedelta(days=366)
#: buffer_all keeps at most this many ticks waiting; more are recorded as skipped.
MAX_BUFFERED: Final = 100
DEFAULT_CATCHUP_WINDOW: Final = timedelta(hours=24)
DEFAULT_MAX_CATCHUP: Final = 25
#: Most late ticks one catch-up enumerates (a minute schedule down for a week has 10,080);
#: older ones are not recorded one by one (the note on the oldest recorded tick says so).
MAX_LATE_TICKS: Final = 20_000
NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class Overlap(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    BUFFER_ALL = "buffer_all"
    CANCEL_OTHER = "cancel_other"
    ALLOW_ALL = "allow_all"


class Catchup(StrEnum):
    NONE = "none"
    LATEST = "latest"
    ALL = "all"


class TickStatus(StrEnum):
    FIRED = "fired"
    SKIPPED = "skipped"
    BUFFERED = "buffered"
    MISSED = "missed"
    PAUSED = "paused"


def parse_enum(kind: type[StrEnum], text: str, what: str) -> StrEnum:
    try:
        return kind(text)
    except ValueError:
        raise errors.InvalidInput(f"unknown {what} {text!r}; use one of {', '.join(k.value for k in kind)}") from None


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """ "30s", "15m", "1h30m", "2d", or plain seconds. Raises InvalidInput."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        seconds = float(s)
    else:
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(s):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise errors.InvalidInput(f"bad {what} {text!r}: use e.g. 30s, 15m, 1h30m or 2d")
    if seconds <= 0:
        raise errors.InvalidInput(f"{what} must be positive, got {text!r}")
    try:
        out = timedelta(seconds=seconds)  # an overlong one overflows (or is inf)
    except OverflowError:
        raise errors.InvalidInput(f"{what} {text!r} is too long") from None
    if out <= timedelta(0):  # below a microsecond
        raise errors.InvalidInput(f"{what} must be at least 1 microsecond, got {text!r}")
    return out


@dataclass(frozen=True, slots=True)
class Trigger:
    """Either a cron expression in a zone or a fixed interval. Interval ticks lie on
    `anchor + k * every` (the start when given, else the Unix epoch: every 15m ticks at
    :00, :15, :30 and :45 UTC)."""

    cron: cron.Cron | None = None
    every: timedelta | None = None
    anchor: datetime = datetime(1970, 1, 1, tzinfo=UTC)

    @classmethod
    def of(cls, *, cron_expr: str | None, every: timedelta | None, tz: str, anchor: datetime | None) -> Trigger:
        """Raises InvalidInput (neither or both given, bad interval), CronError."""
        if (cron_expr is None) == (every is None):
            raise errors.InvalidInput("give a cron expression (--cron) or an interval (--every), not both")
        if every is not None:
            cron.zone(tz)
            if not MIN_EVERY <= every <= MAX_EVERY:
                raise errors.InvalidInput(f"--every must be between 1s and 366d, got {every}")
            if every.microseconds:
                raise errors.InvalidInput("--every must be a whole number of seconds")
            base = (anchor or datetime(1970, 1, 1, tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)
            return cls(every=every, anchor=base)
        assert cron_expr is not None
        return cls(cron=cron.parse(cron_expr, tz))

    def describe(self) -> str:
        if self.cron is not None:
            return cron.describe(self.cron)
        return f"every {format_duration(self.every or MIN_EVERY)}"

    def next_after(self, t: datetime) -> datetime:
        """The first tick strictly after `t`."""
        if self.cron is not None:
            return cron.next_fire(self.cron, t)
        assert self.every is not None
        # Exact: timedelta // timedelta is integer arithmetic on microseconds (floats lose
        # the microsecond from about year 2200 on).
        k = (t.astimezone(UTC) - self.anchor) // self.every + 1
        return self.anchor + k * self.every

    def prev_before(self, t: datetime) -> datetime:
        """The last tick strictly before `t` (the start of `t`'s data interval); `t` minus one
        interval when the cron expression has none within a year."""
        if self.cron is not None:
            found = cron.prev_fire(self.cron, t - timedelta(microseconds=1))
            if found is not None and found < t:
                return found
            return t - timedelta(days=1)
        assert self.every is not None
        k = -((self.anchor - t.astimezone(UTC)) // self.every) - 1  # ceil, then one back
        return self.anchor + k * self.every

    def ticks(self, after: datetime, until: datetime, *, limit: int) -> list[datetime]:
        """Ticks t with after < t <= until, oldest first, at most `limit`."""
        if self.cron is not None:
            return cron.fires_between(self.cron, after, until, limit=limit)
        out: list[datetime] = []
        t = self.next_after(after)
        while t <= until and len(out) < limit:
            out.append(t)
            t += self.every or MIN_EVERY
        return out


def format_duration(d: timedelta) -> str:
    s = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


@dataclass(frozen=True, slots=True)
class LateTick:
    scheduled_for: datetime
    #: True: goes on to the overlap policy; False: recorded as `missed` (or `paused`).
    fire: bool


def catch_up(
    ticks: Sequence[datetime],
    now: datetime,
    policy: Catchup,
    *,
    window: timedelta,
    max_runs: int,
) -> list[LateTick]:
    """Which of `ticks` (oldest first, all <= now) fire. On-time ticks (at most ON_TIME late)
    always fire; of the late ones, `none` fires nothing, `latest` the newest, `all` every late
    tick within `window` of now, the newest `max_runs` of them. The rest are missed."""
    late = [t for t in ticks if now - t > ON_TIME]
    on_time = [t for t in ticks if now - t <= ON_TIME]
    chosen: set[datetime] = set()
    if policy is Catchup.LATEST and late and not on_time:
        chosen.add(late[-1])
    elif policy is Catchup.ALL:
        eligible = [t for t in late if now - t <= window]
        room = max(0, max_runs - len(on_time))
        # max(0, ...): a negative start would count from the end (2 eligible, room 3: only 1).
        chosen.update(eligible[max(0, len(eligible) - room) :] if room else [])
    chosen.update(on_time)
    return [LateTick(t, t in chosen) for t in ticks]


class OverlapAction(StrEnum):
    FIRE = "fire"
    SKIP = "skip"
    BUFFER = "buffer"
    CANCEL_AND_FIRE = "cancel_and_fire"


def on_overlap(policy: Overlap, *, previous_live: bool, buffered: int) -> OverlapAction:
    """What a tick does given whether the schedule's last firing is still live and how many
    ticks already wait in its buffer."""
    if not previous_live and buffered == 0:
        return OverlapAction.FIRE
    if policy is Overlap.ALLOW_ALL:
        return OverlapAction.FIRE
    if policy is Overlap.CANCEL_OTHER:
        return OverlapAction.CANCEL_AND_FIRE
    if policy is Overlap.BUFFER_ONE:
        return OverlapAction.BUFFER if buffered < 1 else OverlapAction.SKIP
    if policy is Overlap.BUFFER_ALL:
        return OverlapAction.BUFFER if buffered < MAX_BUFFERED else OverlapAction.SKIP
    return OverlapAction.SKIP


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):  # match's $ allows a final "\n"
        raise errors.InvalidInput(
            f"schedule name {name!r} is not valid: 1 to 128 letters, digits, '.', '_', ':' or '-', starting with "
            "a letter or digit"
        )
    return name
