"""Move fences: router Leases, which replicas a move waits for, and when a router stops writing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from librarian.contracts.metadata import FENCES_ANNOTATION, ROUTER_FOR_LABEL
from librarian.contracts.moves import MovePhase
from librarian.kube import fences
from librarian.kube.fences import RouterLease, lease_body, lease_name, waiting_routers
from librarian.router.library import CollectionHome, DomainRoute, MoveFence, View
from librarian.router.loader import moves_in_flight
from librarian.router.registration import Registration

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _lease(
    replica: str, fences_: dict[str, str], *, age_s: float = 0, loaded: bool = True
) -> RouterLease:
    return RouterLease(replica, NOW - timedelta(seconds=age_s), 15, loaded, fences_)


def test_a_move_waits_for_every_live_loaded_replica_that_has_not_acknowledged() -> None:
    leases = [
        _lease("a", {"cs": "dualWrite"}),
        _lease("b", {}),
        _lease("c", {"cs": "switched"}),
        _lease("dead", {}, age_s=16),  # lapsed: it refuses writes itself
        _lease("idle", {}, loaded=False),  # serves no library: writes nothing
    ]
    assert waiting_routers(leases, "cs", "dualWrite", NOW) == ["b", "c"]
    assert waiting_routers(leases[:1], "cs", "dualWrite", NOW) == []
    assert waiting_routers([], "cs", "done", NOW) == []


def test_a_lease_round_trips_through_its_body() -> None:
    body = lease_body("ns", "packages", "router-0", {"cs": "switched"}, loaded=True, now=NOW)
    assert body["metadata"]["labels"] == {ROUTER_FOR_LABEL: "packages"}
    assert json.loads(body["metadata"]["annotations"][FENCES_ANNOTATION]) == {"cs": "switched"}
    parsed = fences._parse(body)
    assert parsed == RouterLease("router-0", NOW, 15, True, {"cs": "switched"})
    assert parsed.live(NOW + timedelta(seconds=14))
    assert not parsed.live(NOW + timedelta(seconds=15))


def test_lease_names_are_valid_and_unique_per_replica() -> None:
    long = "x" * 80
    names = {lease_name(long, f"{long}-{i}") for i in range(50)}
    assert len(names) == 50
    assert all(len(n) <= 63 and n == n.lower() for n in names)


def test_unreadable_annotations_acknowledge_nothing() -> None:
    body = lease_body("ns", "packages", "r", {}, loaded=True, now=NOW)
    body["metadata"]["annotations"][FENCES_ANNOTATION] = "{not json"
    body["spec"]["renewTime"] = "yesterday"
    parsed = fences._parse(body)
    assert parsed.fences == {}
    assert not parsed.live(NOW)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_router_refuses_writes_until_registered_and_once_its_lease_may_have_lapsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    calls: list[dict[str, Any]] = []
    fail = {"now": False}

    async def renew(*args: Any, **kwargs: Any) -> None:
        if fail["now"]:
            from librarian.kube.errors import ApiUnreachable

            raise ApiUnreachable("cannot reach the Kubernetes API")
        calls.append({"fences": args[3], **kwargs})

    monkeypatch.setattr("librarian.router.registration.renew_lease", renew)
    registration = Registration("ns", "packages", "r0", monotonic=clock, wall=lambda: NOW)
    assert "not registered" in (registration.write_refusal() or "")
    assert asyncio.run(registration.renew({"cs": "dualWrite"}, loaded=True))
    assert registration.write_refusal() is None
    assert calls[-1]["fences"] == {"cs": "dualWrite"}
    clock.now += 15 * 0.6 - 0.01
    assert registration.write_refusal() is None
    fail["now"] = True
    assert not asyncio.run(registration.renew({}, loaded=True))
    clock.now += 0.02
    refusal = registration.write_refusal() or ""
    assert "could not renew" in refusal
    assert "cannot reach" in refusal
    fail["now"] = False
    assert asyncio.run(registration.renew({}, loaded=True))
    assert registration.write_refusal() is None


def _route(domain: str, cluster: str, collection: str) -> DomainRoute:
    return DomainRoute(domain, domain, cluster, collection, (1.0,), 10, versioned=True)


def test_a_view_writes_both_homes_of_a_domain_only_in_dual_write_phases() -> None:
    old, new = CollectionHome("east", "src"), CollectionHome("west", "d1")
    routes = (_route("d0", "east", "src"), _route("d1", "east", "src"))
    for phase, both in (
        (MovePhase.DUAL_WRITE, True),
        (MovePhase.SWITCHED, True),
        (MovePhase.DONE, False),
    ):
        view = View(routes, None, 1, True, (MoveFence("cs", "d1", phase, old, new),))
        assert view.write_homes(routes[0]) == (old,)
        assert view.write_homes(routes[1]) == ((old, new) if both else (old,))
        assert set(view.homes()) == {old, new}
        assert view.fences() == {"cs": phase.value}


def test_moves_in_flight_are_read_from_specialization_statuses() -> None:
    def item(name: str, move: Any, domainmap: str = "packages") -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {"domainMap": domainmap},
            "status": {"domainId": "d1", "move": move},
        }

    good = {
        "phase": "switched",
        "source": {"cluster": "east", "collection": "src"},
        "target": {"cluster": "west", "collection": "d1"},
    }
    items = [
        item("b", good),
        item("a", {**good, "phase": "dualWrite"}),
        item("other", good, domainmap="else"),
        item("broken", {"phase": "sideways", "source": {}, "target": {}}),
        item("none", None),
    ]
    moves = moves_in_flight(items, "packages")
    assert [(m.name, m.phase) for m in moves] == [
        ("a", MovePhase.DUAL_WRITE),
        ("b", MovePhase.SWITCHED),
    ]
    assert moves[0].source == CollectionHome("east", "src")
