"""Rebalancing plans: which domains to move where, and in what order (RebalancingStrategy).

Why this exists: a library drifts. Hot domains change, clusters fill up,
latency degrades, recall drops as points drift. Moving a domain is a real
data migration (copy, verify, switch reads, delete), so a plan must fix what
is wrong while moving as few points as possible, inside the limits the user
set (moves and points per run, concurrent migrations, maintenance windows,
pinned domains, excluded clusters), and never break a harder goal to serve a
softer one. Pure: ``now`` is passed in; no clock, no I/O.

Goals, in priority order (Cruise Control's goal-based optimizer works the
same way; a lower goal may never undo a higher one):

0. capacity (hard): memory and disk of every cluster stay at or below
   ``capacity_usage``; clusters above it shed domains, and no move ever puts
   a domain where it would exceed it;
1. latency: clusters whose p95 exceeds their limit shed query load until the
   latency model below predicts a p95 within it;
2. load balance: max/mean cluster load <= 1 + ``load_imbalance``, reached by
   a greedy search over every (domain on an overloaded cluster, target) pair
   that takes, at each step, the move with the best reduction of the load
   above the goal *per point moved*, and stops as soon as the goal is met. A
   final check drops, largest first, any move the goal turns out not to
   need. A second pass judges moves by the reduction alone; of the two, the
   plan that meets the goal with fewer points wins. A move never pushes its
   target above the goal, nor the fleet's max/mean above both the goal and
   where it was;
3. domains: small cold domains co-located onto one cluster to free others;
   advisory proposals (not executable) to split a domain that is too hot or
   too big for any cluster, and to re-home a domain whose recall dropped.

Strategies: ``capacity_based``, ``latency_based`` and ``load_based`` pursue
goal 0, 1 and 2 alone (capacity stays a hard limit for every move);
``domain_based`` pursues goal 3; ``hybrid`` pursues goals 0, 1 and 2 in order
plus the advice of goal 3 (not the co-location, which works against balance).

Schedule: the chosen moves run in waves of at most
``max_concurrent_migrations``, one wave after the other, most urgent goal
first; a move onto a cluster waits for the moves off it planned before it (it
may need the room they free). Each move lasts points /
``migration_points_per_second``. With maintenance windows the plan starts at
the next opening (or now, inside one), and moves that would start after the
window closes are left for the next run.

Latency model (used for the expected figures after a plan and for keeping
targets healthy): a cluster's utilization is u = qps / max_qps, capped at
0.95, and a domain's p95 scales with 1 / (1 - u) of the cluster serving it,
so a domain that moves from cluster A (utilization u_A before) to B
(utilization u_B after) is expected at ``p95 * (1 - u_A) / (1 - u_B)``;
domains that stay see their cluster's utilization change the same way. The
model assumes the same service time at zero load on every cluster. When
``max_qps`` (or a p95) is unknown, the p95 is expected unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from librarian.core.load import (
    ClusterCapacity,
    DomainLoad,
    LoadReport,
    Thresholds,
    analyze_load,
    load_scale,
)

__all__ = [
    "MOVE_KINDS",
    "STRATEGIES",
    "UTILIZATION_CAP",
    "Constraints",
    "MaintenanceWindow",
    "Move",
    "PlanError",
    "Proposal",
    "apply_moves",
    "naive_rebalance",
    "next_window_start",
    "parse_window",
    "plan_rebalance",
]

STRATEGIES = ("load_based", "latency_based", "capacity_based", "domain_based", "hybrid")
MOVE_KINDS = ("move", "split", "rehome")
UTILIZATION_CAP = 0.95

PRIORITY_CAPACITY = 0
PRIORITY_LATENCY = 1
PRIORITY_BALANCE = 2
PRIORITY_DOMAIN = 3

COLD_SHARE = 0.5
"""A domain is cold when it gets less than this share of the mean domain's queries/s."""

_EPS = 1e-9
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WINDOW_HELP = (
    "use UTC days and hours like 'Sat,Sun 01:00-05:00', 'Mon-Fri 22:00-02:00' or '01:00-05:00'"
)
_WINDOW = re.compile(
    r"^(?:(?P<days>[A-Za-z][A-Za-z,\- ]*?)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$"
)


_DEFAULT_THRESHOLDS = Thresholds()


class PlanError(ValueError):
    """An unknown strategy, bad constraints or a bad window; the message says what is accepted."""


# --------------------------------------------------------------------------- maintenance windows


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
        at = _utc(moment)
        return any(start <= at < end for start, end in self._around(at, 0))

    def __str__(self) -> str:
        days = ",".join(_DAY_NAMES[d].capitalize() for d in sorted(self.days))
        span = f"{_clock(self.start_minute)}-{_clock(self.end_minute)}"
        return f"{days} {span}" if days else span


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _utc(moment: datetime) -> datetime:
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
    at = _utc(moment)
    upcoming: list[datetime] = []
    for window in windows:
        for start, end in window._around(at, 7):
            if start <= at < end:
                return at
            if start > at:
                upcoming.append(start)
    return min(upcoming)


def _window_end(windows: Sequence[MaintenanceWindow], moment: datetime) -> datetime | None:
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


# --------------------------------------------------------------------------- plan objects


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


