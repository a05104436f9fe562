"""Load the bundled demo slice into a remote Qdrant collection.

Why this exists: ``make e2e`` runs the demo scenario against real Qdrant
servers in a kind cluster; the source collection must hold the demo's real
text and vectors (3,000 Debian package descriptions, 384-d) before the
DomainMap analyses it. The API key comes from the environment, never from
the command line.

Usage: QDRANT_API_KEY=... python tools/load_demo_data.py URL COLLECTION
"""

from __future__ import annotations

import os
import sys

from qdrant_client import QdrantClient, models

from librarian.demo.data import load_demo_data


def main(url: str, collection: str) -> None:
    data = load_demo_data()
    client = QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY"), timeout=60)
    if client.collection_exists(collection):
        client.delete_collection(collection)
    client.create_collection(
        collection,
        vectors_config=models.VectorParams(
            size=int(data.vectors.shape[1]), distance=models.Distance.COSINE
        ),
    )
    client.upload_collection(
        collection,
        vectors=data.vectors,
        payload=[{"text": text} for text in data.texts],
        ids=list(range(len(data.texts))),
        batch_size=500,
    )
    print(f"loaded {client.count(collection).count} points into {collection}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: load_demo_data.py URL COLLECTION")
    main(sys.argv[1], sys.argv[2])
