"""A seeded, Jepsen-style scenario: concurrent clients through the router, faults, a move; checked.

Why this exists: the router promises that an acknowledged write is neither
lost nor left stale, one order per point, while clusters die and domains move
between them (README, "Consistency: what a client can rely on"). Unit tests
check each step; only a history of many clients racing on the same ids while
things break shows whether the steps compose. This runs one such history,
deterministically chosen from a seed, and checks it with
:mod:`librarian.testing.history` and with structural checks of what the
clusters hold.

What one run does:

- a library of three domains on two embedded clusters (``east`` holds d0 and
  d1, ``west`` holds d2), some background points loaded through the router,
  and a router serving it over real HTTP;
- ``clients`` threads with the official ``qdrant-client`` doing a seeded mix of
  upserts (near a random domain's centroid, so points change domain), payload
  updates, deletes and reads on a small shared id space, every operation
  recorded with its outcome (200: ok; 4xx: fail, the router promises no
  effect; 5xx, timeouts, connection errors: unknown; a read answered as
  partial saw nothing certain and counts as failed);
- a controller that, at seeded operation counts, stops one cluster and brings
  it back, moves one domain to the other cluster the way the operator does
  (target collection, ``dualWrite``, the migration killed once at a seeded
  call and resumed, ``switched``, ``done``, old home cleaned, fence lifted),
  and hangs a cluster (calls slower than the request timeout) and heals it;
  the outbox is drained after each fault;
- at the end: clients stopped, faults healed, calls still under way finished,
  the outbox drained; every copy of every id read from the engines, the
  history checked against the live copies' tokens, and the structural checks
  (labels and versions on every live point, one live copy per id, the moved
  domain's homes agreeing by id and version, the router's answers matching
  the engines).

The mover's steps are :func:`run_mover` (the migration Job) and
:func:`clean_old_home` (the operator's last step): options the migration gains
later go there.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from librarian.contracts.moves import MovePhase
from librarian.contracts.payload import LABEL_KEY, POINT_VERSION_KEY
from librarian.core.hlc import encode_version
from librarian.router.library import (
    CollectionHome,
    DomainRoute,
    LibraryDefinition,
    MoveFence,
    PartitionRef,
)
from librarian.router.outbox import CleanupKind
from librarian.router.state import RouterState
from librarian.services import migration
from librarian.services.domain_homes import copy_payload_indexes
from librarian.services.labeling import domain_filter
from librarian.services.migration import MigrationFailed, MigrationPlan, migrate
from librarian.services.placement import Placement, ensure_partition_index
from librarian.services.versioning import is_tombstone, user_payload, version_of
from librarian.storage.embedded import EmbeddedQdrant
from librarian.storage.fleet import Fleet
from librarian.storage.port import CollectionSpec, PointId, PointRecord, QdrantPort
from librarian.testing.history import History, Kind, Outcome, Pending, Verdict, check
from librarian.testing.history import PointId as HistoryId
from librarian.testing.router import FlakyPort, RouterThread, make_state

__all__ = [
    "KILL_POINTS",
    "MoveFailed",
    "ScenarioConfig",
    "ScenarioError",
    "ScenarioResult",
    "Schedule",
    "clean_old_home",
    "run_mover",
    "run_scenario",
]

DIM: Final = 16
LIBRARY: Final = "library"
PARTIAL_HEADER: Final = "X-Librarian-Partial"
CLUSTERS: Final = ("east", "west")
KILL_POINTS: Final = 12
"""The migration is killed at one of its first this many port calls (a copy of the moved
domain makes more than that, so the kill always lands: in the copy, or saving a checkpoint)."""
_MIX: Final[tuple[tuple[Kind, float], ...]] = (
    ("write", 0.35),
    ("update", 0.2),
    ("delete", 0.15),
    ("read", 0.3),
)
_WAIT_S: Final = 120.0  # no step of a run waits longer than this for another thread


class ScenarioError(RuntimeError):
    """The scenario itself could not run (a harness failure, not a verdict on the product)."""


class MoveFailed(RuntimeError):
    """No run of the migration verified: the operator rolls such a move back."""

    def __init__(self, notes: Sequence[str]) -> None:
        super().__init__("; ".join(notes))
        self.notes = list(notes)


@dataclass(frozen=True)
class ScenarioConfig:
    """One run: the seed, how much traffic, and which faults and moves."""

    seed: int = 0
    clients: int = 4
    ops: int = 90  # per client on average: the run ends once clients * ops are done
    ids: int = 24  # the shared id space (ids id_base .. id_base + ids - 1)
    id_base: int = 1000
    background: int = 240  # points loaded before the clients start (ids below id_base)
    request_timeout_s: float = 1.0  # the router's timeout for each call to a cluster
    client_timeout_s: int = 15
    hang_delay_s: float = 1.3  # a hung cluster's delay per call (> request_timeout_s)
    outage: bool = True  # stop a cluster and bring it back
    hang: bool = True  # hang a cluster and heal it
    move: bool = True  # move a domain to the other cluster
    # Every home placed by partition (3 partitions a domain): writes placed by shard key, or
    # with ``partition_field`` marked in the indexed partition field of a one-shard home.
    sharded: bool = False
    partition_field: bool = False


@dataclass(frozen=True)
class Schedule:
    """What the controller does, and at which operation counts (all from the seed)."""

    down_cluster: str
    down_at: int
    down_for: int
    move_domain: int
    move_at: int
    kill_after: int
    switch_after: int
    done_after: int
    clean_after: int
    hang_cluster: str
    hang_at: int
    hang_for: int

    @classmethod
    def draw(cls, config: ScenarioConfig) -> Schedule:
        rng = random.Random(f"{config.seed}/schedule")
        total = config.clients * config.ops

        def share(low: float, high: float) -> int:
            return max(1, int(total * rng.uniform(low, high)))

        return cls(
            down_cluster=rng.choice(CLUSTERS),
            down_at=share(0.05, 0.12),
            down_for=share(0.06, 0.1),
            move_domain=rng.randrange(3),
            move_at=share(0.3, 0.38),
            kill_after=rng.randint(1, KILL_POINTS),
            switch_after=share(0.03, 0.06),
            done_after=share(0.03, 0.06),
            clean_after=share(0.02, 0.04),
            hang_cluster=rng.choice(CLUSTERS),
            hang_at=share(0.66, 0.72),
            hang_for=share(0.03, 0.05),
        )


@dataclass(frozen=True)
class ScenarioResult:
    """What one run did and found."""

    seed: int
    verdict: Verdict
    ops: dict[str, dict[str, int]]  # kind -> outcome -> operations
    answers: dict[str, int]  # HTTP status (or "timeout", "connection") -> operations
    events: tuple[str, ...]  # faults and moves, in order: "@<ops done> [<clock>] what"
    problems: tuple[str, ...]  # what the structural checks found
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.verdict.ok and not self.problems

    @property
    def operations(self) -> int:
        return sum(sum(by_outcome.values()) for by_outcome in self.ops.values())

    @property
    def violations(self) -> int:
        return len(self.verdict.violations) + len(self.problems)

    def summary(self) -> str:
        ops = ", ".join(
            f"{kind} " + "/".join(f"{n} {outcome}" for outcome, n in sorted(by.items()))
            for kind, by in sorted(self.ops.items())
        )
        answers = " ".join(f"{code}:{n}" for code, n in sorted(self.answers.items()))
        return (
            f"seed {self.seed}: {self.verdict.summary()}; "
            f"{len(self.problems)} structural problem(s); {self.operations} ops ({ops}); "
            f"answers {answers}; {len(self.events)} events; {self.elapsed_s:.1f}s"
        )

    def report(self, limit: int = 20) -> str:
        lines = [self.summary(), "events:", *(f"  {e}" for e in self.events)]
        if self.problems:
            lines += ["structural problems:", *(f"  {p}" for p in self.problems[:limit])]
        lines.append(self.verdict.report(limit))
        return "\n".join(lines)


# -- the library ------------------------------------------------------------------------------


@dataclass
class _Library:
    """The clusters (each behind a flaky port), the definition the router loads, the engines."""

    engines: dict[str, EmbeddedQdrant]
    flaky: dict[str, FlakyPort]
    fleet: Fleet
    definition: LibraryDefinition
    centroids: np.ndarray
    collections: dict[CollectionHome, str] = field(default_factory=dict)  # home -> its domain

    async def load(self) -> LibraryDefinition:
        return self.definition


PARTITIONS: Final = 3


def _home_spec(partitions: Sequence[PartitionRef], by_field: bool = False) -> CollectionSpec:
    """A domain's home: one shard key per partition when it has partitions (one shard when
    they are marked ``by_field``)."""
    keys = tuple(p.id for p in partitions) or None
    return CollectionSpec(vector_size=DIM, shard_keys=None if by_field else keys)


def _create_home(
    engine: QdrantPort, collection: str, partitions: Sequence[PartitionRef], by_field: bool
) -> None:
    """Create a domain's home as the operator does (with its partition index when placed by
    field)."""
    engine.create_collection(collection, _home_spec(partitions, by_field))
    if partitions and by_field:
        ensure_partition_index(engine, collection)


def _placement(route: DomainRoute, by_field: bool = False) -> Placement | None:
    """How a home placed by partition marks each of the domain's points (as the router)."""
    if not route.partitions:
        return None
    return Placement(
        domain_id=route.domain_id,
        vector="",
        keys=tuple(p.id for p in route.partitions),
        centroids=np.asarray([p.centroid for p in route.partitions], dtype=np.float32),
        by_field=by_field,
    )


