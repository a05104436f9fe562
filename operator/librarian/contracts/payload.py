"""Reserved payload keys the product writes on the points it labels and versions.

Why this exists: labeling writes them, migration and domain homes select by
them, and the router stamps them on every point it writes; a point's domain,
version and deletion must mean the same thing to each.
"""

from __future__ import annotations

LABEL_KEY = "librarian_domain"
"""The id of the domain a point belongs to (keyword-indexed)."""

VERSION_KEY = "librarian_domain_version"
"""The DomainMap analysis version that set :data:`LABEL_KEY`."""

POINT_VERSION_KEY = "librarian_version"
"""The version of the last write to the point (see :mod:`librarian.core.hlc`); 0 when absent."""

TOMBSTONE_KEY = "librarian_deleted"
"""``True`` on a tombstone: a point deleted through the router, kept (with its version
only) so that older writes and copies cannot bring it back until it is compacted."""

MERGED_KEY = "librarian_merged"
"""``True`` when the point's current version was made by a change in place (a payload or
vector update applied to the copy it found); a write with an older version that arrives
later is then applied again, after it, rather than dropped."""

PARTITION_KEY = "librarian_partition"
"""The id of the partition of its domain a point of a specialized home is in (the one nearest
its routing vector; keyword-indexed there): a routed search keeps only the partitions it chose
with a filter on it."""

RESERVED_KEYS = (
    LABEL_KEY,
    VERSION_KEY,
    POINT_VERSION_KEY,
    TOMBSTONE_KEY,
    MERGED_KEY,
    PARTITION_KEY,
)
