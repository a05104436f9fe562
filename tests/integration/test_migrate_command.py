"""`librarian migrate` (the Job's command) on embedded clusters, and the Job it runs in."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from librarian.cli import main
from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY
from librarian.kube.spec import SecretRef
from librarian.operator.jobs import JobSettings, build_migration_job
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec, PointRecord

from .conftest import make_points


def _setup(tmp_path: Path) -> None:
    source = EmbeddedQdrant("s", tmp_path / "general")
    source.create_collection("docs", CollectionSpec(vector_size=8))
    source.upsert(
        "docs",
        [
            PointRecord(
                id=p.id,
                vector=p.vector,
                payload={**p.payload, LABEL_KEY: "d-a" if int(p.id) % 2 else "d-b"},
            )
            for p in make_points(100)
        ],
    )
    source.close()
    target = EmbeddedQdrant("t", tmp_path / "fast")
    target.create_collection("docs-a", CollectionSpec(vector_size=8))
    target.close()


def test_migrate_between_two_embedded_clusters(tmp_path: Path) -> None:
    _setup(tmp_path)
    args = [
        "migrate",
        "--name",
        "ns/a",
        "--domain",
        "d-a",
        "--source-embedded",
        str(tmp_path / "general"),
        "--source-collection",
        "docs",
        "--target-embedded",
        str(tmp_path / "fast"),
        "--target-collection",
        "docs-a",
        "--batch-size",
        "10",
        "--workers",
        "2",
        "--cleanup",
        "--json",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["phase"] == "done"
    assert report["verified"]
    assert report["copied"] == 50
    assert report["removedFromSource"] == 50
    assert (report["verifiedPoints"], report["unversioned"], report["unlabelled"]) == (50, 50, 0)
    assert report["differing"] == []
    again = CliRunner().invoke(main, args)  # a restarted Job finds the work done
    assert again.exit_code == 0
    assert json.loads(again.output.strip().splitlines()[-1])["phase"] == "done"


def test_migrate_reports_bad_arguments_and_missing_collections(tmp_path: Path) -> None:
    _setup(tmp_path)
    base = [
        "migrate",
        "--name",
        "x",
        "--domain",
        "d-a",
        "--source-collection",
        "docs",
        "--target-collection",
        "docs-a",
    ]
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 2
    assert "exactly one of 'url'" in result.output
    result = CliRunner().invoke(
        main,
        [
            *base[:-1],
            "absent",
            "--source-embedded",
            str(tmp_path / "general"),
            "--target-embedded",
            str(tmp_path / "fast"),
        ],
    )
    assert result.exit_code == 1
    assert "collection 'absent'" in result.output


def test_job_manifest_is_restricted_owned_and_keeps_keys_in_secrets() -> None:
    owner = {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "ClusterSpecialization",
        "metadata": {"name": "alpha", "uid": "1234"},
    }
    job = build_migration_job(
        name="alpha-migrate-1",
        namespace="ns",
        owner=owner,
        args=["--name", "ns/alpha"],
        settings=JobSettings(
            image="ghcr.io/x/librarian:0.1.0",
            backoff_limit=3,
            active_deadline_s=600,
            ttl_after_finished_s=60,
        ),
        source_secret=SecretRef("qdrant-general"),
        target_secret=SecretRef("qdrant-fast", "key"),
    )
    spec = job["spec"]
    assert (
        spec["backoffLimit"],
        spec["activeDeadlineSeconds"],
        spec["ttlSecondsAfterFinished"],
    ) == (3, 600, 60)
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "ClusterSpecialization",
        "name": "alpha",
        "uid": "1234",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    assert container["args"][0] == "migrate"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["readOnlyRootFilesystem"]
    env = {e["name"]: e for e in container["env"]}
    assert env["LIBRARIAN_SOURCE_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "qdrant-general",
        "key": "api-key",
    }
    assert all("value" not in e for e in container["env"])  # keys never inline


def test_migrate_a_dedicated_source_from_a_fence_version(tmp_path: Path) -> None:
    """Unlabelled points of a dedicated source move too, labelled; a point the routers wrote
    to the target at or after the fence is never overwritten by the copy."""
    source = EmbeddedQdrant("s", tmp_path / "old")
    source.create_collection("docs-a", CollectionSpec(vector_size=8))
    points = make_points(30)
    source.upsert(
        "docs-a",
        [
            PointRecord(
                p.id,
                p.vector,
                {**p.payload, **({LABEL_KEY: "d-a"} if int(p.id) < 20 else {})},
            )
            for p in points
        ],
    )
    source.close()
    target = EmbeddedQdrant("t", tmp_path / "new")
    target.create_collection("docs-a", CollectionSpec(vector_size=8))
    dual = {"text": "dual write", LABEL_KEY: "d-a", POINT_VERSION_KEY: 1000}
    target.upsert("docs-a", [PointRecord(3, points[3].vector, dual)])
    target.close()
    common = [
        "migrate",
        "--name",
        "ns/a",
        "--domain",
        "d-a",
        "--source-embedded",
        str(tmp_path / "old"),
        "--source-collection",
        "docs-a",
        "--target-embedded",
        str(tmp_path / "new"),
        "--target-collection",
        "docs-a",
        "--fence-version",
        "1000",
        "--json",
    ]
    result = CliRunner().invoke(main, [*common, "--dedicated-source", "--verify-tries", "1"])
    # point 3's dual write never reached the old home: verification names it
    assert result.exit_code == 3, result.output
    failure = json.loads(result.output.strip().splitlines()[-1])
    assert failure["differing"] == [3]
    source = EmbeddedQdrant("s", tmp_path / "old")
    source.upsert("docs-a", [PointRecord(3, points[3].vector, dual)])  # the router catches up
    source.close()
    result = CliRunner().invoke(main, [*common, "--dedicated-source"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["verified"]
    assert (report["verifiedPoints"], report["unlabelled"], report["unversioned"]) == (30, 10, 29)
    target = EmbeddedQdrant("t", tmp_path / "new")
    moved = {p.id: p.payload for p in target.retrieve("docs-a", list(range(30)))}
    target.close()
    assert len(moved) == 30
    assert all(payload[LABEL_KEY] == "d-a" for payload in moved.values())
    assert moved[3]["text"] == "dual write"
