"""A proposal: the moves and advice of a plan, the load before and as expected after.

Why this exists: whoever shows or approves a plan needs one value that says
what would move, what it would leave, and what the limits held back, with a
stable id to approve it by. The expected load after comes from the latency
model of :mod:`librarian.core.planner.moves` applied to the moved placement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from librarian.core.load import ClusterCapacity, LoadReport, Thresholds, analyze_load
from librarian.core.planner.moves import Move, apply_moves

__all__ = ["Proposal", "build_proposal", "complete_fleet"]


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


def complete_fleet(
    report: LoadReport, capacities: Sequence[ClusterCapacity]
) -> tuple[list[ClusterCapacity], list[str]]:
    """``capacities`` plus an unlimited entry for every other cluster ``report`` names, and the
    clusters' names in that order."""
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


def build_proposal(
    strategy: str,
    moves: Sequence[Move],
    before: LoadReport,
    caps: Sequence[ClusterCapacity],
    thresholds: Thresholds,
    deferred: Sequence[str],
    starts_at: datetime | None,
) -> Proposal:
    """The proposal of ``moves`` from ``before``, its expected load after them included."""
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
