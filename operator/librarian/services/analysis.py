"""Analysing a source collection and publishing its domains.

Why this exists: the analysis Job (:mod:`librarian.services.analysis_job`) and
the CLI run the same two steps — sample the source and discover its domains,
then label every point and write the catalog. Keeping that glue here gives one
place to test it against a real engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from librarian.core.discovery import DiscoveryResult, Domain, Partition, discover
from librarian.services.catalog import write_catalog
from librarian.services.labeling import LabelingReport, ProgressCallback, label_points
from librarian.services.sampling import SampleProgress, sample_points
from librarian.storage.port import PointId, QdrantPort


@dataclass(frozen=True)
class AnalysisOutcome:
    """The discovery result and what it was computed from."""

    result: DiscoveryResult
    sampled: int
    dimension: int
    source_points: int
    sample_ids: tuple[PointId, ...] = ()  # the sampled points' ids (labeling ranges cut at them)


def analyze_collection(
    port: QdrantPort,
    collection: str,
    *,
    strategy: str = "hybrid",
    sample_size: int = 10_000,
    text_field: str = "text",
    seed: int = 0,
    previous: Sequence[Domain] | None = None,
    previous_partitions: Sequence[Partition] | None = None,
    thresholds: Mapping[str, Any] | None = None,
    on_stage: Callable[[str], None] | None = None,
    vector: str = "",
    on_sampled: SampleProgress | None = None,
    sample_chunk: int | None = None,
) -> AnalysisOutcome:
    """Sample ``collection`` and discover its domains (ids matched to ``previous``, and the
    partitions' to ``previous_partitions``) on its dense ``vector`` (``""``: the unnamed
    one). ``sample_chunk`` draws the sample that many points at a time, telling
    ``on_sampled`` how many are drawn."""
    if on_stage:
        on_stage("sampling")
    source_points = port.count(collection)
    sample = sample_points(
        port,
        collection,
        sample_size,
        text_field=text_field,
        vector=vector,
        chunk=sample_chunk,
        on_progress=on_sampled,
    )
    if on_stage:
        on_stage("discovering")
    # The number of routing partitions follows the collection's size, not the sample's.
    bounds = dict(thresholds or {})
    if source_points:
        bounds.setdefault("population", source_points)
    result = discover(
        sample.vectors,
        strategy=strategy,
        texts=sample.texts,
        seed=seed,
        previous=previous or None,
        previous_partitions=previous_partitions or None,
        **bounds,
    )
    return AnalysisOutcome(
        result=result,
        sampled=len(sample.ids),
        dimension=int(sample.vectors.shape[1]),
        source_points=source_points,
        sample_ids=tuple(sample.ids),
    )


def publish_domains(
    port: QdrantPort,
    collection: str,
    catalog_port: QdrantPort,
    catalog_collection: str,
    owner: str,
    result: DiscoveryResult,
    version: int,
    *,
    label: bool = True,
    labelled: bool = True,
    batch_size: int = 1000,
    on_progress: ProgressCallback | None = None,
    vector: str = "",
) -> LabelingReport | None:
    """Label every source point (when ``label``; by its dense ``vector``) and write the
    catalog; ``labelled=False`` publishes it with the labels still to be written by a
    labeling Job (see :func:`librarian.services.catalog.write_catalog`)."""
    report = None
    if label:
        report = label_points(
            port,
            collection,
            result.domains,
            version=version,
            batch_size=batch_size,
            on_progress=on_progress,
            vector=vector,
        )
    write_catalog(
        catalog_port,
        catalog_collection,
        owner,
        result.domains,
        version,
        partitions=result.partitions,
        source=(port.cluster, collection),
        labelled=labelled or label,
    )
    return report
