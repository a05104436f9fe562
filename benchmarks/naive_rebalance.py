"""The naive rebalancing rule the planner is measured against (not product code).

Why this exists: ``bench_rebalancing.py`` compares the planner with what a
simple operator would do: when imbalance is over the threshold, move the
hottest domain of the hottest cluster to the coolest cluster, one move per
run, with no other check. It returns a planner :class:`Proposal`, so both are
applied and scored the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from librarian.core.load import ClusterCapacity, LoadReport, Thresholds, analyze_load
from librarian.core.planner import Move, Proposal
from librarian.core.planner.moves import PRIORITY_BALANCE
from librarian.core.planner.proposal import build_proposal, complete_fleet

__all__ = ["naive_rebalance"]

_EPS = 1e-9
_DEFAULT_THRESHOLDS = Thresholds()


def naive_rebalance(
    report: LoadReport,
    capacities: Sequence[ClusterCapacity],
    *,
    thresholds: Thresholds = _DEFAULT_THRESHOLDS,
) -> Proposal:
    """The baseline rule: when imbalance > the threshold, move the hottest domain of the
    hottest cluster to the coolest cluster (one move, no other check)."""
    caps, names = complete_fleet(report, capacities)
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
    return build_proposal("naive", moves, before, caps, thresholds, (), None)
