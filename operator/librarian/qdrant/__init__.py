"""qdrant layer."""
