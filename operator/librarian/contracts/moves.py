"""The phases of a domain move that routers enforce and the operator waits for.

Why this exists: the operator writes a move's phase into its
ClusterSpecialization's status (``status.move.phase``), every router replica
follows it and acknowledges it in its Lease; both must read the same words.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["MovePhase"]


class MovePhase(StrEnum):
    """Where a domain's move stands, as the routers must enforce it.

    ``dualWrite``: reads from the old home, writes to both; ``switched``: reads
    from the new home, writes to both; ``done``: the old home is no longer written.
    """

    DUAL_WRITE = "dualWrite"
    SWITCHED = "switched"
    DONE = "done"
