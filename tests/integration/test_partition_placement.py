"""Specialized homes sharded by partition: the migration, catching up and vector updates put
each point under the shard key of its partition (the one nearest its routing vector), never
leaving a second copy under another key, and the migration still verifies and resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from librarian.cli import main
from librarian.contracts.payload import LABEL_KEY, PARTITION_KEY
from librarian.core.discovery import Domain, Partition, assign_partitions
from librarian.services.catalog import read_partitions, write_catalog
from librarian.services.migration import CHECKPOINT_COLLECTION, MigrationPlan, migrate, same_point
from librarian.services.placement import (
    Placement,
    ensure_partition_index,
    placed_upsert,
    read_placement,
)
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.placing import PlacingPort
from librarian.storage.port import CollectionSpec, PointRecord, QdrantPort

from .conftest import make_points

DOMAIN = "d-alpha"
OWNER = "default/library"


class _Centres:
    """Three partition centroids of the domain, from three of its points."""

    def __init__(self, points: list[PointRecord]) -> None:
        self.centroids = np.asarray([points[i].vector for i in (0, 1, 2)], dtype=np.float32)
        self.keys = (f"{DOMAIN}-p0", f"{DOMAIN}-p1", f"{DOMAIN}-p2")

    def expected_key(self, vector: Any) -> str:
        cells = [
            Partition(id=k, domain=0, centroid=c, size=0)
            for k, c in zip(self.keys, self.centroids, strict=True)
        ]
        return self.keys[int(assign_partitions(np.asarray([vector]), cells)[0])]


def _fill(port: EmbeddedQdrant) -> tuple[list[PointRecord], _Centres]:
    port.create_collection("source", CollectionSpec(vector_size=8))
    points = [
        PointRecord(p.id, p.vector, {**p.payload, LABEL_KEY: DOMAIN if int(p.id) % 3 else "other"})
        for p in make_points(240, seed=11)
    ]
    port.upsert("source", points)
    mine = [p for p in points if p.payload[LABEL_KEY] == DOMAIN]
    centres = _Centres(mine)
    write_catalog(
        port,
        "catalog",
        OWNER,
        [
            Domain(
                id=DOMAIN,
                name="alpha",
                centroid=np.asarray(mine[0].vector, dtype=np.float32),
                radius=1.0,
                size=len(mine),
                cohesion=1.0,
                keywords=(),
            )
        ],
        1,
        partitions=[
            Partition(id=k, domain=0, centroid=c, size=1)
            for k, c in zip(centres.keys, centres.centroids, strict=True)
        ],
    )
    port.create_collection("target", CollectionSpec(vector_size=8, shard_keys=centres.keys))
    return mine, centres


def _plan(**changes: Any) -> MigrationPlan:
    base: dict[str, Any] = dict(
        name="default/alpha",
        source_collection="source",
        target_collection="target",
        domain_id=DOMAIN,
        batch_size=16,
        workers=3,
        verify_sample=40,
    )
    return MigrationPlan(**(base | changes))


def _placement(port: QdrantPort) -> Placement:
    placement = read_placement(port, "catalog", OWNER, DOMAIN, "")
    assert placement is not None
    return placement


def _keys_held(port: EmbeddedQdrant, keys: tuple[str, ...]) -> dict[object, str]:
    held: dict[object, str] = {}
    for key in keys:
        page, _ = port.scroll("target", limit=1000, with_vectors=False, shard_keys=[key])
        for record in page:
            assert record.id not in held, f"{record.id} held under {held[record.id]} and {key}"
            held[record.id] = key
    return held


def test_the_catalog_gives_the_partitions_of_one_domain(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        _, centres = _fill(port)
        partitions = read_partitions(port, "catalog", OWNER, DOMAIN)
        assert [p.partition_id for p in partitions] == list(centres.keys)
        np.testing.assert_allclose([p.centroid for p in partitions], centres.centroids, atol=1e-6)
        assert read_partitions(port, "catalog", OWNER, "absent") == []
        assert read_partitions(port, "missing-catalog", OWNER) == []
    finally:
        port.close()


def test_the_migration_puts_each_point_under_its_partition_and_verifies(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        mine, centres = _fill(port)
        report = migrate(port, port, _plan(), placement=_placement(port))
        assert report.verified
        assert report.copied == len(mine) == report.target_count
        held = _keys_held(port, centres.keys)
        assert held == {p.id: centres.expected_key(p.vector) for p in mine}
        assert len(set(held.values())) == 3  # every partition holds some
        again = migrate(port, port, _plan(), placement=_placement(port))  # idempotent
        assert again.phase == "verified"
        assert port.count("target") == len(mine)
    finally:
        port.close()


class _KilledAfter:
    """A port whose upserts fail after ``writes`` of them (a migration killed mid-copy)."""

    def __init__(self, inner: QdrantPort, writes: int) -> None:
        self._inner = inner
        self._left = writes

    def upsert(self, *args: Any, **kwargs: Any) -> None:
        if self._left <= 0:
            raise RuntimeError("killed")
        self._left -= 1
        self._inner.upsert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_killed_migration_resumes_into_the_same_keys(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        mine, centres = _fill(port)
        killed = _KilledAfter(port, 4)
        with pytest.raises(RuntimeError, match="killed"):
            migrate(port, killed, _plan(workers=1), placement=_placement(port))  # type: ignore[arg-type]
        report = migrate(port, port, _plan(workers=1), placement=_placement(port))
        assert report.verified
        held = _keys_held(port, centres.keys)
        assert held == {p.id: centres.expected_key(p.vector) for p in mine}
        stored = {p.id: p for p in port.scroll("target", limit=1000)[0]}
        assert all(same_point(p, stored[p.id]) for p in mine)
    finally:
        port.close()


def test_a_source_point_that_changed_partition_is_moved_by_the_catch_up(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        mine, centres = _fill(port)
        placement = _placement(port)
        migrate(port, port, _plan(verify=False), placement=placement)
        moved = mine[5]
        before = centres.expected_key(moved.vector)
        other = next(i for i, k in enumerate(centres.keys) if k != before)
        changed = PointRecord(moved.id, [float(x) for x in centres.centroids[other]], moved.payload)
        port.upsert("source", [changed])
        port.delete_collection(CHECKPOINT_COLLECTION)  # a new run compares everything again
        report = migrate(port, port, _plan(), placement=placement)
        assert report.verified
        held = _keys_held(port, centres.keys)
        assert held[moved.id] == centres.keys[other]
        assert port.count("target") == len(mine)
    finally:
        port.close()


def test_placed_writes_and_vector_updates_keep_one_copy_under_the_right_key(
    tmp_path: Path,
) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        mine, centres = _fill(port)
        placement = _placement(port)
        placed_upsert(port, "target", mine[:30], placement)
        placing = PlacingPort(port, {"target": placement.split})
        point = mine[7]
        before = centres.expected_key(point.vector)
        other = next(k for k in range(3) if centres.keys[k] != before)
        new_vector = [float(x) for x in centres.centroids[other]]
        placing.update_vectors("target", [PointRecord(point.id, new_vector)])
        held = _keys_held(port, centres.keys)
        assert held[point.id] == centres.keys[other]
        [stored] = port.retrieve("target", [point.id])
        assert stored.payload == point.payload  # the payload moved with it
        np.testing.assert_allclose(stored.vector or [], new_vector, atol=1e-6)
        placing.upsert("target", [PointRecord(point.id, point.vector, {"tag": "back"})])
        assert _keys_held(port, centres.keys)[point.id] == before
        assert port.count("target") == 30
    finally:
        port.close()


def _migrate_args(path: Path, *catalog: str) -> list[str]:
    return [
        "migrate",
        "--name",
        "default/alpha",
        "--domain",
        DOMAIN,
        "--source-embedded",
        str(path),
        "--source-collection",
        "source",
        "--target-embedded",
        str(path),
        "--target-collection",
        "target",
        "--batch-size",
        "16",
        "--json",
        *catalog,
    ]


@pytest.mark.parametrize("layout", ["shard key", "field"])
def test_the_migrate_command_places_by_the_catalog_or_says_what_it_needs(
    tmp_path: Path, layout: str
) -> None:
    """The command refuses without a catalog, then marks every point's partition in the
    target home's layout (a shard key per partition, or the indexed reserved field)."""
    fill = _fill if layout == "shard key" else _fill_by_field
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        mine, centres = fill(port)
    finally:
        port.close()
    path = tmp_path / "edge"
    refused = CliRunner().invoke(main, _migrate_args(path))
    assert refused.exit_code == 2
    assert "--catalog-collection" in refused.output
    catalog = ["--catalog-embedded", str(path), "--catalog-collection", "catalog"]
    result = CliRunner().invoke(main, _migrate_args(path, *catalog, "--catalog-owner", OWNER))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["verified"]
    port = EmbeddedQdrant("edge", path)
    try:
        held = _keys_held(port, centres.keys) if layout == "shard key" else _fields_held(port)
        assert held == {p.id: centres.expected_key(p.vector) for p in mine}
    finally:
        port.close()


