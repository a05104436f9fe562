"""One version everywhere, ``tools/set_version.py`` that moves it, and ``make release``.

The files are read here as their own tools read them (TOML, YAML, helm), not
with the patterns ``set_version.py`` rewrites, so a pattern that misses a
place fails here. The release is run for real with helm, with no Docker or
Podman on its PATH: the chart is packaged and the missing image is said.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from .conftest import CHART, REPO, helm_template, run, tool

IMAGE = "ghcr.io/qdrant-librarian/qdrant-librarian"
SET_VERSION = REPO / "tools" / "set_version.py"
RELEASE = REPO / "tools" / "release.py"
# What set_version.py reads and writes, copied into a scratch checkout.
VERSIONED = [
    "pyproject.toml",
    "charts/qdrant-librarian/Chart.yaml",
    "charts/qdrant-librarian/README.md",
    "manifests/base/kustomization.yaml",
    "manifests/base/deployment.yaml",
    "manifests/argocd/application.yaml",
    "README.md",
    "CHANGELOG.md",
]


def _tag(image: str) -> str:
    repository, _, tag = image.rpartition(":")
    assert repository == IMAGE, image
    return tag


def versions_written(root: Path) -> dict[str, str]:
    """Each place's version, read the way the tool that uses it reads it."""
    chart = yaml.safe_load((root / "charts/qdrant-librarian/Chart.yaml").read_text())
    kustomization = yaml.safe_load((root / "manifests/base/kustomization.yaml").read_text())
    (image,) = [i for i in kustomization["images"] if i["newName"] == IMAGE]
    deployments = [
        d
        for d in yaml.safe_load_all((root / "manifests/base/deployment.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    job_images = [
        e["value"]
        for d in deployments
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if e["name"] == "LIBRARIAN_IMAGE"
    ]
    (job_image,) = job_images
    application = yaml.safe_load((root / "manifests/argocd/application.yaml").read_text())
    revision = application["spec"]["source"]["targetRevision"]
    assert revision.startswith("v"), revision
    return {
        "pyproject": tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"],
        "chart version": str(chart["version"]),
        "chart appVersion": str(chart["appVersion"]),
        "kustomize image tag": str(image["newTag"]),
        "migration Job image (manifests)": _tag(job_image),
        "Argo CD targetRevision": revision[1:],
    }


def test_every_file_says_the_one_version() -> None:
    written = versions_written(REPO)
    assert len(set(written.values())) == 1, written
    (version,) = set(written.values())
    import librarian

    assert librarian.__version__ == version
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d\d-\d\d$", changelog, re.M)
    # The chart deploys its appVersion as the image tag, for the pods and the Jobs alike.
    for doc in helm_template():
        if doc["kind"] == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            assert _tag(container["image"]) == version
    check = run(sys.executable, str(SET_VERSION), "--check")
    assert check.returncode == 0, check.stderr


def test_the_cli_prints_the_version() -> None:
    import librarian
    from librarian.cli import main

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"librarian {librarian.__version__}"


def test_operator_default_job_image_follows_the_version() -> None:
    import librarian
    from librarian.operator.context import OperatorContext

    saved = os.environ.pop("LIBRARIAN_IMAGE", None)
    try:
        assert OperatorContext().image == f"{IMAGE}:{librarian.__version__}"
    finally:
        if saved is not None:
            os.environ["LIBRARIAN_IMAGE"] = saved


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A scratch copy of the files that carry the version."""
    for name in VERSIONED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_set_version_rewrites_every_place(checkout: Path) -> None:
    result = run(sys.executable, str(SET_VERSION), "2.3.4-rc.1", "--root", str(checkout))
    assert result.returncode == 0, result.stderr
    assert set(versions_written(checkout).values()) == {"2.3.4-rc.1"}
    changelog = (checkout / "CHANGELOG.md").read_text()
    # What was unreleased is now the release's; a new Unreleased section sits above it.
    assert re.search(
        r"^## \[Unreleased\]\n\n## \[2\.3\.4-rc\.1\] - \d{4}-\d\d-\d\d$", changelog, re.M
    )
    assert run(sys.executable, str(SET_VERSION), "--check", "--root", str(checkout)).returncode == 0
    for guide in ("README.md", "charts/qdrant-librarian/README.md"):
        text = (checkout / guide).read_text()
        assert not re.search(rf"{IMAGE}:(?!2\.3\.4-rc\.1)\d", text), guide
    # The guide's release commands and Argo CD pin name the new version, and no other.
    readme = (checkout / "README.md").read_text()
    for title in ("Releases and versions", "Deploy with Argo CD"):
        section = readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        assert old_version(section) == set(), title
        assert "2.3.4-rc.1" in section, title


def old_version(text: str) -> set[str]:
    """The concrete versions a text names (x.y.z), other than the one just set."""
    return set(re.findall(r"\b\d+\.\d+\.\d+\b", text)) - {"2.3.4"}


def test_a_place_left_behind_is_named(checkout: Path) -> None:
    chart = checkout / "charts/qdrant-librarian/Chart.yaml"
    chart.write_text(
        re.sub(r'^appVersion: ".*"$', 'appVersion: "9.9.9"', chart.read_text(), flags=re.M)
    )
    result = run(sys.executable, str(SET_VERSION), "--check", "--root", str(checkout))
    assert result.returncode == 1
    assert "charts/qdrant-librarian/Chart.yaml: says 9.9.9" in result.stderr


@pytest.mark.parametrize("version", ["1.2", "v1.2.3", "01.2.3", "1.2.3.4"])
def test_set_version_refuses_what_is_not_semver(checkout: Path, version: str) -> None:
    before = (checkout / "pyproject.toml").read_text()
    result = run(sys.executable, str(SET_VERSION), version, "--root", str(checkout))
    assert result.returncode != 0
    assert "not a semantic version" in result.stderr
    assert (checkout / "pyproject.toml").read_text() == before


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    extracted = archive.extractfile(name)
    assert extracted is not None, name
    return extracted.read()


def test_release_packages_the_chart_and_says_the_image_was_not_built(tmp_path: Path) -> None:
    """No docker or podman on PATH: the chart is still packaged, and the output says why not."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "helm").symlink_to(tool("helm"))
    dist = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, str(RELEASE), "--dist", str(dist), "--registry", "registry.example/team"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    version = versions_written(REPO)["pyproject"]
    assert "image: NOT BUILT: docker is not on PATH; podman is not on PATH" in result.stdout
    archive = dist / f"qdrant-librarian-{version}.tgz"
    assert f"helm push {archive} oci://registry.example/team/charts" in result.stdout
    with tarfile.open(archive) as tgz:
        names = set(tgz.getnames())
        packaged = yaml.safe_load(_member(tgz, "qdrant-librarian/Chart.yaml"))
        license_text = _member(tgz, "qdrant-librarian/LICENSE").decode()
    assert (packaged["version"], packaged["appVersion"]) == (version, version)
    assert packaged["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    assert license_text == (REPO / "LICENSE").read_text()
    crds = {f"qdrant-librarian/crds/{p.name}" for p in (REPO / "crds").glob("*.yaml")}
    crds.discard("qdrant-librarian/crds/kustomization.yaml")
    assert crds <= names
    assert "qdrant-librarian/values.schema.json" in names
    # The packaged chart installs as the directory does.
    shown = run(tool("helm"), "show", "chart", str(archive))
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["version"] == version
    rendered = run(
        tool("helm"),
        "template",
        "lib",
        str(archive),
        "--set",
        "router.auth.apiKeySecret.name=keys",
    )
    assert rendered.returncode == 0, rendered.stderr

    # In CI, a release without its image is a failure, though the chart is still packaged.
    strict = subprocess.run(
        [sys.executable, str(RELEASE), "--dist", str(tmp_path / "strict"), "--require-image"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert strict.returncode == 1
    assert "no image was built and --require-image was given" in strict.stderr
    assert (tmp_path / "strict" / archive.name).exists()


def test_release_refuses_a_version_that_disagrees(checkout: Path) -> None:
    """With one file behind, the release stops before building or packaging anything."""
    chart = checkout / "charts/qdrant-librarian/Chart.yaml"
    chart.write_text(re.sub(r"^version: .*$", "version: 9.9.9", chart.read_text(), flags=re.M))
    result = run(sys.executable, str(RELEASE), "--root", str(checkout))
    assert result.returncode == 1
    assert "charts/qdrant-librarian/Chart.yaml: says 9.9.9" in result.stderr
    assert "set_version.py" in result.stderr
    assert "image:" not in result.stdout
    assert not (checkout / "dist").exists()


def test_make_release_runs_set_version_then_release() -> None:
    dry = run("make", "-s", "-n", "-C", str(REPO), "release", "VERSION=1.2.3", "REGISTRY=r.example")
    assert dry.returncode == 0, dry.stderr
    commands = dry.stdout.splitlines()
    (set_line,) = [c for c in commands if "tools/set_version.py" in c]
    (release_line,) = [c for c in commands if "tools/release.py" in c]
    assert set_line.split()[-1] == "1.2.3"
    assert commands.index(set_line) < commands.index(release_line)
    assert "--registry r.example" in release_line
    plain = run("make", "-s", "-n", "-C", str(REPO), "release")
    assert "tools/set_version.py" not in plain.stdout
    assert "tools/release.py" in plain.stdout


def test_license_is_the_apache_2_0_text_and_declared() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith(
        "Apache License\n                           Version 2.0, January 2004"
    )
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert (CHART / "LICENSE").resolve() == (REPO / "LICENSE").resolve()
