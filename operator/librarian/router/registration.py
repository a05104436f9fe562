"""A router replica's registration: its Lease, and refusing writes once it may be stale.

Why this exists: the operator moves a domain only when every live router
replica has acknowledged the move's phase in its Lease
(:mod:`librarian.kube.fences`). A replica cut off from the API server cannot
learn of a new phase, and after its Lease lapses the operator stops waiting for
it; so it must stop writing by then. It refuses writes (503) once its last
successful renewal is older than a safe share of the Lease's duration,
measured on its own monotonic clock, and accepts them again after the next
successful renewal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from librarian.kube import client as kube_client
from librarian.kube.fences import LEASE_DURATION_S, renew_lease

__all__ = ["Registration"]

log = logging.getLogger("librarian.router")

SAFE_SHARE = 0.6
"""Writes stop after this share of the Lease's duration without a renewal (the rest is margin
for the operator's and the router's clocks and the renewal's own latency)."""


class Registration:
    """One replica's Lease for one DomainMap; tells whether the replica may write."""

    def __init__(
        self,
        namespace: str,
        domainmap: str,
        replica: str,
        *,
        monotonic: Callable[[], float],
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        duration_s: int = LEASE_DURATION_S,
    ) -> None:
        self.namespace = namespace
        self.domainmap = domainmap
        self.replica = replica
        self.duration_s = duration_s
        self._monotonic = monotonic
        self._wall = wall
        self._valid_until: float | None = None
        self.last_error: str | None = None

    @property
    def renew_every_s(self) -> float:
        return self.duration_s / 5

    async def renew(self, fences: dict[str, str], *, loaded: bool) -> bool:
        """Renew the Lease with the phases enforced now; False (and logged) when it failed."""
        started = self._monotonic()
        try:
            await renew_lease(
                self.namespace,
                self.domainmap,
                self.replica,
                fences,
                loaded=loaded,
                now=self._wall(),
                duration_s=self.duration_s,
            )
        except kube_client.KubernetesApiError as error:
            self.last_error = str(error)
            log.warning("router lease renewal failed: %s", error)
            return False
        self.last_error = None
        self._valid_until = started + self.duration_s * SAFE_SHARE
        return True

    def write_refusal(self) -> str | None:
        """Why this replica must not write now (None when it may)."""
        if self._valid_until is None:
            return "the router has not registered with the Kubernetes API yet"
        if self._monotonic() >= self._valid_until:
            return (
                "the router could not renew its registration with the Kubernetes API "
                f"({self.last_error or 'no answer'}); writes resume once it can"
            )
        return None
