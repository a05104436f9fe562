"""Routing decisions off the event loop, and the BLAS threads they may use, bounded.

Why this exists: a routing decision scores the query against thousands of
sample vectors (one matrix product). Run on the event loop, a slow decision
stalls every other request for its whole duration; and BLAS spreading that
product over every core multiplies the router's CPU per request by the
machine's cores. Decisions therefore run on a few dedicated threads, those
asked for meanwhile are scored together as one batch, and the router process
bounds BLAS to a configured number of threads (one by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from librarian.core.routing import LibraryRouter, RouteDecision

__all__ = ["BlasThreadBound", "Decisions", "blas_threads"]


@dataclass(frozen=True)
class _Asked:
    """One decision asked for, and where its answer goes."""

    router: LibraryRouter
    vector: Sequence[float]
    strategy: str | None
    answer: asyncio.Future[RouteDecision]
    loop: asyncio.AbstractEventLoop


class Decisions:
    """Routing decisions on ``workers`` dedicated threads, awaited by the event loop.

    Decisions asked for while the threads are busy wait in one queue; a thread
    that comes free takes up to ``max_batch`` of them and scores those of the
    same router and strategy as one batch (one matrix product for all), so under
    load a decision costs a share of a batch. A lone decision is not delayed.
    """

    def __init__(self, workers: int, max_batch: int = 64) -> None:
        if workers < 1:
            raise ValueError(f"routing needs at least one worker thread, got {workers}")
        if max_batch < 1:
            raise ValueError(f"a batch holds at least one decision, got {max_batch}")
        self.workers = workers
        self.max_batch = max_batch
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="routing")
        self._waiting: deque[_Asked] = deque()
        self._lock = threading.Lock()

    async def decide(
        self, router: LibraryRouter, vector: Sequence[float], strategy: str | None = None
    ) -> RouteDecision:
        """``router``'s decision for ``vector``, computed on one of the routing threads."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[RouteDecision] = loop.create_future()
        with self._lock:
            self._waiting.append(_Asked(router, vector, strategy, answer, loop))
        self._pool.submit(self._take_batch)
        return await answer

    def _take_batch(self) -> None:
        with self._lock:
            batch = [
                self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))
            ]
        groups: dict[tuple[int, str | None], list[_Asked]] = {}
        for asked in batch:
            groups.setdefault((id(asked.router), asked.strategy), []).append(asked)
        for group in groups.values():
            self._answer(group)

    def _answer(self, group: list[_Asked]) -> None:
        """Score ``group`` (one router, one strategy) as one batch; if the batch fails
        (a vector of another size, say), each decision is made alone, with its own error."""
        first = group[0]
        try:
            if len(group) == 1:
                decisions = [first.router.decide(first.vector, strategy=first.strategy)]
            else:
                vectors = np.asarray([asked.vector for asked in group], dtype=np.float32)
                decisions = first.router.decide_many(vectors, strategy=first.strategy)
        except Exception as error:  # noqa: BLE001 - handed to the caller that asked
            if len(group) == 1:
                _settle(first, error)
                return
            for asked in group:
                self._answer([asked])
            return
        for asked, decision in zip(group, decisions, strict=True):
            _settle(asked, decision)

    def close(self) -> None:
        """Stop the threads; decisions not started yet are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
        for asked in waiting:
            _settle(asked, asyncio.CancelledError())


def _settle(asked: _Asked, outcome: RouteDecision | BaseException) -> None:
    """Hand ``outcome`` to the caller's loop (nothing if it gave up or its loop closed)."""

    def deliver() -> None:
        if asked.answer.done():
            return
        if isinstance(outcome, asyncio.CancelledError):
            asked.answer.cancel()
        elif isinstance(outcome, BaseException):
            asked.answer.set_exception(outcome)
        else:
            asked.answer.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it
        asked.loop.call_soon_threadsafe(deliver)


def blas_threads() -> int | None:
    """The most threads any BLAS library loaded in this process may use (None: none loaded)."""
    counts = [int(info["num_threads"]) for info in threadpool_info() if info["user_api"] == "blas"]
    return max(counts) if counts else None


class BlasThreadBound:
    """Every BLAS library of the process limited to ``threads`` threads until :meth:`release`.

    The limit is process-wide (BLAS libraries keep one thread count for the whole
    process), so it is set once for the router's lifetime, not around each decision.
    """

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"BLAS needs at least one thread, got {threads}")
        self.threads = threads
        self._limits: threadpool_limits | None = threadpool_limits(limits=threads, user_api="blas")

    def release(self) -> None:
        """The thread counts as they were before the bound (once; later calls do nothing)."""
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
