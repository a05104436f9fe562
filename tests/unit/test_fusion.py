"""Fusion core: each algorithm's ordering, dedupe, calibration, and that inputs stay untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from librarian.core.fusion import (
    FusionError,
    FusionModel,
    Hit,
    fuse,
    fusion_name,
    ml_based,
    ranked_fusion,
    semantic_merge,
    weighted_score,
)

A = [Hit(1, 0.9, "a"), Hit(2, 0.8, "a"), Hit(3, 0.1, "a")]
B = [Hit(4, 0.85, "b"), Hit(2, 0.7, "b"), Hit(5, 0.6, "b")]


def test_semantic_merge_is_one_collection_order_with_dedupe_by_id() -> None:
    before = copy.deepcopy([A, B])
    merged = semantic_merge([A, B], limit=4)
    assert [h.id for h in merged] == [1, 4, 2, 5]
    assert merged[2].score == 0.8
    assert merged[2].source == "a"
    assert before == [A, B]


def test_semantic_merge_collapses_near_duplicate_vectors_and_calibrates() -> None:
    near = [Hit(1, 0.9, "a", vector=[1.0, 0.0]), Hit(2, 0.5, "a", vector=[0.0, 1.0])]
    dup = [Hit(7, 0.89, "b", vector=[1.0, 0.0001])]
    assert [h.id for h in semantic_merge([near, dup], limit=3)] == [1, 2]
    calibrated = semantic_merge(
        [near, dup], limit=3, calibration={"b": (1.0, 0.05)}, duplicate_threshold=None
    )
    assert [h.id for h in calibrated] == [7, 1, 2]
    assert calibrated[0].score == pytest.approx(0.94)


def test_semantic_merge_orders_distances_ascending() -> None:
    x = [Hit(1, 3.0), Hit(2, 5.0)]
    y = [Hit(3, 1.0)]
    assert [h.id for h in semantic_merge([x, y], limit=3, higher_is_better=False)] == [3, 1, 2]


def test_ranked_fusion_rewards_agreement() -> None:
    fused = ranked_fusion([A, B], limit=5)
    assert fused[0].id == 2  # in both lists
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 62)
    weighted = ranked_fusion([A, B], limit=5, weights=[0.0, 1.0])
    assert weighted[0].id == 4


def test_weighted_score_normalizes_per_source() -> None:
    low_scale = [Hit(1, 0.02, "x"), Hit(2, 0.01, "x")]
    high_scale = [Hit(3, 90.0, "y"), Hit(4, 10.0, "y")]
    fused = weighted_score([low_scale, high_scale], limit=4)
    assert {fused[0].id, fused[1].id} == {1, 3}
    assert fused[0].score == 1.0
    preferred = weighted_score([low_scale, high_scale], limit=1, weights=[2.0, 1.0])
    assert preferred[0].id == 1


def test_ml_based_learns_which_candidates_belong() -> None:
    rng = np.random.default_rng(0)
    observations = []
    for _ in range(60):
        lists = [
            [
                Hit(f"{s}{i}", float(score), s)
                for i, score in enumerate(sorted(rng.random(5), reverse=True))
            ]
            for s in "ab"
        ]
        everything = sorted((h for hits in lists for h in hits), key=lambda h: -h.score)
        observations.append((lists, [h.id for h in everything[:3]]))
    model = FusionModel().fit(observations)
    lists, truth = observations[0]
    top = ml_based(lists, limit=3, model=model)
    assert len({h.id for h in top} & set(truth)) >= 2
    with pytest.raises(FusionError, match="not fitted"):
        ml_based(lists, limit=3, model=FusionModel())
    with pytest.raises(FusionError, match="both inside and outside"):
        FusionModel().fit([([[Hit(1, 1.0)]], [1])])


def test_fusion_names_from_settings() -> None:
    assert fusion_name("rrf") == "ranked_fusion"
    assert fusion_name("learned") == "ml_based"
    with pytest.raises(FusionError, match="accepted: semantic_merge"):
        fusion_name("borda")
    assert [h.id for h in fuse("rrf", [A, B], limit=1)] == [2]
    with pytest.raises(FusionError, match="needs a fitted"):
        fuse("learned", [A, B], limit=1)
