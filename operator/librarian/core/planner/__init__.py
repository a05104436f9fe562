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

Layout: :mod:`.constraints` (limits and maintenance windows), :mod:`.moves`
(a move, the latency model, applying moves), :mod:`.state` (the fleet as a
plan grows, the run's budget, the candidate chooser), one module per goal
(:mod:`.capacity`, :mod:`.latency`, :mod:`.balance`, :mod:`.consolidation`),
:mod:`.advice`, :mod:`.schedule` (waves and windows), :mod:`.proposal` and
:mod:`.plan` (the entry point).
"""

from librarian.core.planner.constraints import (
    Constraints,
    MaintenanceWindow,
    PlanError,
    next_window_start,
    parse_window,
)
from librarian.core.planner.moves import MOVE_KINDS, UTILIZATION_CAP, Move, apply_moves
from librarian.core.planner.plan import STRATEGIES, plan_rebalance
from librarian.core.planner.proposal import Proposal

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
    "next_window_start",
    "parse_window",
    "plan_rebalance",
]
