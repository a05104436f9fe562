"""Errors raised by everything that talks to Qdrant.

Why this exists: callers (handlers, CLI, router) must tell a cluster that is
down from a bad API key from a missing collection, and every message must name
the cluster so a user can act on it. I/O exceptions from ``qdrant-client``,
``httpx`` or ``qdrant-edge`` are wrapped here and never leak an API key.
"""

from __future__ import annotations


class QdrantError(Exception):
    """Base class: something went wrong talking to cluster ``cluster``."""

    retryable = False

    def __init__(self, cluster: str, message: str, *, collection: str | None = None) -> None:
        self.cluster = cluster
        self.collection = collection
        where = f"cluster {cluster!r}" + (f", collection {collection!r}" if collection else "")
        super().__init__(f"{where}: {message}")


class ClusterUnreachable(QdrantError):
    """The cluster did not answer (connection refused, DNS, timeout)."""

    retryable = True


class AuthenticationFailed(QdrantError):
    """The cluster refused the API key (HTTP 401/403)."""


class CollectionNotFound(QdrantError):
    """The named collection does not exist on the cluster."""


class CollectionExists(QdrantError):
    """A collection was to be created but already exists."""


class InvalidRequest(QdrantError):
    """The cluster rejected the request as malformed (HTTP 400/422)."""


class UnknownCluster(QdrantError):
    """A name that is not in the fleet was asked for."""
