"""The router benchmarks' reading of a server's CPU time from ``/proc/<pid>/stat``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from benchmarks.process_cpu import cpu_seconds_of_stat, process_cpu_seconds

# Fields 3..15 of a stat line: state, ppid, pgrp, session, tty, tpgid, flags, minflt,
# cminflt, majflt, cmajflt, utime (14), stime (15); then cutime, cstime, ...
TAIL = "S 1 2 3 0 -1 4194560 100 0 0 0 250 50 7 9 20 0 4"


def test_utime_and_stime_are_summed_in_seconds() -> None:
    assert cpu_seconds_of_stat(f"4242 (python) {TAIL}", 100) == pytest.approx(3.0)
    assert cpu_seconds_of_stat(f"4242 (python) {TAIL}", 1000) == pytest.approx(0.3)


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() -> None:
    assert cpu_seconds_of_stat(f"7 (a (b) c) d) {TAIL}", 100) == pytest.approx(3.0)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_this_process_cpu_time_matches_the_kernel_and_grows_with_work() -> None:
    before = process_cpu_seconds(os.getpid())
    spent = time.process_time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    after = process_cpu_seconds(os.getpid())
    assert after - before == pytest.approx(time.process_time() - spent, abs=0.05)
    assert after - before >= 0.25
