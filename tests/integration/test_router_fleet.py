"""The router resolves a DomainMap's ``spec.fleetRef`` as the operator does.

Against the emulated Kubernetes API over real HTTP: the fleet of a DomainMap
that names a QdrantFleet equals the one of the same clusters inline (keys read
from the labelled Secret of the namespace), the loader routes on it, a missing
fleet is an error saying what to create, and a key Secret that is unlabelled or
in another namespace is refused through the fleet as it is inline.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from librarian.contracts.metadata import CREDENTIALS_LABEL
from librarian.core.discovery import Domain
from librarian.kube.client import Credentials, close_session, remember_credentials
from librarian.kube.fleet_access import CredentialPolicy, SecretNotAllowed
from librarian.local.emulator import EmulatedCluster, emulated_kubernetes, load_crds
from librarian.router.loader import kubernetes_fleet, kubernetes_loader
from librarian.services.catalog import write_catalog
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
KEY = "router-fleet-key-2VbNq8Xe"
POLICY = CredentialPolicy()


def _clusters(storage: Path) -> list[dict[str, Any]]:
    return [
        {"name": "general", "embedded": str(storage)},
        {
            "name": "remote",
            "url": "https://qdrant.example.internal:6333",
            "apiKeySecretRef": {"name": "qdrant-key"},
            "timeoutSeconds": 2,
        },
    ]


def _domainmap(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "DomainMap",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": {"cluster": "general", "collection": "packages"}, **spec},
    }


def _fleet(name: str, clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "QdrantFleet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusters": clusters},
    }


def _secret(name: str, namespace: str, *, labelled: bool = True) -> dict[str, Any]:
    labels = {CREDENTIALS_LABEL: "true"} if labelled else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"api-key": base64.b64encode(KEY.encode()).decode()},
    }


@pytest.fixture
async def api() -> AsyncIterator[EmulatedCluster]:
    async with emulated_kubernetes(load_crds(REPO / "crds")) as emulated:
        remember_credentials(Credentials(server=emulated.url))
        try:
            yield emulated
        finally:
            await close_session()


async def test_a_fleetref_gives_the_router_the_inline_fleet(
    api: EmulatedCluster, tmp_path: Path
) -> None:
    storage = tmp_path / "general"
    await api.create(_secret("qdrant-key", "default"))
    await api.create(_fleet("qdrant", _clusters(storage)))
    await api.create(_domainmap("by-fleet", fleetRef={"name": "qdrant"}))
    await api.create(_domainmap("inline", clusters=_clusters(storage)))
    by_fleet, by_fleet_configs, source = await kubernetes_fleet(
        "default", "by-fleet", policy=POLICY
    )
    inline, inline_configs, _ = await kubernetes_fleet("default", "inline", policy=POLICY)
    try:
        assert by_fleet_configs == inline_configs
        assert source == "general"
        assert by_fleet.names == ["general", "remote"]
        assert by_fleet.config("remote").api_key == KEY
        assert KEY not in repr(by_fleet_configs)
    finally:
        by_fleet.close()
        inline.close()


async def test_the_loader_routes_a_fleetref_domainmap(api: EmulatedCluster, tmp_path: Path) -> None:
    port = EmbeddedQdrant("general", tmp_path / "general")
    rng = np.random.default_rng(5)
    domains = [
        Domain(f"d{i}", f"domain {i}", rng.normal(size=8).astype(np.float32), 0.3, 10, 0.8)
        for i in range(2)
    ]
    write_catalog(port, "librarian-catalog", "default/lib", domains, 1)
    fleet = Fleet.of_ports({"general": port})
    try:
        await api.create(_fleet("qdrant", [{"name": "general", "embedded": "unused"}]))
        body = _domainmap("lib", fleetRef={"name": "qdrant"})
        body["status"] = {
            "domains": [{"id": d.id} for d in domains],
            "catalog": {"cluster": "general", "collection": "librarian-catalog"},
        }
        await api.create(body)
        definition = await kubernetes_loader(fleet, "default", "lib")()
        assert definition is not None
        assert {(r.domain_id, r.cluster, r.collection) for r in definition.domains} == {
            ("d0", "general", "packages"),
            ("d1", "general", "packages"),
        }
    finally:
        fleet.close()


async def test_a_missing_fleet_says_what_to_create(api: EmulatedCluster) -> None:
    await api.create(_domainmap("lib", fleetRef={"name": "absent"}))
    with pytest.raises(
        ValueError, match="QdrantFleet 'absent' does not exist in namespace default"
    ):
        await kubernetes_fleet("default", "lib", policy=POLICY)


@pytest.mark.parametrize(
    ("secret", "secret_ref"),
    [
        (_secret("qdrant-key", "default", labelled=False), {"name": "qdrant-key"}),
        (_secret("qdrant-key", "other"), {"name": "qdrant-key", "namespace": "other"}),
    ],
    ids=["unlabelled", "other-namespace"],
)
async def test_the_credential_rules_hold_through_the_fleet(
    api: EmulatedCluster, tmp_path: Path, secret: dict[str, Any], secret_ref: dict[str, str]
) -> None:
    await api.create(secret)
    clusters = _clusters(tmp_path / "general")
    clusters[1]["apiKeySecretRef"] = secret_ref
    await api.create(_fleet("qdrant", clusters))
    await api.create(_domainmap("lib", fleetRef={"name": "qdrant"}))
    with pytest.raises(SecretNotAllowed) as refused:
        await kubernetes_fleet("default", "lib", policy=POLICY)
    assert KEY not in str(refused.value)
