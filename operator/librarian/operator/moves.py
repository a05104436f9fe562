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
from collections.abc import Mapping
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
from librarian.kube import client as api
from librarian.kube.naming import kubernetes_name
from librarian.operator.conditions import parse_timestamp
from librarian.operator.context import OperatorContext
from librarian.operator.policy_state import update_move
from librarian.services.domain_homes import DomainHome, NotVerified, catch_up, remove_from_old_home
from librarian.services.labeling import domain_filter
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


def _path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SPECIALIZATIONS}"
    return f"{base}/{name}" if name else base


def specialization_name(policy: str, move: Mapping[str, Any]) -> str:
    tag = str(move.get("proposal") or "")[:6]
    return kubernetes_name(policy, str(move["domain"]), str(move["target"]), tag)


async def start_move(
    body: kopf.Body, move: Mapping[str, Any], where: MoveTarget, now: datetime
) -> dict[str, Any]:
    """Pending -> Copying: create the policy's ClusterSpecialization for the move."""
    name = specialization_name(where.policy, move)
    old = move["oldHome"]
    child = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterSpecialization",
        "metadata": {
            "name": name,
            "namespace": where.namespace,
            "labels": {
                OWNER_LABEL: where.policy,
                DOMAINMAP_LABEL: where.domain_map,
                DOMAIN_LABEL: str(move["domain"]),
            },
        },
        "spec": {
            "domainMap": where.domain_map,
            "domain": str(move["domain"]),
            "target": {"cluster": str(move["target"])},
            "source": {"cluster": old["cluster"], "collection": old["collection"]},
            "strategy": where.execution_strategy,
            "migration": {"verify": True, "cleanupSource": False},
        },
    }
    await api.create_object(_path(where.namespace), child)  # exists already: a resumed start
    kopf.info(
        body,
        reason="MoveStarted",
        message=f"domain {move['domain']}: {move['source']} -> {move['target']} "
        f"({int(move.get('points', 0)):,} points) through ClusterSpecialization {name}",
    )
    return update_move(
        move,
        "Copying",
        f"ClusterSpecialization {name} copies the domain",
        now=now,
        specialization=name,
    )


def _new_home(move: Mapping[str, Any], specialization: Mapping[str, Any]) -> DomainHome | None:
    collection = (specialization.get("status") or {}).get("targetCollection")
    return DomainHome(str(move["target"]), str(collection)) if collection else None


def _remove_partial_copy(
    context: OperatorContext, where: MoveTarget, move: Mapping[str, Any]
) -> None:
    home = move.get("newHome")
    if not home:
        return
    new = DomainHome(home["cluster"], home["collection"])
    old = DomainHome(move["oldHome"]["cluster"], move["oldHome"]["collection"])
    if new == old:
        return
    fleet = context.fleet_factory(where.clusters)
    try:
        with contextlib.suppress(CollectionNotFound):
            fleet.get(new.cluster).delete_points(
                new.collection, points_filter=domain_filter(str(move["domain"]))
            )
    finally:
        fleet.close()


async def _roll_back(
    body: kopf.Body,
    move: Mapping[str, Any],
    where: MoveTarget,
    context: OperatorContext,
    why: str,
) -> dict[str, Any]:
    """Remove the new copy and its specialization; the old home was never touched."""
    name = move.get("specialization")
    if name:
        await api.delete_object(_path(where.namespace, str(name)))
    await asyncio.to_thread(_remove_partial_copy, context, where, move)
    message = f"rolled back: {why}; the domain stays on {move['source']}, nothing was lost"
    kopf.event(
        body, type="Warning", reason="MoveRolledBack", message=f"domain {move['domain']} {message}"
    )
    return update_move(move, "RolledBack", message, now=context.clock())


