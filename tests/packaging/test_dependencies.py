"""Reproducible installs: the lock pins every dependency, pre-1.0 APIs are capped, the image is lean.

``make`` installs from ``requirements/constraints.txt`` (``make lock``
refreshes it); these tests fail when a dependency is added to pyproject
without re-locking, when a pinned version falls outside what pyproject
allows, or when a test tool or the demo data would reach the production image.
"""

from __future__ import annotations

import re
import tomllib

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK = REPO / "requirements/constraints.txt"
TEST_TOOLS = {"kmock", "lupa", "cel-python", "pytest", "jsonschema", "kubernetes-validate"}


def _requirements(group: str | None = None) -> list[Requirement]:
    project = PYPROJECT["project"]
    texts = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return [Requirement(text) for text in texts]


def _all_requirements() -> list[Requirement]:
    extras = PYPROJECT["project"]["optional-dependencies"]
    return [*_requirements(), *(r for group in extras for r in _requirements(group))]


def _locked() -> dict[str, list[tuple[Version, str]]]:
    """Name -> [(version, marker)] for every pin of the lock (a name may be pinned per Python)."""
    pins: dict[str, list[tuple[Version, str]]] = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(?:;\s*(.*))?$", line)
        if match:
            name, version, marker = match.groups()
            pins.setdefault(canonicalize_name(name), []).append((Version(version), marker or ""))
    return pins


def test_every_dependency_is_pinned_by_the_lock_within_what_pyproject_allows() -> None:
    locked = _locked()
    environment = default_environment()
    for requirement in _all_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in the lock: run `make lock`"
        for version, marker in locked[name]:
            if marker and not Requirement(f"x; {marker}").marker.evaluate(environment):  # type: ignore[union-attr]
                continue
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{name}=={version} in the lock is outside {requirement.specifier}: run `make lock`"
            )


def test_the_makefile_and_the_image_install_from_the_lock() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "-c $(LOCK)" in makefile
    assert "LOCK   := requirements/constraints.txt" in makefile
    assert re.search(r"^lock:", makefile, re.M), "`make lock` refreshes the lock"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "-c requirements/constraints.txt ." in dockerfile


def test_pre_1_0_dependencies_have_an_upper_bound() -> None:
    locked = _locked()
    for requirement in _all_requirements():
        versions = [v for v, _ in locked.get(canonicalize_name(requirement.name), [])]
        if versions and all(v.major == 0 for v in versions):
            uppers = [s for s in requirement.specifier if s.operator in ("<", "<=", "~=", "==")]
            assert uppers, f"{requirement.name} is pre-1.0: cap it below the next minor release"


def test_test_tools_and_demo_data_stay_out_of_the_production_image() -> None:
    runtime = {canonicalize_name(r.name) for r in _requirements()}
    assert not runtime & TEST_TOOLS, (
        f"test tools in the runtime dependencies: {runtime & TEST_TOOLS}"
    )
    dockerfile = (REPO / "Dockerfile").read_text()
    install = next(line for line in dockerfile.splitlines() if "pip install" in line)
    assert "[" not in install, "the image installs no extra"
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert "operator/librarian/demo/data" in ignored
