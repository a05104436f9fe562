"""Reserved payload keys the product writes on every point it labels.

Why this exists: labeling writes them, migration and domain homes select by
them, and the router stamps them on the points it writes; a point's domain must
mean the same thing to each.
"""

from __future__ import annotations

LABEL_KEY = "librarian_domain"
"""The id of the domain a point belongs to (keyword-indexed)."""

VERSION_KEY = "librarian_domain_version"
"""The DomainMap analysis version that set :data:`LABEL_KEY`."""

RESERVED_KEYS = (LABEL_KEY, VERSION_KEY)
