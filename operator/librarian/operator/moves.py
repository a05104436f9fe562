"""Executing one rebalancing move safely: copy, verify, switch reads, clean up — or roll back.

Why this exists: a move is a data move, so it follows the safe order. A new
ClusterSpecialization (labelled with the policy, not owned by it: deleting
the policy must not delete what serves a moved domain) copies the domain from its
current home to the target cluster with a verified migration Job. Only once
it is Ready is the old ClusterSpecialization marked superseded, which
switches the routers' reads and writes to the new home. After the grace
period, points written to the old home meanwhile are copied over, the new home
is checked to hold at least as many of the domain's points, and only then are
they deleted from the old home. If the copy fails, the new specialization and
its partial copy are removed and the old home — never touched — keeps serving.

Each step is idempotent: a move record in the policy's status says where it
is, and a restarted operator continues from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf

from librarian.contracts.api import GROUP, VERSION
from librarian.contracts.metadata import (
    DOMAIN_LABEL,
    DOMAINMAP_LABEL,
    POLICY_LABEL,
    SUPERSEDED_ANNOTATION,
)
from librarian.contracts.moves import MovePhase
from librarian.core.collection_spec import routing_vector_name
from librarian.kube import client as api
from librarian.kube.naming import kubernetes_name
from librarian.operator.context import OperatorContext
from librarian.operator.move_record import MoveRecord, MoveState
from librarian.services.domain_homes import DomainHome, NotVerified, catch_up, remove_from_old_home
from librarian.services.labeling import domain_filter
from librarian.services.placement import Placement, placed_by_field, read_placement
from librarian.storage.errors import CollectionNotFound, QdrantError
from librarian.storage.fleet import ClusterConfig

__all__ = ["OWNER_LABEL", "SUPERSEDED_ANNOTATION", "MoveTarget", "advance_move", "start_move"]

SPECIALIZATIONS = "clusterspecializations"
OWNER_LABEL = POLICY_LABEL


@dataclass(frozen=True)
class MoveTarget:
    """What every move of one policy needs to know about its library."""

    namespace: str
    policy: str
    domain_map: str
    source_cluster: str  # the DomainMap's source: its collection stays the ground truth
    source_collection: str
    execution_strategy: str
    grace_s: float
    clusters: list[ClusterConfig]
    # The DomainMap's catalog (cluster, collection) and routing vector: a new home sharded by
    # partition is caught up with each point marked with its partition.
    catalog: tuple[str, str] | None = None
    vector: str = ""


def _path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SPECIALIZATIONS}"
    return f"{base}/{name}" if name else base


def specialization_name(policy: str, move: MoveRecord) -> str:
    tag = (move.proposal or "")[:6]
    return kubernetes_name(policy, move.domain, move.target, tag)


async def start_move(
    body: kopf.Body, move: MoveRecord, where: MoveTarget, now: datetime
) -> MoveRecord:
    """Pending -> Copying: create the policy's ClusterSpecialization for the move."""
    name = specialization_name(where.policy, move)
    child = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterSpecialization",
        "metadata": {
            "name": name,
            "namespace": where.namespace,
            "labels": {
                OWNER_LABEL: where.policy,
                DOMAINMAP_LABEL: where.domain_map,
                DOMAIN_LABEL: move.domain,
            },
        },
        "spec": {
            "domainMap": where.domain_map,
            "domain": move.domain,
            "target": {"cluster": move.target},
            "source": {"cluster": move.old_home.cluster, "collection": move.old_home.collection},
            "strategy": where.execution_strategy,
            "migration": {"verify": True, "cleanupSource": False},
        },
    }
    await api.create_object(_path(where.namespace), child)  # exists already: a resumed start
    kopf.info(
        body,
        reason="MoveStarted",
        message=f"domain {move.domain}: {move.source} -> {move.target} "
        f"({move.points:,} points) through ClusterSpecialization {name}",
    )
    return move.to(
        MoveState.COPYING,
        f"ClusterSpecialization {name} copies the domain",
        now=now,
        specialization=name,
    )


def _new_home(move: MoveRecord, specialization: dict[str, Any]) -> DomainHome | None:
    collection = (specialization.get("status") or {}).get("targetCollection")
    return DomainHome(move.target, str(collection)) if collection else None


def _remove_partial_copy(context: OperatorContext, where: MoveTarget, move: MoveRecord) -> None:
    new, old = move.new_home, move.old_home
    if new is None or new == old:
        return
    fleet = context.fleet_factory(where.clusters)
    try:
        with contextlib.suppress(CollectionNotFound):
            fleet.get(new.cluster).delete_points(
                new.collection, points_filter=domain_filter(move.domain)
            )
    finally:
        fleet.close()


async def _roll_back(
    body: kopf.Body,
    move: MoveRecord,
    where: MoveTarget,
    context: OperatorContext,
    why: str,
) -> MoveRecord:
    """Remove the new copy and its specialization; the old home was never touched."""
    if move.specialization:
        await api.delete_object(_path(where.namespace, move.specialization))
    await asyncio.to_thread(_remove_partial_copy, context, where, move)
    message = f"rolled back: {why}; the domain stays on {move.source}, nothing was lost"
    kopf.event(
        body, type="Warning", reason="MoveRolledBack", message=f"domain {move.domain} {message}"
    )
    return move.to(MoveState.ROLLED_BACK, message, now=context.clock())


