"""What a run of the planner may do: its limits and the weekly windows in which moves may start.

Why this exists: the user bounds every rebalancing run (moves and points per
run, concurrent migrations, pinned domains, excluded clusters) and may allow
moves only in maintenance windows. These values are checked once, here, with
messages that say what is accepted, so the goals and the schedule can trust
them. Pure: every moment is passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "Constraints",
    "MaintenanceWindow",
    "PlanError",
    "as_utc",
    "next_window_start",
    "parse_window",
    "window_end",
]

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WINDOW_HELP = (
    "use UTC days and hours like 'Sat,Sun 01:00-05:00', 'Mon-Fri 22:00-02:00' or '01:00-05:00'"
)
_WINDOW = re.compile(
    r"^(?:(?P<days>[A-Za-z][A-Za-z,\- ]*?)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$"
)


class PlanError(ValueError):
    """An unknown strategy, bad constraints or a bad window; the message says what is accepted."""


@dataclass(frozen=True)
class MaintenanceWindow:
    """A weekly UTC window in which moves may start."""

    days: frozenset[int]  # 0=Monday .. 6=Sunday (empty = every day)
    start_minute: int  # minutes after 00:00 UTC
    end_minute: int  # may be < start (the window crosses midnight); 1440 = midnight

    def __post_init__(self) -> None:
        if not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in self.days
        ):
            raise PlanError(
                f"maintenance window days {sorted(self.days)!r} are not accepted: "
                "use 0 (Monday) to 6 (Sunday)"
            )
        for name, value, high in (
            ("start_minute", self.start_minute, 1439),
            ("end_minute", self.end_minute, 1440),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise PlanError(
                    f"maintenance window {name}={value!r} is not accepted: use 0..{high} "
                    "(minutes after 00:00 UTC)"
                )
        if self.start_minute == self.end_minute % 1440 and self.end_minute != 1440:
            raise PlanError(
                f"maintenance window {_clock(self.start_minute)}-{_clock(self.end_minute)} is "
                "empty: start and end must differ (00:00-24:00 is the whole day)"
            )

    def _occurrence(self, day: datetime) -> tuple[datetime, datetime] | None:
        """The window opening on ``day`` (midnight UTC), if it opens that day."""
        if self.days and day.weekday() not in self.days:
            return None
        start = day + timedelta(minutes=self.start_minute)
        end = day + timedelta(minutes=self.end_minute)
        if self.end_minute <= self.start_minute:
            end += timedelta(days=1)
        return start, end

    def _around(self, moment: datetime, days_ahead: int) -> list[tuple[datetime, datetime]]:
        midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        found = []
        for offset in range(-1, days_ahead + 1):
            occurrence = self._occurrence(midnight + timedelta(days=offset))
            if occurrence is not None:
                found.append(occurrence)
        return found

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` (naive = UTC) falls inside the window."""
        at = as_utc(moment)
        return any(start <= at < end for start, end in self._around(at, 0))

    def __str__(self) -> str:
        days = ",".join(_DAY_NAMES[d].capitalize() for d in sorted(self.days))
        span = f"{_clock(self.start_minute)}-{_clock(self.end_minute)}"
        return f"{days} {span}" if days else span


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (a naive one is taken as UTC); :class:`PlanError` if not a datetime."""
    if not isinstance(moment, datetime):
        raise PlanError(f"a moment must be a datetime, got {moment!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _parse_day(token: str, text: str) -> int:
    name = token.strip().lower()
    for names in (_DAY_NAMES, _FULL_DAY_NAMES):
        if name in names:
            return names.index(name)
    raise PlanError(f"maintenance window {text!r}: {token.strip()!r} is not a day; {_WINDOW_HELP}")


def _parse_minute(clock: str, text: str, *, end: bool) -> int:
    hours, minutes = (int(part) for part in clock.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        raise PlanError(f"maintenance window {text!r}: {clock!r} is not a time; {_WINDOW_HELP}")
    return hours * 60 + minutes


def parse_window(text: str) -> MaintenanceWindow:
    """A window from ``"Sat,Sun 01:00-05:00"``, ``"Mon-Fri 22:00-02:00"`` or ``"01:00-05:00"``.

    Days are English names or their first three letters, separated by commas,
    with ``-`` for ranges (``Fri-Mon`` wraps over the weekend); the window
    belongs to the day it opens. Times are UTC, 24-hour; ``24:00`` ends at
    midnight. Raises :class:`PlanError` on anything else.
    """
    if not isinstance(text, str):
        raise PlanError(f"maintenance window {text!r} is not text; {_WINDOW_HELP}")
    match = _WINDOW.match(text.strip())
    if match is None:
        raise PlanError(f"maintenance window {text!r} is not understood; {_WINDOW_HELP}")
    days: set[int] = set()
    for part in (match.group("days") or "").split(","):
        if not part.strip():
            if match.group("days"):
                raise PlanError(f"maintenance window {text!r} has an empty day; {_WINDOW_HELP}")
            continue
        if "-" in part:
            first, _, last = part.partition("-")
            low, high = _parse_day(first, text), _parse_day(last, text)
            span = (high - low) % 7
            days.update((low + step) % 7 for step in range(span + 1))
        else:
            days.add(_parse_day(part, text))
    start = _parse_minute(match.group("start"), text, end=False)
    end = _parse_minute(match.group("end"), text, end=True)
    return MaintenanceWindow(days=frozenset(days), start_minute=start, end_minute=end)


def next_window_start(windows: Sequence[MaintenanceWindow], moment: datetime) -> datetime | None:
    """``moment`` itself (in UTC) when inside a window, else the next opening; None without windows."""
    if not windows:
        return None
    at = as_utc(moment)
    upcoming: list[datetime] = []
    for window in windows:
        for start, end in window._around(at, 7):
            if start <= at < end:
                return at
            if start > at:
                upcoming.append(start)
    return min(upcoming)


def window_end(windows: Sequence[MaintenanceWindow], moment: datetime) -> datetime | None:
    """When the windows open at ``moment`` all close (following windows that overlap)."""
    end: datetime | None = None
    at = moment
    while True:
        later = [
            close
            for window in windows
            for start, close in window._around(at, 0)
            if start <= at < close and (end is None or close > end)
        ]
        if not later:
            return end
        end = max(later)
        if end - moment > timedelta(days=8):  # windows covering the whole week
            return None
        at = end


@dataclass(frozen=True)
class Constraints:
    """What a run of the planner may do."""

    max_concurrent_migrations: int = 1
    max_points_per_run: int | None = None
    max_moves_per_run: int = 10
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    migration_points_per_second: float = 5000.0  # for the timeline
    pinned_domains: frozenset[str] = frozenset()  # never moved
    excluded_clusters: frozenset[str] = frozenset()  # never a target

    def __post_init__(self) -> None:
        for name, value, optional in (
            ("max_concurrent_migrations", self.max_concurrent_migrations, False),
            ("max_points_per_run", self.max_points_per_run, True),
            ("max_moves_per_run", self.max_moves_per_run, False),
        ):
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                accepted = "a whole number >= 1" + (" or nothing (no limit)" if optional else "")
                raise PlanError(f"constraint {name}={value!r} is not accepted: use {accepted}")
        rate = self.migration_points_per_second
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise PlanError(
                f"constraint migration_points_per_second={rate!r} is not accepted: "
                "use a number > 0, e.g. 5000"
            )
        if not all(isinstance(w, MaintenanceWindow) for w in self.maintenance_windows):
            raise PlanError(
                "constraint maintenance_windows takes MaintenanceWindow values; "
                "build them with parse_window('Sat,Sun 01:00-05:00')"
            )
