"""Running the operator in-process: in a cluster, with a kubeconfig, or against the emulator.

Why this exists: ``librarian operator`` (the container's command), the demo
and the operator tests all start the same kopf operator; only where it
connects and how it stops differ. When something else shares the process
(the emulated API, a demo, tests), the operator runs in its own thread with
its own event loop — kopf cancels every task of its loop when it stops.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import kopf

from librarian.k8s.domainmap import OperatorContext


async def run_operator(
    *,
    server_url: str | None = None,
    namespaces: Sequence[str] = (),
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    context: OperatorContext | None = None,
    liveness_endpoint: str | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or forever).

    With ``server_url`` the operator talks to that API server without
    credentials (the emulated API); otherwise it logs in in-cluster or with
    the kubeconfig. Without ``namespaces`` it watches the whole cluster.
    """
    from librarian.k8s import handlers

    if server_url:
        os.environ[handlers.SERVER_URL_ENV] = server_url
    await kopf.operator(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=kopf.Memo(context=context or OperatorContext()),
        liveness_endpoint=liveness_endpoint,
    )


@asynccontextmanager
async def operator_in_thread(
    server_url: str,
    *,
    context: OperatorContext | None = None,
    startup_timeout_s: float = 30.0,
) -> AsyncIterator[OperatorContext]:
    """Run the operator in a background thread for the duration of the block."""
    stop, ready = threading.Event(), threading.Event()
    context = context or OperatorContext()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(
                run_operator(
                    server_url=server_url, stop_flag=stop, ready_flag=ready, context=context
                )
            )
        except BaseException as error:  # reported to the caller below
            errors.append(error)
            ready.set()

    thread = threading.Thread(target=target, name="librarian-operator", daemon=True)
    thread.start()
    if not await asyncio.to_thread(ready.wait, startup_timeout_s) or errors:
        stop.set()
        raise RuntimeError(f"the operator did not start: {errors[0] if errors else 'timeout'}")
    try:
        yield context
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
