"""Rebalancing: the planner against the naive rule on a fleet whose load drifts.

A simulated fleet (seeded, synthetic): 5 clusters, 32 domains whose sizes are
drawn from a log-normal (heavy-tailed: a few domains hold much of the data),
first placed by points the way ``specialize: auto`` does. Query load is
Zipf-like over the domains (bigger domains tend to be hotter), and it drifts:
every 8 simulated hours a few domains trade popularity ranks (faded in over 3
hours), each domain follows a daily cycle in the time zone of its users, and
every hour carries some noise. Latency follows the planner's own model
(p95 = service time / (1 - utilization)); memory is estimated from points; each cluster has room for twice an even
share of the data (and for the largest domain).

Every simulated hour both policies see the current load of their own
placement and act on it:
- the planner: ``plan_rebalance(strategy="hybrid")`` with the default
  thresholds and constraints (max/mean goal 1.3, at most 10 moves per run,
  capacity kept under 85%);
- the naive rule: when imbalance > 0.3, move the hottest domain of the
  hottest cluster to the coolest cluster (``naive_rebalance.py`` here).
Each applies its executable moves to its own copy of the placement.

Printed for both: points moved, moves, max/mean cluster load at the end, the
mean and p95 of max/mean over the hours after a warm-up (after acting, and
"as found" before acting: what the fleet lived with during the hour), the
share of hours within 1.3, hours with a capacity breach, and the ratio of
points moved (planner / naive).

Goal: the planner ends within max/mean 1.3, stays within it in >= 90% of the
hours after the warm-up, and moves fewer points than the naive rule.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from librarian.core.load import ClusterCapacity, DomainLoad, Thresholds, analyze_load
from librarian.core.mapping import estimate_memory_bytes
from librarian.core.placement import place_domains
from librarian.core.planner import Constraints, Proposal, apply_moves, plan_rebalance
from naive_rebalance import naive_rebalance

GOAL_RATIO = 1.3
GOAL_SHARE = 0.9
DIM = 384
CLUSTERS = ("c0", "c1", "c2", "c3", "c4")


class Workload:
    """Seeded, drifting, Zipf-like query load over the domains."""

    def __init__(self, sizes: np.ndarray, rng: np.random.Generator, *, total_qps: float) -> None:
        n = len(sizes)
        self.rng = rng
        self.total_qps = total_qps
        self.zipf = 1.0 / np.arange(1, n + 1) ** 0.7
        # Bigger domains tend to be hotter: rank by log size plus noise.
        order = np.argsort(-(np.log(sizes) + rng.normal(0.0, 1.5, n)))
        self.rank = np.empty(n, dtype=int)
        self.rank[order] = np.arange(n)
        self.previous = self.rank.copy()
        self.changed_at = -100.0
        self.phase = rng.choice([0.0, 8.0, 16.0], n)  # users' time zone (hours)
        self.base_ms = rng.uniform(8.0, 15.0, n)  # service time at no load

    def _drift(self, hour: int) -> None:
        if hour > 0 and hour % 8 == 0:
            self.previous = self.rank.copy()
            self.changed_at = hour
            for _ in range(3):
                a, b = self.rng.choice(len(self.rank), 2, replace=False)
                if min(self.rank[a], self.rank[b]) < len(self.rank) // 2:
                    self.rank[a], self.rank[b] = self.rank[b], self.rank[a]
                else:  # bring a cold domain up among the hot ones
                    hot = int(np.argmin(np.abs(self.rank - self.rng.integers(0, 6))))
                    self.rank[a], self.rank[hot] = self.rank[hot], self.rank[a]

    def qps(self, hour: int) -> np.ndarray:
        self._drift(hour)
        fade = min(1.0, (hour - self.changed_at) / 3.0)
        weight = (1.0 - fade) * self.zipf[self.previous] + fade * self.zipf[self.rank]
        daily = 1.0 + 0.4 * np.sin(2 * np.pi * (hour - self.phase) / 24.0)
        noise = self.rng.lognormal(0.0, 0.05, len(weight))
        raw = weight * daily * noise
        fleet = 1.0 + 0.25 * np.sin(2 * np.pi * hour / 24.0)
        return self.total_qps * fleet * raw / raw.sum()


def observe(
    placement: dict[str, str],
    ids: list[str],
    sizes: np.ndarray,
    qps: np.ndarray,
    workload: Workload,
    capacities: dict[str, ClusterCapacity],
) -> list[DomainLoad]:
    """The figures the router and the clusters would report for this placement."""
    cluster_qps = dict.fromkeys(CLUSTERS, 0.0)
    for i, domain in enumerate(ids):
        cluster_qps[placement[domain]] += float(qps[i])
    loads = []
    for i, domain in enumerate(ids):
        cluster = placement[domain]
        utilization = min(cluster_qps[cluster] / (capacities[cluster].max_qps or 1.0), 0.95)
        memory = estimate_memory_bytes(int(sizes[i]), DIM)
        loads.append(
            DomainLoad(
                domain=domain,
                cluster=cluster,
                qps=float(qps[i]),
                p95_ms=float(workload.base_ms[i] / (1.0 - utilization)),
                points=int(sizes[i]),
                memory_bytes=memory,
                disk_bytes=memory,
            )
        )
    return loads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=int, default=48)
    parser.add_argument("--domains", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=6, help="hours left out of the averages")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    sizes = np.maximum(1_000, rng.lognormal(10.5, 1.1, args.domains)).astype(np.int64)
    ids = [f"d{i}" for i in range(args.domains)]
    total_qps = 2_000.0
    # Room for twice an even share, and for the largest domain at 60% of a cluster.
    room = max(
        2.0 * sum(estimate_memory_bytes(int(s), DIM) for s in sizes) / len(CLUSTERS),
        estimate_memory_bytes(int(sizes.max()), DIM) / 0.6,
    )
    capacities = {
        name: ClusterCapacity(
            name=name,
            memory_bytes=int(room),
            disk_bytes=int(room),
            max_qps=1.6 * total_qps / len(CLUSTERS),
            baseline_p95_ms=20.0,
        )
        for name in CLUSTERS
    }
    caps = list(capacities.values())
    thresholds = Thresholds()
    workload = Workload(sizes, rng, total_qps=total_qps)
    initial = place_domains({d: int(s) for d, s in zip(ids, sizes, strict=True)}, CLUSTERS)
    placements = {"planner": dict(initial), "naive": dict(initial)}
    stats = {
        name: {"points": 0, "moves": 0, "after": [], "found": [], "breaches": 0, "plan_s": 0.0}
        for name in placements
    }
    clock = datetime(2024, 1, 1, tzinfo=UTC)
    print(
        f"fleet: {len(CLUSTERS)} clusters, {args.domains} domains, {int(sizes.sum()):,} points "
        f"(synthetic log-normal sizes, seed {args.seed}; largest domain "
        f"{int(sizes.max()):,}, median {int(np.median(sizes)):,}); {args.hours} hourly steps "
        f"of drifting Zipf-like load, {total_qps:,.0f} queries/s on average"
    )
    for hour in range(args.hours):
        qps = workload.qps(hour)
        for name, placement in placements.items():
            domains = observe(placement, ids, sizes, qps, workload, capacities)
            report = analyze_load(domains, caps, thresholds)
            tick = time.perf_counter()
            proposal: Proposal
            if name == "planner":
                proposal = plan_rebalance(
                    report,
                    caps,
                    strategy="hybrid",
                    thresholds=thresholds,
                    constraints=Constraints(),
                    now=clock + timedelta(hours=hour),
                )
            else:
                proposal = naive_rebalance(report, caps, thresholds=thresholds)
            stats[name]["plan_s"] += time.perf_counter() - tick
            moved = apply_moves(domains, proposal.moves)
            for domain in moved:
                placement[domain.domain] = domain.cluster
            stats[name]["points"] += proposal.points_moved
            stats[name]["moves"] += len(proposal.executable_moves)
            after = analyze_load(observe(placement, ids, sizes, qps, workload, capacities), caps)
            if any(v.kind == "capacity" for v in after.violations):
                stats[name]["breaches"] += 1
            if hour >= args.warmup:
                stats[name]["after"].append(after.max_mean_ratio)
                stats[name]["found"].append(report.max_mean_ratio)
            stats[name]["final"] = after.max_mean_ratio

    print(
        f"{'policy':<9}{'points moved':>14}{'moves':>7}{'final':>7}{'mean':>7}{'p95':>7}"
        f"{'<=1.3':>7}{'found <=1.3':>13}{'cap. breach h':>15}{'plan ms':>9}"
    )
    for name, s in stats.items():
        after, found = np.array(s["after"]), np.array(s["found"])
        print(
            f"{name:<9}{s['points']:>14,}{s['moves']:>7}{s['final']:>7.2f}{after.mean():>7.2f}"
            f"{np.percentile(after, 95):>7.2f}{np.mean(after <= GOAL_RATIO + 1e-9):>7.0%}"
            f"{np.mean(found <= GOAL_RATIO + 1e-9):>13.0%}{s['breaches']:>15}"
            f"{1e3 * s['plan_s'] / args.hours:>9.1f}"
        )
    planner, naive = stats["planner"], stats["naive"]
    ratio = planner["points"] / naive["points"] if naive["points"] else float("inf")
    print(
        f"mean, p95, <=1.3: max/mean over hours {args.warmup}-{args.hours - 1} after acting; "
        "found: before acting (what the fleet carried until then)"
    )
    print(f"points moved planner/naive: {ratio:.2f}")
    share = float(np.mean(np.array(planner["after"]) <= GOAL_RATIO + 1e-9))
    ok = (
        planner["final"] <= GOAL_RATIO + 1e-9
        and share >= GOAL_SHARE
        and planner["points"] < naive["points"]
    )
    print(
        f"goal planner max/mean <= {GOAL_RATIO} at the end and in >= {GOAL_SHARE:.0%} of the "
        f"hours, fewer points than naive: {'met' if ok else 'MISSED'} "
        f"({time.perf_counter() - started:.1f}s)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
