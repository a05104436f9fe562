"""What tests (and benchmarks) use to run the product: never imported by production code.

Why this exists: the operator tests run kopf against the emulated Kubernetes
API, and the ``librarian up`` tests and benchmark start it as a process and
wait for it; these helpers are shared instead of copied between suites.
``librarian.testing.history`` records what concurrent clients did through the
router and checks it is linearizable per point id; ``librarian.testing.scenario``
runs such a history (seeded clients, cluster faults, a domain move) through a
router that ``librarian.testing.router`` serves in a thread. An import-linter contract
keeps every other part of the package from importing this one.
"""

from __future__ import annotations

from librarian.testing.operator import events_with, operator_against_emulator, wait_for
from librarian.testing.processes import UpProcess, free_port, start_up, wait_until_ready

__all__ = [
    "UpProcess",
    "events_with",
    "free_port",
    "operator_against_emulator",
    "start_up",
    "wait_for",
    "wait_until_ready",
]
