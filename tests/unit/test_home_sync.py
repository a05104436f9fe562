"""Comparing two homes by (id, version): every case of the rules, on plain maps."""

from __future__ import annotations

from qdrant_client.http import models

from librarian.services.home_sync import (
    GROUPS_PER_CALL,
    Held,
    calls,
    compare,
    is_live,
    pack,
    per_version,
    same_state,
    superseded,
    unpack,
)
from librarian.services.versioning import and_filters, ids_filter, older_than

FENCE = 1000


def live(version: int) -> int:
    return pack(version, tombstone=False)


def dead(version: int) -> int:
    return pack(version, tombstone=True)


def test_packing_round_trips_up_to_the_largest_version() -> None:
    for version in (0, 1, 2**52 + 3, 2**53 - 1):
        for tombstone in (False, True):
            assert unpack(pack(version, tombstone)) == Held(version, tombstone)
    assert is_live(live(5))
    assert not is_live(dead(5))
    assert not is_live(None)


def test_a_tombstone_equals_an_absent_point_and_live_points_need_the_same_version() -> None:
    assert same_state(None, None)
    assert same_state(dead(5), None)
    assert same_state(None, dead(5))
    assert same_state(dead(5), dead(9))
    assert same_state(live(5), live(5))
    assert not same_state(live(5), live(6))
    assert not same_state(live(5), None)
    assert not same_state(dead(5), live(5))


def test_compare_copies_newer_source_points_and_leaves_newer_target_points() -> None:
    source = {
        1: live(5),  # equal
        2: live(7),  # newer than the target's
        3: live(5),  # the target lacks it
        4: dead(8),  # deleted since the target's copy
        5: live(5),  # the target holds a newer write (in flight)
        6: dead(5),  # deleted; the target lacks it: equal
        7: dead(5),  # the target holds a newer write after the delete
        8: live(5),  # the target holds a tombstone at the same version: not settled
    }
    target = {1: live(5), 2: live(6), 4: live(5), 5: live(9), 7: live(6), 8: dead(5)}
    difference = compare(source, target, fence=FENCE)
    assert set(difference.copy) == {2, 3, 4}
    assert set(difference.leave) == {5, 7, 8}
    assert difference.remove == {}
    assert difference.ids == [2, 3, 4, 5, 7, 8]
    assert compare(source, source, fence=FENCE).ids == []


def test_target_only_points_are_removed_when_they_came_from_the_copy() -> None:
    target = {
        1: live(FENCE - 1),  # copied, deleted in the source since: removed
        2: live(0),  # copied, never versioned: removed
        3: live(FENCE),  # a dual write that has not reached the source: left
        4: dead(FENCE + 5),  # a tombstone: equal to the source's absence
        5: live(FENCE - 1),
    }
    difference = compare({}, target, fence=FENCE)
    assert difference.remove == {FENCE - 1: (1, 5), 0: (2,)}
    assert difference.leave == (3,)
    unfenced = compare({}, target, fence=None)  # nobody dual-writes: everything came from the copy
    assert unfenced.remove == {FENCE - 1: (1, 5), 0: (2,), FENCE: (3,)}
    assert unfenced.leave == ()


def test_unequal_contents_are_left_and_named_once() -> None:
    difference = compare({1: live(5)}, {1: live(5)}, fence=FENCE, unequal=[1, 1])
    assert difference.leave == (1,)
    assert difference
    assert len(difference) == 1


def test_the_old_home_is_superseded_only_by_the_same_or_a_newer_version() -> None:
    old = {
        1: live(5),  # same version in the new home
        2: live(5),  # newer in the new home
        3: live(5),  # deleted in the new home since
        4: live(5),  # older in the new home: kept
        5: live(5),  # missing from the new home: kept
        6: dead(5),  # deleted, and nothing in the new home: removed
        7: dead(5),  # deleted, an older tombstone in the new home: removed
        8: dead(5),  # deleted, an older live copy in the new home: kept
        9: live(0),  # unversioned in both
    }
    new = {1: live(5), 2: live(8), 3: dead(9), 4: live(4), 7: dead(3), 8: live(4), 9: live(0)}
    removable, kept = superseded(old, new)
    assert removable == {5: [1, 6, 7], 8: [2], 9: [3], 0: [9]}
    assert kept == [4, 5, 8]


def test_version_groups_share_calls_within_bounds() -> None:
    groups = {v: [v * 10 + i for i in range(n)] for v, n in [(1, 3), (2, 1), (3, 7), (4, 2)]}
    packed_calls = list(calls(groups, batch=5))
    assert [sum(len(g) for g in call.values()) for call in packed_calls] == [4, 5, 4]
    assert [sorted(call) for call in packed_calls] == [[1, 2], [3], [3, 4]]
    flattened = [i for call in packed_calls for group in call.values() for i in group]
    assert sorted(flattened) == sorted(i for ids in groups.values() for i in ids)
    many = {v: [v] for v in range(200)}
    assert all(len(call) <= GROUPS_PER_CALL for call in calls(many, batch=1000))


def test_one_filter_per_call_keeps_each_group_to_its_own_version() -> None:
    single = per_version({7: [1, 2]}, older_than)
    assert single.should is None
    assert single.must is not None
    assert len(single.must) == 2
    both = per_version({7: [1, 2], 9: [3]}, older_than)
    assert both.must == [models.HasIdCondition(has_id=[1, 2, 3])]
    assert isinstance(both.should, list)
    assert len(both.should) == 2
    assert both.should[1] == and_filters(ids_filter([3]), older_than(9))
