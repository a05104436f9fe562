"""An API key planted in a Secret never leaves it: not in requests, status, Events, Jobs or logs.

The operator reads the key (a remote Qdrant really receives it in its
``api-key`` header, so the test is not vacuous) and then works through every
path that writes something: a DomainMap analysed, a ClusterSpecialization
migrated to Ready (its Job run with the key injected, as the kubelet would),
one refused by the remote cluster (AuthenticationFailed) and one whose
cluster is unreachable. Every request body the operator sends to the emulated
API, every object's final state, every Event and every log line (DEBUG and
up, the operator's and the Job's) is searched for the key, plain and base64.

The same requests are checked against the RBAC table the chart is tested
with: the operator makes no call its Role does not grant.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from librarian.cli import main
from librarian.kube.fleet_access import CredentialPolicy
from librarian.local.emulator import EmulatedCluster, emulated_kubernetes, load_crds
from librarian.operator.context import OperatorContext
from librarian.operator.jobs import CATALOG_API_KEY_ENV, SOURCE_API_KEY_ENV, TARGET_API_KEY_ENV
from librarian.operator.runtime import operator_in_thread
from tests.integration.recording_server import Recorded, qdrant_error, recording_server
from tests.packaging.rbac_calls import OPERATOR, OPERATOR_CLUSTER_WIDE, merge, triples

from .conftest import DOMAINMAPS, REPO, domainmap, labeling_jobs_played, load_source, wait_for

SENTINEL = "sentinel-api-key-7Qx9dZ2mLw4R"
FORMS = (
    SENTINEL,
    base64.b64encode(SENTINEL.encode()).decode(),
    base64.b64encode(SENTINEL.encode()).decode().rstrip("="),
)
SPECS = "librarian.dev/v1alpha1/clusterspecializations"
JOBS = "batch/v1/jobs"
OPERATOR_AGENTS = ("kopf/", "qdrant-librarian/")


def _leaks(text: str) -> list[str]:
    return [form for form in FORMS if form in text]


def _verb(method: str, name: str | None, params: dict[str, str]) -> str:
    if method == "GET":
        if params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]


def _rejecting_qdrant(request: Recorded, index: int) -> tuple[int, dict[str, Any]]:
    return qdrant_error(403, "Invalid api-key")


def _specialization(name: str, domain: str, cluster: str) -> dict[str, Any]:
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "ClusterSpecialization",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "domainMap": "packages",
            "domain": domain,
            "target": {"cluster": cluster, "collection": f"packages-{name}"},
            "strategy": "latency",
            "migration": {"batchSize": 100, "parallelWorkers": 2},
        },
    }


async def _phase(api: EmulatedCluster, name: str, phases: set[str]) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        status = ((await api.get(SPECS, "default", name)) or {}).get("status") or {}
        return status if status.get("phase") in phases else None

    return await wait_for(reached, 90)  # type: ignore[no-any-return]


async def test_the_api_key_never_leaves_its_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    load_source(tmp_path / "general")
    secret_ref = {"name": "qdrant-keys", "key": "api-key"}
    with recording_server(_rejecting_qdrant) as remote:
        async with (
            emulated_kubernetes(load_crds(REPO / "crds"), record_requests=True) as api,
            operator_in_thread(
                api.url,
                context=OperatorContext(
                    progress_interval_s=0.2,
                    # the stand-in remote cluster serves plain HTTP on loopback
                    credential_policy=CredentialPolicy.of(insecure_hosts={"127.0.0.1"}),
                ),
            ),
            labeling_jobs_played(api),  # with the key injected from the Secret
        ):
            await api.create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": "qdrant-keys",
                        "namespace": "default",
                        "labels": {"librarian.dev/qdrant-credentials": "true"},
                    },
                    "type": "Opaque",
                    "data": {"api-key": base64.b64encode(SENTINEL.encode()).decode()},
                }
            )
            body = domainmap("packages", tmp_path / "general")
            body["spec"]["clusters"] = [
                {
                    "name": "general",
                    "embedded": str(tmp_path / "general"),
                    "apiKeySecretRef": secret_ref,
                },
                {"name": "fast", "embedded": str(tmp_path / "fast"), "apiKeySecretRef": secret_ref},
                {"name": "remote", "url": remote.url, "apiKeySecretRef": secret_ref, "retries": 0},
                {
                    "name": "down",
                    "url": "http://127.0.0.1:9",
                    "apiKeySecretRef": secret_ref,
                    "retries": 0,
                },
            ]
            await api.create(body)

            async def analysed() -> dict[str, Any] | None:
                obj = await api.get(DOMAINMAPS, "default", "packages")
                status = (obj or {}).get("status") or {}
                return obj if status.get("phase") in ("Ready", "Failed") else None

            domain_map = await wait_for(analysed, 90)
            assert domain_map["status"]["phase"] == "Ready", domain_map["status"]
            domain = max(domain_map["status"]["domains"], key=lambda d: d["size"])["id"]
            for name, cluster in (("fast", "fast"), ("remote", "remote"), ("down", "down")):
                await api.create(_specialization(name, domain, cluster))

            # Migrating: play the Job controller, with the key injected as the kubelet would.
            status = await _phase(api, "fast", {"Migrating", "Failed"})
            assert status["phase"] == "Migrating", status
            job = await api.get(JOBS, "default", status["job"])
            assert job is not None
            container = job["spec"]["template"]["spec"]["containers"][0]
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
            # the catalog (the domains' partitions, for placement) lives on the source cluster
            assert refs == {
                SOURCE_API_KEY_ENV: secret_ref,
                TARGET_API_KEY_ENV: secret_ref,
                CATALOG_API_KEY_ENV: secret_ref,
            }
            result = await asyncio.to_thread(
                CliRunner().invoke,
                main,
                container["args"],
                env={
                    SOURCE_API_KEY_ENV: SENTINEL,
                    TARGET_API_KEY_ENV: SENTINEL,
                    CATALOG_API_KEY_ENV: SENTINEL,
                },
            )
            assert result.exit_code == 0, result.output
            assert _leaks(result.output) == []
            await api.patch(
                JOBS,
                "default",
                status["job"],
                {
                    "status": {
                        "succeeded": 1,
                        "conditions": [{"type": "Complete", "status": "True"}],
                    }
                },
            )
            assert (await _phase(api, "fast", {"Ready", "Failed"}))["phase"] == "Ready"
            refused = await _phase(api, "remote", {"Failed"})
            assert "AuthenticationFailed" in json.dumps(refused["conditions"])
            unreachable = await _phase(api, "down", {"Pending", "Failed"})
            assert "ClusterUnreachable" in json.dumps(unreachable["conditions"])

            objects = [
                *await api.list_objects(DOMAINMAPS, "default"),
                *await api.list_objects(SPECS, "default"),
                *await api.list_objects(JOBS, "default"),
            ]
            events = api.events()
            requests = api.requests()

    # The key was really read and used: the remote cluster got it, in a header only.
    assert remote.requests
    assert all(r.headers.get("api-key") == SENTINEL for r in remote.requests)
    assert not [r for r in remote.requests if _leaks(json.dumps(r.body))]

    # Nothing the operator sent to the API carries it.
    operator_requests = [
        r for r in requests if r.headers.get("User-Agent", "").startswith(OPERATOR_AGENTS)
    ]
    assert any(r.resource is not None and r.resource.plural == "secrets" for r in operator_requests)
    for request in operator_requests:
        assert _leaks(request.body.decode(errors="replace")) == [], (request.method, request.url)
    # Only the test's own Secret creation carried the key to the API.
    carrying = [r for r in requests if _leaks(r.body.decode(errors="replace"))]
    assert [(r.method.value, r.url.path) for r in carrying] == [
        ("POST", "/api/v1/namespaces/default/secrets")
    ]

    # Nor any status, spec, Job or Event, nor any log line at any level.
    assert objects
    assert events
    assert _leaks(json.dumps(objects)) == []
    assert _leaks(json.dumps(events)) == []
    assert caplog.records
    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records
    )
    assert _leaks(logged) == []
    assert _leaks(caplog.text) == []

    # Every call the operator made is granted by the chart's cluster-wide Role.
    allowed = triples(merge(OPERATOR, OPERATOR_CLUSTER_WIDE))
    made = set()
    for request in operator_requests:
        if request.resource is None or request.resource.plural is None:
            continue  # discovery (/api, /apis, /version): open to every authenticated user
        resource = request.resource.plural + (
            f"/{request.subresource}" if request.subresource else ""
        )
        verb = _verb(request.method.value, request.name, dict(request.params))
        made.add((request.resource.group or "", resource, verb))
    assert made - allowed == set()
    assert ("", "secrets", "get") in made
    assert ("batch", "jobs", "create") in made
