"""The hybrid logical clock behind point versions."""

from __future__ import annotations

import random

import pytest

from librarian.core.hlc import (
    MAX_NODE,
    MAX_VERSION,
    HybridLogicalClock,
    decode_version,
    encode_version,
)

NOW = 1_790_000_000_000  # a wall time in 2026, in milliseconds


class Wall:
    def __init__(self, ms: int = NOW) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_versions_round_trip_and_stay_exact_as_floats() -> None:
    rng = random.Random(3)
    for _ in range(1000):
        parts = (NOW + rng.randrange(10**11), rng.randrange(16), rng.randrange(MAX_NODE + 1))
        version = encode_version(*parts)
        assert decode_version(version) == parts
        assert 0 < version <= MAX_VERSION
        assert int(float(version)) == version  # range filters compare as doubles


def test_versions_order_by_wall_then_counter_then_node() -> None:
    assert encode_version(NOW, 15, 127) < encode_version(NOW + 1, 0, 0)
    assert encode_version(NOW, 1, 127) < encode_version(NOW, 2, 0)
    assert encode_version(NOW, 1, 3) < encode_version(NOW, 1, 4)


@pytest.mark.parametrize(
    ("wall", "counter", "node"), [(0, 0, 0), (NOW, 16, 0), (NOW, 0, 128), (NOW, -1, 0)]
)
def test_out_of_range_parts_are_refused(wall: int, counter: int, node: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_version(wall, counter, node)


def test_ticks_grow_when_the_wall_clock_stalls_or_goes_back() -> None:
    wall = Wall()
    clock = HybridLogicalClock(node=5, wall_ms=wall)
    seen = [clock.tick() for _ in range(40)]  # more than 16 in one millisecond: runs ahead
    wall.ms -= 5_000  # the wall clock steps back
    seen += [clock.tick() for _ in range(5)]
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    assert all(decode_version(v).node == 5 for v in seen)
    wall.ms = NOW + 60_000
    assert decode_version(clock.tick()) == (NOW + 60_000, 0, 5)  # back in step with the wall


def test_a_tick_is_newer_than_anything_observed_even_from_a_clock_ahead() -> None:
    behind = HybridLogicalClock(node=1, wall_ms=Wall(NOW))
    ahead = HybridLogicalClock(node=0, wall_ms=Wall(NOW + 30_000))
    theirs = ahead.tick()
    mine = behind.tick(observed=theirs)
    assert mine > theirs
    assert decode_version(mine).node == 1
    behind.observe(0)  # nothing observed: no change
    assert behind.tick() > mine


def test_two_nodes_in_the_same_millisecond_never_tie() -> None:
    wall = Wall()
    clocks = [HybridLogicalClock(node=n, wall_ms=wall) for n in range(4)]
    versions = [clock.tick() for clock in clocks for _ in range(3)]
    assert len(set(versions)) == len(versions)


def test_node_id_must_fit() -> None:
    with pytest.raises(ValueError, match="node id"):
        HybridLogicalClock(node=MAX_NODE + 1, wall_ms=Wall())
