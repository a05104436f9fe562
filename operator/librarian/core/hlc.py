"""Point versions: a hybrid logical clock that orders every write the library acknowledges.

Why this exists: a point can be written by several router replicas and copied
by migrations while it is written, and its copies may sit in two homes at
once. The copy to keep is the newest, so every write needs a version that
(1) grows with wall time, so versions from different routers compare in the
order the writes were made, give or take the clocks' skew; (2) never goes
backwards on one router, even when its wall clock does; (3) is greater than
every version the router has seen, so a write made after reading a point is
newer than it whatever the clocks say; (4) is unique across routers, so two
writes never tie.

A version is one integer below 2**53: Qdrant compares numeric payload with
range filters as 64-bit floats, which hold integers exactly up to 2**53, so
conditional writes ("only where the stored version is older") stay exact. It
packs milliseconds since 2024-01-01 (42 bits: until the year 2163), a logical
counter (4 bits: 16 writes per millisecond before the clock runs ahead of the
wall, as hybrid logical clocks do) and the router's node id (7 bits).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "EPOCH_MS",
    "MAX_NODE",
    "MAX_VERSION",
    "HybridLogicalClock",
    "VersionParts",
    "decode_version",
    "encode_version",
]

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NODE_BITS = 7
COUNTER_BITS = 4
PHYSICAL_BITS = 53 - NODE_BITS - COUNTER_BITS
MAX_NODE = (1 << NODE_BITS) - 1
MAX_COUNTER = (1 << COUNTER_BITS) - 1
MAX_VERSION = (1 << 53) - 1


class VersionParts(NamedTuple):
    """A version taken apart: wall milliseconds (Unix epoch), logical counter, node."""

    wall_ms: int
    counter: int
    node: int


def encode_version(wall_ms: int, counter: int, node: int) -> int:
    """The version of ``(wall_ms, counter, node)``; raises on a part out of range."""
    physical = wall_ms - EPOCH_MS
    if not 0 <= physical < (1 << PHYSICAL_BITS):
        raise ValueError(f"wall time {wall_ms} ms is outside the versions' range (2024-2163)")
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"counter {counter} is outside 0..{MAX_COUNTER}")
    if not 0 <= node <= MAX_NODE:
        raise ValueError(f"node id {node} is outside 0..{MAX_NODE}")
    return (((physical << COUNTER_BITS) | counter) << NODE_BITS) | node


def decode_version(version: int) -> VersionParts:
    """The parts of a version made by :func:`encode_version`."""
    if not 0 <= version <= MAX_VERSION:
        raise ValueError(f"version {version} is outside 0..2**53-1")
    node = version & MAX_NODE
    counter = (version >> NODE_BITS) & MAX_COUNTER
    physical = version >> (NODE_BITS + COUNTER_BITS)
    return VersionParts(physical + EPOCH_MS, counter, node)


class HybridLogicalClock:
    """A hybrid logical clock of one node; thread-safe.

    ``wall_ms`` is injected (tests drive it); ``node`` breaks ties between
    nodes that tick in the same millisecond with the same counter.
    """

    def __init__(self, node: int, wall_ms: Callable[[], int]) -> None:
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node id {node} is outside 0..{MAX_NODE}")
        self.node = node
        self._wall_ms = wall_ms
        self._physical = 0  # wall milliseconds of the last version issued or observed
        self._counter = 0
        self._lock = threading.Lock()

    def observe(self, version: int) -> None:
        """Remember a version seen elsewhere: every later tick is greater than it."""
        if version <= 0:
            return
        parts = decode_version(version)
        with self._lock:
            if (parts.wall_ms, parts.counter) > (self._physical, self._counter):
                self._physical, self._counter = parts.wall_ms, parts.counter

    def tick(self, observed: int = 0) -> int:
        """A new version, greater than every version issued or observed so far (and ``observed``)."""
        self.observe(observed)
        wall = self._wall_ms()
        with self._lock:
            if wall > self._physical:
                self._physical, self._counter = wall, 0
            elif self._counter < MAX_COUNTER:
                self._counter += 1
            else:  # the counter is full: run ahead of the wall by a millisecond
                self._physical, self._counter = self._physical + 1, 0
            return encode_version(self._physical, self._counter, self.node)
