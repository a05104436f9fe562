"""Splitting ids into ranges in Qdrant's scroll order (integers, then UUIDs by value)."""

from __future__ import annotations

import itertools
import random
import uuid

import pytest

from librarian.services.labeling_job import IdRange, id_order, split_ids
from librarian.storage.port import PointId


def _covering(ranges: tuple[IdRange, ...], point_id: PointId) -> list[int]:
    """The indexes of the ranges holding ``point_id``."""
    key = id_order(point_id)
    return [
        index
        for index, span in enumerate(ranges)
        if (span.start is None or id_order(span.start) <= key) and span.before_end(point_id)
    ]


def test_integers_come_before_uuids_and_uuids_go_by_value() -> None:
    low = "00000000-0000-0000-0000-000000000001"
    high = "ffffffff-0000-0000-0000-000000000000"
    ordered = sorted(
        ["Abcdef00-0000-0000-0000-000000000000".lower(), high, 7, low, 2**63], key=id_order
    )
    assert ordered == [7, 2**63, low, "abcdef00-0000-0000-0000-000000000000", high]
    # the same UUID spelled upper-case or without hyphens is the same position
    assert id_order(high.upper()) == id_order(high.replace("-", ""))


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7])
def test_ranges_cover_every_id_once_and_are_balanced(parts: int) -> None:
    rng = random.Random(parts)
    ids: list[PointId] = rng.sample(range(10**9), 3000)
    ids += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(1000)]
    sample = rng.sample(ids, 800)
    ranges = split_ids(sample, parts)
    assert len(ranges) == parts
    assert ranges[0].start is None
    assert ranges[-1].end is None
    assert all(a.end == b.start for a, b in itertools.pairwise(ranges))
    sizes = [0] * parts
    for point_id in ids:
        holders = _covering(ranges, point_id)
        assert len(holders) == 1, point_id
        sizes[holders[0]] += 1
    # cut at sample quantiles: each range within a generous margin of an equal share
    assert max(sizes) < 1.6 * len(ids) / parts


def test_fewer_distinct_ids_than_parts_give_fewer_ranges() -> None:
    assert split_ids([2, 1, 2, 1], 4) == (IdRange(None, 2), IdRange(2, None))
    assert split_ids([5, 5, 5], 4) == (IdRange(None, None),)
    assert split_ids([], 3) == (IdRange(None, None),)
    with pytest.raises(ValueError, match="at least 1"):
        split_ids([1], 0)
