"""QdrantFleet end to end: kopf against the emulated API, DomainMaps naming a fleet.

A DomainMap with ``spec.fleetRef`` is analysed and labelled as one with the
same clusters inline; inline clusters get the Deprecated warning; a missing
fleet gives FleetNotFound and recovers once it is created; a change to the
fleet reaches the DomainMap (analysed again with the new generation); and the
credential rules hold through the fleet: a key Secret of another namespace, or
an unlabelled one, is refused before anything reaches the cluster.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from librarian.contracts.metadata import CREDENTIALS_LABEL, FLEET_ANNOTATION
from librarian.kube.fleet_access import CredentialPolicy
from librarian.local.emulator import EmulatedCluster, emulated_kubernetes, load_crds
from librarian.operator.context import OperatorContext
from librarian.operator.runtime import operator_in_thread
from tests.integration.recording_server import Recorded, qdrant_error, recording_server
from tests.packaging.rbac_calls import OPERATOR, OPERATOR_CLUSTER_WIDE, merge, triples

from .conftest import DOMAINMAPS, POINTS, REPO, domainmap, events_with, load_source, wait_for
from .test_secret_hygiene import OPERATOR_AGENTS, _verb

FLEETS = "librarian.dev/v1alpha1/qdrantfleets"
SPECS = "librarian.dev/v1alpha1/clusterspecializations"
SECRET_KEY = "fleet-secret-key-7QzWm3Lp"


def _fleet(name: str, clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "QdrantFleet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusters": clusters},
    }


def _by_fleet(name: str, fleet: str, **spec: Any) -> dict[str, Any]:
    body = domainmap(name, Path("unused"), **spec)
    del body["spec"]["clusters"]
    body["spec"]["fleetRef"] = {"name": fleet}
    return body


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return condition  # type: ignore[no-any-return]
    return None


async def _wait(
    api: EmulatedCluster,
    resource: str,
    name: str,
    reason: str,
    *,
    status: str | None = None,
    type_: str = "Ready",
    timeout_s: float = 90,
    also: Any = None,
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        obj = await api.get(resource, "default", name)
        condition = _condition(obj, type_)
        if condition is None or condition["reason"] != reason:
            return None
        if status is not None and condition["status"] != status:
            return None
        if also is not None and not also(obj):
            return None
        return obj

    return await wait_for(check, timeout_s)  # type: ignore[no-any-return]


async def test_a_fleetref_domainmap_is_analysed_like_an_inline_one(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    inline_storage, fleet_storage = tmp_path / "inline", tmp_path / "fleet"
    load_source(inline_storage)
    load_source(fleet_storage)
    await cluster.create(_fleet("qdrant", [{"name": "general", "embedded": str(fleet_storage)}]))
    await cluster.create(_by_fleet("by-fleet", "qdrant"))
    await cluster.create(domainmap("inline", inline_storage))

    by_fleet = await _wait(cluster, DOMAINMAPS, "by-fleet", "Analyzed", status="True")
    inline = await _wait(cluster, DOMAINMAPS, "inline", "Analyzed", status="True")
    for obj in (by_fleet, inline):
        labeling = obj["status"]["labeling"]
        assert (labeling["labeled"], labeling["total"]) == (POINTS, POINTS)
        assert sum(d["size"] for d in obj["status"]["domains"]) == 300  # the sample
        assert 2 <= obj["status"]["domainCount"] <= 8
        assert obj["status"]["catalog"]["cluster"] == "general"
    assert by_fleet["status"]["fleet"] == {"name": "qdrant", "generation": 1}

    deprecated = _condition(inline, "Deprecated")
    assert deprecated is not None
    assert (deprecated["status"], deprecated["reason"]) == ("True", "InlineClusters")
    assert "move the clusters to a QdrantFleet" in deprecated["message"]
    assert _condition(inline, "Ready")["status"] == "True"  # type: ignore[index]
    not_deprecated = _condition(by_fleet, "Deprecated")
    assert not_deprecated is not None
    assert (not_deprecated["status"], not_deprecated["reason"]) == ("False", "FleetRef")

    fleet = await _wait(cluster, FLEETS, "qdrant", "Reachable", status="True")
    assert fleet["status"]["clusterCount"] == 1
    assert fleet["status"]["phase"] == "Ready"
    assert fleet["status"]["clusters"] == [
        {
            "name": "general",
            "reachable": True,
            "reason": "Reachable",
            "message": f"embedded storage {fleet_storage} answers",
        }
    ]


async def test_a_missing_fleet_recovers_and_a_fleet_change_reaches_the_domainmap(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    storage = tmp_path / "general"
    load_source(storage)
    await cluster.create(_by_fleet("waiting", "later"))
    obj = await _wait(cluster, DOMAINMAPS, "waiting", "FleetNotFound", status="False")
    message = _condition(obj, "Ready")["message"]  # type: ignore[index]
    assert "QdrantFleet 'later' does not exist in namespace default: create it there" in message
    assert obj["status"]["phase"] == "Pending"  # not terminal: it waits for the fleet
    await events_with(cluster, {"FleetNotFound"})

    await cluster.create(_fleet("later", [{"name": "general", "embedded": str(storage)}]))
    obj = await _wait(cluster, DOMAINMAPS, "waiting", "Analyzed", status="True")
    assert obj["status"]["version"] == 1
    assert obj["metadata"]["annotations"][FLEET_ANNOTATION] == "1"
    assert obj["metadata"]["generation"] == 1  # metadata only: its spec was never written

    # A change to the fleet is a new fleet generation: the DomainMap is analysed again.
    await cluster.patch(
        FLEETS,
        "default",
        "later",
        {"spec": {"clusters": [{"name": "general", "embedded": str(storage), "retries": 1}]}},
    )
    obj = await _wait(
        cluster,
        DOMAINMAPS,
        "waiting",
        "Analyzed",
        status="True",
        also=lambda o: o["status"].get("version") == 2,
    )
    assert obj["status"]["fleet"]["generation"] == 2
    assert obj["metadata"]["generation"] == 1
    await events_with(cluster, {"FleetChanged"})

    _assert_operator_calls_are_granted(cluster)

    # A fleet whose spec breaks the rules says so, and its DomainMaps say why they fail.
    await cluster.patch(FLEETS, "default", "later", {"spec": {"clusters": [{"name": "general"}]}})
    fleet = await _wait(cluster, FLEETS, "later", "InvalidSpec", status="False")
    assert "needs exactly one of url (remote Qdrant) or embedded" in fleet["status"]["message"]
    obj = await _wait(cluster, DOMAINMAPS, "waiting", "InvalidSpec", status="False")
    assert "QdrantFleet 'later': spec.clusters[0] (general)" in obj["status"]["message"]


def _assert_operator_calls_are_granted(api: EmulatedCluster) -> None:
    """Every call the operator made for fleets (and DomainMaps) is in the RBAC table the
    chart and the manifests grant."""
    made = set()
    for request in api.requests():
        if not request.headers.get("User-Agent", "").startswith(OPERATOR_AGENTS):
            continue
        if request.resource is None or request.resource.plural is None:
            continue  # discovery: open to every authenticated user
        resource = request.resource.plural + (
            f"/{request.subresource}" if request.subresource else ""
        )
        verb = _verb(request.method.value, request.name, dict(request.params))
        made.add((request.resource.group or "", resource, verb))
    assert made - triples(merge(OPERATOR, OPERATOR_CLUSTER_WIDE)) == set()
    assert {
        ("librarian.dev", "qdrantfleets", "get"),
        ("librarian.dev", "qdrantfleets/status", "patch"),
        ("librarian.dev", "domainmaps", "patch"),
    } <= made


def _not_found(request: Recorded, index: int) -> tuple[int, dict[str, Any]]:
    return qdrant_error(404, "Not found: Collection `packages` doesn't exist!")


def _secret(name: str, namespace: str, *, labelled: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labelled:
        metadata["labels"] = {CREDENTIALS_LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {"api-key": base64.b64encode(SECRET_KEY.encode()).decode()},
    }


async def test_the_credential_rules_hold_through_a_fleet() -> None:
    policy = CredentialPolicy.of(insecure_hosts={"127.0.0.1"})
    context = OperatorContext(progress_interval_s=0.2, credential_policy=policy)
    with recording_server(_not_found) as author:
        remote = {"url": author.url, "timeoutSeconds": 1, "retries": 0}
        async with (
            emulated_kubernetes(load_crds(REPO / "crds")) as api,
            operator_in_thread(api.url, context=context),
        ):
            await api.create(_secret("unlabelled", "default", labelled=False))
            await api.create(_secret("elsewhere", "other", labelled=True))
            refusals = {
                "unlabelled": (
                    {"apiKeySecretRef": {"name": "unlabelled"}},
                    f"label it (kubectl label secret unlabelled {CREDENTIALS_LABEL}=true)",
                ),
                "other-namespace": (
                    {"apiKeySecretRef": {"name": "elsewhere", "namespace": "other"}},
                    "must live in the resource's own namespace",
                ),
            }
            for name, (key, _) in refusals.items():
                await api.create(_fleet(name, [{"name": "general", **remote, **key}]))
                await api.create(_by_fleet(name, name))
            for name, (_, fix) in refusals.items():
                obj = await _wait(api, DOMAINMAPS, name, "SecretNotAllowed", status="False")
                assert fix in _condition(obj, "Ready")["message"]  # type: ignore[index]
                fleet = await _wait(api, FLEETS, name, "ClusterUnreachable", status="False")
                (report,) = fleet["status"]["clusters"]
                assert (report["reachable"], report["reason"]) == (False, "SecretNotAllowed")
                assert fix in report["message"]
            # Neither the fleet's check nor an analysis sent the would-be target anything.
            assert author.requests == []
            objects = await api.list_objects(DOMAINMAPS, "default")
            fleets = await api.list_objects(FLEETS, "default")
            events = api.events("default")

            # A labelled Secret of the namespace is used: the fleet's check reaches the
            # cluster with its key, so the silence above is not vacuous.
            await api.create(_secret("labelled", "default", labelled=True))
            await api.create(
                _fleet(
                    "allowed",
                    [{"name": "general", **remote, "apiKeySecretRef": {"name": "labelled"}}],
                )
            )

            async def reached() -> set[str] | None:
                keys = {r.headers.get("api-key", "") for r in author.requests}
                return keys if SECRET_KEY in keys else None

            assert await wait_for(reached, 60) == {SECRET_KEY}
    for text in (json.dumps(objects), json.dumps(fleets), json.dumps(events)):
        assert SECRET_KEY not in text


async def test_a_specialization_reaches_the_clusters_of_the_fleet(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    """A ClusterSpecialization of a fleetRef DomainMap targets the fleet's clusters: a
    cluster of the fleet gets a migration Job; one outside it is named as unknown."""
    storage = tmp_path / "general"
    load_source(storage)
    clusters = [
        {"name": "general", "embedded": str(storage)},
        {"name": "fast", "embedded": str(tmp_path / "fast")},
    ]
    await cluster.create(_fleet("qdrant", clusters))
    await cluster.create(_by_fleet("packages", "qdrant"))
    obj = await _wait(cluster, DOMAINMAPS, "packages", "Analyzed", status="True")
    domain = max(obj["status"]["domains"], key=lambda d: d["size"])["id"]
    for name, target in (("to-fast", "fast"), ("to-mars", "mars")):
        await cluster.create(
            {
                "apiVersion": "librarian.dev/v1alpha1",
                "kind": "ClusterSpecialization",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"domainMap": "packages", "domain": domain, "target": {"cluster": target}},
            }
        )

    async def phase(name: str, wanted: str) -> dict[str, Any] | None:
        found = await cluster.get(SPECS, "default", name)
        status = (found or {}).get("status") or {}
        return status if status.get("phase") == wanted else None

    moving = await wait_for(lambda: phase("to-fast", "Migrating"), 90)
    assert moving["targetCollection"]
    assert await cluster.get("batch/v1/jobs", "default", moving["job"]) is not None
    failed = await wait_for(lambda: phase("to-mars", "Failed"), 90)
    assert (
        "target cluster 'mars' is not in DomainMap packages's clusters (general, fast)"
        in (failed["message"])
    )


async def test_the_fleet_reports_each_clusters_reachability(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    storage = tmp_path / "general"
    load_source(storage, n=20)
    alive = {"name": "general", "embedded": str(storage)}
    dead = {"name": "dead", "url": "http://127.0.0.1:9", "timeoutSeconds": 1, "retries": 0}
    # A target nothing was placed on yet: its storage is made with its first collection.
    fresh = {"name": "fresh", "embedded": str(tmp_path / "not-yet")}
    await cluster.create(_fleet("mixed", [alive, dead, fresh]))
    fleet = await _wait(cluster, FLEETS, "mixed", "ClusterUnreachable", status="False")
    status = fleet["status"]
    assert (status["phase"], status["clusterCount"]) == ("Degraded", 3)
    reports = {r["name"]: r for r in status["clusters"]}
    assert reports["general"]["reachable"] is True
    assert (reports["fresh"]["reachable"], reports["fresh"]["reason"]) == (True, "Reachable")
    assert (
        "is empty: it is made when a collection is first placed there"
        in (reports["fresh"]["message"])
    )
    assert not (tmp_path / "not-yet").exists()  # the check creates nothing
    assert (reports["dead"]["reachable"], reports["dead"]["reason"]) == (
        False,
        "ClusterUnreachable",
    )
    assert status["message"].startswith("dead: ")
    assert "cluster 'dead'" in reports["dead"]["message"]

    await cluster.patch(FLEETS, "default", "mixed", {"spec": {"clusters": [alive]}})
    fleet = await _wait(cluster, FLEETS, "mixed", "Reachable", status="True")
    assert (fleet["status"]["phase"], fleet["status"]["observedGeneration"]) == ("Ready", 2)