@dataclass(frozen=True)
class Move:
    """One proposed step: an executable move, or advice (``split``, ``rehome``)."""

    domain: str
    source: str
    target: str | None  # None for advisory proposals
    points: int
    kind: str  # "move" | "split" | "rehome"
    reason: str  # which goal/violation it serves, in words
    priority: int  # 0 = most urgent (capacity) ... larger = less
    wave: int  # 0,1,2...: moves of one wave may run together (<= max_concurrent)
    start_after_s: float  # offset from the plan's start (timeline)
    duration_s: float  # points / migration_points_per_second
    executable: bool = True

    def to_status(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "source": self.source,
            "target": self.target,
            "points": self.points,
            "kind": self.kind,
            "reason": self.reason,
            "priority": self.priority,
            "wave": self.wave,
            "startAfterSeconds": round(self.start_after_s, 3),
            "durationSeconds": round(self.duration_s, 3),
            "executable": self.executable,
        }


def _summary(report: LoadReport) -> dict[str, Any]:
    return {
        "maxMeanRatio": round(report.max_mean_ratio, 4),
        "imbalance": round(report.imbalance, 4),
        "violations": len(report.violations),
        "violationKinds": sorted({v.kind for v in report.violations}),
        "clusters": {
            c.name: {
                "load": round(c.load, 4),
                "qps": round(c.qps, 3),
                "p95Ms": None if c.p95_ms is None else round(c.p95_ms, 2),
                "points": c.points,
                "memoryUsage": None if c.memory_usage is None else round(c.memory_usage, 4),
                "diskUsage": None if c.disk_usage is None else round(c.disk_usage, 4),
            }
            for c in report.clusters
        },
    }


@dataclass(frozen=True)
class Proposal:
    """A plan: its moves and advice, the load before and as expected after, what was held back."""

    strategy: str
    moves: tuple[Move, ...]
    before: LoadReport
    after: LoadReport  # expected, moves applied (analyze_load on the moved placement)
    points_moved: int
    deferred: tuple[str, ...]  # what the constraints held back, and why
    starts_at: datetime | None  # now, or next maintenance window start; None = no constraint

    @property
    def id(self) -> str:
        """Stable short hash of the strategy and the moves; approving refers to it."""
        key = [self.strategy, [[m.domain, m.source, m.target, m.kind] for m in self.moves]]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]

    @property
    def executable_moves(self) -> tuple[Move, ...]:
        return tuple(m for m in self.moves if m.executable)

    def to_status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "strategy": self.strategy,
            "moves": [m.to_status() for m in self.moves],
            "before": _summary(self.before),
            "after": _summary(self.after),
            "pointsMoved": self.points_moved,
            "deferred": list(self.deferred),
            "startsAt": None
            if self.starts_at is None
            else self.starts_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


# --------------------------------------------------------------------------- latency model


def _utilization(qps: float, max_qps: float | None) -> float | None:
    if not max_qps:
        return None
    return min(qps / max_qps, UTILIZATION_CAP)


def _modelled_p95(domain: DomainLoad, before_u: float | None, now_u: float | None) -> float | None:
    if domain.p95_ms is None or before_u is None or now_u is None:
        return domain.p95_ms
    return domain.p95_ms * (1.0 - before_u) / (1.0 - now_u)