async def _follow_copy(
    body: kopf.Body, move: MoveRecord, where: MoveTarget, context: OperatorContext
) -> MoveRecord:
    name = str(move.specialization)
    try:
        child = await api.get_json(_path(where.namespace, name))
    except api.NotFound:
        return await _roll_back(
            body, move, where, context, f"ClusterSpecialization {name} disappeared"
        )
    status = child.get("status") or {}
    new_home = _new_home(move, child)
    if new_home is not None and move.new_home is None:
        move = move.with_new_home(new_home)
    phase = status.get("phase")
    if phase == "Failed":
        return await _roll_back(
            body,
            move,
            where,
            context,
            f"ClusterSpecialization {name} failed ({status.get('message', '')})",
        )
    if phase != "Ready":
        return move.to(
            MoveState.COPYING,
            f"{name}: {status.get('message') or phase or 'Pending'}",
            now=context.clock(),
        )
    if move.old_specialization:
        with contextlib.suppress(api.KubernetesApiError):  # an old one deleted meanwhile: fine
            await api.patch_object(
                _path(where.namespace, move.old_specialization),
                {"metadata": {"annotations": {SUPERSEDED_ANNOTATION: name}}},
            )
    kopf.info(
        body,
        reason="MoveSwitched",
        message=f"domain {move.domain} verified on {move.target}; reads and writes switch "
        f"to it, the old home is cleaned after {where.grace_s:g}s",
    )
    return move.to(
        MoveState.SWITCHING,
        f"verified on {move.target}; {status.get('message', '')}".strip(),
        now=context.clock(),
    )


def _clean_blocking(
    context: OperatorContext, where: MoveTarget, move: MoveRecord
) -> tuple[int, int]:
    old, new = move.old_home, move.new_home
    if new is None:
        raise NotVerified(f"domain {move.domain}: the new home is not known yet")
    fleet = context.fleet_factory(where.clusters)
    try:
        placement = _placement(fleet, where, move.domain, new)
        caught_up = catch_up(fleet, move.domain, old, new, placement=placement)
        if (old.cluster, old.collection) == (where.source_cluster, where.source_collection):
            return caught_up, 0  # the DomainMap's source keeps every point it was given
        return caught_up, remove_from_old_home(fleet, move.domain, old, new)
    finally:
        fleet.close()


def _placement(fleet: Any, where: MoveTarget, domain: str, home: DomainHome) -> Placement | None:
    """How a new home placed by partition marks each of ``domain``'s points: its partition
    field, or its shard key (``None``: it is not placed by partition)."""
    try:
        info = fleet.get(home.cluster).collection_info(home.collection)
    except CollectionNotFound:
        return None
    spec = info.spec
    keys = spec.shard_keys
    by_field = placed_by_field(info)
    if (keys is None and not by_field) or where.catalog is None:
        return None
    cluster, collection = where.catalog
    owner = f"{where.namespace}/{where.domain_map}"
    vector = routing_vector_name(spec, where.vector or None)
    placement = read_placement(
        fleet.get(cluster), collection, owner, domain, vector, by_field=by_field
    )
    if placement is None or keys is None:
        return placement
    return placement.restricted(keys)


async def _routers_left_old_home(move: MoveRecord, where: MoveTarget) -> str | None:
    """Why the old home may not be cleaned yet: a router may still write it (None: it may)."""
    if not move.specialization:
        return None
    try:
        child = await api.get_json(_path(where.namespace, move.specialization))
    except api.NotFound:
        return None
    fence = (child.get("status") or {}).get("move") or {}
    if not fence or (fence.get("phase") == MovePhase.DONE and fence.get("acknowledged")):
        return None
    return (
        f"routers still write the old home (move phase {fence.get('phase')}, "
        f"{(child.get('status') or {}).get('moveMessage') or 'waiting for acknowledgements'})"
    )


async def _clean(
    body: kopf.Body, move: MoveRecord, where: MoveTarget, context: OperatorContext
) -> MoveRecord:
    waiting = await _routers_left_old_home(move, where)
    if waiting:
        return move.to(MoveState.CLEANING, f"waiting: {waiting}", now=context.clock())
    try:
        caught_up, removed = await asyncio.to_thread(_clean_blocking, context, where, move)
    except (NotVerified, QdrantError) as error:
        kopf.event(body, type="Warning", reason="CleanupWaiting", message=str(error))
        return move.to(MoveState.CLEANING, f"waiting: {error}", now=context.clock())
    if move.old_specialization and move.old_specialization_owned:
        # A specialization an earlier move of this policy created: replaced, so removed.
        await api.delete_object(_path(where.namespace, move.old_specialization))
    message = (
        f"done: {move.points:,} points now served from {move.target}"
        + (f", {caught_up:,} written during the move copied over" if caught_up else "")
        + (f", {removed:,} removed from {move.source}" if removed else "")
    )
    kopf.info(body, reason="MoveCompleted", message=f"domain {move.domain} {message}")
    return move.to(MoveState.DONE, message, now=context.clock(), removed_from_old_home=removed)


async def advance_move(
    body: kopf.Body, move: MoveRecord, where: MoveTarget, context: OperatorContext
) -> MoveRecord:
    """One step of a move in flight; the returned record replaces it in the status."""
    now = context.clock()
    if move.state == MoveState.COPYING:
        return await _follow_copy(body, move, where, context)
    if move.state == MoveState.SWITCHING:
        switched = move.switched_time
        if switched is not None and (now - switched).total_seconds() < where.grace_s:
            return move
        cleaning = move.to(MoveState.CLEANING, "cleaning the old home", now=now)
        return await _clean(body, cleaning, where, context)
    if move.state == MoveState.CLEANING:
        return await _clean(body, move, where, context)
    return move
