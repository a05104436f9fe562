"""Human durations ("100ms", "30s", "5m", "1h", "7d") as seconds.

Why this exists: the configuration file, the resources' specs and the CLI all
accept durations in the same short form; one parser gives the same answer and
the same error message everywhere.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")

DURATION_HELP = "use a number with a unit, e.g. 100ms, 30s, 5m, 1h, 7d or 1h30m"


class DurationError(ValueError):
    """A duration string could not be parsed."""


def parse_duration(text: str | int | float) -> float:
    """Return the duration in seconds; plain numbers are seconds.

    >>> parse_duration("1h30m")
    5400.0
    """
    if isinstance(text, bool):
        raise DurationError(f"{text!r} is not a duration: {DURATION_HELP}")
    if isinstance(text, int | float):
        if text < 0:
            raise DurationError(f"{text!r} is negative: durations must be >= 0")
        return float(text)
    compact = str(text).strip().replace(" ", "")
    if not compact or not _WHOLE.match(compact):
        raise DurationError(f"{text!r} is not a duration: {DURATION_HELP}")
    return sum(float(value) * _UNITS[unit] for value, unit in _PART.findall(compact))


def format_duration(seconds: float) -> str:
    """The shortest exact form of ``seconds`` in the units above (``300.0`` -> ``"5m"``)."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    remaining = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts) or "0s"
