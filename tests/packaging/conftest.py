"""Real helm and kubectl binaries for the packaging tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "qdrant-librarian"


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        if os.environ.get("LIBRARIAN_SKIP_TOOLS") == "1":
            pytest.skip(f"{name} not installed and LIBRARIAN_SKIP_TOOLS=1")
        pytest.fail(f"{name} is not installed: run `make tools`")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


# The chart refuses to render a router without its key's Secret: the renders name one.
ROUTER_KEYS = ("--set", "router.auth.apiKeySecret.name=librarian-router-keys")


def helm_template(
    *extra: str, namespace: str = "ops", release: str = "lib"
) -> list[dict[str, Any]]:
    """``helm template`` of the chart (CRDs included, the router's keys named) as objects."""
    result = run(
        tool("helm"),
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        *ROUTER_KEYS,
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def kustomize(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of ``path`` as a list of objects."""
    result = run(tool("kubectl"), "kustomize", str(path))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def sample_migration_job(*, with_target_secret: bool = False) -> dict[str, Any]:
    """A migration Job as the operator builds it (one or two API-key Secrets)."""
    from librarian.kube.spec import SecretRef
    from librarian.operator.jobs import JobSettings, build_migration_job

    return build_migration_job(
        name="packages-rust-migrate-g1",
        namespace="default",
        owner={
            "apiVersion": "librarian.dev/v1alpha1",
            "kind": "ClusterSpecialization",
            "metadata": {"name": "packages-rust", "uid": "0000-1111"},
        },
        args=["--name", "default/packages-rust", "--domain", "d-1"],
        settings=JobSettings(image="ghcr.io/qdrant-librarian/qdrant-librarian:0.1.0"),
        source_secret=SecretRef("qdrant-general"),
        target_secret=SecretRef("qdrant-fast", "key") if with_target_secret else None,
    )


def sample_labeling_job() -> dict[str, Any]:
    """A DomainMap's labeling Job as the operator builds it (an Indexed Job of 4 pods)."""
    from librarian.kube.spec import SecretRef
    from librarian.operator.jobs import JobSettings, build_labeling_job

    return build_labeling_job(
        name="packages-label-v1",
        namespace="default",
        owner={
            "apiVersion": "librarian.dev/v1alpha1",
            "kind": "DomainMap",
            "metadata": {"name": "packages", "uid": "0000-2222"},
        },
        args=["--name", "default/packages@v1", "--source-url", "https://qdrant:6333"],
        settings=JobSettings(image="ghcr.io/qdrant-librarian/qdrant-librarian:0.1.0"),
        workers=4,
        source_secret=SecretRef("qdrant-general"),
    )
