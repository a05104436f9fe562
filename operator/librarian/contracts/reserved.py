"""The collections the product keeps for itself on the clusters it manages.

Why this exists: the catalog of each DomainMap (``librarian-catalog-<name>``
unless its spec names another) and the migrations' checkpoints
(``librarian-migrations``) live beside the application's collections. The
router must never serve them to clients, whatever its pass-through allowlist
says, and the services that create them must name them the same way; both
read the prefix from here.
"""

from __future__ import annotations

__all__ = ["PRODUCT_PREFIX", "is_reserved_collection"]

PRODUCT_PREFIX = "librarian-"


def is_reserved_collection(name: str) -> bool:
    """Whether ``name`` is one of the product's own collections by its name."""
    return name.startswith(PRODUCT_PREFIX)