def _build_library(
    path: Path, seed: int, sharded: bool = False, by_field: bool = False
) -> _Library:
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(3, DIM))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    engines = {name: EmbeddedQdrant(name, path / name) for name in CLUSTERS}
    routes = []
    collections: dict[CollectionHome, str] = {}
    for d in range(3):
        cluster = "east" if d < 2 else "west"
        collection = f"{LIBRARY}-d{d}"
        partitions: tuple[PartitionRef, ...] = ()
        if sharded:  # three cells around the domain's centre, one shard key each
            cells = centroids[d] + rng.normal(size=(PARTITIONS, DIM)) * 0.3
            cells /= np.linalg.norm(cells, axis=1, keepdims=True)
            partitions = tuple(
                PartitionRef(f"d{d}-p{i}", tuple(float(x) for x in cell))
                for i, cell in enumerate(cells)
            )
        _create_home(engines[cluster], collection, partitions, by_field)
        collections[CollectionHome(cluster, collection)] = f"d{d}"
        routes.append(
            DomainRoute(
                domain_id=f"d{d}",
                name=f"domain {d}",
                cluster=cluster,
                collection=collection,
                centroid=tuple(float(x) for x in centroids[d]),
                size=0,
                specialized=True,
                versioned=True,
                partitions=partitions,
            )
        )
    flaky = {name: FlakyPort(engine) for name, engine in engines.items()}
    fleet = Fleet.of_ports(flaky)
    definition = LibraryDefinition(
        name=LIBRARY, domains=tuple(routes), default_cluster="east", version="v1"
    )
    return _Library(engines, flaky, fleet, definition, centroids, collections)


