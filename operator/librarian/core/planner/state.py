"""The fleet as a plan grows, the run's budget, and the chooser of the best candidate move.

Why this exists: the goals (capacity, latency, balance, consolidation) all
try moves on the same picture of the fleet (where each domain is, what each
cluster carries, what the latency model expects), spend the same budget (moves
and points per run) and record why a move was held back the same way. Keeping
that here leaves each goal with its own rule only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from librarian.core.load import ClusterCapacity, DomainLoad, Thresholds, load_scale
from librarian.core.planner.constraints import Constraints
from librarian.core.planner.moves import modelled_p95, utilization

__all__ = [
    "EPS",
    "Choice",
    "Context",
    "Guard",
    "Pick",
    "PlanState",
    "Run",
    "excess",
    "pick_key",
    "ratio",
]

EPS = 1e-9


class PlanState:
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
        self.before_u = {c: utilization(self.qps[c], caps[c].max_qps) for c in names}

    def copy(self) -> PlanState:
        other = object.__new__(PlanState)
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
        now_u = utilization(qps, self.caps[cluster].max_qps)
        pairs = [
            (d.qps, p)
            for d in members
            if (p := modelled_p95(d, self.before_u[self.origin[d.domain]], now_u)) is not None
        ]
        if not pairs:
            return None
        weight = sum(q for q, _ in pairs)
        if weight <= 0:
            return sum(p for _, p in pairs) / len(pairs)
        return sum(q * p for q, p in pairs) / weight


def excess(loads: Mapping[str, float], goal: float) -> tuple[float, float]:
    """(load above the goal summed over clusters, the goal's load level)."""
    mean = sum(loads.values()) / len(loads) if loads else 0.0
    level = goal * mean
    return sum(max(0.0, value - level) for value in loads.values()), level


def ratio(loads: Mapping[str, float]) -> float:
    """max/mean of the loads (1.0 when they are all 0)."""
    mean = sum(loads.values()) / len(loads) if loads else 0.0
    return max(loads.values()) / mean if mean > 0 else 1.0


@dataclass
class Pick:
    """A move a goal chose, before the schedule gives it a wave."""

    domain: str
    source: str
    target: str
    points: int
    reason: str
    priority: int


@dataclass
class Run:
    """The budget of one run and what it has chosen so far."""

    moves_left: int
    points_left: int | None
    picks: list[Pick] = field(default_factory=list)
    deferred: dict[str, str] = field(default_factory=dict)

    def copy(self) -> Run:
        return Run(self.moves_left, self.points_left, list(self.picks), dict(self.deferred))

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

    def take(self, state: PlanState, pick: Pick) -> None:
        self.picks.append(pick)
        self.moves_left -= 1
        if self.points_left is not None:
            self.points_left -= pick.points
        state.move(pick.domain, pick.target)

    def defer(self, key: str, message: str) -> None:
        self.deferred.setdefault(key, message)


Guard = Callable[[PlanState, str, str], bool]


@dataclass
class Context:
    """What every goal of one plan judges by: thresholds, constraints, latency limits."""

    thresholds: Thresholds
    constraints: Constraints
    limits: Mapping[str, float | None]  # cluster -> latency limit (ms)
    relieved: set[str] = field(default_factory=set)  # clusters latency moves relieved

    @property
    def goal(self) -> float:
        return 1.0 + self.thresholds.load_imbalance

    def movable(self, run: Run, domain: str) -> bool:
        return domain not in self.constraints.pinned_domains and domain not in run.moved

    def target_ok(self, state: PlanState, domain: str, target: str) -> bool:
        return (
            target != state.home[domain]
            and target not in self.constraints.excluded_clusters
            and state.fits(domain, target, self.thresholds.capacity_usage)
        )

    def latency_ok(self, state: PlanState, domain: str, target: str) -> bool:
        """Adding ``domain`` keeps ``target`` within its latency limit (when it has one)."""
        limit = self.limits.get(target)
        if limit is None:
            return True
        now = state.p95(target)
        if now is not None and now > limit:
            return False
        after = state.p95(target, extra=domain)
        return after is None or after <= limit

    def hybrid_guard(self, state: PlanState, domain: str, target: str) -> bool:
        """Balance moves in hybrid: never onto a cluster latency moves relieved or would degrade."""
        return target not in self.relieved and self.latency_ok(state, domain, target)


def pick_key(score: float, points: int, tie: float, domain: str, target: str) -> tuple[Any, ...]:
    """Ordering of candidates: best score, then fewest points, then the tie-breaker, then names."""
    return (-score, points, tie, domain, target)


@dataclass
class Choice:
    """The best allowed candidate move so far, and the best one the run's limits held back."""

    best: tuple[tuple[Any, ...], Pick] | None = None
    held: tuple[tuple[Any, ...], str, str] | None = None  # key, domain, why

    def offer(
        self, key: tuple[Any, ...], domain: str, why: str | None, pick: Callable[[], Pick]
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
