"""Several adapters on one storage path in one process share the engine's handles."""

from __future__ import annotations

from pathlib import Path

from librarian.storage.embedded import EmbeddedQdrant
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
