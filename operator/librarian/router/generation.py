"""Write generations of a library's homes: what tells every replica that a cached answer is stale.

Why this exists: several router replicas serve one library, and each keeps its
own result cache. A replica's own writes can clear its cache, but another
replica's write, or a write made straight to a home, cannot. What every replica
can see is the data: each write through any replica stamps the points it
changes (tombstones of deletes included) with a hybrid-logical-clock version in
the reserved payload key ``librarian_version``. A home's *generation* is the
pair (newest version it holds, points it holds, tombstones included), read with
an ``order_by`` scroll of one point on an integer index of that key and an exact
count. An answer is cached with the generations of the homes it read, and served
again only while every one of them is unchanged.

What a generation sees, exactly:

- any write through a router (upsert, delete, payload or vector change) that
  lands with a version above the home's newest one, and any change of a home's
  point count (inserts and deletes through the router or around it);
- not a write made around the router that keeps the count and carries no newer
  version (an overwrite, a payload change or a delete-and-insert pair made
  straight to Qdrant); neither Qdrant's collection info nor the embedded
  engine's shard info carries a write sequence that would (see the README);
- not a router write that lands *below* the home's newest version (two
  concurrent writes landing in the other order, an outbox replay, clocks skewed
  between replicas). Such a write lands within the write path's own timeout of
  the newest one, so an answer is cached only once the newest version of every
  home it read is older than the *settle window* (30 s by default, as the request
  timeout): a write still in flight then can only raise the version. What lands
  later still (an outbox replay after a longer outage, a write slower than its
  own timeout) is not seen; the README lists it.

A miss reads each home's generation in the call that first reads the home
(:class:`AnswerReads`); a hit reads those of its homes in parallel, within a
share of the request's deadline. A home that does not give it means no cache
for that request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from qdrant_client.http import models

from librarian.contracts.payload import POINT_VERSION_KEY
from librarian.core.hlc import decode_version
from librarian.router.library import CollectionHome, home_route
from librarian.router.upstream import REQUEST_DEADLINE, Upstream
from librarian.services.versioning import ensure_version_index
from librarian.storage.port import QdrantPort

__all__ = [
    "DETECTS",
    "AnswerReads",
    "Generations",
    "HomeGeneration",
]

log = logging.getLogger("librarian.router")
T = TypeVar("T")

DETECTS = (
    "writes through any router replica (every write stamps a newer version), and any change "
    "of a home's point count; not writes made straight to Qdrant that keep the point count "
    "and carry no newer librarian_version (overwrites, payload changes, a delete and an "
    "insert between two reads); answers are cached only after the settle window since the "
    "newest write of every home they read"
)
"""What the cache can see, said in the status report and the README."""


@dataclass(frozen=True)
class HomeGeneration:
    """A home's write generation: its newest point version (0: none) and its point count."""

    newest: int
    points: int


