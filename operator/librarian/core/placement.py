"""Placing domains on targets for automatic specialization.

Why this exists: with ``specialize: auto`` a DomainMap gets one specialized
collection per domain; each domain needs a target. Largest domains first, each
goes to the target holding the fewest points so far (greedy balance), so no
cluster takes the bulk; ties keep the listed order.
"""

from __future__ import annotations

from collections.abc import Sequence


def place_domains(sizes: dict[str, int], targets: Sequence[str]) -> dict[str, str]:
    """Domain id -> target name, balancing points across ``targets``."""
    if not targets:
        raise ValueError("no target clusters to place domains on")
    load = dict.fromkeys(targets, 0)
    placement: dict[str, str] = {}
    for domain_id, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        target = min(targets, key=lambda name: load[name])
        placement[domain_id] = target
        load[target] += size
    return placement
