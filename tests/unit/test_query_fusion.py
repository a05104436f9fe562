"""Qdrant's prefetch fusion (RRF, DBSF) against qdrant-client's local mode, its reference."""

from __future__ import annotations

import copy
import random

import pytest
from qdrant_client import models
from qdrant_client.hybrid.fusion import (
    distribution_based_score_fusion as reference_dbsf,
)
from qdrant_client.hybrid.fusion import reciprocal_rank_fusion as reference_rrf

from librarian.core.fusion import Hit
from librarian.core.query_fusion import (
    distribution_based_score_fusion,
    reciprocal_rank_fusion,
)


def _lists(seed: int) -> list[list[Hit]]:
    """A few ranked lists over a shared id space (so ids meet), scores decreasing."""
    rng = random.Random(seed)
    lists = []
    for _ in range(rng.randint(1, 4)):
        ids = rng.sample(range(40), rng.randint(1, 15))
        scores = sorted((rng.uniform(-1, 1) for _ in ids), reverse=True)
        if rng.random() < 0.2:  # ties
            scores = [round(s, 1) for s in scores]
        lists.append([Hit(i, s) for i, s in zip(ids, scores, strict=True)])
    return lists


def _scored(lists: list[list[Hit]]) -> list[list[models.ScoredPoint]]:
    return [[models.ScoredPoint(id=h.id, version=0, score=h.score) for h in hits] for hits in lists]


def _pairs(points: list[models.ScoredPoint]) -> list[tuple[int | str, float]]:
    return [(p.id, round(p.score, 9)) for p in points]


def _ours(hits: list[Hit]) -> list[tuple[int | str, float]]:
    return [(h.id, round(h.score, 9)) for h in hits]


@pytest.mark.parametrize("seed", range(40))
def test_rrf_ranks_and_scores_as_local_mode(seed: int) -> None:
    lists = _lists(seed)
    rng = random.Random(seed)
    k = rng.choice([None, 1, 2, 60])
    weights = None if rng.random() < 0.5 else [rng.choice([0.0, 0.5, 1.0, 3.0]) for _ in lists]
    limit = rng.randint(1, 20)
    expected = reference_rrf(_scored(lists), limit=limit, ranking_constant_k=k, weights=weights)
    assert _ours(reciprocal_rank_fusion(lists, limit=limit, k=k, weights=weights)) == _pairs(
        expected
    )


@pytest.mark.parametrize("seed", range(40))
def test_dbsf_ranks_and_scores_as_local_mode(seed: int) -> None:
    lists = _lists(seed)
    limit = random.Random(seed).randint(1, 20)
    expected = reference_dbsf(copy.deepcopy(_scored(lists)), limit=limit)
    assert _ours(distribution_based_score_fusion(lists, limit=limit)) == _pairs(expected)


def test_two_lists_of_seven_rank_as_qdrant_does() -> None:
    """Qdrant's constant is 2 (with 60 these lists fuse to [1, 7, 8, 2, 3])."""
    first = [Hit(i, 1.0 - n / 10) for n, i in enumerate([1, 2, 3, 4, 5, 6, 7])]
    second = [Hit(i, 1.0 - n / 10) for n, i in enumerate([8, 7, 9, 10, 11, 12, 1])]
    assert [h.id for h in reciprocal_rank_fusion([first, second], limit=5)] == [1, 8, 7, 2, 3]


def test_weights_must_match_the_prefetches() -> None:
    with pytest.raises(ValueError, match="one each"):
        reciprocal_rank_fusion([[Hit(1, 1.0)], [Hit(2, 1.0)]], limit=2, weights=[1.0])


def test_inputs_are_not_changed() -> None:
    lists = _lists(3)
    before = copy.deepcopy(lists)
    distribution_based_score_fusion(lists, limit=10)
    reciprocal_rank_fusion(lists, limit=10)
    assert lists == before
