"""The operator running in-process against the emulated Kubernetes API, and waiting on conditions.

Why this exists: operator tests need kopf, unchanged, against an API with our
CRDs, and must wait for what the operator does by polling a condition with a
deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from librarian.local.crds import packaged_crds
from librarian.local.emulator import EmulatedCluster, emulated_kubernetes
from librarian.operator.context import OperatorContext
from librarian.operator.runtime import operator_in_thread

__all__ = ["events_with", "operator_against_emulator", "wait_for"]


async def wait_for(
    check: Callable[[], Awaitable[Any]], timeout_s: float = 60.0, *, poll_s: float = 0.2
) -> Any:
    """The first truthy value of ``check()``, polled until ``timeout_s`` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(poll_s)


async def events_with(
    api: EmulatedCluster,
    reasons: Iterable[str],
    namespace: str = "default",
    timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """The namespace's Events once every one of ``reasons`` is among them.

    The operator posts Events from a queue of its own, after the status change
    that caused them, so a test that has seen the status must still wait for them.
    """
    wanted = set(reasons)

    async def posted() -> list[dict[str, Any]] | None:
        events: list[dict[str, Any]] = list(api.events(namespace))
        return events if wanted <= {e.get("reason") for e in events} else None

    try:
        return await wait_for(posted, timeout_s)  # type: ignore[no-any-return]
    except AssertionError:
        seen = sorted({str(e.get("reason")) for e in api.events(namespace)})
        raise AssertionError(f"events {sorted(wanted)} not all posted; seen {seen}") from None


@asynccontextmanager
async def operator_against_emulator(
    crds: Iterable[Mapping[str, Any]] | None = None,
    *,
    context: OperatorContext | None = None,
    record_requests: bool = False,
) -> AsyncIterator[EmulatedCluster]:
    """The emulated API with the CRDs (the packaged ones by default) and the operator running."""
    async with (
        emulated_kubernetes(
            packaged_crds() if crds is None else crds, record_requests=record_requests
        ) as api,
        operator_in_thread(api.url, context=context),
    ):
        yield api
