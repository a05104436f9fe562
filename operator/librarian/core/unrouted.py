"""The home of a point that lacks the vector a library routes on.

Why this exists: a library places each point in the domain whose centroid is
nearest to its routing vector, but Qdrant lets a point carry only some of its
named vectors, so a point may have no routing vector at all. Such a point
still needs exactly one home, and every writer (the source's labeling, each
router replica, a retry of the same write) must choose the same one: an
upsert, a delete or an update that adds the vector later then finds the copy
where it is, and no second copy appears elsewhere. A hash of the point id over
the library's domains gives that without any shared state, and spreads such
points evenly. Nearest-neighbour searches on the routing vector never return
these points (Qdrant does not either), so their home does not affect recall.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["domain_for_unrouted"]


def domain_for_unrouted(point_id: int | str, domain_ids: Sequence[str]) -> str:
    """The domain (one of ``domain_ids``, in any order) a point without the routing vector
    belongs to: the same for the same id and set of domains, everywhere."""
    if not domain_ids:
        raise ValueError("a library without domains has no home for any point")
    ordered = sorted(set(domain_ids))
    key = f"{type(point_id).__name__}:{str(point_id).lower()}".encode()
    digest = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    return ordered[digest % len(ordered)]