def _near(centroid: np.ndarray, rng: random.Random, spread: float) -> list[float]:
    vector = [float(c) + rng.gauss(0.0, spread) for c in centroid]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


# -- the clients ------------------------------------------------------------------------------


class _Traffic:
    """The clients' shared progress: operations done, a pause gate, the stop flag."""

    def __init__(self, clients: int) -> None:
        self._cond = threading.Condition()
        self.done = 0
        self.running = clients
        self._active = 0
        self._paused = False
        self._stopped = False

    def begin(self) -> bool:
        """Before an operation: waits while paused; False once the run is stopping."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._paused or self._stopped, _WAIT_S):
                raise ScenarioError("clients were paused for too long")
            if self._stopped:
                return False
            self._active += 1
            return True

    def end(self) -> None:
        with self._cond:
            self._active -= 1
            self.done += 1
            self._cond.notify_all()

    def exited(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify_all()

    def wait_for(self, count: int) -> int:
        """Wait until ``count`` operations are done (or no client runs); returns the count."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.done >= count or not self.running, _WAIT_S):
                raise ScenarioError(f"clients did not reach {count} operations")
            return self.done

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No operation is under way inside the block."""
        with self._cond:
            self._paused = True
            if not self._cond.wait_for(lambda: self._active == 0, _WAIT_S):
                raise ScenarioError("operations under way did not finish")
        try:
            yield
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


class _Client:
    """One client thread: a seeded sequence of operations, each recorded in the history."""

    def __init__(self, run: _Run, index: int) -> None:
        self.run = run
        self.name = f"c{index}"
        self.rng = random.Random(f"{run.config.seed}/client/{index}")
        self.partial: str | None = None

    def _watch(self, request: httpx.Request, call_next: Callable[[httpx.Request], Any]) -> Any:
        response = call_next(request)
        self.partial = response.headers.get(PARTIAL_HEADER)
        return response

    def __call__(self) -> None:
        run = self.run
        try:
            client = QdrantClient(
                url=run.url, timeout=run.config.client_timeout_s, check_compatibility=False
            )
            client.http.client.add_middleware(self._watch)
            with closing(client):
                for n in range(run.config.ops * 4):
                    if not run.traffic.begin():
                        return
                    try:
                        self._one(client, n)
                    finally:
                        run.traffic.end()
        except BaseException as error:  # noqa: BLE001 - a harness failure, raised by the run
            run.errors.append(error)
            run.traffic.stop()
        finally:
            run.traffic.exited()

    def _one(self, client: QdrantClient, n: int) -> None:
        config = self.run.config
        kinds = [k for k, _ in _MIX]
        kind = self.rng.choices(kinds, [w for _, w in _MIX])[0]
        point = config.id_base + self.rng.randrange(config.ids)
        token = f"{self.name}-{n}" if kind in ("write", "update") else None
        request = self._request(client, kind, point, token)
        pending = self.run.history.invoke(self.name, kind, point, token)
        self.partial = None
        try:
            answer = request()
        except UnexpectedResponse as error:
            self._failed(pending, error.status_code or 0)
            return
        except ResponseHandlingException as error:
            self.run.answered(kind, "timeout" if _timed_out(error) else "connection")
            if kind == "read":  # a read that got no answer saw nothing
                self.run.record(kind, "fail")
                self.run.history.complete(pending, "fail")
            else:
                self.run.record(kind, "unknown")
                self.run.history.no_answer(pending)
            return
        if kind == "read" and self.partial:
            self.run.answered(kind, "200 partial")
            self.run.record(kind, "fail")
            self.run.history.complete(pending, "fail")
            return
        self.run.answered(kind, "200")
        self.run.record(kind, "ok")
        self.run.history.complete(pending, "ok", observed=answer)

    def _failed(self, pending: Pending, status: int) -> None:
        kind = pending.kind
        outcome: Outcome = "fail" if 400 <= status < 500 or kind == "read" else "unknown"
        self.run.answered(kind, str(status))
        self.run.record(kind, outcome)
        self.run.history.complete(pending, outcome)

    def _request(
        self, client: QdrantClient, kind: Kind, point: int, token: str | None
    ) -> Callable[[], str | None]:
        if kind == "write":
            centroid = self.run.library.centroids[self.rng.randrange(3)]
            vector = _near(centroid, self.rng, 0.05)

            def write() -> None:
                client.upsert(
                    LIBRARY,
                    [models.PointStruct(id=point, vector=vector, payload={"token": token})],
                )

            return write
        if kind == "update":
            return lambda: _none(client.set_payload(LIBRARY, {"token": token}, points=[point]))
        if kind == "delete":
            return lambda: _none(
                client.delete(LIBRARY, points_selector=models.PointIdsList(points=[point]))
            )

        def read() -> str | None:
            found = client.retrieve(LIBRARY, [point], with_payload=True, with_vectors=False)
            if not found:
                return None
            token = (found[0].payload or {}).get("token")
            return None if token is None else str(token)

        return read


def _none(_: object) -> None:
    return None


def _timed_out(error: ResponseHandlingException) -> bool:
    return isinstance(error.source, httpx.TimeoutException)


# -- the mover --------------------------------------------------------------------------------


class _Killed(Exception):
    """The migration process died (injected)."""


class _Killer:
    """Ports that share a call count and die at call ``at`` (an upsert half-way through)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls = 0
        self.killed_in = ""
        self._lock = threading.Lock()

    def wrap(self, port: QdrantPort) -> QdrantPort:
        killer = self

        class Dying:
            def __getattr__(self, name: str) -> Any:
                attribute = getattr(port, name)
                if not callable(attribute) or name in ("cluster", "close"):
                    return attribute

                def call(*args: Any, **kwargs: Any) -> Any:
                    with killer._lock:
                        killer.calls += 1
                        now = killer.calls
                    if now == killer.at:
                        killer.killed_in = name
                        points = args[1] if name == "upsert" and len(args) > 1 else []
                        if len(points) > 1:
                            attribute(args[0], list(points)[: len(points) // 2], **kwargs)
                        raise _Killed(f"killed during {name} (call {now})")
                    return attribute(*args, **kwargs)

                return call

        return Dying()


def run_mover(
    source: QdrantPort,
    target: QdrantPort,
    plan: MigrationPlan,
    *,
    kill_after: int,
    attempts: int = 4,
    backoff: Callable[[], object] = lambda: None,
    placement: Placement | None = None,
) -> list[str]:
    """The move's copy as the operator's migration Job runs it: the first run is killed at
    its ``kill_after``-th port call (source and target together), then the Job is run again
    until it verifies (a verification that loses a race with writes fails and is retried
    after ``backoff``, up to ``attempts`` runs). Returns what happened, one note per run.

    Every option of the copy is here and in ``plan``: a migration that learns new ones
    (a fence version, a dedicated source) gets them in this one place.

    Raises :class:`MoveFailed` when no run verified.
    """
    notes: list[str] = []
    killer = _Killer(kill_after)
    try:
        report = migrate(killer.wrap(source), killer.wrap(target), plan, placement=placement)
        notes.append(f"not killed: finished in {killer.calls} calls ({report.phase})")
    except _Killed as killed:
        notes.append(f"killed at call {kill_after} ({killer.killed_in}): {killed}")
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            backoff()
        try:
            report = migrate(source, target, plan, placement=placement)
        except MigrationFailed as error:
            notes.append(f"run {attempt} failed: {error}")
            continue
        notes.append(
            f"run {attempt}: {report.phase}, copied {report.copied}, "
            f"source {report.source_count}, target {report.target_count}"
            + (f" ({'; '.join(report.notes)})" if report.notes else "")
        )
        if report.verified:
            return notes
    raise MoveFailed(notes)


def clean_old_home(source: QdrantPort, target: QdrantPort, plan: MigrationPlan) -> str:
    """The operator's last step of a move, once it is done: the domain is removed from the
    old home where the new one holds each point at the same or a newer version."""
    return f"{migration.clean_old_home(source, target, plan)} removed"


@dataclass(frozen=True)
class _Move:
    """One domain's move: the definition before it, its route, its two homes."""

    before: LibraryDefinition
    route: DomainRoute
    new: CollectionHome
    fence_version: int | None = None  # set when the routers are asked to write both homes

    @classmethod
    def of(cls, definition: LibraryDefinition, domain: int) -> _Move:
        route = definition.domains[domain]
        cluster = next(c for c in CLUSTERS if c != route.cluster)
        return cls(definition, route, CollectionHome(cluster, f"{route.collection}-moved"))

    @property
    def domain(self) -> str:
        return self.route.domain_id

    @property
    def old(self) -> CollectionHome:
        return self.route.home

    @property
    def name(self) -> str:
        return f"{self.domain}-to-{self.new.cluster}"

    def plan(self) -> MigrationPlan:
        return MigrationPlan(
            name=f"scenario/{self.name}",
            source_collection=self.old.collection,
            target_collection=self.new.collection,
            domain_id=self.domain,
            batch_size=16,
            workers=2,
            verify_sample=512,  # more than the domain holds: every point is compared
            fence_version=self.fence_version,
        )

    def fenced(self, phase: MovePhase) -> LibraryDefinition:
        """The definition with the move in ``phase`` (reads from the new home once switched)."""
        home = self.old if phase is MovePhase.DUAL_WRITE else self.new
        moved = replace(self.route, cluster=home.cluster, collection=home.collection)
        routes = tuple(moved if r is self.route else r for r in self.before.domains)
        fence = MoveFence(self.name, self.domain, phase, self.old, self.new)
        return replace(self.before, domains=routes, moves=(fence,))

    def finished(self) -> LibraryDefinition:
        return replace(self.fenced(MovePhase.DONE), moves=())


def _differences(
    engines: dict[str, EmbeddedQdrant], move: _Move, *, by_version: bool = False
) -> list[str]:
    """The ids the move's two homes hold differently (by version, or by version and payload)."""
    old = _records(engines[move.old.cluster], move.old.collection, move.domain)
    new = _records(engines[move.new.cluster], move.new.collection, None)
    found = []
    for point_id in sorted(set(old) | set(new), key=str):
        a, b = old.get(point_id), new.get(point_id)
        if (a is None or is_tombstone(a)) and (b is None or is_tombstone(b)):
            continue  # deleted in both: a tombstone and no point mean the same
        if a is not None and b is not None:
            same = version_of(a) == version_of(b) and (by_version or a == b)
            if same:
                continue
        found.append(f"id {point_id}: old home {_show(a)}, new home {_show(b)}")
    return found


def _show(payload: dict[str, Any] | None) -> str:
    if payload is None:
        return "none"
    shown = "tombstone" if is_tombstone(payload) else str(user_payload(payload))
    return f"v{version_of(payload)} {shown}"


# -- one run ----------------------------------------------------------------------------------


class _Run:
    def __init__(self, config: ScenarioConfig, path: Path) -> None:
        self.config = config
        self.schedule = Schedule.draw(config)
        self.library = _build_library(
            path, config.seed, config.sharded, config.sharded and config.partition_field
        )
        self.state: RouterState = make_state(
            self.library,
            settings={"timeout": config.request_timeout_s},
            node_id=1,
            settle_timeout_s=config.request_timeout_s,
        )
        self.state.config.loader = self.library.load
        self.history = History(time.monotonic)
        self.traffic = _Traffic(config.clients)
        self.router: RouterThread | None = None
        self.url = ""
        self.errors: list[BaseException] = []
        self.events: list[str] = []
        self.problems: list[str] = []
        self.retired: set[CollectionHome] = set()  # old homes of finished moves: never read
        self._counts: Counter[tuple[str, str]] = Counter()
        self._answers: Counter[str] = Counter()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ bookkeeping

    def record(self, kind: str, outcome: str) -> None:
        with self._lock:
            self._counts[(kind, outcome)] += 1

    def answered(self, kind: str, answer: str) -> None:
        with self._lock:
            self._answers[answer] += 1

    def event(self, what: str) -> None:
        self.events.append(f"@{self.traffic.done} [{time.monotonic():.3f}] {what}")

    def ops(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for (kind, outcome), n in sorted(self._counts.items()):
            found.setdefault(kind, {})[outcome] = n
        return found

    # ------------------------------------------------------------ the router

    def _router(self) -> RouterThread:
        assert self.router is not None
        return self.router

    def define(self, definition: LibraryDefinition, what: str) -> None:
        """The operator's step: the library's definition changes; the router reloads it and
        acknowledges it once no write that began under the older one is under way (the
        operator goes on only then)."""
        self.library.definition = definition
        router = self._router()
        router.run(self.state.reload())
        deadline = time.monotonic() + _WAIT_S
        while not router.run(self.state.older_writes_ended()):
            if time.monotonic() > deadline:
                raise ScenarioError(f"{what}: writes under the older definition never ended")
        self.event(what)

    def heal(self, cluster: str) -> None:
        """The cluster answers again: its circuit closes and the outbox is drained."""
        self.library.flaky[cluster].mode = "ok"
        entries = self._drain([cluster])
        self.event(f"{cluster} healed; outbox drained ({entries} left)")

    def _unlanded_watches(self) -> int:
        """Watches of timed-out writes that never landed (every call has ended, so they never
        will): nothing is left to clean for them; they lapse after the settle window."""
        unlanded = 0
        for entry in self.state.outbox.pending(1000):
            if entry.kind not in (CleanupKind.SETTLE, CleanupKind.WATCH):
                continue
            port = self.library.fleet.get(entry.cluster)
            held = getattr(port, "inner", port).retrieve(
                entry.collection, list(entry.ids), with_vectors=False
            )
            if all(version_of(r.payload) != entry.version for r in held):
                unlanded += 1
        return unlanded

    def _drain(self, clusters: Sequence[str]) -> int:
        """Close the clusters' circuits and drain the outbox; returns the entries left.

        Writes under way when a fault ends may still queue cleanups, so rounds are
        repeated while they make the outbox shorter.
        """

        async def drain() -> int:
            for cluster in clusters:
                self.state.breaker.success(cluster)
            left = len(self.state.outbox)
            for _ in range(5):
                await self.state.maintain()
                before, left = left, len(self.state.outbox)
                if not left or left >= before:
                    break
            return left

        return self._router().run(drain())

    # ------------------------------------------------------------ the controller

    def control(self) -> None:
        try:
            self._control()
        except BaseException as error:  # noqa: BLE001 - a harness failure, raised by the run
            self.errors.append(error)
        finally:
            self.traffic.stop()

    def _control(self) -> None:
        config, plan = self.config, self.schedule
        if config.outage:
            self.traffic.wait_for(plan.down_at)
            self.library.flaky[plan.down_cluster].mode = "down"
            self.event(f"{plan.down_cluster} down")
            self.traffic.wait_for(plan.down_at + plan.down_for)
            self.heal(plan.down_cluster)
        if config.move:
            self.traffic.wait_for(plan.move_at)
            self._move(plan)
        if config.hang:
            at = self.traffic.wait_for(plan.hang_at)
            flaky = self.library.flaky[plan.hang_cluster]
            flaky.delay_s = config.hang_delay_s
            flaky.mode = "slow"
            self.event(f"{plan.hang_cluster} hung ({config.hang_delay_s}s a call)")
            self.traffic.wait_for(at + plan.hang_for)
            self.heal(plan.hang_cluster)
        self.traffic.wait_for(config.clients * config.ops)

    def _move(self, plan: Schedule) -> None:
        """One domain to the other cluster, as the operator moves it, with clients writing."""
        move = _Move.of(self.library.definition, plan.move_domain)
        engines = self.library.engines
        moving = next(r for r in self.library.definition.domains if r.domain_id == move.domain)
        by_field = self.config.sharded and self.config.partition_field
        _create_home(engines[move.new.cluster], move.new.collection, moving.partitions, by_field)
        copy_payload_indexes(  # as the operator makes a new home
            engines[move.old.cluster],
            move.old.collection,
            engines[move.new.cluster],
            move.new.collection,
        )
        self.library.collections[move.new] = move.domain
        # as the operator does: the fence version is its clock when it asks for dual writes
        move = replace(move, fence_version=encode_version(int(time.time() * 1000), 0, 0))
        self.define(move.fenced(MovePhase.DUAL_WRITE), f"move {move.name}: dualWrite")
        source, target = engines[move.old.cluster], engines[move.new.cluster]
        try:
            notes = run_mover(
                source,
                target,
                move.plan(),
                kill_after=plan.kill_after,
                backoff=lambda: self.traffic.wait_for(self.traffic.done + plan.switch_after),
                placement=_placement(moving, by_field),
            )
        except MoveFailed as failed:
            self._roll_back(move, failed.notes)
            return
        for note in notes:
            self.event(f"move {move.name}: {note}")
        self._homes_agree(move, "once the copy verified")
        self.traffic.wait_for(self.traffic.done + plan.switch_after)
        self.define(move.fenced(MovePhase.SWITCHED), f"move {move.name}: switched")
        self.traffic.wait_for(self.traffic.done + plan.done_after)
        self._homes_agree(move, "before done")
        self.define(move.fenced(MovePhase.DONE), f"move {move.name}: done")
        self.traffic.wait_for(self.traffic.done + plan.clean_after)
        cleaned = clean_old_home(source, target, move.plan())
        self.event(f"move {move.name}: old home cleaned ({cleaned})")
        self.define(move.finished(), f"move {move.name}: fence lifted")
        self.retired.add(move.old)

    def _roll_back(self, move: _Move, notes: Sequence[str]) -> None:
        """As the operator rolls a failed move back: the fence goes, then the partial copy."""
        with self.traffic.paused():
            differences = _differences(self.library.engines, move)
        for note in notes:
            self.event(f"move {move.name}: {note}")
        if differences:
            why = "the homes differ: " + "; ".join(differences[:5])
        else:  # every run compared copies while the clients' writes reached one home only
            why = "yet with no write under way the homes agree (its verification raced writes)"
        self.problems.append(f"move {move.name}: the migration never verified; {why}")
        self.define(move.before, f"move {move.name}: rolled back")
        self.library.engines[move.new.cluster].delete_points(
            move.new.collection, points_filter=domain_filter(move.domain)
        )
        self.event(f"move {move.name}: partial copy removed")

    def _homes_agree(self, move: _Move, when: str) -> None:
        """With no operation under way, both homes hold the domain's points at one version."""
        with self.traffic.paused():
            differences = _differences(self.library.engines, move, by_version=True)
            if differences:  # writes the new home missed while a cluster failed: from the outbox
                self._router().run(self.state.maintain())
                differences = _differences(self.library.engines, move, by_version=True)
        if differences:
            self.problems.append(
                f"the homes of {move.domain} differ by (id, version) {when}: "
                f"{len(differences)} id(s): " + "; ".join(differences[:5])
            )
            first = differences[0].split(":")[0].removeprefix("id ")
            self.problems.append(f"  what the clients did to id {first}: {self._ops_on(first)}")
        self.event(f"homes of {move.domain} compared {when}: {len(differences)} differ")

    def _ops_on(self, shown_id: str) -> str:
        """The operations on the id shown as ``shown_id`` so far, in the order invoked."""
        ops = [o for o in self.history.operations if str(o.point_id) == shown_id]
        ops.sort(key=lambda o: o.invoked)
        return "; ".join(o.describe() for o in ops) or "nothing"

    # ------------------------------------------------------------ the run

    def run(self) -> ScenarioResult:
        started = time.monotonic()
        try:
            with RouterThread(self.state) as router:
                self.router = router
                self.url = router.url
                self._load_background()
                self._drive()
                final = self._quiesce()
                verdict = check(self.history, final, ids=self._ids())
        finally:
            self.library.fleet.close()
        return ScenarioResult(
            seed=self.config.seed,
            verdict=verdict,
            ops=self.ops(),
            answers=dict(self._answers),
            events=tuple(self.events),
            problems=tuple(self.problems),
            elapsed_s=time.monotonic() - started,
        )

    def _drive(self) -> None:
        """The clients and the controller, until the controller is done and they stopped."""
        threads = [
            threading.Thread(target=_Client(self, i), name=f"client-{i}", daemon=True)
            for i in range(self.config.clients)
        ]
        threads.append(threading.Thread(target=self.control, name="controller", daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(_WAIT_S * 4)
            if thread.is_alive():
                self.traffic.stop()
                raise ScenarioError(f"{thread.name} did not stop")
        if self.errors:
            raise ScenarioError(f"the scenario failed: {self.errors[0]!r}") from self.errors[0]

    def _ids(self) -> list[HistoryId]:
        return [self.config.id_base + i for i in range(self.config.ids)]

    def _load_background(self) -> None:
        rng = random.Random(f"{self.config.seed}/background")
        points = [
            models.PointStruct(
                id=i,
                vector=_near(self.library.centroids[i % 3], rng, 0.3),
                payload={"n": i},
            )
            for i in range(self.config.background)
        ]
        with closing(QdrantClient(url=self.url, timeout=60, check_compatibility=False)) as client:
            client.upsert(LIBRARY, points)

    def _quiesce(self) -> dict[HistoryId, list[str]]:
        """Heal everything, let calls under way finish, drain; then read what the engines hold."""
        for flaky in self.library.flaky.values():
            flaky.mode = "ok"
            if not flaky.wait_idle(_WAIT_S):
                raise ScenarioError(f"calls to {flaky.inner.cluster} did not finish")
        left = self._drain(CLUSTERS) - self._unlanded_watches()
        if left:
            pending = "; ".join(
                f"{c.kind} {c.cluster}/{c.collection} ids {list(c.ids)} at v{c.version}"
                f"{f' ({c.last_error})' if c.last_error else ''}"
                for c in self.state.outbox.pending(5)
            )
            self.problems.append(f"{left} outbox entries left after the final drain: {pending}")
        self.event(f"quiet: clients stopped, clusters healed, outbox drained ({left} left)")
        copies = self._copies()
        self._retired_leftovers(copies)
        self._structure(copies)
        self._router_matches(copies)
        final: dict[HistoryId, list[str]] = {}
        for point_id in self._ids():
            held = copies.get(point_id, [])
            buried = max((version_of(p) for _, p in held if is_tombstone(p)), default=0)
            behind = [(h, p) for h, p in held if not is_tombstone(p) and version_of(p) < buried]
            if behind:  # served as absent, but it comes back once tombstones are compacted
                where = ", ".join(f"{h.cluster}/{h.collection} v{version_of(p)}" for h, p in behind)
                self.problems.append(
                    f"id {point_id}: live copies behind a newer tombstone (v{buried}): {where}"
                )
                self.problems.append(
                    f"  what the clients did to id {point_id}: {self._ops_on(str(point_id))}"
                )
            live = [p for _, p in held if not is_tombstone(p) and version_of(p) >= buried]
            tokens = [str(p["token"]) for p in live if "token" in p]
            if len(tokens) != len(live):
                self.problems.append(f"id {point_id}: a live copy without a token: {live}")
            if tokens:
                final[point_id] = tokens
        return final

    def _retired_leftovers(
        self, copies: dict[PointId, list[tuple[CollectionHome, dict[str, Any]]]]
    ) -> None:
        """An old home of a finished move is never read again: a copy left there is garbage,
        unless it is newer than every copy the library's homes hold (then it was lost)."""
        left = 0
        for home in self.retired:
            for record in _everything(self.library.engines[home.cluster], home.collection):
                if is_tombstone(record.payload):
                    continue
                left += 1
                newest = max((version_of(p) for _, p in copies.get(record.id, [])), default=0)
                if version_of(record.payload) > newest:
                    self.problems.append(
                        f"id {record.id} is newest in the retired home {home} "
                        f"(v{version_of(record.payload)}): the library lost it"
                    )
        if left:
            self.event(f"{left} older copies left in retired homes (never read)")

    def _copies(self) -> dict[PointId, list[tuple[CollectionHome, dict[str, Any]]]]:
        """Every point of every collection the library reads, tombstones included, by id."""
        found: dict[PointId, list[tuple[CollectionHome, dict[str, Any]]]] = {}
        for home in [h for h in self.library.collections if h not in self.retired]:
            for record in _everything(self.library.engines[home.cluster], home.collection):
                found.setdefault(record.id, []).append((home, dict(record.payload)))
        return found

    def _structure(
        self, copies: dict[PointId, list[tuple[CollectionHome, dict[str, Any]]]]
    ) -> None:
        collections = self.library.collections
        for point_id, held in sorted(copies.items(), key=lambda item: str(item[0])):
            live = [(home, p) for home, p in held if not is_tombstone(p)]
            for home, payload in live:
                if LABEL_KEY not in payload or POINT_VERSION_KEY not in payload:
                    self.problems.append(f"id {point_id} in {home}: no label or version: {payload}")
                elif payload[LABEL_KEY] != collections[home]:
                    self.problems.append(
                        f"id {point_id} in {home} (of {collections[home]}) is labelled "
                        f"{payload[LABEL_KEY]}"
                    )
            if len(live) > 1:
                where = ", ".join(f"{h.cluster}/{h.collection} v{version_of(p)}" for h, p in live)
                self.problems.append(f"id {point_id} is live in {len(live)} homes: {where}")
                self.problems.append(
                    f"  what the clients did to id {point_id}: {self._ops_on(str(point_id))}"
                )

    def _router_matches(
        self, copies: dict[PointId, list[tuple[CollectionHome, dict[str, Any]]]]
    ) -> None:
        """What the router answers for every id is the newest live copy the engines hold."""
        ids: list[PointId] = [*range(self.config.background), *self._ids()]
        expected: dict[PointId, dict[str, Any]] = {}
        for point_id in ids:
            held = copies.get(point_id, [])
            newest = max(held, key=lambda c: version_of(c[1]), default=None)
            if newest is not None and not is_tombstone(newest[1]):
                expected[point_id] = user_payload(newest[1])
        with closing(QdrantClient(url=self.url, timeout=60, check_compatibility=False)) as client:
            answered: dict[PointId, dict[str, Any]] = {
                (r.id if isinstance(r.id, int) else str(r.id)): dict(r.payload or {})
                for r in client.retrieve(LIBRARY, ids)
            }
        if answered != expected:
            differ = sorted(
                (i for i in set(answered) | set(expected) if answered.get(i) != expected.get(i)),
                key=str,
            )
            self.problems.append(
                f"the router's answers differ from the engines for {len(differ)} id(s), e.g. "
                + ", ".join(
                    f"{i}: router {answered.get(i)} engines {expected.get(i)}" for i in differ[:3]
                )
            )


def _everything(port: QdrantPort, collection: str) -> Iterator[PointRecord]:
    offset: PointId | None = None
    while True:
        page, offset = port.scroll(collection, limit=500, offset=offset, with_vectors=False)
        yield from page
        if offset is None:
            return


def _records(
    port: QdrantPort, collection: str, domain: str | None
) -> dict[PointId, dict[str, Any]]:
    """Every point's payload (tombstones included), of one domain when ``domain`` is given."""
    return {
        r.id: dict(r.payload)
        for r in _everything(port, collection)
        if domain is None or r.payload.get(LABEL_KEY) == domain
    }


def run_scenario(config: ScenarioConfig, path: Path) -> ScenarioResult:
    """Run the scenario ``config`` describes with its clusters' storage under ``path``."""
    return _Run(config, path).run()
