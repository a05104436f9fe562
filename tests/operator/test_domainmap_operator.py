"""The DomainMap operator end to end: kopf against the emulated API over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, VERSION_KEY
from librarian.core.unrouted import domain_for_unrouted
from librarian.local.emulator import EmulatedCluster
from librarian.services.catalog import read_catalog
from librarian.storage.embedded import EmbeddedQdrant

from .conftest import (
    DOMAINMAPS,
    POINTS,
    ManualClock,
    domainmap,
    events_with,
    load_named_source,
    load_source,
    wait_for,
)


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return condition  # type: ignore[no-any-return]
    return None


async def _wait_condition(
    api: EmulatedCluster,
    name: str,
    type_: str,
    status: str,
    reason: str | None = None,
    generation: int | None = None,
    timeout_s: float = 90,
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        obj = await api.get(DOMAINMAPS, "default", name)
        condition = _condition(obj, type_)
        if (
            condition
            and condition["status"] == status
            and (reason is None or condition["reason"] == reason)
            and (generation is None or condition["observedGeneration"] == generation)
        ):
            return obj
        return None

    return await wait_for(check, timeout_s)  # type: ignore[no-any-return]


async def test_domainmap_is_analysed_labelled_and_catalogued(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    storage = tmp_path / "general"
    load_source(storage)
    await cluster.create(domainmap("packages", storage))
    obj = await _wait_condition(cluster, "packages", "Ready", "True", "Analyzed", generation=1)
    status = obj["status"]
    assert status["phase"] == "Ready"
    assert status["version"] == 1
    assert status["observedGeneration"] == 1
    assert 2 <= status["domainCount"] == len(status["domains"]) <= 8
    assert sum(d["size"] for d in status["domains"]) == 300  # the sample
    assert all("centroid" not in d for d in status["domains"])  # no vectors in etcd
    assert all(d["keywords"] for d in status["domains"])
    labeling = status["labeling"]
    assert (labeling["labeled"], labeling["total"], labeling["enabled"]) == (POINTS, POINTS, True)
    assert labeling["job"] == "packages-label-v1"
    assert labeling["workersDone"] == labeling["ranges"] == labeling["workers"] == 4
    choice = status["domainCountChoice"]  # why this many domains, in the status
    assert choice["criterion"] == "stability"
    assert choice["final"] == status["domainCount"]
    best = max(c["score"] for c in choice["candidates"])
    assert choice["chosen"] in {c["k"] for c in choice["candidates"] if c["score"] >= best - 0.05}
    assert f"k={choice['chosen']}" in choice["summary"]
    assert {c["type"] for c in status["conditions"]} >= {
        "Ready",
        "Analyzed",
        "Drifted",
        "LowConfidence",
    }
    port = EmbeddedQdrant("general", storage)
    try:
        catalog = read_catalog(port, "librarian-catalog-packages", "default/packages")
        assert sorted(e.domain_id for e in catalog) == sorted(d["id"] for d in status["domains"])
        labelled = port.count(
            "packages",
            count_filter=models.Filter(
                must=[models.FieldCondition(key=VERSION_KEY, match=models.MatchValue(value=1))]
            ),
        )
        assert labelled == POINTS
    finally:
        port.close()
    await events_with(cluster, {"Analyzed"})

    # A spec change is a new generation: re-analysis keeps ids, bumps the version.
    first_ids = {d["id"] for d in status["domains"]}
    await cluster.patch(DOMAINMAPS, "default", "packages", {"spec": {"seed": 1}})
    obj = await _wait_condition(cluster, "packages", "Ready", "True", generation=2)
    assert obj["status"]["version"] == 2
    assert len(obj["status"]["history"]) == 2
    assert first_ids & {d["id"] for d in obj["status"]["domains"]}
    # The second analysis's drift and domains are on the operator's /metrics, as in its status.
    drifted = _condition(obj, "Drifted")
    assert drifted is not None
    labels = {"namespace": "default", "domainmap": "packages"}
    assert REGISTRY.get_sample_value("librarian_discovery_max_drift", labels) == pytest.approx(
        obj["status"]["patterns"]["maxDrift"]
    )
    assert REGISTRY.get_sample_value("librarian_discovery_drifted", labels) == (
        1.0 if drifted["status"] == "True" else 0.0
    )
    assert REGISTRY.get_sample_value("librarian_discovery_domains", labels) == float(
        obj["status"]["domainCount"]
    )

    # Deleting removes the catalog but keeps the labels (removeLabels is false).
    await cluster.delete(DOMAINMAPS, "default", "packages")

    async def gone() -> bool:
        return await cluster.get(DOMAINMAPS, "default", "packages") is None

    await wait_for(gone, 150)  # the emulator may only drop it after kopf resyncs (~55 s)
    # Its series are gone with it: no alert keeps firing on a library that was deleted.
    assert REGISTRY.get_sample_value("librarian_discovery_drifted", labels) is None
    port = EmbeddedQdrant("general", storage)
    try:
        assert read_catalog(port, "librarian-catalog-packages") == []
        assert (
            port.count(
                "packages",
                count_filter=models.Filter(
                    must=[models.FieldCondition(key=VERSION_KEY, match=models.MatchValue(value=2))]
                ),
            )
            == POINTS
        )
    finally:
        port.close()


async def test_bad_spec_gets_invalid_spec_condition(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    body = domainmap("broken", tmp_path / "g", strategy="spectral")
    body["spec"]["source"]["cluster"] = "elsewhere"
    # the schema would reject the enum on a real API server; the operator must still be clear
    await cluster.create(body)
    obj = await _wait_condition(cluster, "broken", "Ready", "False", "InvalidSpec")
    message = _condition(obj, "Ready")["message"]  # type: ignore[index]
    assert "spec.strategy 'spectral' is unknown; accepted: kmeans" in message
    assert "'elsewhere' is not in spec.clusters" in message
    assert obj["status"]["phase"] == "Failed"


async def test_missing_source_collection(cluster: EmulatedCluster, tmp_path: Path) -> None:
    storage = tmp_path / "general"
    load_source(storage, n=50)
    body = domainmap("nosource", storage)
    body["spec"]["source"]["collection"] = "absent"
    await cluster.create(body)
    obj = await _wait_condition(cluster, "nosource", "Ready", "False", "SourceNotFound")
    message = _condition(obj, "Ready")["message"]  # type: ignore[index]
    assert "'absent' does not exist on cluster 'general'" in message


async def test_unreachable_cluster_and_missing_secret(cluster: EmulatedCluster) -> None:
    body = domainmap("remote", Path("unused"))
    body["spec"]["clusters"] = [
        {"name": "general", "url": "http://127.0.0.1:9", "timeoutSeconds": 1, "retries": 0}
    ]
    await cluster.create(body)
    obj = await _wait_condition(cluster, "remote", "Ready", "False", "ClusterUnreachable")
    assert "cluster 'general'" in _condition(obj, "Ready")["message"]  # type: ignore[index]

    body = domainmap("secured", Path("unused"))
    body["spec"]["clusters"] = [
        {"name": "general", "url": "https://127.0.0.1:9", "apiKeySecretRef": {"name": "qdrant-key"}}
    ]
    await cluster.create(body)
    obj = await _wait_condition(cluster, "secured", "Ready", "False", "SecretNotFound")
    assert "Secret default/qdrant-key does not exist" in _condition(obj, "Ready")["message"]  # type: ignore[index]


async def test_secret_value_never_leaks(cluster: EmulatedCluster, caplog) -> None:  # type: ignore[no-untyped-def]
    secret_value = "top-secret-key-123"
    import base64

    await cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "qdrant-key",
                "namespace": "default",
                "labels": {"librarian.dev/qdrant-credentials": "true"},
            },
            "data": {"api-key": base64.b64encode(secret_value.encode()).decode()},
        }
    )
    body = domainmap("leaky", Path("unused"))
    body["spec"]["clusters"] = [
        {
            "name": "general",
            "url": "https://127.0.0.1:9",
            "timeoutSeconds": 1,
            "retries": 0,
            "apiKeySecretRef": {"name": "qdrant-key"},
        }
    ]
    await cluster.create(body)
    obj = await _wait_condition(cluster, "leaky", "Ready", "False", "ClusterUnreachable")
    assert secret_value not in str(obj)
    assert secret_value not in str(cluster.events())
    assert secret_value not in caplog.text


async def test_timer_reanalyses_when_interval_passes(
    cluster: EmulatedCluster, tmp_path: Path, clock: ManualClock
) -> None:
    storage = tmp_path / "general"
    load_source(storage, n=200)
    await cluster.create(domainmap("ticking", storage, interval="1h", sampleSize=150))
    await _wait_condition(cluster, "ticking", "Ready", "True")
    clock.freeze()  # the operator's time now passes only when the test says so

    for version in (2, 3):
        clock.advance(3600)  # the interval passes: the timer analyses again, once

        async def reanalysed(version: int = version) -> bool:
            obj = await cluster.get(DOMAINMAPS, "default", "ticking")
            return bool(obj and obj["status"].get("version", 0) >= version)

        await wait_for(reanalysed, 180)  # an analysis Job, then a labeling Job, on a busy machine
    obj = await cluster.get(DOMAINMAPS, "default", "ticking")
    assert obj is not None
    assert obj["status"]["observedGeneration"] == 1  # same spec, new analyses
    assert [h["version"] for h in obj["status"]["history"]][-2:] == [
        obj["status"]["version"] - 1,
        obj["status"]["version"],
    ]


async def test_delete_removes_labels_when_asked(cluster: EmulatedCluster, tmp_path: Path) -> None:
    storage = tmp_path / "general"
    load_source(storage, n=150)
    await cluster.create(domainmap("tidy", storage, sampleSize=150, cleanup={"removeLabels": True}))
    await _wait_condition(cluster, "tidy", "Ready", "True")
    await cluster.delete(DOMAINMAPS, "default", "tidy")

    async def gone() -> bool:
        return await cluster.get(DOMAINMAPS, "default", "tidy") is None

    await wait_for(gone, 150)  # the emulator may only drop it after kopf resyncs (~55 s)
    port = EmbeddedQdrant("general", storage)
    try:
        assert port.count("packages") == 150  # the data itself is never touched
        labelled = port.count(
            "packages",
            count_filter=models.Filter(
                must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=VERSION_KEY))]
            ),
        )
        assert labelled == 0
        assert not port.collection_exists("librarian-catalog-tidy")
    finally:
        port.close()


async def test_discovery_disabled_in_configuration(tmp_path: Path) -> None:
    from librarian.local.emulator import emulated_kubernetes, load_crds
    from librarian.operator.context import OperatorContext
    from librarian.operator.runtime import operator_in_thread
    from librarian.settings import load_settings

    from .conftest import REPO

    context = OperatorContext.from_settings(
        load_settings(environ={}, overrides=["domain_discovery.enabled=false"])
    )
    async with (
        emulated_kubernetes(load_crds(REPO / "crds")) as api,
        operator_in_thread(api.url, context=context),
    ):
        await api.create(domainmap("off", tmp_path / "g"))
        obj = await _wait_condition(api, "off", "Ready", "False", "DiscoveryDisabled")
        assert "domain_discovery.enabled: false" in _condition(obj, "Ready")["message"]  # type: ignore[index]


async def test_the_source_vector_is_chosen_in_the_spec_and_checked(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    """Several dense vectors: none chosen, a sparse one or an unknown one fail with a condition
    listing the dense vectors; ``text`` is analysed, and every point is labelled (those
    without ``text`` by their id, as the router places them)."""
    storage = tmp_path / "general"
    lacking = load_named_source(storage)
    await cluster.create(domainmap("packages", storage))
    obj = await _wait_condition(cluster, "packages", "Ready", "False", "InvalidSourceVector")
    message = _condition(obj, "Ready")["message"]  # type: ignore[index]
    assert "several dense vectors" in message
    assert "'text'" in message
    assert "'other'" in message
    assert "'late'" not in message  # a multivector cannot be routed on
    for wrong, words, generation in (
        ("keywords", "is a sparse vector", 2),
        ("late", "is a multivector", 3),
        ("nope", "is not a vector of the collection", 4),
    ):
        await cluster.patch(
            DOMAINMAPS, "default", "packages", {"spec": {"source": {"vector": wrong}}}
        )
        obj = await _wait_condition(
            cluster,
            "packages",
            "Ready",
            "False",
            "InvalidSourceVector",
            generation=generation,
        )
        message = _condition(obj, "Ready")["message"]  # type: ignore[index]
        assert words in message
        assert "'other', 'text'" in message
    await cluster.patch(DOMAINMAPS, "default", "packages", {"spec": {"source": {"vector": "text"}}})
    obj = await _wait_condition(cluster, "packages", "Ready", "True", "Analyzed", generation=5)
    status = obj["status"]
    labeling = status["labeling"]
    assert (labeling["labeled"], labeling["total"], labeling["enabled"]) == (POINTS, POINTS, True)
    assert labeling["job"] == "packages-label-v1"
    assert labeling["workersDone"] == labeling["ranges"] == labeling["workers"] == 4
    domain_ids = [d["id"] for d in status["domains"]]
    port = EmbeddedQdrant("general", storage)
    try:
        records = port.retrieve("packages", lacking, with_vectors=False)
        assert {r.id: r.payload[LABEL_KEY] for r in records} == {
            i: domain_for_unrouted(i, domain_ids) for i in lacking
        }
        # labelling touched no vector
        [record] = port.retrieve("packages", [lacking[0]])
        assert set(record.vector or {}) == {"other", "late", "keywords"}
    finally:
        port.close()
