"""Waiting on the emulated API's objects: a condition re-checked at every change, never on a timer.

Why this exists: a scenario run on ``librarian up`` (``make demo``, tests)
waits for what the operator does — a DomainMap Ready, every
ClusterSpecialization finished, a RebalancePolicy settled. Polling the API on
a fixed period wastes time when things are quick and adds load when the
machine is busy; instead the watch keeps the latest version of every object
(fed by the API's change listener, in the API's event loop) and re-evaluates
the condition each time one changes. A deadline bounds every wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from librarian.local.emulator import EmulatedCluster, ObjectChange, resource_name

__all__ = ["ResourceWatch", "WaitTimeout"]

T = TypeVar("T")
Key = tuple[str, str | None, str]


class WaitTimeout(TimeoutError):
    """A condition did not hold before its deadline; the message says which."""


class ResourceWatch:
    """The API's objects as they are now, and waits on conditions over them.

    Build it in the API's event loop: it registers a change listener and
    starts from what the API holds at that moment (nothing can change in
    between: both happen in one step of the loop).
    """

    def __init__(self, api: EmulatedCluster) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        api.emulator.listen(self._on_change)
        for (resource, namespace, name), stored in list(api.emulator.objects.items()):
            if not stored.deleted:
                self._objects[(resource_name(resource), namespace, name)] = dict(stored.raw)

    def _on_change(self, change: ObjectChange) -> None:
        key = (change.resource, change.namespace, change.name)
        if change.body is None:
            self._objects.pop(key, None)
        else:
            self._objects[key] = change.body
        self._changed.set()

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object as last seen (``None`` if it does not exist)."""
        return self._objects.get((resource, namespace, name))

    def items(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object of ``resource`` (in ``namespace``, or in all), by name."""
        found = [
            (key[2], body)
            for key, body in self._objects.items()
            if key[0] == resource and (namespace is None or key[1] == namespace)
        ]
        return [body for _, body in sorted(found, key=lambda pair: pair[0])]

    async def until(self, check: Callable[[], T | None], timeout_s: float, what: str) -> T:
        """The first value of ``check()`` that is not ``None``, re-checked after every change.

        ``check`` may raise to give up early (e.g. on a Failed phase).
        Raises :class:`WaitTimeout` naming ``what`` after ``timeout_s`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._changed.clear()
            value = check()
            if value is not None:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WaitTimeout(f"{what}: not within {timeout_s:.0f}s")
            with contextlib.suppress(TimeoutError):  # then checked once more, and given up
                await asyncio.wait_for(self._changed.wait(), remaining)
