"""``librarian up``'s files: the manifests it reads, how they apply over the state, and the state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from librarian.local.manifests import ManifestError, plan_apply, read_manifests
from librarian.local.state import StateDirectory, StateError

DOMAINMAP: dict[str, Any] = {
    "apiVersion": "librarian.dev/v1alpha1",
    "kind": "DomainMap",
    "metadata": {"name": "docs"},
    "spec": {"source": {"cluster": "local", "collection": "docs"}, "interval": "1h"},
}
SECRET: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "key", "namespace": "team"},
    "stringData": {"api-key": "not-a-real-key"},
}


def _write(path: Path, *documents: Any) -> Path:
    path.write_text(yaml.safe_dump_all(documents))
    return path


# --------------------------------------------------------------------------- manifests


def test_multi_document_files_with_the_namespace_defaulted(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.yaml", DOMAINMAP, None, SECRET)
    policy = {"apiVersion": "librarian.dev/v1alpha1", "kind": "RebalancePolicy",
              "metadata": {"name": "p"}, "spec": {"domainMap": "docs"}}  # fmt: skip
    second = _write(tmp_path / "b.yaml", policy)
    manifests = read_manifests([first, second])
    assert [m.key for m in manifests] == [
        ("DomainMap", "default", "docs"),
        ("Secret", "team", "key"),
        ("RebalancePolicy", "default", "p"),
    ]
    assert manifests[1].origin == f"{first}, document 3"


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        ([DOMAINMAP, ["a", "list"]], "document 2: expected a Kubernetes object"),
        ([{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}],
         "document 1: apps/v1 Deployment is not accepted here"),
        ([{**DOMAINMAP, "metadata": {}}], "document 1: DomainMap has no metadata.name"),
        ([{**DOMAINMAP, "metadata": {"name": "Not_Valid"}}], "metadata.name 'Not_Valid' is not a valid name"),
        ([{**DOMAINMAP, "spec": "oops"}], "DomainMap docs has no spec mapping"),
        ([{**SECRET, "data": {"api-key": "%%%"}}], "data.api-key is not base64"),
        ([DOMAINMAP, DOMAINMAP], "document 2: DomainMap default/docs is also defined in"),
        ([None], "no resource in"),
    ],
)  # fmt: skip
def test_bad_documents_are_refused_naming_file_and_document(
    tmp_path: Path, documents: list[Any], expected: str
) -> None:
    path = _write(tmp_path / "bad.yaml", *documents)
    with pytest.raises(ManifestError) as error:
        read_manifests([path])
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_yaml_errors_and_missing_files_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    with pytest.raises(ManifestError, match=r"broken\.yaml: not valid YAML"):
        read_manifests([broken])
    with pytest.raises(ManifestError, match=r"gone\.yaml: cannot be read"):
        read_manifests([tmp_path / "gone.yaml"])


def _stored(**status: Any) -> dict[str, Any]:
    return {
        **DOMAINMAP,
        "metadata": {
            "name": "docs",
            "namespace": "default",
            "generation": 2,
            "annotations": {"librarian.dev/last-handled-configuration": "{}"},
        },
        "status": {"phase": "Ready", **status},
    }


def test_an_unchanged_manifest_keeps_the_stored_object_and_its_status(tmp_path: Path) -> None:
    manifests = read_manifests([_write(tmp_path / "a.yaml", DOMAINMAP, SECRET)])
    plan = plan_apply([_stored(version=4)], manifests)
    assert plan.preload == [_stored(version=4)]
    assert plan.changed == []
    assert [b["kind"] for b in plan.create] == ["Secret"]  # never stored: created at each start


def test_a_changed_spec_replaces_the_stored_one_and_bumps_the_generation(tmp_path: Path) -> None:
    changed = {**DOMAINMAP, "metadata": {"name": "docs", "labels": {"team": "a"}},
               "spec": {"source": {"cluster": "local", "collection": "docs"}}}  # fmt: skip
    plan = plan_apply([_stored(version=4)], read_manifests([_write(tmp_path / "a.yaml", changed)]))
    (body,) = plan.changed
    assert plan.preload == [body]
    assert plan.create == []
    assert body["spec"] == changed["spec"]  # "interval" removed, not merged
    assert body["metadata"]["generation"] == 3
    assert body["status"]["version"] == 4
    assert body["metadata"]["labels"] == {"team": "a"}
    assert "librarian.dev/last-handled-configuration" in body["metadata"]["annotations"]


def test_stored_objects_the_files_no_longer_name_are_kept(tmp_path: Path) -> None:
    child = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "namespace": "default"},
    }
    plan = plan_apply([_stored(), child], read_manifests([_write(tmp_path / "a.yaml", SECRET)]))
    assert [b["kind"] for b in plan.preload] == ["DomainMap", "Job"]


# --------------------------------------------------------------------------- state directory


def test_objects_are_written_atomically_and_removed_when_deleted(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path / "state")
    assert state.load() == []
    body = _stored(version=1)
    state.record("librarian.dev/v1alpha1/domainmaps", "default", "docs", body)
    path = tmp_path / "state/resources/default/domainmaps.librarian.dev/docs.json"
    assert json.loads(path.read_text()) == body
    state.record("librarian.dev/v1alpha1/domainmaps", "default", "docs", _stored(version=2))
    assert state.load() == [_stored(version=2)]
    assert [p.name for p in path.parent.iterdir()] == ["docs.json"]  # no temporary file left
    state.record("librarian.dev/v1alpha1/domainmaps", "default", "docs", None)
    assert state.load() == []


def test_secrets_and_events_are_never_written(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path / "state")
    state.record("v1/secrets", "team", "key", SECRET)
    state.record("v1/events", "default", "e1", {"kind": "Event", "metadata": {"name": "e1"}})
    assert not (tmp_path / "state").exists()
    with pytest.raises(StateError, match="never written"):
        state.save({**SECRET, "metadata": {"name": "key", "namespace": "team"}})


def test_a_corrupt_file_is_named(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path / "state")
    state.save({**_stored(), "metadata": {"name": "docs", "namespace": "default"}})
    path = next((tmp_path / "state").rglob("docs.json"))
    path.write_text("{ half")
    with pytest.raises(StateError, match=f"{path} cannot be read"):
        state.load()


def test_one_process_at_a_time_and_the_lock_says_where_it_serves(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path / "state")
    assert state.running() is None
    with state.lock() as announce:
        announce("http://127.0.0.1:6333")
        running = state.running()
        assert running is not None
        assert running.url == "http://127.0.0.1:6333"
        with (
            pytest.raises(StateError, match=r"another librarian up is using .*serving http://127"),
            StateDirectory(tmp_path / "state").lock(),
        ):
            pass
    assert state.running() is None
    with state.lock():  # released: usable again
        pass
