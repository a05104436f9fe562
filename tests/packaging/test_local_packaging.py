"""What ``librarian up`` needs ships with the package, and what it may not reach stays out.

The CRDs are package data, a byte-for-byte copy of ``crds/`` (one source:
this test fails on any drift); the in-process Kubernetes API is the optional
``local`` extra, installed by ``make``, and ``up``/``demo`` say how to get it
when it is missing; no production module imports the testing package.
"""

from __future__ import annotations

import sys
import tomllib

import pytest
from click.testing import CliRunner

from librarian.cli import main
from librarian.local.crds import packaged_crds

from .conftest import REPO

PACKAGED = REPO / "operator/librarian/resources/crds"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_packaged_crds_are_the_repositorys_byte_for_byte() -> None:
    repository = {p.name for p in (REPO / "crds").glob("*.yaml")} - {"kustomization.yaml"}
    assert {p.name for p in PACKAGED.iterdir()} == repository, "copy crds/*.yaml there"
    for name in sorted(repository):
        assert (PACKAGED / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"operator/librarian/resources/crds/{name} differs from crds/{name}: copy it again"
        )
    kinds = {crd["spec"]["names"]["kind"] for crd in packaged_crds()}
    assert {"DomainMap", "ClusterSpecialization", "RebalancePolicy"} <= kinds


def test_the_crds_are_package_data() -> None:
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]["librarian"]
    assert "resources/**/*" in package_data


def test_kmock_is_the_local_extra_and_make_installs_it() -> None:
    project = PYPROJECT["project"]
    assert not any(r.startswith("kmock") for r in project["dependencies"])
    assert any(r.startswith("kmock") for r in project["optional-dependencies"]["local"])
    install = next(
        line for line in (REPO / "Makefile").read_text().splitlines() if "-e '.[" in line
    )
    assert "local" in install.split("[", 1)[1].split("]", 1)[0].split(",")


@pytest.mark.parametrize("command", ["up", "demo"])
def test_up_and_demo_without_the_local_extra_say_how_to_get_it(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "kmock", None)  # as if not installed: import fails
    result = CliRunner().invoke(main, [command])
    assert result.exit_code == 1
    assert "pip install 'qdrant-librarian[local]'" in " ".join(result.output.split())


def test_no_production_package_may_import_the_testing_package() -> None:
    package = REPO / "operator/librarian"
    top_level = {
        f"librarian.{p.stem if p.is_file() else p.name}"
        for p in package.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem != "__init__")
    }
    (contract,) = [
        c
        for c in PYPROJECT["tool"]["importlinter"]["contracts"]
        if c.get("forbidden_modules") == ["librarian.testing"]
    ]
    assert contract["type"] == "forbidden"
    assert set(contract["source_modules"]) == top_level - {"librarian.testing"}


def test_the_readme_own_data_section_uses_real_commands_and_options() -> None:
    import re

    section = (REPO / "README.md").read_text().split("## Your own data, no cluster\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    commands = re.findall(r"^\$ librarian (\w+)(.*)$", section, re.M)
    assert [c for c, _ in commands] == ["load", "up"]
    for command, rest in commands:
        options = {
            name
            for parameter in main.commands[command].params
            for name in (*parameter.opts, *parameter.secondary_opts)
        }
        used = set(re.findall(r"(?<!\S)(--?[a-z][\w-]*)", rest.split("#", 1)[0]))
        assert used, command
        assert used <= options, (command, used - options)
    assert "client.query_points(" in section
    assert "librarian status" in section
