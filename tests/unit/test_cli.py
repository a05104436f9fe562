"""The ``librarian`` command line: config, discover on .npy files, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from librarian.cli import main


def _blobs(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    centres = np.eye(16, dtype=np.float32)[:3]
    vectors = np.concatenate([c + 0.05 * rng.standard_normal((60, 16)) for c in centres])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = ["kernel driver module", "guitar audio synth", "font glyph typeface"]
    npy = tmp_path / "v.npy"
    np.save(npy, vectors.astype(np.float32))
    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"text": w}) + "\n" for w in words for _ in range(60)))
    return npy, texts


def test_config_prints_effective_settings_with_overrides() -> None:
    result = CliRunner().invoke(main, ["--set", "domain_discovery.strategy=kmeans", "config"])
    assert result.exit_code == 0, result.output
    assert "strategy: kmeans" in result.output


def test_config_rejects_unknown_key() -> None:
    result = CliRunner().invoke(main, ["--set", "domain_discovery.colour=red", "config"])
    assert result.exit_code == 2
    assert "domain_discovery.colour: unknown key" in result.output


def test_discover_npy_json(tmp_path: Path) -> None:
    npy, texts = _blobs(tmp_path)
    result = CliRunner().invoke(
        main,
        ["discover", "--npy", str(npy), "--texts", str(texts), "--json", "--min-domain-size", "10"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert len(data["domains"]) == 3
    assert len(data["labels"]) == 180
    keywords = {kw for d in data["domains"] for kw in d["keywords"]}
    assert {"kernel", "guitar", "font"} & keywords


def test_discover_npy_table(tmp_path: Path) -> None:
    npy, texts = _blobs(tmp_path)
    result = CliRunner().invoke(main, ["discover", "--npy", str(npy), "--texts", str(texts)])
    assert result.exit_code == 0, result.output
    assert "domains in" in result.output
    assert "cohesion" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["discover"], "exactly one source"),
        (["discover", "--embedded", "x"], "--collection is required"),
        (
            ["discover", "--npy", "{npy}", "--strategy", "spectral"],
            "Invalid value for '--strategy'",
        ),
        (["discover", "--npy", "{bad}"], "expected (points, dimensions)"),
        (["discover", "--npy", "{npy}", "--texts", "{short}"], "must match row for row"),
        (["discover", "--npy", "{nan}"], "NaN"),
        (
            [
                "discover",
                "--url",
                "http://127.0.0.1:9",
                "--collection",
                "c",
                "--api-key-env",
                "LIBRARIAN_TEST_UNSET_KEY",
            ],
            "LIBRARIAN_TEST_UNSET_KEY is not set",
        ),
    ],
)
def test_discover_bad_input_gets_a_clear_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    npy, _ = _blobs(tmp_path)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros(5, dtype=np.float32))
    nan = tmp_path / "nan.npy"
    vectors = np.load(npy)
    vectors[3, 2] = np.nan
    np.save(nan, vectors)
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    paths = {"npy": str(npy), "bad": str(bad), "nan": str(nan), "short": str(short)}
    result = CliRunner().invoke(main, [a.format(**paths) for a in args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_discover_unreachable_cluster_names_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["discover", "--url", "http://127.0.0.1:9", "--collection", "docs", "--sample-size", "10"],
    )
    assert result.exit_code == 1
    assert "cluster 'http://127.0.0.1:9'" in result.output
    assert "Traceback" not in result.output


def test_discover_an_embedded_collection(tmp_path: Path) -> None:
    from librarian.storage.embedded import EmbeddedQdrant
    from librarian.storage.port import CollectionSpec, PointRecord

    npy, _ = _blobs(tmp_path)
    vectors = np.load(npy)
    port = EmbeddedQdrant("local", tmp_path / "store")
    port.create_collection("docs", CollectionSpec(vector_size=16))
    words = ["kernel driver module", "guitar audio synth", "font glyph typeface"]
    port.upsert(
        "docs",
        [
            PointRecord(
                id=i, vector=[float(x) for x in vectors[i]], payload={"text": words[i // 60]}
            )
            for i in range(len(vectors))
        ],
    )
    port.close()
    result = CliRunner().invoke(
        main,
        [
            "discover",
            "--embedded",
            str(tmp_path / "store"),
            "--collection",
            "docs",
            "--json",
            "--min-domain-size",
            "10",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["points"] == 180
    assert len(data["domains"]) == 3
    missing = CliRunner().invoke(
        main, ["discover", "--embedded", str(tmp_path / "store"), "--collection", "absent"]
    )
    assert missing.exit_code == 1
    assert "collection 'absent'" in missing.output
