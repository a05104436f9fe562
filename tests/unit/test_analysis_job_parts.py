"""The analysis Job's pure parts: names, manifest, request, retry delays, chunked sampling."""

from __future__ import annotations

import random
from typing import Any

import pytest

from librarian.kube.spec import parse_domainmap_spec
from librarian.operator.analysis import (
    RetryPolicy,
    analysis_job,
    analysis_job_name,
    analysis_request,
    needs_secret,
    retry_hint,
)
from librarian.operator.jobs import CATALOG_API_KEY_ENV, SOURCE_API_KEY_ENV
from librarian.operator.labeling import labeling_job_name
from librarian.services.analysis_job import AnalysisRequest
from librarian.services.sampling import sample_points
from librarian.storage.port import PointRecord


def _spec(**extra: Any) -> dict[str, Any]:
    return {
        "source": {"cluster": "general", "collection": "docs"},
        "catalog": {"cluster": "meta"},
        "clusters": [
            {
                "name": "general",
                "url": "https://general:6333",
                "apiKeySecretRef": {"name": "general-key", "key": "api-key"},
            },
            {
                "name": "meta",
                "url": "https://meta:6333",
                "apiKeySecretRef": {"name": "meta-key", "key": "api-key"},
            },
        ],
        **extra,
    }


def test_retry_delays_double_up_to_the_cap_then_stop() -> None:
    policy = RetryPolicy(retries=4, base_s=30, cap_s=100)
    assert [policy.delay_s(a) for a in (1, 2, 3, 4, 5)] == [30.0, 60.0, 100.0, 100.0, None]
    assert RetryPolicy(retries=0).delay_s(1) is None


def test_job_names_count_retries_and_fit_kubernetes() -> None:
    assert analysis_job_name("docs", 3, 1) == "docs-analyze-g3"
    assert analysis_job_name("docs", 3, 2) == "docs-analyze-g3-2"
    assert labeling_job_name("docs", 5) == "docs-label-v5"
    assert labeling_job_name("docs", 5, 3) == "docs-label-v5-3"
    assert len(analysis_job_name("x" * 253, 12345, 99)) <= 63


def test_the_analysis_job_gets_both_keys_from_secrets_and_no_kubernetes_token() -> None:
    parsed = parse_domainmap_spec(_spec(), name="docs")
    job = analysis_job(
        body={"metadata": {"name": "docs", "namespace": "team", "uid": "u1"}},
        parsed=parsed,
        job_name="docs-analyze-g1",
        image="img:1",
    )
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == [
        "analyze",
        "--name",
        "docs-analyze-g1",
        "--source-url",
        "https://general:6333",
        "--catalog-url",
        "https://meta:6333",
    ]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert env == {SOURCE_API_KEY_ENV: "general-key", CATALOG_API_KEY_ENV: "meta-key"}
    assert pod["automountServiceAccountToken"] is False
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "analysis"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert "completionMode" not in job["spec"]


def test_a_cluster_keyed_from_the_operators_environment_blocks_the_job() -> None:
    spec = _spec()
    spec["clusters"][1] = {"name": "meta", "url": "https://meta:6333", "apiKeyEnv": "META_KEY"}
    parsed = parse_domainmap_spec(spec, name="docs")
    assert needs_secret(parsed, ["general"]) is None
    blocked = needs_secret(parsed, ["general", "meta"])
    assert blocked is not None
    assert blocked.name == "meta"
    assert "librarian.dev/retry=" in retry_hint("team", "docs")


def test_the_request_carries_the_spec_and_survives_json() -> None:
    parsed = parse_domainmap_spec(
        _spec(sampleSize=1234, seed=7, bounds={"maxDomains": 9}, labeling={"workers": 3}),
        name="docs",
    )
    request = analysis_request(
        parsed, owner="team/docs", job_name="docs-analyze-g2", version=4, generation=2, vector="t"
    )
    assert (request.sample_size, request.seed, request.labeling_workers) == (1234, 7, 3)
    assert request.thresholds == dict(parsed.thresholds)
    assert request.catalog_collection == parsed.catalog_collection
    assert AnalysisRequest.from_json(request.to_json()) == request
    off = parse_domainmap_spec(_spec(labeling={"enabled": False}), name="docs")
    assert (
        analysis_request(
            off, owner="o", job_name="j", version=1, generation=1, vector=""
        ).labeling_workers
        is None
    )


class _RandomPort:
    """A collection of ``total`` points whose random samples are independent draws."""

    cluster = "test"

    def __init__(self, total: int) -> None:
        self.total = total
        self.draws = 0
        self._rng = random.Random(0)

    def count(self, collection: str, **_: Any) -> int:
        return self.total

    def sample(self, collection: str, limit: int, **_: Any) -> list[PointRecord]:
        self.draws += 1
        ids = self._rng.sample(range(self.total), min(limit, self.total))
        return [PointRecord(id=i, vector=[float(i), 1.0], payload={"text": str(i)}) for i in ids]


@pytest.mark.parametrize(("total", "limit"), [(5000, 1000), (1200, 1000), (500, 1000)])
def test_a_sample_drawn_in_chunks_holds_distinct_points_and_reports_each_chunk(
    total: int, limit: int
) -> None:
    port = _RandomPort(total)
    seen: list[tuple[int, int]] = []
    sample = sample_points(
        port,  # type: ignore[arg-type]
        "docs",
        limit,
        chunk=100,
        on_progress=lambda done, target: seen.append((done, target)),
    )
    target = min(limit, total)
    assert len(sample.ids) == len(set(sample.ids)) == target
    assert sample.ids == sorted(sample.ids)
    assert [t for _, t in seen] == [target] * len(seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1][0] == target
    assert port.draws == len(seen)
    unchunked = sample_points(_RandomPort(total), "docs", limit)  # type: ignore[arg-type]
    assert len(unchunked.ids) == target
