"""Names of the Kubernetes objects the operator creates.

Why this exists: a ClusterSpecialization, a migration Job or a move is named
from a DomainMap and a domain id, which may hold characters a Kubernetes name
may not; every object name goes through one rule.
"""

from __future__ import annotations

__all__ = ["kubernetes_name"]


def kubernetes_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1123 label from ``parts`` (lowercase alphanumerics and '-', at most ``limit``)."""
    raw = "-".join(parts).lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in raw)
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    return cleaned.strip("-")[:limit].rstrip("-") or "x"
