"""The router benchmarks' reading of a server's CPU time from ``/proc`` (the process' and each
thread's), and the part of the router each thread is charged to."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from benchmarks.process_cpu import (
    cpu_seconds_of_stat,
    part_of,
    process_cpu_seconds,
    thread_cpu_seconds,
    thread_names,
)

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


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_a_busy_thread_is_charged_its_own_cpu_time_and_an_idle_one_almost_none() -> None:
    started, release = threading.Event(), threading.Event()
    spent: list[float] = []

    def spin() -> None:
        started.set()
        begin = time.thread_time()
        while time.thread_time() - begin < 0.3:
            pass
        spent.append(time.thread_time() - begin)
        release.wait(10)  # stays alive to be read

    def idle() -> None:
        release.wait(10)

    busy_thread, idle_thread = threading.Thread(target=spin), threading.Thread(target=idle)
    idle_thread.start()
    before = thread_cpu_seconds(os.getpid())
    busy_thread.start()
    started.wait(10)
    while not spent:  # polled until the thread has done its work, within the test's deadline
        time.sleep(0.01)
    after = thread_cpu_seconds(os.getpid())
    release.set()
    busy_thread.join()
    idle_thread.join()
    assert busy_thread.native_id is not None
    assert idle_thread.native_id is not None
    assert busy_thread.native_id not in before  # it started after the first reading
    assert after[busy_thread.native_id] == pytest.approx(spent[0], abs=0.02)
    assert after[idle_thread.native_id] - before[idle_thread.native_id] < 0.02
    assert thread_names(os.getpid())[threading.get_native_id()]  # the kernel's name of ours


@pytest.mark.parametrize(
    ("python_name", "kernel_name", "part"),
    [
        ("MainThread", "python", "event loop"),
        ("routing_0", "python", "routing"),
        ("upstream-engine_3", "python", "home calls"),
        (None, "edge-search-2", "engine threads"),
        ("asyncio_0", "python", "other"),
        (None, "grpc_global_tim", "other"),
        ("edge-like", "edge-search-0", "other"),  # a Python thread is never the engine's
    ],
)
def test_threads_are_charged_to_the_part_of_the_router_they_serve(
    python_name: str | None, kernel_name: str, part: str
) -> None:
    assert part_of(python_name, kernel_name) == part