def _cluster_qps(domains: Sequence[DomainLoad]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for d in domains:
        totals[d.cluster] = totals.get(d.cluster, 0.0) + d.qps
    return totals


def apply_moves(
    domains: Sequence[DomainLoad],
    moves: Sequence[Move],
    *,
    capacities: Sequence[ClusterCapacity] | None = None,
) -> list[DomainLoad]:
    """The expected placement after the executable ``moves`` (advice is skipped).

    With ``capacities``, every domain's p95 is re-estimated by the latency
    model of this module; without, p95s are kept as measured. Raises
    :class:`PlanError` for a move of an unknown domain or from the wrong cluster.
    """
    home = {d.domain: d.cluster for d in domains}
    for move in moves:
        if not move.executable or move.kind != "move":
            continue
        if move.domain not in home:
            raise PlanError(f"move of domain {move.domain!r}, which is not among the domains")
        if home[move.domain] != move.source:
            raise PlanError(
                f"move of domain {move.domain!r} from {move.source!r}, but it is on "
                f"{home[move.domain]!r}"
            )
        if not move.target:
            raise PlanError(f"executable move of domain {move.domain!r} has no target cluster")
        home[move.domain] = move.target
    moved = [
        d if home[d.domain] == d.cluster else replace(d, cluster=home[d.domain]) for d in domains
    ]
    if capacities is None:
        return moved
    max_qps = {c.name: c.max_qps for c in capacities}
    before, after = _cluster_qps(domains), _cluster_qps(moved)
    result = []
    for old, new in zip(domains, moved, strict=True):
        p95 = _modelled_p95(
            old,
            _utilization(before.get(old.cluster, 0.0), max_qps.get(old.cluster)),
            _utilization(after.get(new.cluster, 0.0), max_qps.get(new.cluster)),
        )
        result.append(new if p95 == new.p95_ms else replace(new, p95_ms=p95))
    return result


# --------------------------------------------------------------------------- planning state


class _State:
    """Where every domain is and what each cluster carries, as a plan grows."""

    def __init__(
        self, domains: Sequence[DomainLoad], caps: Mapping[str, ClusterCapacity], names: list[str]
    ) -> None:
        self.by_id = {d.domain: d for d in domains}
        self.origin = {d.domain: d.cluster for d in domains}
        self.home = dict(self.origin)
        self.names = names
        self.caps = caps
        self.scale = load_scale(list(caps.values()), names)
        self.qps = dict.fromkeys(names, 0.0)
        self.memory = dict.fromkeys(names, 0)
        self.disk = dict.fromkeys(names, 0)
        for d in domains:
            self.qps[d.cluster] += d.qps
            self.memory[d.cluster] += d.memory_bytes
            self.disk[d.cluster] += d.disk_bytes
        self.before_u = {c: _utilization(self.qps[c], caps[c].max_qps) for c in names}

    def copy(self) -> _State:
        other = object.__new__(_State)
        other.__dict__.update(self.__dict__)
        other.home = dict(self.home)
        other.qps, other.memory, other.disk = dict(self.qps), dict(self.memory), dict(self.disk)
        return other

    def members(self, cluster: str) -> list[str]:
        return [d for d, c in self.home.items() if c == cluster]

    def loads(self) -> dict[str, float]:
        return {c: self.qps[c] / self.scale[c] for c in self.names}

    def loads_after(self, domain: str, target: str) -> dict[str, float]:
        loads = self.loads()
        source, q = self.home[domain], self.by_id[domain].qps
        loads[source] = (self.qps[source] - q) / self.scale[source]
        loads[target] = (self.qps[target] + q) / self.scale[target]
        return loads

    def move(self, domain: str, target: str) -> None:
        d, source = self.by_id[domain], self.home[domain]
        self.home[domain] = target
        self.qps[source] -= d.qps
        self.qps[target] += d.qps
        self.memory[source] -= d.memory_bytes
        self.memory[target] += d.memory_bytes
        self.disk[source] -= d.disk_bytes
        self.disk[target] += d.disk_bytes

    def fits(self, domain: str, target: str, usage: float) -> bool:
        d, cap = self.by_id[domain], self.caps[target]
        if (
            cap.memory_bytes is not None
            and self.memory[target] + d.memory_bytes > usage * cap.memory_bytes
        ):
            return False
        return not (
            cap.disk_bytes is not None and self.disk[target] + d.disk_bytes > usage * cap.disk_bytes
        )

    def p95(self, cluster: str, extra: str | None = None) -> float | None:
        """Expected p95 of ``cluster`` by the latency model, with domain ``extra`` added."""
        members = [self.by_id[d] for d in self.members(cluster)]
        qps = self.qps[cluster]
        if extra is not None and self.home[extra] != cluster:
            members.append(self.by_id[extra])
            qps += self.by_id[extra].qps
        now_u = _utilization(qps, self.caps[cluster].max_qps)
        pairs = [
            (d.qps, p)
            for d in members
            if (p := _modelled_p95(d, self.before_u[self.origin[d.domain]], now_u)) is not None
        ]
        if not pairs:
            return None
        weight = sum(q for q, _ in pairs)
        if weight <= 0:
            return sum(p for _, p in pairs) / len(pairs)
        return sum(q * p for q, p in pairs) / weight


def _excess(loads: Mapping[str, float], goal: float) -> tuple[float, float]:
    """(load above the goal summed over clusters, the goal's load level)."""
    mean = sum(loads.values()) / len(loads) if loads else 0.0
    level = goal * mean
    return sum(max(0.0, value - level) for value in loads.values()), level


def _ratio(loads: Mapping[str, float]) -> float:
    mean = sum(loads.values()) / len(loads) if loads else 0.0
    return max(loads.values()) / mean if mean > 0 else 1.0


@dataclass
class _Pick:
    domain: str
    source: str
    target: str
    points: int
    reason: str
    priority: int


@dataclass
class _Run:
    """The budget of one run and what it has chosen so far."""

    moves_left: int
    points_left: int | None
    picks: list[_Pick] = field(default_factory=list)
    deferred: dict[str, str] = field(default_factory=dict)

    def copy(self) -> _Run:
        return _Run(self.moves_left, self.points_left, list(self.picks), dict(self.deferred))

    @property
    def moved(self) -> set[str]:
        return {p.domain for p in self.picks}

    def blocked(self, points: int) -> str | None:
        """Why a move of ``points`` does not fit the run, or None."""
        if self.moves_left <= 0:
            return "the run already holds max_moves_per_run moves"
        if self.points_left is not None and points > self.points_left:
            return f"it would exceed max_points_per_run ({self.points_left:,} points left)"
        return None

    def take(self, state: _State, pick: _Pick) -> None:
        self.picks.append(pick)
        self.moves_left -= 1
        if self.points_left is not None:
            self.points_left -= pick.points
        state.move(pick.domain, pick.target)

    def defer(self, key: str, message: str) -> None:
        self.deferred.setdefault(key, message)


Guard = Callable[[_State, str, str], bool]


@dataclass
class _Context:
    thresholds: Thresholds
    constraints: Constraints
    limits: Mapping[str, float | None]  # cluster -> latency limit (ms)
    relieved: set[str] = field(default_factory=set)  # clusters latency moves relieved

    @property
    def goal(self) -> float:
        return 1.0 + self.thresholds.load_imbalance

    def movable(self, run: _Run, domain: str) -> bool:
        return domain not in self.constraints.pinned_domains and domain not in run.moved

    def target_ok(self, state: _State, domain: str, target: str) -> bool:
        return (
            target != state.home[domain]
            and target not in self.constraints.excluded_clusters
            and state.fits(domain, target, self.thresholds.capacity_usage)
        )

    def latency_ok(self, state: _State, domain: str, target: str) -> bool:
        """Adding ``domain`` keeps ``target`` within its latency limit (when it has one)."""
        limit = self.limits.get(target)
        if limit is None:
            return True
        now = state.p95(target)
        if now is not None and now > limit:
            return False
        after = state.p95(target, extra=domain)
        return after is None or after <= limit

    def hybrid_guard(self, state: _State, domain: str, target: str) -> bool:
        """Balance moves in hybrid: never onto a cluster latency moves relieved or would degrade."""
        return target not in self.relieved and self.latency_ok(state, domain, target)


def _pick_key(score: float, points: int, tie: float, domain: str, target: str) -> tuple[Any, ...]:
    return (-score, points, tie, domain, target)


# --------------------------------------------------------------------------- goals


@dataclass
class _Choice:
    """The best allowed candidate move so far, and the best one the run's limits held back."""

    best: tuple[tuple[Any, ...], _Pick] | None = None
    held: tuple[tuple[Any, ...], str, str] | None = None  # key, domain, why

    def offer(
        self, key: tuple[Any, ...], domain: str, why: str | None, pick: Callable[[], _Pick]
    ) -> None:
        """Consider a candidate (lower key is better); ``why`` says the limits hold it back."""
        if why is not None:
            if self.held is None or key < self.held[0]:
                self.held = (key, domain, why)
        elif self.best is None or key < self.best[0]:
            self.best = (key, pick())

    def held_back(self) -> tuple[str, str] | None:
        """(domain, why) when the best candidate of all was held back by the limits."""
        if self.held is not None and (self.best is None or self.held[0] < self.best[0]):
            return self.held[1], self.held[2]
        return None


def _capacity_goal(state: _State, run: _Run, ctx: _Context) -> None:
    usage = ctx.thresholds.capacity_usage

    def over(cluster: str) -> tuple[float, float]:
        cap = state.caps[cluster]
        need_memory = (
            state.memory[cluster] - usage * cap.memory_bytes
            if cap.memory_bytes is not None
            else 0.0
        )
        need_disk = (
            state.disk[cluster] - usage * cap.disk_bytes if cap.disk_bytes is not None else 0.0
        )
        return max(need_memory, 0.0), max(need_disk, 0.0)

    def worst(cluster: str) -> float:
        cap = state.caps[cluster]
        shares = [
            used / total
            for used, total in (
                (state.memory[cluster], cap.memory_bytes),
                (state.disk[cluster], cap.disk_bytes),
            )
            if total
        ]
        return max(shares, default=0.0)

    for cluster in sorted(state.names, key=lambda c: (-worst(c), c)):
        while True:
            need_memory, need_disk = over(cluster)
            if need_memory <= 0 and need_disk <= 0:
                break
            if run.moves_left <= 0:
                run.defer(
                    f"capacity:{cluster}",
                    f"cluster {cluster!r} stays above {usage:.0%} of its capacity: the run "
                    "already holds max_moves_per_run moves",
                )
                break
            candidates = [d for d in state.members(cluster) if ctx.movable(run, d)]
            enough = sorted(
                (
                    d
                    for d in candidates
                    if state.by_id[d].memory_bytes >= need_memory
                    and state.by_id[d].disk_bytes >= need_disk
                ),
                key=lambda d: (state.by_id[d].points, state.by_id[d].qps, d),
            )
            rest = sorted(
                (d for d in candidates if d not in enough),
                key=lambda d: (
                    -(state.by_id[d].memory_bytes + state.by_id[d].disk_bytes),
                    state.by_id[d].points,
                    d,
                ),
            )
            chosen: _Pick | None = None
            for domain in enough + rest:
                d = state.by_id[domain]
                targets = [t for t in state.names if ctx.target_ok(state, domain, t)]
                if not targets:
                    continue
                why = run.blocked(d.points)
                if why is not None:
                    run.defer(
                        domain,
                        f"moving {domain} ({d.points:,} points) off {cluster!r} to free capacity "
                        f"is held back: {why}",
                    )
                    continue
                target = min(
                    targets,
                    key=lambda t: (
                        not ctx.latency_ok(state, domain, t),
                        _excess(state.loads_after(domain, t), ctx.goal)[0],
                        worst(t),
                        t,
                    ),
                )
                resource = "memory" if need_memory > 0 else "disk"
                limit = (
                    state.caps[cluster].memory_bytes
                    if resource == "memory"
                    else state.caps[cluster].disk_bytes
                )
                used = state.memory[cluster] if resource == "memory" else state.disk[cluster]
                share = used / limit if limit else math.inf
                chosen = _Pick(
                    domain,
                    cluster,
                    target,
                    d.points,
                    f"capacity: {cluster!r} uses {share:.0%} of its {resource} (limit "
                    f"{usage:.0%}); moving {domain} ({d.points:,} points) to {target!r} frees room",
                    PRIORITY_CAPACITY,
                )
                break
            if chosen is None:
                run.defer(
                    f"capacity:{cluster}",
                    f"cluster {cluster!r} stays above {usage:.0%} of its capacity: no movable "
                    "domain fits on an allowed cluster within the run's limits; grow the cluster "
                    "or add one to the fleet",
                )
                break
            run.take(state, chosen)


def _latency_goal(state: _State, run: _Run, ctx: _Context) -> None:
    before_loads = state.loads()
    mean_load = sum(before_loads.values()) / len(before_loads) if before_loads else 0.0
    violating = []
    for cluster in state.names:
        limit, p95 = ctx.limits.get(cluster), state.p95(cluster)
        if limit is not None and p95 is not None and p95 > limit:
            violating.append((p95 - limit, cluster, p95, limit))
    for _, cluster, p95, limit in sorted(violating, key=lambda v: (-v[0], v[1])):
        cap = state.caps[cluster]
        if cap.max_qps:
            before_u = state.before_u[cluster] or 0.0
            allowed_u = 1.0 - p95 * (1.0 - before_u) / limit
            if allowed_u <= 0:
                run.defer(
                    f"latency:{cluster}",
                    f"cluster {cluster!r} is over its {limit:.0f} ms latency limit even without "
                    "load (by the latency model): moving domains would not fix it; check the "
                    "cluster and its collection configs",
                )
                continue
            target_qps = allowed_u * cap.max_qps
        else:
            target_qps = mean_load * state.scale[cluster]  # no model: aim at the mean load
            if state.qps[cluster] <= target_qps + _EPS:
                run.defer(
                    f"latency:{cluster}",
                    f"cluster {cluster!r} is over its {limit:.0f} ms latency limit at no more "
                    "than the fleet's mean load: moving domains would not fix it; set its "
                    "maxQueriesPerSecond, check the cluster and its collection configs",
                )
                continue
        while True:
            need = state.qps[cluster] - target_qps
            modelled = state.p95(cluster)
            if need <= _EPS or (cap.max_qps and modelled is not None and modelled <= limit):
                break
            choice = _Choice()
            for domain in state.members(cluster):
                if not ctx.movable(run, domain):
                    continue
                d = state.by_id[domain]
                if d.qps <= 0:
                    continue
                for target in state.names:
                    if not ctx.target_ok(state, domain, target) or not ctx.latency_ok(
                        state, domain, target
                    ):
                        continue
                    after = state.loads_after(domain, target)
                    excess, level = _excess(after, ctx.goal)
                    if not state.caps[target].max_qps and after[target] > level + _EPS:
                        continue  # no model for its latency: keep it within the balance goal
                    score = min(d.qps, need) / max(d.points, 1)
                    choice.offer(
                        _pick_key(score, d.points, excess, domain, target),
                        domain,
                        run.blocked(d.points),
                        partial(_latency_pick, state, domain, target, p95, limit),
                    )
            held = choice.held_back()
            if held is not None:
                domain, why = held
                run.defer(
                    domain,
                    f"moving {domain} ({state.by_id[domain].points:,} points) off {cluster!r} "
                    f"to relieve its latency is held back: {why}",
                )
            best = choice.best
            if best is None:
                run.defer(
                    f"latency:{cluster}",
                    f"cluster {cluster!r} stays over its {limit:.0f} ms latency limit: no "
                    "allowed move takes load to a cluster that stays healthy within the run's "
                    "limits",
                )
                break
            run.take(state, best[1])
            ctx.relieved.add(cluster)


def _latency_pick(state: _State, domain: str, target: str, p95: float, limit: float) -> _Pick:
    d, source = state.by_id[domain], state.home[domain]
    return _Pick(
        domain,
        source,
        target,
        d.points,
        f"latency: {source!r} answers at p95 {p95:.0f} ms, over its limit {limit:.0f} ms; "
        f"moving {domain} ({d.qps:.1f} queries/s, {d.points:,} points) to {target!r} takes "
        "load off it",
        PRIORITY_LATENCY,
    )


def _balance_pick(state: _State, domain: str, target: str, goal: float) -> _Pick:
    d, source = state.by_id[domain], state.home[domain]
    loads, after = state.loads(), state.loads_after(domain, target)
    mean = sum(loads.values()) / len(loads)
    return _Pick(
        domain,
        source,
        target,
        d.points,
        f"balance: {source!r} carries {loads[source] / mean:.2f}x the mean load (goal <= "
        f"{goal:.2f}x); moving {domain} ({d.qps:.1f} queries/s, {d.points:,} points) to "
        f"{target!r} leaves it at {after[source] / mean:.2f}x",
        PRIORITY_BALANCE,
    )


def _balance_pass(
    state: _State, run: _Run, ctx: _Context, guard: Guard | None, per_point: bool
) -> bool:
    """Greedy balance moves; True when the goal is met."""
    goal = ctx.goal
    while True:
        loads = state.loads()
        excess, level = _excess(loads, goal)
        if excess <= _EPS * max(level, 1.0):
            return True
        choice = _Choice()
        ratio = _ratio(loads)
        for source in state.names:
            if loads[source] <= level + _EPS:
                continue
            for domain in state.members(source):
                if not ctx.movable(run, domain):
                    continue
                d = state.by_id[domain]
                for target in state.names:
                    if not ctx.target_ok(state, domain, target):
                        continue
                    if guard is not None and not guard(state, domain, target):
                        continue
                    after = state.loads_after(domain, target)
                    excess_after, level_after = _excess(after, goal)
                    if after[target] > level_after + _EPS:
                        continue  # never push the target above the goal
                    if _ratio(after) > max(ratio, goal) + _EPS:
                        continue  # nor the fleet's max/mean (clusters of unequal size)
                    gain = excess - excess_after
                    if gain <= _EPS * max(level, 1.0):
                        continue
                    score = gain / max(d.points, 1) if per_point else gain
                    choice.offer(
                        _pick_key(score, d.points, after[target], domain, target),
                        domain,
                        run.blocked(d.points),
                        partial(_balance_pick, state, domain, target, goal),
                    )
        held = choice.held_back()
        if held is not None:
            domain, why = held
            run.defer(
                domain,
                f"moving {domain} ({state.by_id[domain].points:,} points) for balance is held "
                f"back: {why}",
            )
        best = choice.best
        if best is None:
            return False
        run.take(state, best[1])


def _replay(
    state: _State, run: _Run, picks: Sequence[_Pick], ctx: _Context, guard: Guard | None
) -> tuple[_State, _Run] | None:
    """Balance ``picks`` applied in order from ``state``, if every one is still allowed and
    the goal is met at the end."""
    state, run = state.copy(), run.copy()
    for pick in picks:
        if not ctx.target_ok(state, pick.domain, pick.target) or (
            guard is not None and not guard(state, pick.domain, pick.target)
        ):
            return None
        run.take(state, _balance_pick(state, pick.domain, pick.target, ctx.goal))
    excess, level = _excess(state.loads(), ctx.goal)
    return (state, run) if excess <= _EPS * max(level, 1.0) else None


def _prune(
    state: _State, run: _Run, done_state: _State, done: _Run, ctx: _Context, guard: Guard | None
) -> tuple[_State, _Run]:
    """The final check of a greedy pass that met the goal: drop, largest first, every move
    the goal does not need (greedy steps taken early can be made redundant by later ones)."""
    keep = done.picks[len(run.picks) :]
    result = _replay(state, run, keep, ctx, guard)
    if result is None:  # not expected: the pass met the goal with these very moves
        return done_state, done
    for pick in sorted(keep, key=lambda p: (-p.points, p.domain)):
        trial = [p for p in keep if p is not pick]
        replayed = _replay(state, run, trial, ctx, guard)
        if replayed is not None:
            keep, result = trial, replayed
    pruned_state, pruned_run = result
    pruned_run.deferred = {**done.deferred, **pruned_run.deferred}
    return pruned_state, pruned_run


def _balance_goal(
    state: _State, run: _Run, ctx: _Context, guard: Guard | None
) -> tuple[_State, _Run]:
    """The better of a per-point and a per-move greedy pass (goal met, then fewest points),
    each pruned of the moves the goal turns out not to need."""
    outcomes = []
    for per_point in (True, False):
        trial_state, trial_run = state.copy(), run.copy()
        met = _balance_pass(trial_state, trial_run, ctx, guard, per_point)
        if met:
            trial_state, trial_run = _prune(state, run, trial_state, trial_run, ctx, guard)
        added = trial_run.picks[len(run.picks) :]
        outcomes.append(
            (
                (
                    not met,
                    0.0 if met else _ratio(trial_state.loads()),
                    sum(p.points for p in added),
                    len(added),
                ),
                trial_state,
                trial_run,
                met,
            )
        )
    _, best_state, best_run, met = min(outcomes, key=lambda o: o[0])
    if not met and len(state.names) > 1:
        ratio = _ratio(best_state.loads())
        best_run.defer(
            "balance",
            f"the balance goal max/mean <= {ctx.goal:.2f} is not reached by this run: the best "
            f"allowed moves leave {ratio:.2f} (limits, pinned domains, excluded clusters, "
            "capacity or domains too hot to place)",
        )
    return best_state, best_run


def _consolidation_goal(state: _State, run: _Run, ctx: _Context) -> None:
    """Co-locate small cold domains on one cluster so the clusters they sat on are freed."""
    ids = list(state.by_id)
    if len(state.names) < 2 or not ids:
        return
    mean_qps = sum(state.by_id[d].qps for d in ids) / len(ids)
    if mean_qps <= 0:
        return  # no load figures: nothing says which domains are cold
    sizes = sorted(state.by_id[d].points for d in ids)
    median = sizes[len(sizes) // 2]

    def cold_small(domain: str) -> bool:
        d = state.by_id[domain]
        return d.qps <= COLD_SHARE * mean_qps and d.points <= median

    freed: set[str] = set()
    receivers: set[str] = set()
    sources = [
        c for c in state.names if state.members(c) and all(cold_small(d) for d in state.members(c))
    ]
    for source in sorted(
        sources, key=lambda c: (sum(state.by_id[d].points for d in state.members(c)), c)
    ):
        if source in receivers:
            continue
        domains = state.members(source)
        if any(not ctx.movable(run, d) for d in domains):
            continue
        points = sum(state.by_id[d].points for d in domains)
        options = []
        for target in state.names:
            if (
                target in (source, *freed)
                or target in ctx.constraints.excluded_clusters
                or not state.members(target)
            ):
                continue
            trial = state.copy()
            ok = True
            for domain in domains:
                if not trial.fits(domain, target, ctx.thresholds.capacity_usage):
                    ok = False
                    break
                trial.move(domain, target)
            if not ok:
                continue
            excess, level = _excess(trial.loads(), ctx.goal)
            if trial.loads()[target] > level + _EPS:
                continue  # freeing a cluster must not break the balance goal
            cold_there = sum(1 for d in state.members(target) if cold_small(d))
            options.append((-cold_there, excess, trial.loads()[target], target))
        if not options:
            continue
        target = min(options)[3]
        if run.moves_left < len(domains) or (
            run.points_left is not None and points > run.points_left
        ):
            run.defer(
                f"free:{source}",
                f"freeing cluster {source!r} ({len(domains)} moves, {points:,} points) is held "
                "back: it needs more moves or points than the run has left",
            )
            continue
        for domain in sorted(domains):
            d = state.by_id[domain]
            run.take(
                state,
                _Pick(
                    domain,
                    source,
                    target,
                    d.points,
                    f"domains: co-locate small cold domain {domain} ({d.qps:.2f} queries/s, "
                    f"{d.points:,} points) with the cold domains on {target!r} to free cluster "
                    f"{source!r}",
                    PRIORITY_DOMAIN,
                ),
            )
        freed.add(source)
        receivers.add(target)


def _advice(state: _State, ctx: _Context, report: LoadReport) -> list[Move]:
    """Split a domain too hot or too big for any cluster; re-home a domain whose recall dropped."""
    advice: list[Move] = []
    loads = {c: state.qps[c] / state.scale[c] for c in state.names}
    mean = sum(loads.values()) / len(loads) if loads else 0.0
    level = ctx.goal * mean
    usage = ctx.thresholds.capacity_usage
    for domain, d in state.by_id.items():
        reasons = []
        if len(state.names) > 1 and mean > 0:
            coolest = min(d.qps / state.scale[c] for c in state.names)
            if coolest > level + _EPS:
                reasons.append(
                    f"domain {domain} alone carries {coolest / mean:.2f}x the mean cluster load, "
                    f"above the balance goal {ctx.goal:.2f}x on any cluster"
                )
        too_big = all(
            (cap.memory_bytes is not None and d.memory_bytes > usage * cap.memory_bytes)
            or (cap.disk_bytes is not None and d.disk_bytes > usage * cap.disk_bytes)
            for cap in (state.caps[c] for c in state.names)
        )
        if too_big and state.names:
            reasons.append(
                f"domain {domain} ({d.points:,} points, {d.memory_bytes / 2**20:,.0f} MiB) does "
                f"not fit within {usage:.0%} of any cluster's capacity"
            )
        if reasons:
            advice.append(
                Move(
                    domain=domain,
                    source=state.origin[domain],
                    target=None,
                    points=d.points,
                    kind="split",
                    reason="; ".join(reasons)
                    + ": change the DomainMap's bounds (raise spec.bounds.maxDomains or "
                    "mergeSimilarity) so discovery splits it into domains that can be placed",
                    priority=PRIORITY_DOMAIN,
                    wave=0,
                    start_after_s=0.0,
                    duration_s=0.0,
                    executable=False,
                )
            )
    for violation in report.violations:
        if violation.kind != "accuracy_drop" or violation.subject not in state.by_id:
            continue
        d = state.by_id[violation.subject]
        advice.append(
            Move(
                domain=d.domain,
                source=state.origin[d.domain],
                target=None,
                points=d.points,
                kind="rehome",
                reason=f"accuracy: {violation.message}: re-analyse the DomainMap so discovery "
                "re-labels the drifted points into the domains they now belong to",
                priority=PRIORITY_DOMAIN,
                wave=0,
                start_after_s=0.0,
                duration_s=0.0,
                executable=False,
            )
        )
    return advice


# --------------------------------------------------------------------------- schedule


def _schedule(picks: Sequence[_Pick], constraints: Constraints) -> list[Move]:
    """Waves of at most max_concurrent_migrations moves; a move onto a cluster waits for the
    moves off it planned before (its room is freed only when they finish); waves run one after
    the other."""
    ordered = sorted(enumerate(picks), key=lambda item: (item[1].priority, item[0]))
    waves: list[list[_Pick]] = []
    wave_of: list[tuple[_Pick, int]] = []
    for _, pick in ordered:
        earliest = 1 + max(
            (w for earlier, w in wave_of if earlier.source == pick.target), default=-1
        )
        wave = earliest
        while wave < len(waves) and len(waves[wave]) >= constraints.max_concurrent_migrations:
            wave += 1
        while len(waves) <= wave:
            waves.append([])
        waves[wave].append(pick)
        wave_of.append((pick, wave))
    rate = constraints.migration_points_per_second
    starts, clock = [], 0.0
    for members in waves:
        starts.append(clock)
        clock += max((p.points / rate for p in members), default=0.0)
    return [
        Move(
            domain=pick.domain,
            source=pick.source,
            target=pick.target,
            points=pick.points,
            kind="move",
            reason=pick.reason,
            priority=pick.priority,
            wave=wave,
            start_after_s=starts[wave],
            duration_s=pick.points / rate,
        )
        for pick, wave in sorted(wave_of, key=lambda item: (item[1], item[0].priority))
    ]


# --------------------------------------------------------------------------- entry points


def _fleet(
    report: LoadReport, capacities: Sequence[ClusterCapacity]
) -> tuple[list[ClusterCapacity], list[str]]:
    caps = list(capacities)
    named = {c.name for c in caps}
    for cluster in report.clusters:
        if cluster.name not in named:
            caps.append(ClusterCapacity(cluster.name))
            named.add(cluster.name)
    for domain in report.domains:
        if domain.cluster not in named:
            caps.append(ClusterCapacity(domain.cluster))
            named.add(domain.cluster)
    return caps, [c.name for c in caps]


def _proposal(
    strategy: str,
    moves: Sequence[Move],
    before: LoadReport,
    caps: Sequence[ClusterCapacity],
    thresholds: Thresholds,
    deferred: Sequence[str],
    starts_at: datetime | None,
) -> Proposal:
    after = analyze_load(apply_moves(before.domains, moves, capacities=caps), caps, thresholds)
    return Proposal(
        strategy=strategy,
        moves=tuple(moves),
        before=before,
        after=after,
        points_moved=sum(m.points for m in moves if m.executable),
        deferred=tuple(deferred),
        starts_at=starts_at,
    )


def plan_rebalance(
    report: LoadReport,
    capacities: Sequence[ClusterCapacity],
    *,
    strategy: str = "hybrid",
    thresholds: Thresholds = _DEFAULT_THRESHOLDS,
    constraints: Constraints = Constraints(),
    now: datetime,
) -> Proposal:
    """A proposal for ``report``'s fleet under ``strategy`` within ``constraints``.

    ``before`` is the load of ``report.domains`` re-analysed with these
    capacities and thresholds, so before and after compare like for like.
    Raises :class:`PlanError` for an unknown strategy or bad arguments.
    """
    if strategy not in STRATEGIES:
        raise PlanError(
            f"unknown rebalancing strategy {strategy!r}; accepted: {', '.join(STRATEGIES)}"
        )
    if not isinstance(thresholds, Thresholds) or not isinstance(constraints, Constraints):
        raise PlanError("thresholds and constraints must be Thresholds and Constraints values")
    now = _utc(now)
    caps, names = _fleet(report, capacities)
    before = analyze_load(report.domains, caps, thresholds)
    state = _State(before.domains, {c.name: c for c in caps}, names)
    ctx = _Context(
        thresholds=thresholds,
        constraints=constraints,
        limits={c.name: c.latency_limit_ms for c in before.clusters},
    )
    run = _Run(constraints.max_moves_per_run, constraints.max_points_per_run)
    advice: list[Move] = []
    if strategy in ("capacity_based", "hybrid"):
        _capacity_goal(state, run, ctx)
    if strategy in ("latency_based", "hybrid"):
        _latency_goal(state, run, ctx)
    if strategy == "load_based":
        state, run = _balance_goal(state, run, ctx, None)
    if strategy == "hybrid":
        state, run = _balance_goal(state, run, ctx, ctx.hybrid_guard)
    if strategy == "domain_based":
        _consolidation_goal(state, run, ctx)
    if strategy in ("domain_based", "hybrid"):
        advice = _advice(state, ctx, before)

    moves = _schedule(run.picks, constraints)
    deferred = list(run.deferred.values())
    starts_at = next_window_start(constraints.maintenance_windows, now)
    if starts_at is not None and moves:
        closes = _window_end(constraints.maintenance_windows, starts_at)
        if closes is not None:
            open_s = (closes - starts_at).total_seconds()
            late = [m for m in moves if m.start_after_s >= open_s]
            for move in late:
                deferred.append(
                    f"moving {move.domain} {move.source!r} -> {move.target!r} would start "
                    f"{move.start_after_s / 3600:.1f} h into a maintenance window that is open "
                    f"{open_s / 3600:.1f} h: left for the next window"
                )
            moves = [m for m in moves if m.start_after_s < open_s]
    return _proposal(strategy, [*moves, *advice], before, caps, thresholds, deferred, starts_at)


def naive_rebalance(
    report: LoadReport,
    capacities: Sequence[ClusterCapacity],
    *,
    thresholds: Thresholds = _DEFAULT_THRESHOLDS,
) -> Proposal:
    """The baseline rule: when imbalance > the threshold, move the hottest domain of the
    hottest cluster to the coolest cluster (one move, no other check)."""
    caps, names = _fleet(report, capacities)
    before = analyze_load(report.domains, caps, thresholds)
    moves: list[Move] = []
    if len(names) > 1 and before.imbalance > thresholds.load_imbalance + _EPS:
        hottest = max(before.clusters, key=lambda c: c.load)
        coolest = min((c for c in before.clusters if c.name != hottest.name), key=lambda c: c.load)
        domains = [d for d in before.domains if d.cluster == hottest.name]
        if domains:
            top = max(domains, key=lambda d: d.qps)
            moves.append(
                Move(
                    domain=top.domain,
                    source=hottest.name,
                    target=coolest.name,
                    points=top.points,
                    kind="move",
                    reason=f"naive: hottest domain of the hottest cluster {hottest.name!r} to the "
                    f"coolest {coolest.name!r}",
                    priority=PRIORITY_BALANCE,
                    wave=0,
                    start_after_s=0.0,
                    duration_s=0.0,
                )
            )
    return _proposal("naive", moves, before, caps, thresholds, (), None)
