"""ClusterSpecialization end to end against the emulated API; the test plays the Job controller."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from qdrant_client.http import models

from librarian.cli import main
from librarian.contracts.metadata import FENCES_ANNOTATION
from librarian.contracts.payload import LABEL_KEY, PARTITION_KEY
from librarian.kube.fences import lease_body, lease_name
from librarian.local.emulator import EmulatedCluster
from librarian.services.labeling import domain_filter
from librarian.services.migration import Checkpoint, CheckpointStore
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec
from librarian.storage.vectors import vectors_equal

from .conftest import DOMAINMAPS, domainmap, events_with, load_named_source, load_source, wait_for

SPECS = "librarian.dev/v1alpha1/clusterspecializations"
JOBS = "batch/v1/jobs"


def specialization(name: str, domain: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "domainMap": "packages",
        "domain": domain,
        "target": {"cluster": "fast"},
        "strategy": "latency",
        "migration": {"batchSize": 50, "parallelWorkers": 2},
    }
    body.update(spec)
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "ClusterSpecialization",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


async def _ready_domainmap(api: EmulatedCluster, tmp_path: Path) -> dict[str, Any]:
    load_source(tmp_path / "general")
    body = domainmap("packages", tmp_path / "general")
    body["spec"]["clusters"].append({"name": "fast", "embedded": str(tmp_path / "fast")})
    await api.create(body)

    async def ready() -> dict[str, Any] | None:
        obj = await api.get(DOMAINMAPS, "default", "packages")
        return obj if obj and (obj.get("status") or {}).get("phase") == "Ready" else None

    return await wait_for(ready, 90)  # type: ignore[no-any-return]


async def _status(api: EmulatedCluster, name: str, phases: set[str]) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        obj = await api.get(SPECS, "default", name)
        status = (obj or {}).get("status") or {}
        return status if status.get("phase") in phases else None

    return await wait_for(reached, 90)  # type: ignore[no-any-return]


async def _run_job(
    api: EmulatedCluster,
    job_name: str,
    *,
    succeed: bool = True,
    reason: str = "BackoffLimitExceeded",
) -> dict[str, Any]:
    """Play the Job controller: run the Job's own command, then patch the Job's status."""
    job = await api.get(JOBS, "default", job_name)
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    if succeed:
        result = await asyncio.to_thread(CliRunner().invoke, main, container["args"])
        assert result.exit_code == 0, result.output
        status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    else:
        status = {
            "failed": 1,
            "conditions": [
                {"type": "Failed", "status": "True", "reason": reason, "message": "gave up"}
            ],
        }
    await api.patch(JOBS, "default", job_name, {"status": status})
    return job


async def test_specialize_a_domain_end_to_end(cluster: EmulatedCluster, tmp_path: Path) -> None:
    domain_map = await _ready_domainmap(cluster, tmp_path)
    domain = max(domain_map["status"]["domains"], key=lambda d: d["size"])
    general = EmbeddedQdrant("general", tmp_path / "general")
    summary = models.TextIndexParams(
        type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, lowercase=True
    )
    general.create_payload_index("packages", "summary", summary)  # as a client indexes the library
    general.close()
    await cluster.create(specialization("biggest", domain["id"]))
    status = await _status(cluster, "biggest", {"Migrating"})
    assert status["progress"] == 75
    # the new home got the source's payload indexes when it was created
    fast = EmbeddedQdrant("fast", tmp_path / "fast")
    general = EmbeddedQdrant("general", tmp_path / "general")
    try:
        copied = fast.describe_collection(status["targetCollection"]).payload_schema
        held = general.describe_collection("packages").payload_schema
        # the source's indexes, and the home's own keyword index of each point's partition
        partition_index = copied.pop(PARTITION_KEY)
        assert partition_index.data_type == models.PayloadSchemaType.KEYWORD
        assert {k: (v.data_type, v.params) for k, v in copied.items()} == {
            k: (v.data_type, v.params) for k, v in held.items()
        }
        assert {LABEL_KEY, "summary"} <= set(copied)
        assert status["partitionLayout"] == "field"
    finally:
        fast.close()
        general.close()
    assert status["appliedConfig"]["action"] == "created"
    assert status["appliedConfig"]["collection"]["hnsw"]["m"] == 32  # latency strategy
    # While the Job runs, its checkpoint (points copied of total) shows up in the status.
    fast = EmbeddedQdrant("fast", tmp_path / "fast")
    CheckpointStore(fast).save("default/biggest", Checkpoint(copied=7, source_count=99))
    fast.close()

    async def progressed() -> bool:
        obj = await cluster.get(SPECS, "default", "biggest")
        return ((obj or {}).get("status") or {}).get("migration", {}).get("copied") == 7

    await wait_for(progressed, 30)
    fast = EmbeddedQdrant("fast", tmp_path / "fast")
    CheckpointStore(fast).clear("default/biggest")  # the real Job starts from scratch
    fast.close()
    job = await _run_job(cluster, status["job"])
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ClusterSpecialization"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--catalog-collection" in args  # the Job places points by the catalog's partitions
    status = await _status(cluster, "biggest", {"Ready", "Failed"})
    assert status["phase"] == "Ready", status
    assert status["progress"] == 100, status
    migration = status["migration"]
    assert migration["targetCount"] == migration["sourceCount"] == status["migration"]["copied"]
    assert status["validation"]["recallAt10"] >= 0.9
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert ready["observedGeneration"] == 1
    source = EmbeddedQdrant("general", tmp_path / "general")
    target = EmbeddedQdrant("fast", tmp_path / "fast")
    try:
        expected = source.count("packages", count_filter=domain_filter(domain["id"]))
        assert target.count(status["targetCollection"]) == expected == migration["targetCount"]
        assert source.count("packages") == 400  # no cleanup asked: the source is intact
        # one shard; each point marked with its partition of the domain in the indexed field
        partitions = status["partitions"]
        assert partitions
        assert all(p.startswith(f"{domain['id']}-p") for p in partitions)
        home = status["targetCollection"]
        assert target.collection_info(home).spec.shard_keys is None
        per_partition = [
            target.count(
                home,
                count_filter=models.Filter(
                    must=[
                        models.FieldCondition(key=PARTITION_KEY, match=models.MatchValue(value=p))
                    ]
                ),
            )
            for p in partitions
        ]
        assert sum(per_partition) == expected  # every point in exactly one of them
    finally:
        source.close()
        target.close()
    await events_with(cluster, {"Analyzing", "Configured", "Migrating", "Ready"})


async def test_bad_inputs_become_conditions(cluster: EmulatedCluster, tmp_path: Path) -> None:
    domain_map = await _ready_domainmap(cluster, tmp_path)
    domain = domain_map["status"]["domains"][0]
    fast = EmbeddedQdrant("fast", tmp_path / "fast")
    fast.create_collection("wide", CollectionSpec(vector_size=16))
    fast.create_collection("dotty", CollectionSpec(vector_size=384, distance="Dot"))
    fast.close()
    cases = {
        "nodomain": (specialization("nodomain", "d-nope"), "UnknownDomain"),
        "nocluster": (
            specialization("nocluster", domain["id"], target={"cluster": "mars"}),
            "UnknownCluster",
        ),
        "wide": (
            specialization("wide", domain["id"], target={"cluster": "fast", "collection": "wide"}),
            "VectorSizeMismatch",
        ),
        "dotty": (
            specialization(
                "dotty", domain["id"], target={"cluster": "fast", "collection": "dotty"}
            ),
            "ImmutableConfigChange",
        ),
        "badstrategy": (
            specialization("badstrategy", domain["id"], strategy="fastest"),
            "InvalidSpec",
        ),
    }
    for body, _ in cases.values():
        await cluster.create(body)
    for name, (_, reason) in cases.items():
        status = await _status(cluster, name, {"Failed"})
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", reason), (name, ready)
        assert ready["message"]


async def test_missing_secret_and_failed_or_timed_out_jobs(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    domain_map = await _ready_domainmap(cluster, tmp_path)
    domain = domain_map["status"]["domains"][0]
    await cluster.patch(
        DOMAINMAPS,
        "default",
        "packages",
        {
            "spec": {
                "clusters": [
                    {"name": "general", "embedded": str(tmp_path / "general")},
                    {"name": "fast", "embedded": str(tmp_path / "fast")},
                    {
                        "name": "remote",
                        "url": "https://127.0.0.1:9",
                        "apiKeySecretRef": {"name": "absent"},
                    },
                ]
            }
        },
    )
    await cluster.create(specialization("secretless", domain["id"], target={"cluster": "remote"}))
    status = await _status(cluster, "secretless", {"Pending", "Failed"})
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "SecretNotFound"
    assert "Secret default/absent" in ready["message"]

    for name, reason, expected in (
        ("failing", "BackoffLimitExceeded", "MigrationJobFailed"),
        ("slow", "DeadlineExceeded", "MigrationTimedOut"),
    ):
        await cluster.create(
            specialization(name, domain["id"], target={"cluster": "fast", "collection": name})
        )
        status = await _status(cluster, name, {"Migrating"})
        await _run_job(cluster, status["job"], succeed=False, reason=reason)
        status = await _status(cluster, name, {"Failed"})
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == expected
        assert "nothing was deleted" in ready["message"]
    source = EmbeddedQdrant("general", tmp_path / "general")
    try:
        assert source.count("packages") == 400
    finally:
        source.close()
    assert base64  # Secrets are only ever referenced, never inlined


LEASES = "coordination.k8s.io/v1/leases"


async def _ack(api: EmulatedCluster, replica: str, fences: dict[str, str]) -> None:
    await api.patch(
        LEASES,
        "default",
        lease_name("packages", replica),
        {"metadata": {"annotations": {FENCES_ANNOTATION: json.dumps(fences)}}},
    )


async def _move(api: EmulatedCluster, name: str, check: Any) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        obj = await api.get(SPECS, "default", name)
        status = (obj or {}).get("status") or {}
        return status if check(status) else None

    return await wait_for(reached, 90)  # type: ignore[no-any-return]


async def test_a_move_goes_on_only_when_every_live_router_enforces_its_phase(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    domain_map = await _ready_domainmap(cluster, tmp_path)
    domain = max(domain_map["status"]["domains"], key=lambda d: d["size"])
    now = datetime.now(UTC)
    await cluster.create(
        lease_body("default", "packages", "router-a", {}, loaded=True, now=now, duration_s=3600)
    )
    lapsed = now - timedelta(hours=2)  # stopped renewing: it refuses writes itself
    await cluster.create(
        lease_body("default", "packages", "router-gone", {}, loaded=True, now=lapsed)
    )
    await cluster.create(specialization("fenced", domain["id"]))
    status = await _move(
        cluster,
        "fenced",
        lambda s: s.get("phase") == "Fencing" and "router-a" in s.get("message", ""),
    )
    assert "router-gone" not in status["message"]
    assert status["move"]["phase"] == "dualWrite"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "FenceWaiting"
    jobs = await cluster.list_objects(JOBS, "default")
    migrations = [
        j for j in jobs if j["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
    ]
    assert migrations == []  # nothing copied before the fence
    await _ack(cluster, "router-a", {"fenced": "dualWrite"})
    status = await _status(cluster, "fenced", {"Migrating"})
    job = await _run_job(cluster, status["job"])
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--fence-version") + 1] == str(status["move"]["fenceVersion"])
    assert "--shared-source" in args
    status = await _move(
        cluster,
        "fenced",
        lambda s: s.get("phase") == "Ready" and "router-a" in (s.get("moveMessage") or ""),
    )
    assert status["move"]["phase"] == "switched"
    assert not status["move"]["acknowledged"]
    await _ack(cluster, "router-a", {"fenced": "switched"})
    await _move(cluster, "fenced", lambda s: (s.get("move") or {}).get("phase") == "done")
    await _ack(cluster, "router-a", {"fenced": "done"})
    status = await _move(cluster, "fenced", lambda s: (s.get("move") or {}).get("acknowledged"))
    assert status["move"]["phase"] == "done"
    await events_with(cluster, {"MoveSwitched", "MoveCompleted"})


async def test_a_home_of_a_named_source_holds_every_vector(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    """A source with named dense, sparse and multivectors routed on ``text``: the home is made
    with the source's full vectors config (tuned on ``text``) and the move copies every
    vector of every point of the domain, those lacking ``text`` included."""
    storage = tmp_path / "general"
    load_named_source(storage)
    body = domainmap(
        "packages",
        storage,
        source={"cluster": "general", "collection": "packages", "vector": "text"},
    )
    body["spec"]["clusters"].append({"name": "fast", "embedded": str(tmp_path / "fast")})
    await cluster.create(body)

    async def ready() -> dict[str, Any] | None:
        obj = await cluster.get(DOMAINMAPS, "default", "packages")
        return obj if obj and (obj.get("status") or {}).get("phase") == "Ready" else None

    domain_map = await wait_for(ready, 90)
    domain = max(domain_map["status"]["domains"], key=lambda d: d["size"])
    await cluster.create(specialization("named", domain["id"]))
    status = await _status(cluster, "named", {"Migrating", "Failed"})
    assert status["phase"] == "Migrating", status
    applied = status["appliedConfig"]["collection"]
    assert applied.get("vector_size") is None  # named vectors only
    assert applied["vectors"]["text"]["hnsw"]["m"] == 32  # latency, on the routing vector
    assert set(applied["sparse_vectors"]) == {"keywords"}
    await _run_job(cluster, status["job"])
    status = await _status(cluster, "named", {"Ready", "Failed"})
    assert status["phase"] == "Ready", status
    assert status["validation"]["queries"] > 0  # recall measured on ``text``
    source = EmbeddedQdrant("general", storage)
    fast = EmbeddedQdrant("fast", tmp_path / "fast")
    try:
        [home] = [c for c in fast.list_collections() if c.startswith("packages-")]
        assert (
            fast.collection_info(home).spec.layout()
            == source.collection_info("packages").spec.layout()
        )
        selector = domain_filter(domain["id"])
        originals, _ = source.scroll("packages", limit=1000, scroll_filter=selector)
        copies = {p.id: p for p in fast.scroll(home, limit=1000, scroll_filter=selector)[0]}
        assert len(copies) == len(originals) > 0
        for original in originals:
            assert vectors_equal(copies[original.id].vector, original.vector, atol=1e-6)
    finally:
        source.close()
        fast.close()
