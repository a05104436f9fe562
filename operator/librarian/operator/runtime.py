"""Running the operator in-process: in a cluster, with a kubeconfig, or against the emulator.

Why this exists: ``librarian operator`` (the container's command), the demo
and the operator tests all start the same kopf operator; only where it
connects and how it stops differ. When something else shares the process
(the emulated API, a demo, tests), the operator runs in its own thread with
its own event loop — kopf cancels every task of its loop when it stops.

How it runs in a cluster is read from the environment the chart sets, so the
container's command line stays ``librarian operator [--namespace NS ...]``:

* ``LIBRARIAN_PEERING`` — a kopf peering name: several replicas coordinate
  through a ``KopfPeering`` (namespaced) or ``ClusterKopfPeering`` object and
  only the one with the highest priority works (kopf has no Lease-based
  leader election). Unset: standalone, one replica.
* ``LIBRARIAN_PRIORITY`` — this replica's peering priority; when unset, it is
  derived from ``LIBRARIAN_POD_NAME`` so every pod of a Deployment differs.
* ``LIBRARIAN_METRICS_PORT`` — serve Prometheus metrics (process, Python) on
  this port at ``/metrics``.

With namespaces given, kopf does not scan the cluster's namespaces and CRDs
(which would need cluster-wide permissions): a namespaced Role is enough.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import kopf

from librarian.kube import client as kube_client
from librarian.operator.context import OperatorContext

__all__ = [
    "METRICS_PORT_ENV",
    "PEERING_ENV",
    "POD_NAME_ENV",
    "PRIORITY_ENV",
    "Peering",
    "metrics_port_from_env",
    "operator_in_thread",
    "peering_from_env",
    "pod_priority",
    "run_operator",
]

PEERING_ENV = "LIBRARIAN_PEERING"
PRIORITY_ENV = "LIBRARIAN_PRIORITY"
POD_NAME_ENV = "LIBRARIAN_POD_NAME"
METRICS_PORT_ENV = "LIBRARIAN_METRICS_PORT"


@dataclass(frozen=True)
class Peering:
    """How this replica coordinates with others: standalone, or a peering name and a priority."""

    name: str | None = None
    priority: int = 0

    @property
    def standalone(self) -> bool:
        return self.name is None


def pod_priority(pod_name: str) -> int:
    """A stable priority in [1, 2**31) from a pod's name: distinct pods almost surely differ."""
    digest = hashlib.sha256(pod_name.encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1) + 1


def peering_from_env(environ: Mapping[str, str] | None = None) -> Peering:
    """The peering settings from ``LIBRARIAN_PEERING`` / ``LIBRARIAN_PRIORITY`` / the pod name."""
    env = os.environ if environ is None else environ
    name = env.get(PEERING_ENV, "").strip()
    if not name:
        return Peering()
    if env.get(PRIORITY_ENV, "").strip():
        try:
            return Peering(name, int(env[PRIORITY_ENV]))
        except ValueError:
            raise ValueError(
                f"{PRIORITY_ENV} must be an integer, got {env[PRIORITY_ENV]!r}"
            ) from None
    pod = env.get(POD_NAME_ENV, "").strip()
    if not pod:
        raise ValueError(
            f"{PEERING_ENV} is set but neither {PRIORITY_ENV} nor {POD_NAME_ENV} is: "
            "replicas need distinct priorities"
        )
    return Peering(name, pod_priority(pod))


def metrics_port_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    env = os.environ if environ is None else environ
    value = env.get(METRICS_PORT_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{METRICS_PORT_ENV} must be a port number, got {value!r}")
    return int(value)


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
    from librarian.operator import handlers

    if server_url:
        os.environ[handlers.SERVER_URL_ENV] = server_url
    peering = peering_from_env()
    metrics_port = metrics_port_from_env()
    if metrics_port is not None:
        import prometheus_client

        prometheus_client.start_http_server(metrics_port)
    settings = kopf.OperatorSettings()
    # Exact namespaces need no cluster-wide view of namespaces and CRDs (a Role suffices).
    settings.scanning.disabled = bool(namespaces)
    try:
        await kopf.operator(
            settings=settings,
            standalone=peering.standalone,
            peering_name=peering.name,
            priority=peering.priority,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            memo=kopf.Memo(context=context or OperatorContext()),
            liveness_endpoint=liveness_endpoint,
        )
    finally:
        await kube_client.close_session()  # the operator's own calls shared it


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
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
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
