"""The end of a move on the real engine: footprints, catching up late writes, deleting only when safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY
from librarian.services.domain_homes import (
    DomainHome,
    NotVerified,
    catch_up,
    measure_homes,
    remove_from_old_home,
)
from librarian.services.versioning import is_tombstone, tombstone_payload, version_of
from librarian.storage.fleet import ClusterConfig, Fleet
from librarian.storage.port import CollectionSpec, PointRecord

from .conftest import make_points

OLD, NEW = DomainHome("fast", "packages-a"), DomainHome("bulk", "packages-a")


def _labelled(points: list[PointRecord], domain: str) -> list[PointRecord]:
    return [PointRecord(p.id, p.vector, {**p.payload, LABEL_KEY: domain}) for p in points]


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    fleet = Fleet(
        [
            ClusterConfig("fast", embedded=str(tmp_path / "fast")),
            ClusterConfig("bulk", embedded=str(tmp_path / "bulk")),
        ]
    )
    for home in (OLD, NEW):
        fleet.get(home.cluster).create_collection(home.collection, CollectionSpec(vector_size=8))
    old = fleet.get("fast")
    old.upsert(OLD.collection, _labelled(make_points(120), "a"))
    old.upsert(OLD.collection, _labelled(make_points(30, start=1000), "b"))
    return fleet


def test_measure_homes_counts_each_domain_and_estimates_its_footprint(fleet: Fleet) -> None:
    sizes = measure_homes(
        fleet, {"a": OLD, "b": OLD, "gone": DomainHome("bulk", "missing-collection")}
    )
    assert (sizes["a"].points, sizes["b"].points, sizes["gone"].points) == (120, 30, 0)
    assert sizes["a"].memory_bytes > sizes["b"].memory_bytes > 0
    assert sizes["a"].disk_bytes >= 120 * 8 * 4
    assert sizes["a"].vector_size == 8
    fleet.close()


def test_nothing_is_deleted_while_the_new_home_has_fewer_points(fleet: Fleet) -> None:
    fleet.get("bulk").upsert(NEW.collection, _labelled(make_points(100), "a"))
    with pytest.raises(NotVerified, match="holds 100 points of domain a but"):
        remove_from_old_home(fleet, "a", OLD, NEW)
    assert fleet.get("fast").count(OLD.collection) == 150
    fleet.close()


def test_late_writes_are_copied_over_then_the_old_home_is_emptied_once(fleet: Fleet) -> None:
    fleet.get("bulk").upsert(NEW.collection, _labelled(make_points(120), "a"))
    updated = PointRecord(5, [1.0] * 8, {"text": "changed in the new home", LABEL_KEY: "a"})
    fleet.get("bulk").upsert(NEW.collection, [updated])
    late = _labelled(make_points(7, start=500), "a")  # written to the old home mid-move
    fleet.get("fast").upsert(OLD.collection, late)
    assert catch_up(fleet, "a", OLD, NEW, batch=16) == 7
    assert catch_up(fleet, "a", OLD, NEW) == 0
    kept = fleet.get("bulk").retrieve(NEW.collection, [5])[0]
    assert kept.payload["text"] == "changed in the new home"  # never overwritten by the old copy
    assert remove_from_old_home(fleet, "a", OLD, NEW) == 127
    assert remove_from_old_home(fleet, "a", OLD, NEW) == 0  # idempotent
    old = fleet.get("fast")
    assert old.count(OLD.collection) == 30  # domain b untouched
    assert fleet.get("bulk").count(NEW.collection) == 127
    fleet.close()


def _at(points: list[PointRecord], version: int, **payload: object) -> list[PointRecord]:
    return [
        PointRecord(p.id, p.vector, {**p.payload, POINT_VERSION_KEY: version, **payload})
        for p in points
    ]


def test_catch_up_and_removal_go_by_version(fleet: Fleet) -> None:
    """The old home's newer points and tombstones are copied over older ones, the new home's
    newer points are kept; removal waits until the new home holds every point as new."""
    old, new = fleet.get("fast"), fleet.get("bulk")
    points = _labelled(make_points(120), "a")
    old.upsert(OLD.collection, _at(points, 100))
    new.upsert(NEW.collection, _at(points, 100))
    new.upsert(NEW.collection, _at(points[:5], 200, text="newer in the new home"))
    old.upsert(OLD.collection, _at(points[5:8], 150, text="newer in the old home"))
    tombstone = tombstone_payload(version=160, label="a")
    old.upsert(OLD.collection, [PointRecord(p.id, p.vector, tombstone) for p in points[8:10]])
    new.upsert(NEW.collection, _at(points[10:12], 90))  # older in the new home
    with pytest.raises(NotVerified, match="still has 7 it lacks or holds older"):
        remove_from_old_home(fleet, "a", OLD, NEW)
    assert old.count(OLD.collection) == 150  # nothing deleted
    assert catch_up(fleet, "a", OLD, NEW) == 7
    held = {p.id: p.payload for p in new.retrieve(NEW.collection, [p.id for p in points[:12]])}
    assert all(held[p.id]["text"] == "newer in the new home" for p in points[:5])
    assert all(held[p.id]["text"] == "newer in the old home" for p in points[5:8])
    assert all(is_tombstone(held[p.id]) for p in points[8:10])
    assert all(version_of(held[p.id]) == 100 for p in points[10:12])
    assert catch_up(fleet, "a", OLD, NEW) == 0
    assert remove_from_old_home(fleet, "a", OLD, NEW) == 120
    assert old.count(OLD.collection) == 30  # domain b untouched
    fleet.close()
