"""The duration parser shared by config, CRDs and CLI."""

from __future__ import annotations

import pytest

from librarian.core.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("100ms", 0.1),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("7d", 604800),
        ("1h30m", 5400),
        (12, 12.0),
        (0.5, 0.5),
        ("1.5h", 5400),
    ],
)
def test_parse(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "m5", "-1s", "1w", True, -3])
def test_rejects_with_help(text: object) -> None:
    with pytest.raises(DurationError, match="duration|negative"):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"), [(300, "5m"), (5400, "1h30m"), (0.1, "100ms"), (0, "0s")]
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
