"""Circuit breaking of failing clusters and the bounded, expiring result cache.

Why this exists: one slow or dead cluster must not make every query wait for
its timeout, and repeated queries should not reach the clusters at all. The
cache is bounded both in entries and in bytes (each result's JSON size), so
large results cannot grow the router's memory without bound. An entry is a
:class:`CachedAnswer`: the result and the write generations of the homes it
was computed from (:mod:`librarian.router.generation`), which decide whether it
may still be served.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

__all__ = ["CachedAnswer", "CircuitBreaker", "ResultCache", "json_size"]


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False


@dataclass
class CircuitBreaker:
    """Per-cluster breaker: open after ``failure_threshold`` failures in a row, retry after ``reset_timeout_s``."""

    failure_threshold: int = 5
    reset_timeout_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _circuits: dict[str, _Circuit] = field(default_factory=dict)

    def allow(self, cluster: str) -> bool:
        """May a request go to ``cluster`` now? (Half-open: one trial request at a time.)"""
        circuit = self._circuits.setdefault(cluster, _Circuit())
        if circuit.opened_at is None:
            return True
        if self.clock() - circuit.opened_at < self.reset_timeout_s or circuit.trial_in_flight:
            return False
        circuit.trial_in_flight = True
        return True

    def abandon(self, cluster: str) -> None:
        """A call was given up by its caller (not a failure): its trial, if any, is over."""
        circuit = self._circuits.get(cluster)
        if circuit is not None:
            circuit.trial_in_flight = False

    def success(self, cluster: str) -> None:
        self._circuits[cluster] = _Circuit()

    def failure(self, cluster: str) -> None:
        circuit = self._circuits.setdefault(cluster, _Circuit())
        circuit.failures += 1
        circuit.trial_in_flight = False
        if circuit.failures >= self.failure_threshold or circuit.opened_at is not None:
            circuit.opened_at = self.clock()

    def state(self, cluster: str) -> str:
        circuit = self._circuits.get(cluster)
        if circuit is None or circuit.opened_at is None:
            return "closed"
        if self.clock() - circuit.opened_at >= self.reset_timeout_s:
            return "half-open"
        return "open"

    def states(self) -> dict[str, str]:
        return {cluster: self.state(cluster) for cluster in sorted(self._circuits)}


def json_size(value: Any) -> int:
    """The size in bytes of ``value`` as compact JSON: what a cached result costs."""
    return len(json.dumps(value, separators=(",", ":"), default=str))


@dataclass(frozen=True)
class CachedAnswer:
    """A cached result and what it depends on: each home it read and that home's generation
    when it was read (before the result was computed)."""

    result: Any
    depends: Mapping[Any, Any]
    cost: int  # the result's JSON size: what it is charged against the byte budget

    @classmethod
    def of(cls, result: Any, depends: Mapping[Any, Any]) -> CachedAnswer:
        return cls(result, dict(depends), json_size(result))


def _cost(value: Any) -> int:
    return value.cost if isinstance(value, CachedAnswer) else json_size(value)


class ResultCache:
    """Query results by request key, each entry expiring after ``ttl_s``.

    Bounded by ``max_entries`` and, when ``max_bytes`` is given, by the results'
    total JSON size: every entry is charged at least ``max_bytes / max_entries``,
    so both bounds hold with one budget; a result larger than the budget is not kept.
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int,
        max_bytes: int | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled and max_bytes != 0
        self.max_bytes = max_bytes
        if max_bytes is None:
            self._entries: TTLCache[Hashable, Any] = TTLCache(
                maxsize=max_entries, ttl=ttl_s, timer=clock
            )
        else:
            floor = max(1, max_bytes // max_entries)
            self._entries = TTLCache(
                maxsize=max(max_bytes, 1),
                ttl=ttl_s,
                timer=clock,
                getsizeof=lambda value: max(floor, _cost(value)),
            )
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        """The entry under ``key`` (None when absent or expired), counted as a hit or a miss."""
        value = self.peek(key)
        self.record(hit=value is not None)
        return value

    def peek(self, key: Hashable) -> Any | None:
        """The entry under ``key``, not counted (its caller decides whether it is served)."""
        if not self.enabled:
            return None
        return self._entries.get(key)

    def record(self, *, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1

    def discard(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def values(self) -> list[Any]:
        """The entries held now (for reports and tests)."""
        return list(self._entries.values())

    def put(self, key: Hashable, value: Any) -> None:
        if self.enabled:
            with contextlib.suppress(ValueError):  # larger than the whole budget: not kept
                self._entries[key] = value

    @property
    def size_bytes(self) -> int:
        """What the entries are charged against the budget (their count without a budget)."""
        return int(self._entries.currsize)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
