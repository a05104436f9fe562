"""No confused deputy: a DomainMap author gets no key the operator holds unless its owner allowed it.

Every DomainMap here points at one recording HTTP server standing in for the
author's own server. The refused ones (an unlabelled Secret, a labelled
Secret of another namespace, an ``apiKeyEnv`` outside the allowlist, plain
HTTP to a host not in ``insecureHosts``) must leave it without a single
request, and get ``Ready=False`` with the rule's reason and a Warning Event;
the allowed one really reaches it with its key, so the silence is not vacuous.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from librarian.kube.fleet_access import CredentialPolicy
from librarian.local.emulator import EmulatedCluster, emulated_kubernetes, load_crds
from librarian.operator.context import OperatorContext
from librarian.operator.runtime import operator_in_thread
from tests.integration.recording_server import Recorded, qdrant_error, recording_server

from .conftest import (
    DOMAINMAPS,
    REPO,
    domainmap,
    events_with,
    labeling_jobs_played,
    load_source,
    wait_for,
)

LABEL = "librarian.dev/qdrant-credentials"
SECRET_KEY = "secret-key-9vTq2LmZ"
ENV_KEY = "env-key-3HwPx8Rn"
ALLOWED_KEY = "allowed-key-5KcYe1Ub"
SPECS = "librarian.dev/v1alpha1/clusterspecializations"
FORBIDDEN_ENV = "LIBRARIAN_TEST_OPERATOR_ONLY_KEY"
ALLOWED_ENV = "LIBRARIAN_TEST_ALLOWED_KEY"


def _not_found(request: Recorded, index: int) -> tuple[int, dict[str, Any]]:
    return qdrant_error(404, "Not found: Collection `packages` doesn't exist!")


def _secret(name: str, namespace: str, value: str, *, labelled: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labelled:
        metadata["labels"] = {LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {"api-key": base64.b64encode(value.encode()).decode()},
    }


def _pointing_at(name: str, url: str, **key: Any) -> dict[str, Any]:
    body = domainmap(name, Path("unused"))
    body["spec"]["clusters"] = [
        {"name": "general", "url": url, "timeoutSeconds": 1, "retries": 0, **key}
    ]
    return body


async def _ready_false(api: EmulatedCluster, name: str) -> dict[str, Any]:
    async def refused() -> dict[str, Any] | None:
        obj = await api.get(DOMAINMAPS, "default", name)
        for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
            if condition["type"] == "Ready" and condition["status"] == "False":
                return condition  # type: ignore[no-any-return]
        return None

    return await wait_for(refused, 60)  # type: ignore[no-any-return]


@pytest.fixture
def operator_environment() -> Iterator[None]:
    """Keys in the operator's own environment: one allowed, one not."""
    os.environ[FORBIDDEN_ENV] = ENV_KEY
    os.environ[ALLOWED_ENV] = ALLOWED_KEY
    try:
        yield
    finally:
        del os.environ[FORBIDDEN_ENV]
        del os.environ[ALLOWED_ENV]