def _newest_version(port: QdrantPort, collection: str) -> int:
    records, _ = port.scroll_points(
        collection,
        models.ScrollRequest(
            limit=1,
            order_by=models.OrderBy(key=POINT_VERSION_KEY, direction=models.Direction.DESC),
            with_payload=[POINT_VERSION_KEY],
            with_vector=False,
        ),
    )
    if not records:
        return 0
    value = records[0].order_value
    if value is None:
        value = (records[0].payload or {}).get(POINT_VERSION_KEY, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


class Generations:
    """Reads homes' generations for the cache, and says when an answer may be cached.

    ``wall_ms`` is the clock versions are compared with (injected by tests);
    ``settle_s`` is the settle window; a lookup takes at most ``share`` of the
    time the request has left, so that a home that hangs leaves time to answer.
    """

    def __init__(
        self,
        upstream: Upstream,
        *,
        wall_ms: Callable[[], int],
        settle_s: float,
        share: float = 0.25,
    ) -> None:
        self.upstream = upstream
        self.wall_ms = wall_ms
        self.settle_s = settle_s
        self.share = share
        self._indexed: set[CollectionHome] = set()

    def _budget(self, timeout: float) -> float:
        deadline = REQUEST_DEADLINE.get()
        remaining = deadline.remaining() if deadline is not None else timeout
        return max(0.001, min(timeout, remaining) * self.share)

    async def read(
        self, homes: Iterable[CollectionHome], timeout: float
    ) -> dict[CollectionHome, HomeGeneration] | None:
        """Every home's generation, or None when one of them did not give it in time."""
        wanted = list(dict.fromkeys(homes))
        budget = self._budget(timeout)
        outcomes = await asyncio.gather(
            *(self.upstream.call(home_route(h), self.lookup(h), budget) for h in wanted),
            return_exceptions=True,
        )
        found: dict[CollectionHome, HomeGeneration] = {}
        for home, outcome in zip(wanted, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.info("no generation for %s/%s: %s", *home, outcome)
                return None
            found[home] = outcome
        return found

    def watch(self) -> AnswerReads:
        """A watch of the calls one answer makes (see :class:`AnswerReads`)."""
        return AnswerReads(self)

    def lookup(self, home: CollectionHome) -> Callable[[QdrantPort], HomeGeneration]:
        """The operation reading ``home``'s generation (its version index made if missing)."""

        def run(port: QdrantPort) -> HomeGeneration:
            if home not in self._indexed:
                ensure_version_index(port, home.collection)
                self._indexed.add(home)
            newest = _newest_version(port, home.collection)
            return HomeGeneration(newest, port.count(home.collection))

        return run

    def settled(self, generations: Iterable[HomeGeneration]) -> bool:
        """Is the newest write of every one of these homes older than the settle window?"""
        horizon_ms = self.wall_ms() - int(self.settle_s * 1000)
        for generation in generations:
            if generation.newest <= 0:
                continue
            try:
                written_ms = decode_version(generation.newest).wall_ms
            except ValueError:  # not a version the library made: its age is unknown
                return False
            if written_ms > horizon_ms:
                return False
        return True

    @staticmethod
    def unchanged(
        cached: Mapping[CollectionHome, HomeGeneration],
        now: Mapping[CollectionHome, HomeGeneration],
    ) -> bool:
        return all(now.get(home) == generation for home, generation in cached.items())


class AnswerReads:
    """The generation of every home an answer reads, each read in the call that first reads
    the home, just before it (so no extra round trip, and only the homes the answer depends
    on: a routed search the domains it probed, a scroll, count or retrieve every home).

    The generation kept for a home is read before any of the answer's reads of it: of two
    calls to one home, the first whose lookup ends is kept, and the other's read of the
    data starts only after its own lookup, later still. A lookup that fails leaves the home
    unknown (the answer is then not cached) and does not fail the read.
    """

    def __init__(self, generations: Generations) -> None:
        self._generations = generations
        self._lock = threading.Lock()
        self._found: dict[CollectionHome, HomeGeneration | None] = {}

    def around(
        self, home: CollectionHome, operation: Callable[[QdrantPort], T]
    ) -> Callable[[QdrantPort], T]:
        def run(port: QdrantPort) -> T:
            with self._lock:
                known = home in self._found
            if not known:
                generation: HomeGeneration | None
                try:
                    generation = self._generations.lookup(home)(port)
                except Exception as error:  # noqa: BLE001 - the read goes on, uncached
                    log.info("no generation for %s/%s: %s", *home, error)
                    generation = None
                with self._lock:
                    self._found.setdefault(home, generation)
            return operation(port)

        return run

    def generations(self) -> dict[CollectionHome, HomeGeneration] | None:
        """Each home read and its generation; None when one of them is unknown."""
        with self._lock:
            found = dict(self._found)
        if any(generation is None for generation in found.values()):
            return None
        return {home: generation for home, generation in found.items() if generation is not None}
