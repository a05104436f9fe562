"""Labeling every point of the source collection with its domain.

Why this exists: moving a domain (a filtered scroll) and routing writes need
each point to carry its domain. Labels live in a reserved payload key
(``librarian_domain``, keyword-indexed) together with the analysis version
that set them. Labeling is batched, reports progress, and is resumable and
idempotent without any checkpoint: it only ever scrolls points *not yet*
labelled with the current version, so a run that dies half-way is finished by
the next one, and a finished run does nothing more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from qdrant_client.http import models

from librarian.contracts.payload import LABEL_KEY, VERSION_KEY
from librarian.core.discovery import Domain, assign
from librarian.core.unrouted import domain_for_unrouted
from librarian.services.versioning import ensure_version_index
from librarian.storage.port import PointId, QdrantPort

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class LabelingReport:
    """How many points carry the current version's label, out of how many."""

    labeled: int
    total: int
    per_domain: dict[str, int] = field(default_factory=dict)  # labelled in this run

    @property
    def complete(self) -> bool:
        return self.labeled >= self.total


def unlabeled_filter(version: int, version_key: str = VERSION_KEY) -> models.Filter:
    """Points not yet labelled by analysis ``version``."""
    return models.Filter(
        must_not=[models.FieldCondition(key=version_key, match=models.MatchValue(value=version))]
    )


def domain_filter(domain_id: str, label_key: str = LABEL_KEY) -> models.Filter:
    """Points labelled with ``domain_id``."""
    return models.Filter(
        must=[models.FieldCondition(key=label_key, match=models.MatchValue(value=domain_id))]
    )


def label_points(
    port: QdrantPort,
    collection: str,
    domains: Sequence[Domain],
    *,
    version: int,
    batch_size: int = 1000,
    label_key: str = LABEL_KEY,
    version_key: str = VERSION_KEY,
    on_progress: ProgressCallback | None = None,
    vector: str = "",
) -> LabelingReport:
    """Label every point of ``collection`` with its nearest domain (resumable, idempotent).

    Nearest by the dense ``vector`` (``""``: the unnamed one); a point that lacks it
    goes to the domain its id hashes to, as the router places it
    (:func:`librarian.core.unrouted.domain_for_unrouted`).
    """
    port.create_keyword_index(collection, label_key)
    port.create_keyword_index(collection, version_key)
    ensure_version_index(port, collection)
    total = port.count(collection)
    todo = unlabeled_filter(version, version_key)
    done = total - port.count(collection, count_filter=todo)
    if on_progress:
        on_progress(done, total)
    per_domain: Counter[str] = Counter()
    offset: PointId | None = None
    while True:
        page, offset = port.scroll(
            collection,
            limit=batch_size,
            offset=offset,
            scroll_filter=todo,
            with_vectors=True,
            with_payload=False,
        )
        if not page:
            break
        chosen: dict[str, list[PointId]] = {}
        routed = [p for p in page if p.dense(vector) is not None]
        if routed:
            vectors = np.asarray([p.dense(vector) for p in routed], dtype=np.float32)
            nearest = assign(vectors, domains)
            for point, index in zip(routed, nearest, strict=True):
                chosen.setdefault(domains[int(index)].id, []).append(point.id)
        domain_ids = [d.id for d in domains]
        for point in page:
            if point.dense(vector) is None:
                chosen.setdefault(domain_for_unrouted(point.id, domain_ids), []).append(point.id)
        for domain_id, ids in chosen.items():
            port.set_payload(collection, {label_key: domain_id, version_key: version}, ids)
            per_domain[domain_id] += len(ids)
        done += len(page)
        if on_progress:
            on_progress(done, total)
        if offset is None:
            break
    return LabelingReport(labeled=done, total=total, per_domain=dict(per_domain))


def remove_labels(
    port: QdrantPort,
    collection: str,
    *,
    label_key: str = LABEL_KEY,
    version_key: str = VERSION_KEY,
) -> None:
    """Remove the domain labels from every point of ``collection``."""
    port.delete_payload_keys(collection, [label_key, version_key])
