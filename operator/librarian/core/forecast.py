"""Forecasting each domain's load, and keeping score of how good the forecasts were.

Why this exists: rebalancing after a cluster is already overloaded is late; a
domain whose queries grow every afternoon, or whose points grow every week, can
be moved before it hurts. The caller keeps a short, bounded history of each
domain's metrics (:class:`LoadHistory`), predicts them a few
hours ahead (:func:`predict_domain_metrics`), and records the predictions so
that, once they fall due, they are scored against what really happened
(:class:`PredictionLedger`, MAPE): the user sees how far to trust them.

The model (:func:`forecast_series`) is deliberately small: a weighted least
squares fit of a level, a linear trend and the first three harmonics of the
daily cycle. Recent samples weigh more (exponential weights, half-life of two
periods) so that the fit follows a change of level within days rather than
weeks, and the forecast starts from where the series really is: the mean
residual of the latest two hours (1/12 of the period) is added to the whole
forecast, which carries a level shift or a lasting burst over at once. With
less than one period of history it fits the trend only; with fewer than three
samples it repeats the last value.

Errors are absolute percentage errors as *fractions* (``0.05`` is 5%).

Pure: numpy only, no clock; every time is passed in, in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

HARMONICS = 3  # harmonics of the period fitted at most
MAX_ERRORS = 500  # scored errors a PredictionLedger keeps (the latest)
MAX_PENDING = 2000  # predictions a PredictionLedger waits on (the newest)
_HALF_LIFE_PERIODS = 2.0  # weight of a sample halves every this many periods of age
_RECENT_PERIODS = 1 / 12  # residuals of the latest this-many periods set the starting level

__all__ = [
    "MAX_ERRORS",
    "MAX_PENDING",
    "Forecast",
    "ForecastError",
    "LoadHistory",
    "PendingPrediction",
    "PredictionLedger",
    "forecast_series",
    "mean_absolute_percentage_error",
    "predict_domain_metrics",
]


class ForecastError(ValueError):
    """A series, horizon or history that cannot be forecast from."""


@dataclass(frozen=True)
class Forecast:
    """Predicted values at ``times_s`` (after the last sample), and what the model saw."""

    times_s: tuple[float, ...]
    values: tuple[float, ...]
    trend_per_hour: float  # slope of the fitted trend, in the series' unit per hour
    seasonal_amplitude: float  # half the peak-to-peak of the fitted daily profile (0 if none)
    samples: int  # history samples the forecast was made from


# -- the model ----------------------------------------------------------------------------------


def _check_series(
    times_s: Sequence[float],
    values: Sequence[float],
    horizon_s: float,
    step_s: float,
    period_s: float,
) -> tuple[FloatArray, FloatArray]:
    if len(times_s) != len(values):
        raise ForecastError(
            f"times_s and values differ in length ({len(times_s)} and {len(values)}): "
            "give one time per value"
        )
    if not len(values):
        raise ForecastError("no samples: a forecast needs at least one (time, value) pair")
    for name, number in (("horizon_s", horizon_s), ("step_s", step_s), ("period_s", period_s)):
        if not math.isfinite(number) or number <= 0:
            raise ForecastError(f"{name} must be a finite number of seconds > 0, not {number!r}")
    times = np.asarray(times_s, dtype=np.float64)
    data = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(times)) or not np.all(np.isfinite(data)):
        raise ForecastError("times_s and values must be finite (no NaN or infinity)")
    if np.any(np.diff(times) <= 0):
        at = int(np.argmax(np.diff(times) <= 0))
        raise ForecastError(
            f"times_s must increase strictly: sample {at + 1} at {times[at + 1]!r} "
            f"does not come after sample {at} at {times[at]!r}"
        )
    return times, data


def _future_times(now: float, horizon_s: float, step_s: float) -> FloatArray:
    steps = math.floor(horizon_s / step_s + 1e-9)
    offsets = [step_s * i for i in range(1, steps + 1)]
    if not offsets or horizon_s - offsets[-1] > 1e-6 * step_s:
        offsets.append(horizon_s)
    return now + np.asarray(offsets, dtype=np.float64)


def _design(offsets_s: FloatArray, period_s: float, harmonics: int) -> FloatArray:
    """Columns: 1, hours, then sin/cos of each harmonic of the period."""
    columns = [np.ones_like(offsets_s), offsets_s / 3600.0]
    for k in range(1, harmonics + 1):
        angle = 2.0 * math.pi * k * offsets_s / period_s
        columns += [np.sin(angle), np.cos(angle)]
    return np.stack(columns, axis=1)


def _harmonics(times: FloatArray, period_s: float) -> int:
    """Harmonics the history can carry: >= one period covered, sampled densely enough."""
    if times[-1] - times[0] < period_s:
        return 0
    interval = float(np.median(np.diff(times)))
    resolvable = int(period_s // (2.0 * interval))  # Nyquist: two samples per cycle
    usable = min(HARMONICS, resolvable, (len(times) // 2 - 2) // 2)
    return max(usable, 0)


def forecast_series(
    times_s: Sequence[float],
    values: Sequence[float],
    horizon_s: float,
    *,
    step_s: float = 900.0,
    period_s: float = 86400.0,
) -> Forecast:
    """Forecast ``values`` from the last sample to ``horizon_s`` later, every ``step_s``.

    The forecast times are ``now + step_s, now + 2 step_s, ...`` up to ``now +
    horizon_s`` (always included), ``now`` being the last sample's time. With
    history covering at least one ``period_s`` the model is level + trend +
    up to three harmonics of the period (as many as the sampling resolves and at
    least two samples per coefficient); with less, level + trend; with fewer than
    three samples, the last value. Never negative when no value is.

    >>> f = forecast_series([0.0, 3600.0, 7200.0], [10.0, 12.0, 14.0], 3600.0, step_s=3600.0)
    >>> [round(v, 6) for v in f.values], round(f.trend_per_hour, 6)
    ([16.0], 2.0)
    """
    times, data = _check_series(times_s, values, horizon_s, step_s, period_s)
    now = float(times[-1])
    future = _future_times(now, horizon_s, step_s)
    if len(data) < 3:
        return Forecast(
            times_s=tuple(float(t) for t in future),
            values=(float(data[-1]),) * len(future),
            trend_per_hour=0.0,
            seasonal_amplitude=0.0,
            samples=len(data),
        )
    harmonics = _harmonics(times, period_s)
    offsets = times - now
    design = _design(offsets, period_s, harmonics)
    # Recent samples weigh more: half-life of two periods (or of the whole history when shorter).
    half_life = min(_HALF_LIFE_PERIODS * period_s, max(now - float(times[0]), 1.0))
    weights = np.sqrt(0.5 ** (-offsets / half_life))
    coefficients = np.linalg.lstsq(design * weights[:, None], data * weights, rcond=None)[0]
    fitted = design @ coefficients
    # Start from where the series is: the recent mean residual carries over (a level shift,
    # or noise that lasts). "Recent" is the last 1/12 period (2 hours a day), >= 3 samples.
    recent = max(3, int(np.sum(offsets >= -period_s * _RECENT_PERIODS)))
    correction = float(np.mean((data - fitted)[-recent:]))
    predicted = _design(future - now, period_s, harmonics) @ coefficients + correction
    if np.all(data >= 0):
        predicted = np.maximum(predicted, 0.0)
    amplitude = 0.0
    if harmonics:
        grid = np.linspace(0.0, period_s, 289)
        profile = _design(grid, period_s, harmonics)[:, 2:] @ coefficients[2:]
        amplitude = float(profile.max() - profile.min()) / 2.0
    return Forecast(
        times_s=tuple(float(t) for t in future),
        values=tuple(float(v) for v in predicted),
        trend_per_hour=float(coefficients[1]),
        seasonal_amplitude=amplitude,
        samples=len(data),
    )


# -- the history of each domain's metrics -------------------------------------------------------


def _number(value: Any) -> float:
    """A finite float from a value that should be a number, NaN for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