async def test_refused_credentials_reach_nobody(operator_environment: None) -> None:
    policy = CredentialPolicy.of(allowed_api_key_env={ALLOWED_ENV}, insecure_hosts={"127.0.0.1"})
    context = OperatorContext(progress_interval_s=0.2, credential_policy=policy)
    with recording_server(_not_found) as author:
        port = author.url.rsplit(":", 1)[1]
        async with (
            emulated_kubernetes(load_crds(REPO / "crds")) as api,
            operator_in_thread(api.url, context=context),
        ):
            await api.create(_secret("unlabelled", "default", SECRET_KEY, labelled=False))
            await api.create(_secret("elsewhere", "other", SECRET_KEY, labelled=True))
            await api.create(_secret("labelled", "default", SECRET_KEY, labelled=True))
            refusals = {
                "unlabelled": (
                    _pointing_at("unlabelled", author.url, apiKeySecretRef={"name": "unlabelled"}),
                    "SecretNotAllowed",
                    f"label it (kubectl label secret unlabelled {LABEL}=true)",
                ),
                "other-namespace": (
                    _pointing_at(
                        "other-namespace",
                        author.url,
                        apiKeySecretRef={"name": "elsewhere", "namespace": "other"},
                    ),
                    "SecretNotAllowed",
                    "must live in the resource's own namespace",
                ),
                "operator-env": (
                    _pointing_at("operator-env", author.url, apiKeyEnv=FORBIDDEN_ENV),
                    "ApiKeyEnvNotAllowed",
                    f"apiKeyEnv {FORBIDDEN_ENV} is not in the operator's allowedApiKeyEnv "
                    f"(allowed: {ALLOWED_ENV}); add it to the list",
                ),
                "plain-http": (
                    _pointing_at(
                        "plain-http",
                        f"http://localhost:{port}",
                        apiKeySecretRef={"name": "labelled"},
                    ),
                    "InsecureTransport",
                    "use an https:// url, or add 'localhost' to the operator's insecureHosts",
                ),
            }
            for body, _, _ in refusals.values():
                await api.create(body)
            # A labelled Secret of another namespace is not found by its name alone either.
            await api.create(
                _pointing_at("same-name", author.url, apiKeySecretRef={"name": "elsewhere"})
            )
            for name, (_, reason, fix) in refusals.items():
                condition = await _ready_false(api, name)
                assert condition["reason"] == reason, (name, condition)
                assert fix in condition["message"], (name, condition["message"])
            assert (await _ready_false(api, "same-name"))["reason"] == "SecretNotFound"
            events = await events_with(
                api, {"SecretNotAllowed", "ApiKeyEnvNotAllowed", "InsecureTransport"}
            )
            warned = {
                (e["involvedObject"]["name"], e["reason"])
                for e in events
                if e.get("type") == "Warning"
            }
            for name, (_, reason, _) in refusals.items():
                assert (name, reason) in warned
            objects = await api.list_objects(DOMAINMAPS, "default")
            assert author.requests == []  # the would-be target received nothing at all

            # The allowed Secret reaches the cluster, with its key. An allowed variable passes
            # the rules, but the analysis runs in a Job, whose pod does not have the
            # operator's environment: that DomainMap asks for a Secret instead.
            await api.create(
                _pointing_at("allowed", author.url, apiKeySecretRef={"name": "labelled"})
            )
            await api.create(_pointing_at("allowed-env", author.url, apiKeyEnv=ALLOWED_ENV))

            async def reached() -> set[str] | None:
                keys = {r.headers.get("api-key", "") for r in author.requests}
                return keys if SECRET_KEY in keys else None

            assert await wait_for(reached, 60) == {SECRET_KEY}
            assert (await _ready_false(api, "allowed-env"))["reason"] == "AnalysisNeedsSecret"

    for text in (json.dumps(objects), json.dumps(events)):
        for key in (SECRET_KEY, ENV_KEY, ALLOWED_KEY):
            assert key not in text


async def test_no_job_once_the_secret_is_no_longer_labelled(tmp_path: Path) -> None:
    """A Secret unlabelled after the DomainMap was analysed: the move is refused, no Job."""
    load_source(tmp_path / "general")
    context = OperatorContext(
        progress_interval_s=0.2,
        credential_policy=CredentialPolicy.of(insecure_hosts={"127.0.0.1"}),
    )
    with recording_server(_not_found) as author:
        async with (
            emulated_kubernetes(load_crds(REPO / "crds")) as api,
            operator_in_thread(api.url, context=context),
            labeling_jobs_played(api),
        ):
            await api.create(_secret("remote-key", "default", SECRET_KEY, labelled=True))
            body = domainmap("packages", tmp_path / "general")
            body["spec"]["clusters"].append(
                {"name": "remote", "url": author.url, "apiKeySecretRef": {"name": "remote-key"}}
            )
            await api.create(body)

            async def analysed() -> dict[str, Any] | None:
                obj = await api.get(DOMAINMAPS, "default", "packages")
                status = (obj or {}).get("status") or {}
                return status if status.get("phase") in ("Ready", "Failed") else None

            status = await wait_for(analysed, 90)
            assert status["phase"] == "Ready", status
            await api.patch("v1/secrets", "default", "remote-key", {"metadata": {"labels": None}})
            secret = await api.get("v1/secrets", "default", "remote-key")
            assert LABEL not in ((secret or {}).get("metadata") or {}).get("labels", {})
            await api.create(
                {
                    "apiVersion": "librarian.dev/v1alpha1",
                    "kind": "ClusterSpecialization",
                    "metadata": {"name": "to-remote", "namespace": "default"},
                    "spec": {
                        "domainMap": "packages",
                        "domain": status["domains"][0]["id"],
                        "target": {"cluster": "remote"},
                    },
                }
            )

            async def refused() -> dict[str, Any] | None:
                obj = await api.get(SPECS, "default", "to-remote")
                for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
                    if condition["type"] == "Ready" and condition["reason"] == "SecretNotAllowed":
                        return condition  # type: ignore[no-any-return]
                return None

            condition = await wait_for(refused, 60)
            assert "remote-key" in condition["message"]
            await events_with(api, {"SecretNotAllowed"})
            jobs = await api.list_objects("batch/v1/jobs", "default")
            components = [j["metadata"]["labels"]["app.kubernetes.io/component"] for j in jobs]
            assert sorted(components) == ["analysis", "labeling"]  # the DomainMap's; no move
    assert author.requests == []