# Homes placed by field: one shard, each point's partition in the indexed reserved field.


def _fill_by_field(port: EmbeddedQdrant) -> tuple[list[PointRecord], _Centres]:
    mine, centres = _fill(port)
    port.delete_collection("target")
    port.create_collection("target", CollectionSpec(vector_size=8))
    ensure_partition_index(port, "target")
    return mine, centres


def _fields_held(port: EmbeddedQdrant) -> dict[object, str]:
    page, _ = port.scroll("target", limit=1000, with_vectors=False)
    return {record.id: record.payload[PARTITION_KEY] for record in page}


def _field_placement(port: QdrantPort) -> Placement:
    placement = read_placement(port, "catalog", OWNER, DOMAIN, "", by_field=True)
    assert placement is not None
    return placement


def test_the_migration_marks_each_point_with_its_partition_and_verifies(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        mine, centres = _fill_by_field(port)
        report = migrate(port, port, _plan(), placement=_field_placement(port))
        assert report.verified, report
        assert report.copied == len(mine) == report.target_count
        assert _fields_held(port) == {p.id: centres.expected_key(p.vector) for p in mine}
        assert port.collection_info("target").spec.shard_keys is None
        again = migrate(port, port, _plan(), placement=_field_placement(port))  # idempotent
        assert again.phase == "verified"
        assert port.count("target") == len(mine)
    finally:
        port.close()


def test_a_killed_migration_into_a_home_placed_by_field_resumes(tmp_path: Path) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        mine, centres = _fill_by_field(port)
        killed = _KilledAfter(port, 4)
        with pytest.raises(RuntimeError, match="killed"):
            migrate(port, killed, _plan(workers=1), placement=_field_placement(port))  # type: ignore[arg-type]
        report = migrate(port, port, _plan(workers=1), placement=_field_placement(port))
        assert report.verified
        assert _fields_held(port) == {p.id: centres.expected_key(p.vector) for p in mine}
        stored = {p.id: p for p in port.scroll("target", limit=1000)[0]}
        for point in mine:
            expected = PointRecord(
                point.id,
                point.vector,
                {**point.payload, PARTITION_KEY: centres.expected_key(point.vector)},
            )
            assert same_point(expected, stored[point.id])
    finally:
        port.close()


def test_the_catch_up_rewrites_the_field_of_a_point_that_changed_partition(
    tmp_path: Path,
) -> None:
    port = EmbeddedQdrant("edge", tmp_path / "edge")
    try:
        mine, centres = _fill_by_field(port)
        placement = _field_placement(port)
        migrate(port, port, _plan(verify=False), placement=placement)
        moved = mine[5]
        before = centres.expected_key(moved.vector)
        other = next(i for i, k in enumerate(centres.keys) if k != before)
        changed = PointRecord(moved.id, [float(x) for x in centres.centroids[other]], moved.payload)
        port.upsert("source", [changed])
        port.delete_collection(CHECKPOINT_COLLECTION)  # a new run compares everything again
        report = migrate(port, port, _plan(), placement=placement)
        assert report.verified
        assert _fields_held(port)[moved.id] == centres.keys[other]
        assert port.count("target") == len(mine)
    finally:
        port.close()


def test_a_moves_catch_up_marks_the_partition_in_a_new_home_placed_by_field(
    tmp_path: Path,
) -> None:
    """The operator's clean-up of a move reads the new home's layout and catches it up with
    every point marked with its partition (a home of neither layout gets no placement)."""
    from librarian.operator.moves import MoveTarget, _placement
    from librarian.services.domain_homes import DomainHome, catch_up
    from librarian.storage.fleet import Fleet

    port = EmbeddedQdrant("edge", tmp_path / "edge")
    fleet = Fleet.of_ports({"edge": port})
    try:
        mine, centres = _fill_by_field(port)
        where = MoveTarget(
            namespace="default",
            policy="p",
            domain_map="library",
            source_cluster="edge",
            source_collection="source",
            execution_strategy="immediate",
            grace_s=0.0,
            clusters=[],
            catalog=("edge", "catalog"),
        )
        new = DomainHome("edge", "target")
        placement = _placement(fleet, where, DOMAIN, new)
        assert placement is not None
        assert placement.by_field
        assert catch_up(fleet, DOMAIN, DomainHome("edge", "source"), new, placement=placement)
        assert _fields_held(port) == {p.id: centres.expected_key(p.vector) for p in mine}
        port.create_collection("plain", CollectionSpec(vector_size=8))
        assert _placement(fleet, where, DOMAIN, DomainHome("edge", "plain")) is None
    finally:
        fleet.close()