@dataclass(frozen=True)
class LoadHistory:
    """Samples of each domain's metrics at shared times; NaN where a domain had no value.

    Bounded by the caller's ``max_samples`` at each :meth:`append`. A domain (or
    metric) that appears later is NaN before; one that disappears is NaN after,
    and is forgotten once none of its values is left in the window.
    """

    times_s: tuple[float, ...] = ()
    series: Mapping[str, Mapping[str, tuple[float, ...]]] = field(default_factory=dict)

    def append(
        self, t_s: float, values: Mapping[str, Mapping[str, float]], *, max_samples: int
    ) -> LoadHistory:
        """A new history with the sample ``values`` (domain -> metric -> value) at ``t_s``.

        A sample at the time of the last one replaces it (merged: metrics not given
        again keep their value); an earlier time raises :class:`ForecastError`.
        Non-finite values count as missing. The oldest samples beyond
        ``max_samples`` are dropped.
        """
        if max_samples < 1:
            raise ForecastError(f"max_samples must be >= 1, not {max_samples!r}")
        if not math.isfinite(t_s):
            raise ForecastError(f"the sample time must be finite, not {t_s!r}")
        last = self.times_s[-1] if self.times_s else None
        if last is not None and t_s < last:
            raise ForecastError(
                f"a sample at {t_s!r} comes before the last one at {last!r}: "
                "samples must be appended in time order"
            )
        replace = last is not None and t_s == last
        times = self.times_s if replace else (*self.times_s, float(t_s))
        size = len(times)
        columns: dict[str, dict[str, list[float]]] = {
            domain: {metric: list(column) for metric, column in metrics.items()}
            for domain, metrics in self.series.items()
        }
        if not replace:
            for old in columns.values():
                for column in old.values():
                    column.append(math.nan)
        for domain, sample in values.items():
            for metric, value in sample.items():
                column = columns.setdefault(str(domain), {}).setdefault(
                    str(metric), [math.nan] * size
                )
                number = _number(value)
                if not (replace and math.isnan(number)):
                    column[-1] = number
        return _trimmed(times, columns, max_samples)

    def points(self, domain: str, metric: str) -> tuple[list[float], list[float]]:
        """The (times, values) where ``domain`` had a value of ``metric``."""
        column = self.series.get(domain, {}).get(metric, ())
        pairs = [(t, v) for t, v in zip(self.times_s, column, strict=False) if math.isfinite(v)]
        return [t for t, _ in pairs], [v for _, v in pairs]


