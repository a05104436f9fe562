"""Routing decisions off the event loop, and the BLAS threads they may use, bounded.

Why this exists: a routing decision scores the query against thousands of
sample vectors (one matrix product). Run on the event loop, a slow decision
stalls every other request for its whole duration; and BLAS spreading that
product over every core multiplies the router's CPU per request by the
machine's cores. Decisions therefore run on a few dedicated threads, and the
router process bounds BLAS to a configured number of threads (one by default).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import threadpool_info, threadpool_limits

from librarian.core.routing import LibraryRouter, RouteDecision

__all__ = ["BlasThreadBound", "Decisions", "blas_threads"]


class Decisions:
    """Routing decisions on ``workers`` dedicated threads, awaited by the event loop."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"routing needs at least one worker thread, got {workers}")
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="routing")

    async def decide(
        self, router: LibraryRouter, vector: Sequence[float], strategy: str | None = None
    ) -> RouteDecision:
        """``router``'s decision for ``vector``, computed on one of the routing threads."""
        context = contextvars.copy_context()
        decide = functools.partial(router.decide, vector, strategy=strategy)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(context.run, decide))

    def close(self) -> None:
        """Stop the threads; decisions not started yet are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)


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
