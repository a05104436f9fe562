"""The chosen moves in waves, on a timeline, cut to the maintenance window.

Why this exists: moves are real migrations that take time and load the
clusters, so they run in waves of at most ``max_concurrent_migrations``, one
wave after the other, most urgent goal first; a move onto a cluster waits for
the moves off it planned before it (it may need the room they free). Each
move lasts points / ``migration_points_per_second``. With maintenance windows
the plan starts at the next opening (or now, inside one), and moves that
would start after the window closes are left for the next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from librarian.core.planner.constraints import Constraints, next_window_start, window_end
from librarian.core.planner.moves import Move
from librarian.core.planner.state import Pick

__all__ = ["schedule", "within_window"]


def schedule(picks: Sequence[Pick], constraints: Constraints) -> list[Move]:
    """Waves of at most max_concurrent_migrations moves; a move onto a cluster waits for the
    moves off it planned before (its room is freed only when they finish); waves run one after
    the other."""
    ordered = sorted(enumerate(picks), key=lambda item: (item[1].priority, item[0]))
    waves: list[list[Pick]] = []
    wave_of: list[tuple[Pick, int]] = []
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


def within_window(
    moves: Sequence[Move], constraints: Constraints, now: datetime
) -> tuple[list[Move], list[str], datetime | None]:
    """(the moves that start while the window is open, why the others wait, when the plan
    starts); the start is None without maintenance windows."""
    kept, deferred = list(moves), []
    starts_at = next_window_start(constraints.maintenance_windows, now)
    if starts_at is not None and kept:
        closes = window_end(constraints.maintenance_windows, starts_at)
        if closes is not None:
            open_s = (closes - starts_at).total_seconds()
            late = [m for m in kept if m.start_after_s >= open_s]
            for move in late:
                deferred.append(
                    f"moving {move.domain} {move.source!r} -> {move.target!r} would start "
                    f"{move.start_after_s / 3600:.1f} h into a maintenance window that is open "
                    f"{open_s / 3600:.1f} h: left for the next window"
                )
            kept = [m for m in kept if m.start_after_s < open_s]
    return kept, deferred, starts_at
