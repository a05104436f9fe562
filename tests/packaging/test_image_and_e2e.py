"""The image recipe (``make image``) and the kind end-to-end script (``make e2e``), checked offline.

Neither Docker nor kind runs here, so these check what can be checked without
them: the Dockerfile's shape (multi-stage, slim, numeric user, writes only
under /tmp), the Makefile targets, and that the e2e script is valid bash whose
chart settings and DomainMap agree with the chart and the CRDs.
"""

from __future__ import annotations

import re
import shlex

import yaml

from .conftest import REPO, helm_template, run
from .crd_schema import load_crds, validate

DOCKERFILE = (REPO / "Dockerfile").read_text()
E2E = REPO / "hack/e2e-kind.sh"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split()[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    instructions = _instructions()
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    assert len(stages) >= 2, "build and runtime stages"
    final = instructions[stages[-1] :]
    base = final[0][1].split()[0]
    assert base.endswith("-slim") or "distroless" in base, base
    assert any(op == "COPY" and args.startswith("--from=") for op, args in final)
    assert not any(op == "RUN" for op, _ in final), "nothing is built in the runtime stage"
    (user,) = [args for op, args in final if op == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert not gid or gid.isdigit()
    assert ("ENTRYPOINT", '["librarian"]') in final


def test_image_writes_only_under_tmp() -> None:
    """With a read-only root filesystem, HOME and the working directory are the /tmp emptyDir."""
    final = _instructions()[[op for op, _ in _instructions()].index("FROM", 1) :]
    env = " ".join(args for op, args in final if op == "ENV")
    assert "HOME=/tmp" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    (workdir,) = [args for op, args in final if op == "WORKDIR"]
    assert workdir == "/tmp"
    values = yaml.safe_load((REPO / "charts/qdrant-librarian/values.yaml").read_text())
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    for doc in helm_template():
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            tmp = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
            mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
            assert mounts.get("/tmp") in tmp, doc["metadata"]["name"]


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", ".git", "tests", "benchmarks"} <= ignored


def test_make_image_builds_the_named_image() -> None:
    default = run("make", "-s", "-n", "-C", str(REPO), "image")
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["docker", "build", "-t", "qdrant-librarian:dev", "."]
    named = run("make", "-s", "-n", "-C", str(REPO), "image", "IMAGE=registry.example/lib:1")
    assert "-t registry.example/lib:1" in named.stdout
    e2e = run("make", "-s", "-n", "-C", str(REPO), "e2e")
    assert "hack/e2e-kind.sh" in e2e.stdout


def test_e2e_script_is_valid_bash_and_documented() -> None:
    result = run("bash", "-n", str(E2E))
    assert result.returncode == 0, result.stderr
    script = E2E.read_text()
    assert script.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in script
    assert "https://qdrant.github.io/qdrant-helm" in script
    assert script.count("helm upgrade --install") == 1
    assert "for name in general fast" in script
    assert "make image" in script
    assert "kind load docker-image" in script
    assert "trap 'kind delete cluster" in script  # the cluster never outlives a failed run
    for path in re.findall(r"(?:hack|tools|charts)/[\w./-]+", script):
        assert (REPO / path).exists(), path


def test_e2e_domainmap_is_valid_and_matches_the_router() -> None:
    crds = load_crds()
    doc = yaml.safe_load((REPO / "hack/e2e/domainmap.yaml").read_text())
    assert validate(doc, crds[("librarian.dev", "DomainMap")]) == []
    assert all(c.get("apiKeySecretRef") for c in doc["spec"]["clusters"])  # real servers: keys
    script = E2E.read_text()
    namespace = re.search(r"^NS=(\S+)$", script, re.MULTILINE)
    assert namespace
    assert doc["metadata"]["namespace"] == namespace.group(1)
    # The chart settings of the script: the router serves the DomainMap the script applies.
    install = script.split("helm install librarian", 1)[1].split("\n\n", 1)[0]
    words = shlex.split(install.replace("\\\n", " ").replace('"${IMAGE%:*}"', "img"))
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    # The script's router is authenticated with the Secret it creates.
    assert "router.auth.apiKeySecret.name=librarian-router-keys" in sets
    assert "create secret generic librarian-router-keys" in script
    rendered = helm_template(
        *[a for s in sets for a in ("--set", s.replace("${IMAGE##*:}", "e2e"))],
        namespace=namespace.group(1),
    )
    (router,) = [
        d
        for d in rendered
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    ]
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--domainmap") + 1] == f"{doc['metadata']['namespace']}/packages"
    assert router["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Never"


def test_e2e_policy_is_valid_and_reads_the_charts_router() -> None:
    from librarian.kube.policy_spec import parse_policy_spec

    doc = yaml.safe_load((REPO / "hack/e2e/rebalancepolicy.yaml").read_text())
    assert validate(doc, load_crds()[("librarian.dev", "RebalancePolicy")]) == []
    parsed = parse_policy_spec(doc["spec"])
    script = E2E.read_text()
    assert "kubectl apply -f hack/e2e/rebalancepolicy.yaml" in script
    namespace = doc["metadata"]["namespace"]
    assert "helm install librarian " in script
    rendered = helm_template(
        "--set", "router.domainMap=packages", namespace=namespace, release="librarian"
    )
    (service,) = [
        d
        for d in rendered
        if d["kind"] == "Service"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    ]
    # By its Service: the operator reads it and takes its port named http.
    from librarian.operator.router_ref import service_port

    assert parsed.router_ref is not None
    assert parsed.router_ref.name == service["metadata"]["name"]
    assert (parsed.router_ref.namespace or namespace) == service["metadata"]["namespace"]
    assert service_port(service, parsed.router_ref.port) == 6333
