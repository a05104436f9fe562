"""Patterns over time between two analyses of the same source (DiscoverPatterns).

Why this exists: data drifts. Comparing the domains of one analysis with the
previous one tells operators (and the rebalancer) which domains grow, which
centroids move, which domains emerge and which vanish — the signal behind the
DomainMap's ``Drifted`` condition. Pure: ids are matched by equality (discovery
already keeps ids stable across analyses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from librarian.core.discovery import Domain


@dataclass(frozen=True)
class DomainChange:
    """How one domain present in both analyses changed."""

    id: str
    name: str
    previous_size: int
    size: int
    growth: float  # size / previous_size - 1 (0.25 = grew by a quarter)
    drift: float  # 1 - cosine(previous centroid, centroid)


@dataclass(frozen=True)
class PatternReport:
    """Growth, drift, emerging and vanished domains between two analyses."""

    changes: list[DomainChange] = field(default_factory=list)
    emerging: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    max_drift: float = 0.0
    drift_threshold: float = 0.05

    @property
    def drifted(self) -> bool:
        """True when a centroid moved more than the threshold or the set of domains changed."""
        return self.max_drift > self.drift_threshold or bool(self.emerging or self.vanished)

    def summary(self) -> str:
        if not self.changes and not self.emerging and not self.vanished:
            return "first analysis"
        parts = [f"max centroid drift {self.max_drift:.3f}"]
        if self.emerging:
            parts.append(f"{len(self.emerging)} emerging ({', '.join(self.emerging)})")
        if self.vanished:
            parts.append(f"{len(self.vanished)} vanished ({', '.join(self.vanished)})")
        growing = [c for c in self.changes if abs(c.growth) >= 0.2]
        if growing:
            parts.append("size changes: " + ", ".join(f"{c.name} {c.growth:+.0%}" for c in growing))
        return "; ".join(parts)


def discover_patterns(
    previous: Sequence[Domain],
    current: Sequence[Domain],
    *,
    drift_threshold: float = 0.05,
) -> PatternReport:
    """Compare two analyses; an empty ``previous`` reports nothing as drifted."""
    if not previous:
        return PatternReport(drift_threshold=drift_threshold)
    before = {d.id: d for d in previous}
    after = {d.id: d for d in current}
    changes = []
    for domain_id, now in after.items():
        old = before.get(domain_id)
        if old is None:
            continue
        a = np.asarray(old.centroid, dtype=np.float64)
        b = np.asarray(now.centroid, dtype=np.float64)
        cosine = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)
        changes.append(
            DomainChange(
                id=domain_id,
                name=now.name,
                previous_size=old.size,
                size=now.size,
                growth=now.size / max(old.size, 1) - 1.0,
                drift=max(0.0, 1.0 - cosine),
            )
        )
    return PatternReport(
        changes=changes,
        emerging=sorted(set(after) - set(before)),
        vanished=sorted(set(before) - set(after)),
        max_drift=max((c.drift for c in changes), default=0.0),
        drift_threshold=drift_threshold,
    )