def _trimmed(
    times: tuple[float, ...], columns: dict[str, dict[str, list[float]]], max_samples: int
) -> LoadHistory:
    """The newest ``max_samples`` samples; columns with no value left are dropped."""
    drop = max(len(times) - max_samples, 0)
    series: dict[str, dict[str, tuple[float, ...]]] = {}
    for domain, metrics in columns.items():
        for metric, column in metrics.items():
            window = tuple(column[drop:])
            if any(math.isfinite(v) for v in window):
                series.setdefault(domain, {})[metric] = window
    return LoadHistory(times_s=tuple(times[drop:]), series=series)


def predict_domain_metrics(
    history: LoadHistory, *, now_s: float, horizon_s: float
) -> dict[str, dict[str, float]]:
    """Domain -> metric -> the value :func:`forecast_series` predicts at ``now_s + horizon_s``.

    Each series is forecast from its own samples up to ``now_s``; series without
    any are left out (so are domains with none).
    """
    if not math.isfinite(horizon_s) or horizon_s <= 0:
        raise ForecastError(f"horizon_s must be a finite number of seconds > 0, not {horizon_s!r}")
    if not math.isfinite(now_s):
        raise ForecastError(f"now_s must be finite, not {now_s!r}")
    predictions: dict[str, dict[str, float]] = {}
    for domain, metrics in sorted(history.series.items()):
        for metric in metrics:
            times, values = history.points(domain, metric)
            while times and times[-1] > now_s:
                times.pop()
                values.pop()
            if not times:
                continue
            ahead = now_s + horizon_s - times[-1]
            forecast = forecast_series(times, values, ahead, step_s=ahead)
            predictions.setdefault(domain, {})[metric] = forecast.values[-1]
    return predictions


