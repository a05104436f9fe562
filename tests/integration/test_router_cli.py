"""``librarian router`` without Kubernetes: what it serves is said, and bad paths fail at once;
asked for several libraries in a way that cannot be served, it says so before starting."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from librarian.cli import main
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.port import CollectionSpec

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _router(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["router", "--host", "127.0.0.1", "--port", "1", *args])
    return result.exit_code, " ".join(result.output.split())


def test_a_missing_embedded_path_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    typo = tmp_path / "genral"
    code, output = _router(
        "--cluster", f"general=embedded:{typo}", "--source", "general/packages",
        "--catalog", "general/librarian-catalog",
    )  # fmt: skip
    assert code == 1
    assert f"embedded storage '{typo}' does not exist" in output
    assert "cluster 'general'" in output
    assert not typo.exists()


def test_a_missing_catalog_or_source_collection_is_an_error(tmp_path: Path) -> None:
    storage = tmp_path / "general"
    port = EmbeddedQdrant("general", storage)
    port.create_collection("packages", CollectionSpec(vector_size=4))
    port.close()
    cluster = f"general=embedded:{storage}"
    code, output = _router(
        "--cluster", cluster, "--source", "general/packages", "--catalog", "general/catalog-typo"
    )
    assert code == 1
    assert "collection 'catalog-typo'" in output
    assert "--catalog collection does not exist" in output
    code, output = _router(
        "--cluster", cluster, "--source", "general/pakages", "--catalog", "general/packages"
    )
    assert code == 1
    assert "collection 'pakages'" in output
    assert "--source collection" in output
    assert sorted(p.name for p in storage.iterdir()) == ["packages"]  # nothing created


def test_help_and_readme_say_every_domain_is_served_from_the_source() -> None:
    result = CliRunner().invoke(main, ["router", "--help"])
    help_text = " ".join(result.output.split())
    assert "serves every domain from the source collection" in help_text
    assert "specialized collections are not used" in help_text
    assert "serves every domain from the source collection" in " ".join(README.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--domainmap", "a/b", "--all-domainmaps", "a"], "not both"),
        (["--domainmap", "a/b", "--domainmap", "a/b"], "each --domainmap once"),
        (["--domainmap", "a/b", "--domainmap", "a/c", "--library", "x"], "--library names one"),
        (["--all-domainmaps", "a", "--library", "x"], "--library names one"),
    ],
)
def test_several_libraries_are_asked_for_unambiguously(args: list[str], message: str) -> None:
    code, output = _router(*args)
    assert code == 2  # a usage error, before anything starts
    assert message in output
