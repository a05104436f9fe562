"""Online quality: the router's own estimate of its recall@k, from shadow queries.

Why this exists: routing trades recall for fewer domains asked; nobody should
have to trust that trade blindly. A configurable share of queries is also run
against every domain in the background; comparing the routed answer with the
exhaustive one gives an estimated recall@k (fed to rebalancing's
``accuracy_drop``) and the training data of the ``learned`` fusion.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from librarian.core.fusion import FusionError, FusionModel, Hit, PointId

__all__ = ["RecallEstimator"]


@dataclass
class RecallEstimator:
    """Recall@k of routed answers over a sliding window of shadow comparisons."""

    fraction: float = 0.05
    window: int = 1000
    seed: int = 0
    min_model_samples: int = 50
    _recalls: deque[float] = field(default_factory=deque)
    _observations: deque[tuple[list[list[Hit]], list[PointId]]] = field(default_factory=deque)
    _random: random.Random = field(init=False)
    model: FusionModel | None = None
    compared: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._recalls = deque(maxlen=self.window)
        self._observations = deque(maxlen=self.window)

    def should_shadow(self) -> bool:
        return self.fraction > 0 and self._random.random() < self.fraction

    def record(
        self,
        routed: Sequence[PointId],
        exhaustive: Sequence[PointId],
        routed_lists: Sequence[Sequence[Hit]] = (),
    ) -> float | None:
        """Compare one routed answer with the exhaustive one; the query's recall (None if empty)."""
        if not exhaustive:
            return None
        recall = len(set(routed) & set(exhaustive)) / len(exhaustive)
        self._recalls.append(recall)
        self.compared += 1
        if routed_lists:
            self._observations.append(([list(hits) for hits in routed_lists], list(exhaustive)))
        return recall

    @property
    def estimate(self) -> float | None:
        return sum(self._recalls) / len(self._recalls) if self._recalls else None

    @property
    def samples(self) -> int:
        return len(self._recalls)

    def fit_model(self, higher_is_better: bool = True) -> FusionModel | None:
        """(Re)fit the learned fusion from the shadow observations, once there are enough."""
        if len(self._observations) < self.min_model_samples:
            return self.model
        try:
            self.model = FusionModel(higher_is_better).fit(list(self._observations))
        except FusionError:
            return self.model
        return self.model
