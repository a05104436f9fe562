"""Which copy a change in place is made on, and which copies it removes.

A change that was made on a copy a concurrent write replaced is made again on the
write's copy. Its own earlier copy is newer than the write's by version, yet it must be
passed over, not changed again and not removed before the new try lands: removing it
(or the write's copy) early is how two writers yielding to each other lose a point.
"""

from __future__ import annotations

from librarian.router.changes import _newest_copies
from librarian.router.cleanup import Copy
from librarian.router.library import CollectionHome
from librarian.router.outbox import CleanupKind

X = CollectionHome("east", "library-d0")
Y = CollectionHome("west", "library-d1")


def test_the_newest_copy_is_changed_and_older_ones_are_removed_for_it() -> None:
    found = {X: {7: Copy(30, False, "d0")}, Y: {7: Copy(20, False, "d1")}}
    targets, stale = _newest_copies(found, [7])
    assert targets == {X: {"d0": [7]}}
    assert [(c.collection, c.kind, c.ids, c.version) for c in stale] == [
        ("library-d1", CleanupKind.REMOVE_OLDER, (7,), 30)
    ]


def test_an_earlier_try_is_passed_over_not_changed_nor_removed() -> None:
    found = {X: {7: Copy(30, False, "d0", merged=True)}, Y: {7: Copy(20, False, "d1")}}
    targets, stale = _newest_copies(found, [7], passed_over={30})
    assert targets == {Y: {"d1": [7]}}
    assert stale == []  # the earlier try stays until the new one lands


def test_an_earlier_try_left_alone_is_the_copy_changed() -> None:
    found = {X: {7: Copy(30, False, "d0", merged=True)}}
    targets, stale = _newest_copies(found, [7], passed_over={30})
    assert targets == {X: {"d0": [7]}}
    assert stale == []


def test_a_deleted_point_is_left_alone_and_its_older_copies_removed() -> None:
    found = {X: {7: Copy(30, True, "d0")}, Y: {7: Copy(20, False, "d1")}}
    targets, stale = _newest_copies(found, [7])
    assert targets == {}
    assert [(c.collection, c.version) for c in stale] == [("library-d1", 30)]
