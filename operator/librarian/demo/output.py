"""What the demo prints, and where everything else it runs writes.

Why this exists: the demo runs the operator, the router and the Jobs in one
process, and each logs (kopf's retries while the emulated API restarts a
watch, the router's warning that it serves without a key on loopback). Mixed
into the demo's own lines they read as failures and hide the story; and some
steps run for tens of seconds (the analysis Job, the queries through
qdrant-client, the skewed load), during which a silent terminal cannot be told
from a hung one. So the logs go to a file under the demo's directory, named on
the first line, and a step that has printed nothing for a few seconds prints
a progress line saying what it is doing and for how long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.markup import escape

__all__ = ["QuietWatch", "log_to_file", "progress_lines"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
NOISY = ("kopf", "aiohttp.access", "httpx")  # a record per handler run or per request


def log_to_file(path: Path, level: int = logging.INFO) -> Path:
    """Send every log record of the process (kopf, the operator, the router, the Jobs) to
    ``path`` instead of the terminal; ``path``, made absolute.

    Records below WARNING from kopf, aiohttp's access log and httpx (qdrant-client's
    transport) are left out: they repeat each handler run and each request.
    """
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path


class QuietWatch:
    """How long the demo has printed nothing, and the line to print when that is too long.

    ``clock`` is injected so that the rule is tested without waiting.
    """

    def __init__(self, quiet_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet_s = quiet_s
        self._clock = clock
        self._last_output = clock()
        self._step = ""
        self._step_started = self._last_output
        self._detail: Callable[[], str] | None = None

    def output_seen(self) -> None:
        """Something was printed: the silence starts again."""
        self._last_output = self._clock()

    def step(self, name: str, detail: Callable[[], str] | None = None) -> None:
        """The demo is now doing ``name``; ``detail`` says how far it got (e.g. queries done)."""
        self._step, self._detail = name, detail
        self._step_started = self._last_output = self._clock()  # quiet from the step's start

    def line_due(self) -> str | None:
        """The progress line to print now, if the demo has been quiet for ``quiet_s``."""
        now = self._clock()
        if not self._step or now - self._last_output < self.quiet_s:
            return None
        self._last_output = now
        detail = f": {self._detail()}" if self._detail is not None else ""
        return f"… {self._step}{detail} ({now - self._step_started:.0f}s)"


class _Stamped:
    """A text stream that tells the watch each time something is written to it."""

    def __init__(self, inner: IO[str], watch: QuietWatch) -> None:
        self._inner = inner
        self._watch = watch

    def write(self, text: str) -> int:
        if text:
            self._watch.output_seen()
        return self._inner.write(text)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()


@asynccontextmanager
async def progress_lines(
    console: Console, watch: QuietWatch, tick_s: float = 0.5
) -> AsyncIterator[QuietWatch]:
    """While inside, every line ``console`` prints resets the watch, and a progress line is
    printed whenever it has been quiet too long (looked at every ``tick_s``)."""
    previous = console.file
    console.file = _Stamped(previous, watch)  # type: ignore[assignment]

    async def tell() -> None:
        while True:
            await asyncio.sleep(tick_s)  # how often to look, not a wait for anything
            line = watch.line_due()
            if line is not None:
                console.print(f"   [dim]{escape(line)}[/dim]")

    teller = asyncio.create_task(tell())
    try:
        yield watch
    finally:
        teller.cancel()
        await asyncio.gather(teller, return_exceptions=True)
        console.file = previous
