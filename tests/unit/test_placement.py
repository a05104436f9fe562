"""Automatic placement of domains on target clusters, and object names."""

from __future__ import annotations

import pytest

from librarian.core.placement import place_domains
from librarian.kube.naming import kubernetes_name


def test_largest_first_to_the_least_loaded_target() -> None:
    placement = place_domains({"a": 900, "b": 500, "c": 450, "d": 100}, ["fast", "bulk"])
    assert placement == {"a": "fast", "b": "bulk", "c": "bulk", "d": "fast"}


def test_single_target_and_no_target() -> None:
    assert set(place_domains({"a": 1, "b": 2}, ["only"]).values()) == {"only"}
    with pytest.raises(ValueError, match="no target clusters"):
        place_domains({"a": 1}, [])


def test_kubernetes_names() -> None:
    assert kubernetes_name("packages", "rust-source_code") == "packages-rust-source-code"
    assert kubernetes_name("A__B", "--c") == "a-b-c"
    assert len(kubernetes_name("x" * 100)) == 63
