"""The CustomResourceDefinitions, read from a directory or from the installed package.

Why this exists: ``librarian up`` and ``librarian status`` must work from any
directory, without the repository: the CRDs ship as package data
(``librarian/resources/crds/``, a byte-for-byte copy of the repository's
``crds/`` that a packaging test keeps identical). The emulated API declares
the kinds they define; the status printer reads their printer columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PACKAGED_CRDS", "crd_resource", "crds_of", "load_crds", "packaged_crds"]

PACKAGED_CRDS = ("resources", "crds")
"""Where the CRDs live inside the ``librarian`` package."""


def crds_of(texts: Iterable[str]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in these YAML texts."""
    documents: list[dict[str, Any]] = []
    for text in texts:
        for document in yaml.safe_load_all(text):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                documents.append(document)
    return documents


def load_crds(directory: str | Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in ``directory``'s YAML files."""
    return crds_of(path.read_text() for path in sorted(Path(directory).glob("*.yaml")))


def packaged_crds() -> list[dict[str, Any]]:
    """The CRDs installed with the package."""
    folder = resources.files("librarian").joinpath(*PACKAGED_CRDS)
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".yaml")),
        key=lambda entry: entry.name,
    )
    return crds_of(entry.read_text(encoding="utf-8") for entry in files)


def crd_resource(crd: Mapping[str, Any]) -> str:
    """``group/version/plural`` of a CRD's storage version."""
    spec = crd["spec"]
    version = next(v["name"] for v in spec["versions"] if v.get("storage", True))
    return f"{spec['group']}/{version}/{spec['names']['plural']}"
