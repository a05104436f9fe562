"""The CPU time another process has used, read from ``/proc/<pid>/stat``.

Why this exists: the router benchmarks charge each server process for the CPU
it spent serving (all its threads, user and system), not for the wall time a
client waited, and the server runs in a process of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds_of_stat", "process_cpu_seconds"]


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
