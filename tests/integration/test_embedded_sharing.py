"""Several adapters on one storage path in one process share the engine's handles."""

from __future__ import annotations

from pathlib import Path

import pytest

from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.errors import CollectionNotFound
from librarian.storage.port import CollectionSpec

from .conftest import make_points


def test_adapters_on_one_path_work_at_once_and_the_last_one_closes(tmp_path: Path) -> None:
    router = EmbeddedQdrant("fast", tmp_path)
    router.create_collection("c", CollectionSpec(vector_size=8))
    router.upsert("c", make_points(10))
    assert router.count("c") == 10  # the router holds the shard open
    job = EmbeddedQdrant("fast", tmp_path)  # a migration in the same process
    job.upsert("c", make_points(5, start=100))
    assert router.count("c") == job.count("c") == 15
    job.close()
    job.close()  # twice is harmless
    assert router.count("c") == 15  # still open for the router
    router.close()
    reopened = EmbeddedQdrant("fast", tmp_path)
    assert reopened.count("c") == 15
    reopened.close()


def test_an_adapter_sees_a_collection_another_adapter_on_its_path_removed_or_made_again(
    tmp_path: Path,
) -> None:
    """Each adapter keeps the collection specs it parsed, and must notice when another one
    (a migration in the same process) replaces them."""
    router = EmbeddedQdrant("fast", tmp_path)
    job = EmbeddedQdrant("fast", tmp_path)
    try:
        router.create_collection("c", CollectionSpec(vector_size=8))
        assert router.collection_info("c").vector_size == 8
        job.delete_collection("c")
        with pytest.raises(CollectionNotFound):
            router.collection_info("c")
        job.create_collection("c", CollectionSpec(vector_size=4, shard_keys=("k1", "k2")))
        job.upsert("c", make_points(3, dim=4), shard_key="k1")
        assert router.collection_info("c").spec.shard_keys == ("k1", "k2")
        assert router.count("c", shard_keys=["k1"]) == 3
        assert router.count("c", shard_keys=["k2"]) == 0
    finally:
        job.close()
        router.close()
