"""The README's install guides say what really happens: objects, columns, notes, files.

A newcomer copies these commands and compares the output; each expected
output shown in the README is derived here from the real artefacts (the
kustomize base, the CRDs' printer columns, the chart's NOTES), so the guide
cannot drift from what ships.
"""

from __future__ import annotations

import re

import pytest
import yaml

from .conftest import CHART, REPO, ROUTER_KEYS, kustomize, run, tool
from .crd_schema import load_crds

README = (REPO / "README.md").read_text()
SECTIONS = (
    "Install with kubectl apply",
    "Install with Helm",
    "Deploy with Argo CD",
    "Try it on kind",
)


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_install_sections_come_first_in_order_then_the_concepts() -> None:
    """What it is, how to install it, a first library and what to do when it fails, before
    the concepts and the reference."""
    positions = [README.index(f"## {title}\n") for title in SECTIONS]
    assert positions == sorted(positions)
    first_steps = [
        README.index(f"## {title}\n")
        for title in ("Your first library", "Troubleshooting", "Compatibility")
    ]
    assert positions[0] < first_steps[0] < first_steps[1] < first_steps[2]
    for concept in ("Domain discovery", "Query routing", "Rebalancing", "Command line"):
        assert first_steps[-1] < README.index(f"## {concept}")


def test_kubectl_apply_output_lists_every_object_of_the_base() -> None:
    section = _section("Install with kubectl apply")
    shown = section.split("$ kubectl apply -k manifests/base\n", 1)[1].split("\n$", 1)[0]
    expected = []
    for doc in kustomize(REPO / "manifests/base"):
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        expected.append(
            f"{doc['kind'].lower()}{'.' + group if group else ''}/{doc['metadata']['name']} created"
        )
    assert shown.splitlines() == expected


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        ("domainmaps", "DomainMap"),
        ("clusterspecializations", "ClusterSpecialization"),
        ("(rebalancepolicies|rp)", "RebalancePolicy"),
    ],
)
def test_get_output_matches_the_printer_columns(command: str, kind: str) -> None:
    crd = load_crds()[("librarian.dev", kind)]
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    columns = ["NAME"] + [
        c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")
    ]
    headers = [
        block.split("\n", 2)[1].split()
        for block in re.split(r"(?m)^[ ]*\$ ", README)
        if re.match(rf"kubectl (-n \S+ )?get {command}( -n \S+)?( -w)?\n", block)
    ]
    assert len(headers) >= 2, f"the README shows `kubectl get {command}` twice"
    for header in headers:
        assert header == columns
    names = crd["spec"]["names"]
    assert all(f"`{short}`" in README for short in names["shortNames"])
    assert f"kubectl get {names['categories'][0]}" in README


def test_helm_notes_shown_are_the_real_notes() -> None:
    from .test_namespaces import readme_namespace, readme_release

    result = run(
        tool("helm"),
        "install",
        "--dry-run=client",
        readme_release(),
        str(CHART),
        "-n",
        readme_namespace(),
        *ROUTER_KEYS,
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:\n", 1)[1]
    shown = _section("Install with Helm").split("NOTES:\n", 1)[1].split("```", 1)[0]
    for line in shown.splitlines():
        if line.strip() and line.strip() != "...":
            assert line in notes.splitlines(), line


def test_argocd_guide_uses_the_shipped_files() -> None:
    section = _section("Deploy with Argo CD")
    patch = yaml.safe_load((REPO / "manifests/argocd/argocd-cm-health.yaml").read_text())
    assert "--patch-file manifests/argocd/argocd-cm-health.yaml" in section
    assert (patch["kind"], patch["metadata"]["name"], patch["metadata"]["namespace"]) == (
        "ConfigMap",
        "argocd-cm",
        "argocd",
    )
    snippet = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert set(snippet["data"]) == set(patch["data"])
    lua = (
        REPO / "manifests/argocd/resource_customizations/librarian.dev/DomainMap/health.lua"
    ).read_text()
    for line in snippet["data"][
        "resource.customizations.health.librarian.dev_DomainMap"
    ].splitlines():
        if not line.lstrip().startswith("--"):
            assert line in lua, line


def test_every_file_the_guides_name_exists() -> None:
    text = "\n".join(_section(title) for title in SECTIONS)
    paths = set(re.findall(r"(?<![\w/.-])((?:manifests|charts|hack|tools|crds)/[\w./-]*\w)", text))
    assert paths
    for path in paths:
        assert (REPO / path).exists(), path


def test_kind_guide_installs_what_the_domainmap_needs() -> None:
    section = _section("Try it on kind")
    domain_map = yaml.safe_load((REPO / "hack/e2e/domainmap.yaml").read_text())
    namespace = domain_map["metadata"]["namespace"]
    for cluster in domain_map["spec"]["clusters"]:
        service = cluster["url"].split("//", 1)[1].split(".", 1)[0]
        assert f"helm install {service} qdrant/qdrant" in section
        ref = cluster["apiKeySecretRef"]
        assert f"create secret generic {ref['name']}" in section
        assert f"--from-literal={ref['key']}=" in section
    assert f"-n {namespace}" in section
    assert "make e2e" in section
    assert "https://qdrant.github.io/qdrant-helm" in section


def test_the_rebalancing_example_is_accepted_by_the_api_server_and_the_operator() -> None:
    from librarian.kube.policy_spec import parse_policy_spec

    from .crd_schema import validate

    section = _section("Rebalancing")
    policy = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert policy["kind"] == "RebalancePolicy"
    assert validate(policy, load_crds()[("librarian.dev", "RebalancePolicy")]) == []
    parse_policy_spec(policy["spec"])


def test_the_rebalancing_guide_shows_every_approval_action() -> None:
    from librarian.operator.policy_state import APPROVAL_ACTIONS, APPROVAL_ANNOTATION

    section = _section("Rebalancing")
    shown = re.findall(
        rf"kubectl annotate rebalancepolicy \S+ {re.escape(APPROVAL_ANNOTATION)}=(\w+)", section
    )
    assert set(shown) == set(APPROVAL_ACTIONS)
    for script in ("bench_rebalancing.py", "bench_forecast.py"):  # figures with their command
        assert f"python benchmarks/{script}" in section
        assert (REPO / "benchmarks" / script).exists()


def test_the_layout_section_matches_the_tree_and_the_layers_contract() -> None:
    """Every package of the tree is in the README's layout, in the layers contract's order."""
    import tomllib

    block = _section("Layout and development").split("```\n", 2)[1]
    listed = [
        line.split()[0].removeprefix("operator/librarian/").rstrip("/").removesuffix(".py")
        for line in block.splitlines()
        if line.startswith("operator/librarian/")
    ]
    package = REPO / "operator/librarian"
    present = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()} | {
        p.stem for p in package.glob("*.py") if p.stem != "__init__"
    }
    assert set(listed) == present, f"README lists {sorted(listed)}, the tree has {sorted(present)}"
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in contracts["contracts"] if c["type"] == "layers"]
    order = [
        name.strip().removeprefix("librarian.")
        for layer in layers
        for name in layer.split("|")
        if name.strip().removeprefix("librarian.") in listed
    ]
    assert [name for name in listed if name in order] == order, (
        "the README lists the layers from the top down, as the contract does"
    )
    unlayered = set(listed) - set(order) - {"testing"}
    assert not unlayered, f"packages outside the layers contract: {unlayered}"