async def _follow_copy(
    body: kopf.Body, move: Mapping[str, Any], where: MoveTarget, context: OperatorContext
) -> dict[str, Any]:
    name = str(move["specialization"])
    try:
        child = await api.get_json(_path(where.namespace, name))
    except api.NotFound:
        return await _roll_back(
            body, move, where, context, f"ClusterSpecialization {name} disappeared"
        )
    status = child.get("status") or {}
    new_home = _new_home(move, child)
    if new_home is not None and not move.get("newHome"):
        move = {**move, "newHome": {"cluster": new_home.cluster, "collection": new_home.collection}}
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
        return update_move(
            move,
            "Copying",
            f"{name}: {status.get('message') or phase or 'Pending'}",
            now=context.clock(),
        )
    old_name = move.get("oldSpecialization")
    if old_name:
        with contextlib.suppress(api.KubernetesApiError):  # an old one deleted meanwhile: fine
            await api.patch_object(
                _path(where.namespace, str(old_name)),
                {"metadata": {"annotations": {SUPERSEDED_ANNOTATION: name}}},
            )
    kopf.info(
        body,
        reason="MoveSwitched",
        message=f"domain {move['domain']} verified on {move['target']}; reads and writes switch "
        f"to it, the old home is cleaned after {where.grace_s:g}s",
    )
    return update_move(
        move,
        "Switching",
        f"verified on {move['target']}; {status.get('message', '')}".strip(),
        now=context.clock(),
    )


def _clean_blocking(
    context: OperatorContext, where: MoveTarget, move: Mapping[str, Any]
) -> tuple[int, int]:
    old = DomainHome(move["oldHome"]["cluster"], move["oldHome"]["collection"])
    new = DomainHome(move["newHome"]["cluster"], move["newHome"]["collection"])
    fleet = context.fleet_factory(where.clusters)
    try:
        caught_up = catch_up(fleet, str(move["domain"]), old, new)
        if (old.cluster, old.collection) == (where.source_cluster, where.source_collection):
            return caught_up, 0  # the DomainMap's source keeps every point it was given
        return caught_up, remove_from_old_home(fleet, str(move["domain"]), old, new)
    finally:
        fleet.close()


async def _clean(
    body: kopf.Body, move: Mapping[str, Any], where: MoveTarget, context: OperatorContext
) -> dict[str, Any]:
    try:
        caught_up, removed = await asyncio.to_thread(_clean_blocking, context, where, move)
    except (NotVerified, QdrantError) as error:
        kopf.event(body, type="Warning", reason="CleanupWaiting", message=str(error))
        return update_move(move, "Cleaning", f"waiting: {error}", now=context.clock())
    old_name = move.get("oldSpecialization")
    if old_name and move.get("oldSpecializationOwned"):
        # A specialization an earlier move of this policy created: replaced, so removed.
        await api.delete_object(_path(where.namespace, str(old_name)))
    message = (
        f"done: {int(move.get('points', 0)):,} points now served from {move['target']}"
        + (f", {caught_up:,} written during the move copied over" if caught_up else "")
        + (f", {removed:,} removed from {move['source']}" if removed else "")
    )
    kopf.info(body, reason="MoveCompleted", message=f"domain {move['domain']} {message}")
    return update_move(move, "Done", message, now=context.clock(), removedFromOldHome=removed)


async def advance_move(
    body: kopf.Body, move: Mapping[str, Any], where: MoveTarget, context: OperatorContext
) -> dict[str, Any]:
    """One step of a move in flight; the returned record replaces it in the status."""
    state = move.get("state")
    now = context.clock()
    if state == "Copying":
        return await _follow_copy(body, move, where, context)
    if state == "Switching":
        switched = parse_timestamp(move.get("switchedAt"))
        if switched is not None and (now - switched).total_seconds() < where.grace_s:
            return dict(move)
        return await _clean(
            body, update_move(move, "Cleaning", "cleaning the old home", now=now), where, context
        )
    if state == "Cleaning":
        return await _clean(body, move, where, context)
    return dict(move)
