"""Discovery core: every strategy, ids, keywords, partitions and bad input."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from librarian.core.discovery import (
    STRATEGIES,
    DiscoveryError,
    assign,
    assign_partitions,
    discover,
)

from .conftest import make_blobs


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_recovers_separated_clusters(strategy: str, blobs) -> None:  # type: ignore[no-untyped-def]
    vectors, truth, texts = blobs
    result = discover(vectors, strategy=strategy, texts=texts, seed=0, min_domain_size=10)
    assert result.strategy == strategy
    assert len(result.labels) == len(vectors)
    assert result.labels.min() >= 0
    assert result.labels.max() < len(result.domains)
    assert adjusted_rand_score(truth, result.labels) > 0.9
    assert 0.0 <= result.confidence <= 1.0
    assert sum(d.size for d in result.domains) == len(vectors)
    for domain in result.domains:
        assert np.linalg.norm(domain.centroid) == pytest.approx(1.0, abs=1e-4)
        assert 0.0 <= domain.radius <= 2.0
        assert -1.0 <= domain.cohesion <= 1.0


def test_number_of_domains_is_chosen_automatically() -> None:
    for centres in (3, 5):
        vectors, _, _ = make_blobs(centres=centres, per=60, seed=centres)
        result = discover(vectors, seed=0, min_domain_size=10)
        assert len(result.domains) == centres


def test_bounds_cap_the_number_of_domains() -> None:
    vectors, _, _ = make_blobs(centres=5, per=60)
    assert len(discover(vectors, max_domains=3, min_domain_size=10).domains) <= 3
    assert len(discover(vectors, n_domains=2, min_domains=1).domains) == 2


def test_same_seed_same_result_and_labels_match_assign(blobs) -> None:  # type: ignore[no-untyped-def]
    vectors, _, texts = blobs
    first = discover(vectors, texts=texts, seed=3)
    second = discover(vectors, texts=texts, seed=3)
    assert [d.id for d in first.domains] == [d.id for d in second.domains]
    np.testing.assert_array_equal(first.labels, second.labels)
    assert (assign(vectors, first.domains) == first.labels).mean() > 0.98


def test_assign_picks_the_nearest_centroid(blobs) -> None:  # type: ignore[no-untyped-def]
    vectors, _, _ = blobs
    domains = discover(vectors, seed=0).domains
    probe = np.stack([d.centroid for d in domains]) * 3.0  # length does not matter
    np.testing.assert_array_equal(assign(probe, domains), np.arange(len(domains)))


def test_keywords_and_names_come_from_text(blobs) -> None:  # type: ignore[no-untyped-def]
    vectors, truth, texts = blobs
    result = discover(vectors, texts=texts, seed=0)
    for d, domain in enumerate(result.domains):
        majority = np.bincount(truth[result.labels == d]).argmax()
        topic_words = set(texts[int(np.flatnonzero(truth == majority)[0])].split()[:4])
        assert topic_words & set(domain.keywords[:4]), (domain.keywords, topic_words)
        assert domain.name.split("-")[0] in domain.keywords
    assert len({d.name for d in result.domains}) == len(result.domains)
    without = discover(vectors, seed=0)
    assert all(d.keywords == () and d.name.startswith("domain-") for d in without.domains)


def test_reanalysis_keeps_ids_and_new_domains_get_fresh_ids() -> None:
    vectors, _, _ = make_blobs(centres=4, per=80)
    first = discover(vectors, seed=0, min_domain_size=10)
    rng = np.random.default_rng(9)
    moved = vectors + 0.01 * rng.standard_normal(vectors.shape).astype(np.float32)
    again = discover(moved, seed=5, previous=first.domains, min_domain_size=10)
    assert {d.id for d in again.domains} == {d.id for d in first.domains}
    extra, _, _ = make_blobs(centres=5, per=80, seed=1)  # same first 4 axes, plus a fifth
    grown = discover(extra, seed=0, previous=first.domains, min_domain_size=10)
    old_ids = {d.id for d in first.domains}
    new_ids = [d.id for d in grown.domains if d.id not in old_ids]
    assert len(grown.domains) == 5
    assert len(new_ids) == 1


def test_vanished_domain_id_is_never_reused() -> None:
    vectors, truth, _ = make_blobs(centres=4, per=80)
    first = discover(vectors, seed=0, min_domain_size=10)
    fewer = discover(vectors[truth < 3], seed=0, previous=first.domains, min_domain_size=10)
    assert {d.id for d in fewer.domains} < {d.id for d in first.domains}


def test_partitions_nest_inside_domains() -> None:
    vectors, _, _ = make_blobs(centres=3, per=300)
    result = discover(vectors, seed=0, min_partition_size=100)
    assert len(result.partitions) > len(result.domains)
    assert len(result.partition_labels) == len(vectors)
    owner = np.array([p.domain for p in result.partitions])
    np.testing.assert_array_equal(owner[result.partition_labels], result.labels)
    assert sum(p.size for p in result.partitions) == len(vectors)
    assert (assign_partitions(vectors, result.partitions) == result.partition_labels).mean() > 0.9


def test_hierarchical_gives_a_tree() -> None:
    vectors, _, _ = make_blobs(centres=5, per=60)
    result = discover(vectors, strategy="hierarchical", seed=0, min_domain_size=10)
    assert result.tree
    children = [c for group in result.tree.values() for c in group]
    assert sorted(children) == sorted(d.id for d in result.domains)
    assert all(d.parent in result.tree for d in result.domains)


def test_semantic_flow_follows_a_drifting_domain_and_lets_a_new_one_emerge() -> None:
    rng = np.random.default_rng(4)
    dim = 16
    a, b, c = np.eye(dim)[:3]
    stream = []
    for window in range(5):  # domain A drifts from axis a towards axis c; B stays
        centre = a * (1 - window / 6) + c * (window / 6)
        stream.append(centre + 0.05 * rng.standard_normal((60, dim)))
        stream.append(b + 0.05 * rng.standard_normal((60, dim)))
        if window >= 3:  # a new domain appears late in the stream
            stream.append(-a + 0.05 * rng.standard_normal((60, dim)))
    vectors = np.concatenate(stream).astype(np.float32)
    result = discover(vectors, strategy="semantic_flow", seed=0, window=120, min_domain_size=10)
    centroids = np.stack([d.centroid for d in result.domains])
    latest_a = a * (1 - 4 / 6) + c * (4 / 6)
    latest_a /= np.linalg.norm(latest_a)
    assert (centroids @ latest_a).max() > 0.95  # followed the drift
    assert (centroids @ -a).max() > 0.95  # the late domain emerged


def test_quality_smoke_on_bundled_real_data() -> None:
    folder = resources.files("librarian.demo") / "data"
    with (folder / "vectors.npy").open("rb") as handle:
        vectors = np.load(handle).astype(np.float32)
    sections = [
        json.loads(x)["section"] for x in (folder / "sections.jsonl").read_text().split("\n") if x
    ]
    texts = [json.loads(x)["text"] for x in (folder / "records.jsonl").read_text().split("\n") if x]
    result = discover(vectors, texts=texts, seed=0)
    assert 6 <= len(result.domains) <= 32
    assert normalized_mutual_info_score(sections, result.labels) > 0.5


@pytest.mark.parametrize(
    ("vectors", "kwargs", "message"),
    [
        (np.zeros((0, 8)), {}, "source is empty"),
        (np.ones(8), {}, "2-D array"),
        (np.ones((3, 8)), {"n_domains": 5, "min_domains": 1}, "only 3 vector"),
        (np.array([[1.0, np.nan], [1.0, 0.0]]), {}, "NaN or infinite"),
        (np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]), {}, r"zero vector.*\[1\]"),
        (np.eye(4), {"strategy": "spectral"}, "unknown strategy 'spectral'; accepted: kmeans"),
        (np.eye(4), {"colour": 1}, "unknown threshold.*colour.*accepted"),
        (np.eye(4), {"max_domains": 1, "min_domains": 2}, "max_domains"),
        (np.eye(4), {"expected_dim": 8}, "wrong vector size: got 4 dimensions"),
        ([["a", "b"]], {}, "numeric array"),
    ],
)
def test_bad_input_is_a_clear_error(vectors, kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DiscoveryError, match=message):
        discover(vectors, **kwargs)


def test_wrong_vector_size_against_previous_domains_and_for_assign(blobs) -> None:  # type: ignore[no-untyped-def]
    vectors, _, _ = blobs
    domains = discover(vectors, seed=0).domains
    with pytest.raises(DiscoveryError, match="wrong vector size"):
        discover(np.ones((50, 7)), previous=domains)
    with pytest.raises(DiscoveryError, match="wrong vector size"):
        assign(np.ones((2, 7)), domains)
    with pytest.raises(DiscoveryError, match="no domains"):
        assign(vectors, [])


def test_texts_must_match_vectors(blobs) -> None:  # type: ignore[no-untyped-def]
    vectors, _, texts = blobs
    with pytest.raises(DiscoveryError, match="one text per vector"):
        discover(vectors, texts=texts[:-1])
