"""Writers of a library collection run one step at a time, in an order a test chooses.

Why this exists: races between writes of the same point (two conditional upserts, a
conditional upsert and a plain one, a delete, a vector change) lose data only in
some interleavings of their steps. Sleeping until a step "probably" happened makes
such tests flaky and slow; here each writer is an asyncio task of one router's write
path that stops before each of its steps (a look at the homes, a write, the look
after writing, the settling) until the test lets it go on to a chosen step. Only one
writer runs between two stops, so an interleaving is replayed exactly.

Each writer also records the versions it took from the clock and the highest version
its last look saw: :meth:`Stepper.position` orders the writers' operations by version,
as the write path claims to serialise them, for a reference to apply in that order.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from librarian.router import RouterState
from librarian.router.library import View
from librarian.router.writes import Writes
from librarian.services.versioning import is_tombstone, user_payload, version_of
from librarian.storage.port import PointId

from .router_support import Library

__all__ = ["STEPS", "Stepper", "Writer", "live_copy_count", "newest_copy", "stepped_writes"]

STEPS = {
    "_look": "look",  # the look a write decides on
    "_write_homes": "write",
    "_intervened": "recheck",  # a conditional write's look after writing
    "_settle": "settle",
    "_settle_change": "settle",
    "_drop_kept": "drop",
}
"""The write path's methods a writer stops before, by the name a test gives the step."""

_WRITER: contextvars.ContextVar[str | None] = contextvars.ContextVar("stepped_writer", default=None)


@dataclass
class Writer:
    """One writer: its task, where it is to stop next, and what it saw and took."""

    name: str
    task: asyncio.Task[Any] | None = None
    target: tuple[str, int] | None = ("look", 1)
    counts: dict[str, int] = field(default_factory=dict)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    ticks: list[int] = field(default_factory=list)
    last_look: tuple[int, int] = (0, 0)  # (number of ticks before it, highest version seen)
    error: BaseException | None = None


class Stepper:
    """Runs writers of one :class:`Writes` step by step (see the module's docstring)."""

    def __init__(self, writes: Writes) -> None:
        self.writes = writes
        self.writers: dict[str, Writer] = {}
        for method, step in STEPS.items():
            original = getattr(writes, method)
            setattr(writes, method, self._stepped(step, original))
        tick = writes.clock.tick

        def recorded_tick(observed: int = 0) -> int:
            version = tick(observed)
            name = _WRITER.get()
            if name is not None:
                self.writers[name].ticks.append(version)
            return version

        writes.clock.tick = recorded_tick  # type: ignore[method-assign]

    def _stepped(
        self, step: str, original: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(original)
        async def run(*args: Any, **kwargs: Any) -> Any:
            name = _WRITER.get()
            if name is not None:
                await self._stop(self.writers[name], step)
            result = await original(*args, **kwargs)
            if name is not None and step == "look":
                writer = self.writers[name]
                writer.last_look = (len(writer.ticks), result.highest)
            return result

        return run

    async def _stop(self, writer: Writer, step: str) -> None:
        writer.counts[step] = writer.counts.get(step, 0) + 1
        if writer.target == (step, writer.counts[step]):
            writer.go.clear()
            writer.stopped.set()
            await writer.go.wait()

    def start(self, name: str, operation: Callable[[], Awaitable[Any]]) -> None:
        """A writer that makes ``operation``; it stops before its first look."""
        writer = Writer(name)
        self.writers[name] = writer

        async def body() -> None:
            _WRITER.set(name)
            try:
                await operation()
            except BaseException as error:  # noqa: BLE001 - the test reads it
                writer.error = error
            finally:
                writer.stopped.set()

        writer.task = asyncio.get_running_loop().create_task(body())

    async def run(self, name: str, step: str | None = None, nth: int = 1) -> bool:
        """Let ``name`` go on until it is about to make its ``nth`` ``step`` (or, without a
        step, to its end); whether it stopped there (False: it ended before)."""
        writer = self.writers[name]
        assert writer.task is not None
        if writer.task.done():
            return False
        writer.target = (step, nth) if step is not None else None
        writer.stopped.clear()
        writer.go.set()
        await asyncio.wait_for(writer.stopped.wait(), 60)
        return not writer.task.done()

    async def finish(self, *names: str) -> None:
        """Let the writers run to their end, one after the other."""
        for name in names:
            await self.run(name)
            task = self.writers[name].task
            assert task is not None
            await asyncio.wait_for(task, 60)

    def acknowledged(self, name: str) -> bool:
        return self.writers[name].error is None

    def position(self, name: str) -> float:
        """Where ``name``'s operation falls in version order: the version its last try
        wrote at, or, when its last look was not followed by a write, just after the
        newest version that look saw (what it decided on)."""
        writer = self.writers[name]
        ticks_before, highest = writer.last_look
        if len(writer.ticks) > ticks_before:
            return float(writer.ticks[-1])
        return highest + 0.5


async def stepped_writes(state: RouterState) -> tuple[Stepper, View]:
    """A write path of ``state``'s router (its library loaded), run by a :class:`Stepper`."""
    assert await state.reload()
    writes = Writes(
        state.upstream,
        state.cache,
        state.clock,
        state.homes,
        settle_timeout=state.config.settle_timeout_s,
    )
    return Stepper(writes), await state.view("library")


def newest_copy(built: Library, point_id: PointId) -> tuple[dict[str, Any], list[float]] | None:
    """What a read of ``point_id`` serves: its newest copy over every home (None: deleted or
    absent), with the client's payload and its vector; read from the homes directly."""
    best: tuple[int, Any] | None = None
    for route in built.definition.domains:
        port = built.fleet.get(route.cluster)
        for record in port.retrieve(route.collection, [point_id], with_vectors=True):
            version = version_of(record.payload)
            if best is None or version > best[0]:
                best = (version, record)
    if best is None or is_tombstone(best[1].payload):
        return None
    return user_payload(best[1].payload), list(best[1].vector)


def live_copy_count(built: Library, point_id: PointId) -> int:
    """How many homes hold a live (not deleted) copy of ``point_id``."""
    count = 0
    for route in built.definition.domains:
        port = built.fleet.get(route.cluster)
        for record in port.retrieve(route.collection, [point_id], with_vectors=False):
            count += not is_tombstone(record.payload)
    return count