# -- keeping score ------------------------------------------------------------------------------


def _percentage_error(predicted: float, actual: float) -> float | None:
    """|predicted - actual| / |actual|; None when both are 0 (nothing to score).

    When ``actual`` is 0 and ``predicted`` is not, the relative error would be
    infinite; the symmetric form |p - a| / max(|p|, |a|) is used instead, which
    is then exactly 1.0 (100%): a miss, but a bounded one.
    """
    if actual == 0.0:
        return None if predicted == 0.0 else 1.0
    return abs(predicted - actual) / abs(actual)


def mean_absolute_percentage_error(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Mean of |predicted - actual| / |actual| as a fraction (0.05 = 5%).

    Pairs where both are 0 are perfect and left out; an actual 0 with another
    prediction counts as 1.0 (100%, see :func:`_percentage_error`). 0.0 when
    every pair is a (0, 0).
    """
    if len(predicted) != len(actual):
        raise ForecastError(
            f"predicted and actual differ in length ({len(predicted)} and {len(actual)})"
        )
    if not len(actual):
        raise ForecastError("no values: a MAPE needs at least one (predicted, actual) pair")
    pairs = [(float(p), float(a)) for p, a in zip(predicted, actual, strict=True)]
    if not all(math.isfinite(p) and math.isfinite(a) for p, a in pairs):
        raise ForecastError("predicted and actual must be finite (no NaN or infinity)")
    errors = [e for p, a in pairs if (e := _percentage_error(p, a)) is not None]
    return float(np.mean(errors)) if errors else 0.0


@dataclass(frozen=True)
class PendingPrediction:
    """A predicted value of one domain's metric, to be checked at ``due_s``."""

    domain: str
    metric: str
    due_s: float
    predicted: float


@dataclass(frozen=True)
class PredictionLedger:
    """Predictions waiting to fall due, and the errors of those already scored.

    Bounded: the newest :data:`MAX_PENDING` pending predictions and the latest
    :data:`MAX_ERRORS` errors are kept.
    """

    pending: tuple[PendingPrediction, ...] = ()
    errors: tuple[float, ...] = ()

    def record(
        self, predictions: Mapping[str, Mapping[str, float]], due_s: float
    ) -> PredictionLedger:
        """A ledger that also waits on ``predictions`` (domain -> metric -> value) at ``due_s``.

        Non-finite predictions are not recorded.
        """
        if not math.isfinite(due_s):
            raise ForecastError(f"due_s must be finite, not {due_s!r}")
        added = tuple(
            PendingPrediction(str(domain), str(metric), float(due_s), float(value))
            for domain, metrics in sorted(predictions.items())
            for metric, value in sorted(metrics.items())
            if math.isfinite(_number(value))
        )
        pending = (*self.pending, *added)
        return PredictionLedger(pending=pending[-MAX_PENDING:], errors=self.errors)

    def score(self, actual: Mapping[str, Mapping[str, float]], now_s: float) -> PredictionLedger:
        """Score every prediction due by ``now_s`` against ``actual`` (domain -> metric -> value).

        Scored predictions leave the pending list; so do due ones that cannot be
        scored (no finite actual value for their domain and metric, or both 0).
        """
        waiting: list[PendingPrediction] = []
        errors = list(self.errors)
        for prediction in self.pending:
            if prediction.due_s > now_s:
                waiting.append(prediction)
                continue
            value = _number(actual.get(prediction.domain, {}).get(prediction.metric))
            if math.isnan(value):
                continue
            error = _percentage_error(prediction.predicted, value)
            if error is not None:
                errors.append(error)
        return PredictionLedger(pending=tuple(waiting), errors=tuple(errors[-MAX_ERRORS:]))

    @property
    def mape(self) -> float | None:
        """Mean of the kept errors (a fraction), None before any prediction was scored."""
        return float(np.mean(self.errors)) if self.errors else None
