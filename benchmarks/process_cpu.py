"""The CPU time another process has used, read from ``/proc/<pid>/stat``.

Why this exists: the router benchmarks charge each server process for the CPU
it spent serving (all its threads, user and system), not for the wall time a
client waited, and the server runs in a process of its own. Per thread, the
same counters tell which part of the server spent it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "PARTS",
    "cpu_seconds_of_stat",
    "part_of",
    "process_cpu_seconds",
    "thread_cpu_seconds",
    "thread_names",
]


def cpu_seconds_of_stat(stat: str, ticks_per_second: int) -> float:
    """User + system CPU seconds of a process from the text of its ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may hold spaces or
    parentheses itself, so fields are counted from the last ``)``: utime and
    stime are fields 14 and 15.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / ticks_per_second


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far."""
    return cpu_seconds_of_stat(
        Path(f"/proc/{pid}/stat").read_text(), os.sysconf(os.sysconf_names["SC_CLK_TCK"])
    )


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds each live thread of process ``pid`` has run, by thread id (a thread that
    ended since is missing): the scheduler's own count in nanoseconds
    (``/proc/<pid>/task/<tid>/schedstat``), as clock ticks are too coarse to split a few
    milliseconds of a request between threads."""
    seconds: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            seconds[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended while the directory was read
    return seconds


def thread_names(pid: int) -> dict[int, str]:
    """The kernel's name of each live thread of process ``pid`` (threads started by native
    libraries name themselves there; Python's keep the process' name)."""
    names: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[int(task.name)] = (task / "comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
    return names


PARTS = ("event loop", "routing", "home calls", "engine threads", "other", "unattributed")


def part_of(python_name: str | None, kernel_name: str) -> str:
    """Which part of a router a thread's CPU is charged to, from the name Python gives it
    (``None``: a native thread) and the kernel's: the event loop, the routing decision's
    threads, the threads calling the homes, the embedded engine's search threads, or other."""
    if python_name == "MainThread":
        return "event loop"
    if python_name is not None and python_name.startswith("routing"):
        return "routing"
    if python_name is not None and python_name.startswith("upstream"):
        return "home calls"
    if python_name is None and kernel_name.startswith("edge-"):
        return "engine threads"
    return "other"
