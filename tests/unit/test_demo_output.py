"""The demo's output: a progress line when a step is quiet too long, and the logs in a file.

A clock is injected into the watch, so the rule is checked without waiting.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from librarian.demo.output import NOISY, QuietWatch, log_to_file, progress_lines


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_progress_line_is_due_only_after_quiet_seconds_of_a_step() -> None:
    clock = _Clock()
    watch = QuietWatch(quiet_s=5.0, clock=clock)
    clock.now += 60
    assert watch.line_due() is None  # no step yet: nothing to say
    done = [0]
    watch.step("querying", lambda: f"{done[0]} of 300 queries")
    clock.now += 4.9
    assert watch.line_due() is None
    clock.now += 0.2
    done[0] = 120
    assert watch.line_due() == "… querying: 120 of 300 queries (5s)"
    clock.now += 3
    assert watch.line_due() is None  # the progress line itself broke the silence
    watch.output_seen()
    clock.now += 4.9
    assert watch.line_due() is None  # a line printed by the step did too
    clock.now += 0.2
    assert watch.line_due() == "… querying: 120 of 300 queries (13s)"
    watch.step("rebalancing")
    clock.now += 5
    assert watch.line_due() == "… rebalancing (5s)"


async def test_progress_lines_are_printed_while_a_step_is_quiet() -> None:
    output = io.StringIO()
    console = Console(file=output, width=120)
    watch = QuietWatch(quiet_s=0.05)
    async with progress_lines(console, watch, tick_s=0.01):
        watch.step("waiting")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while "… waiting" not in output.getvalue():
            assert loop.time() < deadline, "no progress line within 10 s"
            await asyncio.sleep(0.01)
        console.print("done")
    assert console.file is output  # the console's stream is given back
    assert output.getvalue().rstrip().endswith("done")


def test_logs_go_to_the_file_not_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        path = log_to_file(tmp_path / "demo" / "demo.log")
        logging.getLogger("kopf.objects").error("ServerDisconnectedError, retrying")
        logging.getLogger("kopf.objects").info("Handler succeeded")  # kopf's chatter: left out
        logging.getLogger("librarian.router.auth").warning("serves without authentication")
        logging.getLogger("httpx").info("HTTP Request: POST /collections/x/points/query")
        for handler in root.handlers:
            handler.flush()
        text = path.read_text()
        assert "ServerDisconnectedError, retrying" in text
        assert "serves without authentication" in text
        assert "Handler succeeded" not in text
        assert "HTTP Request" not in text
        captured = capsys.readouterr()
        assert "retrying" not in captured.err + captured.out
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved[0], saved[1]
        for noisy in NOISY:
            logging.getLogger(noisy).setLevel(logging.NOTSET)
