"""What a conditional write decides on when it tries again, and which slice reads a stray label.

A conditional write's earlier tries leave copies that are newer than the copy it must
decide on next: they are passed over, an earlier try stands only while nothing but
its own copies is newer than the copy it was decided on, and a try is written over
the copy decided on or over its own earlier copy only. Separately, the first labelled
slice of a library also reads the source's points whose label no domain of the
snapshot has (a re-analysis's labels being written), and only that slice does.
"""

from __future__ import annotations

from qdrant_client.http import models

from librarian.router.cleanup import Copy
from librarian.router.conditional import seen_newest
from librarian.router.library import CollectionHome
from librarian.router.loader import definition_from_catalog
from librarian.router.writes import _conditioned, _standing
from librarian.services.catalog import CatalogEntry
from librarian.storage.port import PointRecord

X = CollectionHome("east", "library-d0")
Y = CollectionHome("west", "library-d1")


def test_a_retry_decides_on_the_newest_copy_someone_else_made() -> None:
    found = {X: {7: Copy(40, False, "d0", merged=True)}, Y: {7: Copy(30, False, "d1")}}
    assert seen_newest(found, [7])[7].version == 40
    seen = seen_newest(found, [7], {7: {40}})[7]
    assert (seen.version, seen.live, seen.homes) == (30, True, (Y,))
    assert seen_newest(found, [7], {7: {40, 30}})[7].version == 0  # nothing else: no copy


def test_an_earlier_try_stands_only_while_nothing_else_is_newer_than_its_decision() -> None:
    attempts = {7: {40: 20}}  # the try at 40 was decided on the copy at 20
    alone = {X: {7: Copy(40, False, "d0", merged=True)}, Y: {7: Copy(20, False, "d1")}}
    assert _standing(alone, [7], seen_newest(alone, [7], {7: {40}}), attempts) == {40: {7: (X,)}}
    replaced = {X: {7: Copy(40, False, "d0", merged=True)}, Y: {7: Copy(30, False, "d1")}}
    assert _standing(replaced, [7], seen_newest(replaced, [7], {7: {40}}), attempts) == {}
    gone = {Y: {7: Copy(50, False, "d1")}}  # its copy gave way to a newer one
    assert _standing(gone, [7], seen_newest(gone, [7], {7: {40}}), attempts) == {}


def test_a_retry_is_written_over_the_copy_decided_on_or_its_own_earlier_copy_only() -> None:
    points = [PointRecord(7, [1.0, 0.0]), PointRecord(8, [0.0, 1.0])]
    [(first, plain)] = _conditioned(points[:1], 60, {7: 30})
    assert [p.id for p in first] == [7]
    assert plain.should is not None  # at most 30, or no version at all
    groups = _conditioned(points, 60, {7: 30, 8: 30}, {7: {40}})
    assert sorted(len(g) for g, _ in groups) == [1, 1]
    retry = next(f for g, f in groups if g[0].id == 7)
    assert retry.should is not None
    assert len(retry.should) == 2
    assert isinstance(retry.should[1], models.Filter)


def _entry(domain_id: str) -> CatalogEntry:
    return CatalogEntry(
        owner="o",
        domain_id=domain_id,
        name=domain_id,
        centroid=[1.0, 0.0],
        size=3,
        radius=0.1,
        cohesion=0.9,
        keywords=(),
        version=1,
    )


def test_only_the_first_labelled_slice_reads_labels_the_snapshot_lacks() -> None:
    definition = definition_from_catalog(
        [_entry("d2"), _entry("d0"), _entry("d1")],
        name="lib",
        source=("c", "docs"),
        homes={"d0": ("c", "lib-d0")},  # specialized: not a slice
    )
    assert definition is not None
    routes = {r.domain_id: r for r in definition.domains}
    assert routes["d1"].strays_outside == ("d0", "d1", "d2")
    assert routes["d2"].strays_outside == ()
    assert routes["d0"].strays_outside == ()
    assert routes["d1"].holds_label("d1")
    assert routes["d1"].holds_label("re7")  # a label of a re-analysis
    assert routes["d1"].holds_label(None)  # a point no analysis labelled
    assert not routes["d1"].holds_label("d2")
    assert not routes["d1"].holds_label("d0")  # read from its own home
    assert not routes["d2"].holds_label("re7")
    assert routes["d0"].holds_label("anything")  # a home of its own holds only its points
