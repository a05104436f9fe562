"""``librarian up`` as a child process: start it, wait until it serves, stop it with a signal.

Why this exists: the ``up`` tests and the own-data benchmark check the
command as a user runs it — a process that must answer ``/readyz`` and stop
cleanly on SIGTERM — and both wait on its readiness with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["UpProcess", "free_port", "start_up", "wait_until_ready"]


def free_port() -> int:
    """A loopback port free right now (the usual bind-to-0 trick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class UpProcess:
    """A running ``librarian up`` and where its output goes."""

    process: subprocess.Popen[str]
    url: str
    output: Path

    def text(self) -> str:
        return self.output.read_text()

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then the exit code (killed, and an error, if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"librarian up did not stop within {timeout_s}s") from None


def start_up(
    args: Sequence[str],
    *,
    cwd: Path,
    port: int,
    output: Path,
    environment: Mapping[str, str] | None = None,
) -> UpProcess:
    """``librarian up ARGS --port PORT`` in ``cwd``; stdout and stderr to ``output``."""
    command = [sys.executable, "-m", "librarian.cli", "up", *args, "--port", str(port)]
    env = {**os.environ, **(environment or {})}
    out: IO[str] = output.open("w")
    try:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env
        )
    finally:
        out.close()
    return UpProcess(process, f"http://127.0.0.1:{port}", output)


def wait_until_ready(up: UpProcess, timeout_s: float) -> None:
    """Poll ``/readyz`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if up.process.poll() is not None:
            raise AssertionError(
                f"librarian up exited with {up.process.returncode}:\n{up.text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{up.url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last = f"{error.code}: {error.read().decode(errors='replace')}"
        except OSError as error:
            last = str(error)
        time.sleep(0.25)
    raise AssertionError(f"not ready within {timeout_s}s ({last}):\n{up.text()[-3000:]}")
