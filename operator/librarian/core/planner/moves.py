"""A proposed move, and the arithmetic of moves: the placement and the latency they lead to.

Why this exists: every goal, the schedule and the proposal speak of the same
step (a domain from one cluster to another, or advice), and the expected
figures after a plan come from one latency model:

a cluster's utilization is u = qps / max_qps, capped at 0.95, and a domain's
p95 scales with 1 / (1 - u) of the cluster serving it, so a domain that
moves from cluster A (utilization u_A before) to B (utilization u_B after) is
expected at ``p95 * (1 - u_A) / (1 - u_B)``; domains that stay see their
cluster's utilization change the same way. The model assumes the same
service time at zero load on every cluster. When ``max_qps`` (or a p95) is
unknown, the p95 is expected unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from librarian.core.load import ClusterCapacity, DomainLoad
from librarian.core.planner.constraints import PlanError

__all__ = [
    "MOVE_KINDS",
    "PRIORITY_BALANCE",
    "PRIORITY_CAPACITY",
    "PRIORITY_DOMAIN",
    "PRIORITY_LATENCY",
    "UTILIZATION_CAP",
    "Move",
    "apply_moves",
    "modelled_p95",
    "utilization",
]

MOVE_KINDS = ("move", "split", "rehome")
UTILIZATION_CAP = 0.95

PRIORITY_CAPACITY = 0
PRIORITY_LATENCY = 1
PRIORITY_BALANCE = 2
PRIORITY_DOMAIN = 3


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


def utilization(qps: float, max_qps: float | None) -> float | None:
    """qps / max_qps capped at :data:`UTILIZATION_CAP`; None when ``max_qps`` is unknown."""
    if not max_qps:
        return None
    return min(qps / max_qps, UTILIZATION_CAP)


def modelled_p95(domain: DomainLoad, before_u: float | None, now_u: float | None) -> float | None:
    """``domain``'s p95 once its cluster's utilization went from ``before_u`` to ``now_u``."""
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
        p95 = modelled_p95(
            old,
            utilization(before.get(old.cluster, 0.0), max_qps.get(old.cluster)),
            utilization(after.get(new.cluster, 0.0), max_qps.get(new.cluster)),
        )
        result.append(new if p95 == new.p95_ms else replace(new, p95_ms=p95))
    return result
