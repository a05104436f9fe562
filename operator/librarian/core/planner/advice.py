"""Advice the planner cannot carry out itself: split a domain, or re-home its drifted points.

Why this exists: some problems are not fixed by moving a domain. A domain too
hot for any cluster (above the balance goal wherever it goes) or too big for
any cluster's capacity must be split by discovery; a domain whose recall
dropped must be re-analysed so its drifted points are re-labelled. These come
back as non-executable moves (``split``, ``rehome``) with the reason in words.
"""

from __future__ import annotations

from librarian.core.load import DomainLoad, LoadReport
from librarian.core.planner.moves import PRIORITY_DOMAIN, Move
from librarian.core.planner.state import EPS, Context, PlanState

__all__ = ["advice"]


def advice(state: PlanState, ctx: Context, report: LoadReport) -> list[Move]:
    """Split a domain too hot or too big for any cluster; re-home a domain whose recall dropped."""
    found: list[Move] = []
    for domain, d in state.by_id.items():
        reasons = _split_reasons(state, ctx, domain, d)
        if reasons:
            found.append(
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
        found.append(
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
    return found


def _split_reasons(state: PlanState, ctx: Context, domain: str, d: DomainLoad) -> list[str]:
    """Why ``domain`` cannot be placed as it is: too hot or too big for every cluster."""
    loads = {c: state.qps[c] / state.scale[c] for c in state.names}
    mean = sum(loads.values()) / len(loads) if loads else 0.0
    level = ctx.goal * mean
    usage = ctx.thresholds.capacity_usage
    reasons = []
    if len(state.names) > 1 and mean > 0:
        coolest = min(d.qps / state.scale[c] for c in state.names)
        if coolest > level + EPS:
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
    return reasons
