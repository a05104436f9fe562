"""``librarian load``: the user's .npy and .jsonl into a collection, refused before any write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from librarian.cli import main
from librarian.core.collection_spec import CollectionSpec, DenseVectorSpec
from librarian.storage.embedded import EmbeddedQdrant

from .recording_server import Recorded, qdrant_error, recording_server

ROWS, DIM = 300, 12


def _files(tmp_path: Path, rows: int = ROWS, dim: int = DIM) -> tuple[Path, Path, np.ndarray]:
    vectors = np.random.default_rng(1).standard_normal((rows, dim)).astype(np.float32)
    npy = tmp_path / "vectors.npy"
    np.save(npy, vectors)
    records = tmp_path / "records.jsonl"
    records.write_text(
        "".join(json.dumps({"text": f"record {i}", "n": i}) + "\n" for i in range(rows))
    )
    return npy, records, vectors


def _load(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["load", *map(str, args)])
    return result.exit_code, result.output


def test_load_creates_the_collection_and_upserts_row_i_as_point_i(tmp_path: Path) -> None:
    npy, records, vectors = _files(tmp_path)
    storage = tmp_path / "storage"
    code, output = _load(
        "--embedded", storage, "--collection", "mine", "--npy", npy, "--payload", records,
        "--distance", "Euclid",
    )  # fmt: skip
    assert code == 0, output
    assert "Created collection 'mine'" in output
    assert "300 points upserted (12-d, Euclid)" in output
    port = EmbeddedQdrant("check", storage)
    try:
        info = port.collection_info("mine")
        assert (info.points_count, info.vector_size, info.distance) == (ROWS, DIM, "Euclid")
        (point,) = port.retrieve("mine", [123])
        assert point.payload == {"text": "record 123", "n": 123}
        assert np.allclose(point.vector or [], vectors[123], atol=1e-6)
        # the engine's own nearest neighbour of row 7 is point 7
        assert port.query("mine", vectors[7].tolist(), limit=1, exact=True)[0].id == 7
    finally:
        port.close()


def test_load_again_upserts_the_same_points(tmp_path: Path) -> None:
    npy, records, _ = _files(tmp_path)
    args = ("--embedded", tmp_path / "s", "--collection", "c", "--npy", npy, "--payload", records)
    assert _load(*args)[0] == 0
    code, output = _load(*args)  # the existing collection's distance (Cosine) is kept
    assert code == 0, output
    assert "Updated collection 'c'" in output
    assert "300 in the collection" in output


def test_load_without_payload_gives_empty_payloads(tmp_path: Path) -> None:
    npy, _, _ = _files(tmp_path, rows=20)
    assert _load("--embedded", tmp_path / "s", "--collection", "c", "--npy", npy)[0] == 0
    port = EmbeddedQdrant("check", tmp_path / "s")
    try:
        assert [p.payload for p in port.retrieve("c", [0, 19])] == [{}, {}]
    finally:
        port.close()


def _write_npy(tmp_path: Path, array: np.ndarray) -> Path:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    return path


@pytest.mark.parametrize(
    ("make_vectors", "payload_text", "expected"),
    [
        pytest.param(
            lambda: np.ones((5, 4), np.float32),
            "{}\n{}\n{}\n",
            "has 3 JSON lines but the vectors have 5 rows",
            id="row-count",
        ),
        pytest.param(
            lambda: np.where(np.arange(40).reshape(10, 4) % 13 == 5, np.nan, 1.0),
            None,
            "3 row(s) with NaN or infinite values (rows 1, 4, 7; counted from 0)",
            id="nan-rows",
        ),
        pytest.param(
            lambda: np.array([[1.0, np.inf]] * 8),
            None,
            "8 row(s) with NaN or infinite values (rows 0, 1, 2, 3, 4, ...",
            id="inf-rows-first-few",
        ),
        pytest.param(
            lambda: np.ones(7, np.float32),
            None,
            "holds an array of shape (7,); expected (points, dimensions)",
            id="not-2d",
        ),
        pytest.param(
            lambda: np.ones((3, 4), np.float32),
            '{"a": 1}\n[1, 2]\n{}\n',
            "line 2 is a JSON list, not an object",
            id="non-object-line",
        ),
        pytest.param(
            lambda: np.ones((3, 4), np.float32),
            '{"a": 1}\n{"a": \n{}\n',
            "line 2 is not valid JSON",
            id="invalid-json-line",
        ),
        pytest.param(
            lambda: np.ones((3, 4), np.float32),
            "{}\n\n{}\n{}\n",
            "line 2 is empty",
            id="blank-line-inside",
        ),
        pytest.param(
            lambda: np.ones((2, 4), np.float32),
            '{}\n{"librarian_domain": "d1"}\n',
            "line 2 uses librarian_domain",
            id="reserved-key",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, make_vectors: object, payload_text: str | None, expected: str
) -> None:
    npy = _write_npy(tmp_path, make_vectors())  # type: ignore[operator]
    args: list[str | Path] = ["--embedded", tmp_path / "s", "--collection", "c", "--npy", npy]
    if payload_text is not None:
        (tmp_path / "p.jsonl").write_text(payload_text)
        args += ["--payload", tmp_path / "p.jsonl"]
    code, output = _load(*args)
    assert code != 0
    assert expected in " ".join(output.split()), output
    port = EmbeddedQdrant("check", tmp_path / "s")
    try:
        assert not port.collection_exists("c")  # not even created
    finally:
        port.close()


def test_trailing_blank_lines_are_not_records(tmp_path: Path) -> None:
    npy = _write_npy(tmp_path, np.ones((2, 4), np.float32))
    (tmp_path / "p.jsonl").write_text('{"x": 1}\n{"x": 2}\n\n\n')
    code, output = _load(
        "--embedded", tmp_path / "s", "--collection", "c", "--npy", npy,
        "--payload", tmp_path / "p.jsonl",
    )  # fmt: skip
    assert code == 0, output


@pytest.mark.parametrize(
    ("second", "option", "expected"),
    [
        (np.ones((4, 5), np.float32), (), "holds 12-d vectors but"),
        (
            np.ones((4, 12), np.float32),
            ("--distance", "Euclid"),
            "uses distance Cosine, not Euclid",
        ),
    ],
)
def test_an_existing_collection_must_match(
    tmp_path: Path, second: np.ndarray, option: tuple[str, ...], expected: str
) -> None:
    npy, _, _ = _files(tmp_path, rows=10)
    storage = tmp_path / "s"
    assert _load("--embedded", storage, "--collection", "c", "--npy", npy)[0] == 0
    other = _write_npy(tmp_path, second)
    code, output = _load("--embedded", storage, "--collection", "c", "--npy", other, *option)
    assert code != 0, output
    assert expected in " ".join(output.split()), output
    port = EmbeddedQdrant("check", storage)
    try:
        assert port.count("c") == 10  # untouched
    finally:
        port.close()


def test_the_target_is_exactly_one_of_embedded_or_url(tmp_path: Path) -> None:
    npy, _, _ = _files(tmp_path, rows=3)
    code, output = _load("--collection", "c", "--npy", npy)
    assert code == 2
    assert "exactly one target" in output
    code, output = _load(
        "--embedded", tmp_path, "--url", "http://127.0.0.1:1", "--collection", "c", "--npy", npy
    )
    assert code == 2
    assert "exactly one target" in output


def test_the_api_key_comes_from_the_named_variable_and_is_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    npy, _, _ = _files(tmp_path, rows=3)
    code, output = _load(
        "--url", "http://127.0.0.1:1", "--api-key-env", "MY_QDRANT_KEY", "--collection", "c",
        "--npy", npy,
    )  # fmt: skip
    assert code == 2
    assert "MY_QDRANT_KEY is not set" in output
    key = "s3cret-key-for-the-test"
    monkeypatch.setenv("MY_QDRANT_KEY", key)

    def refuse(request: Recorded, index: int) -> tuple[int, dict[str, object]]:
        return qdrant_error(401, "Unauthorized")

    with recording_server(refuse) as server:
        code, output = _load(
            "--url", server.url, "--api-key-env", "MY_QDRANT_KEY", "--collection", "c",
            "--npy", npy,
        )  # fmt: skip
    assert code == 1
    assert key not in output
    assert server.requests
    assert server.requests[0].headers.get("api-key") == key


def test_a_collection_with_named_vectors_is_refused_untouched(tmp_path: Path) -> None:
    npy, _, _ = _files(tmp_path, rows=10)
    storage = tmp_path / "s"
    port = EmbeddedQdrant("check", storage)
    try:
        port.create_collection("c", CollectionSpec(vectors={"text": DenseVectorSpec(size=DIM)}))
    finally:
        port.close()
    code, output = _load("--embedded", storage, "--collection", "c", "--npy", npy)
    assert code != 0, output
    assert "holds named vectors" in " ".join(output.split()), output
    port = EmbeddedQdrant("check", storage)
    try:
        assert port.count("c") == 0
    finally:
        port.close()
