"""Load forecasting: the model, the bounded load history, and the MAPE ledger."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from librarian.core import forecast as forecast_module
from librarian.core.forecast import (
    MAX_ERRORS,
    MAX_PENDING,
    ForecastError,
    LoadHistory,
    PendingPrediction,
    PredictionLedger,
    forecast_series,
    mean_absolute_percentage_error,
    predict_domain_metrics,
)

HOUR = 3600.0
DAY = 86400.0
T0 = 1_700_000_000.0  # an epoch time, so that absolute times are as large as real ones


def _level(t: np.ndarray) -> np.ndarray:
    """Trend of 2/h plus a daily cycle of amplitude 80 around 200."""
    return 200.0 + 2.0 * (t - T0) / HOUR + 80.0 * np.sin(2 * np.pi * (t - T0) / DAY)


def _daily_series(days: float = 3.0, noise: float = 4.0, seed: int = 7):
    times = T0 + np.arange(0.0, days * DAY, 900.0)
    values = _level(times) + np.random.default_rng(seed).normal(0.0, noise, len(times))
    return times, values


def test_examples_in_the_docstrings_hold() -> None:
    assert doctest.testmod(forecast_module).failed == 0


def test_daily_seasonality_matters_six_hours_ahead() -> None:
    times, values = _daily_series()
    forecast = forecast_series(times, values, 6 * HOUR)
    future = np.array(forecast.times_s)
    truth = _level(future)
    error = mean_absolute_percentage_error(forecast.values, truth)
    assert error < 0.03
    # Neither a trend nor the last value can follow the afternoon's rise and fall.
    trend_only = forecast_series(times, values, 6 * HOUR, period_s=10 * DAY)
    assert trend_only.seasonal_amplitude == 0.0
    assert mean_absolute_percentage_error(trend_only.values, truth) > 0.03
    last_value = [float(values[-1])] * len(future)
    assert mean_absolute_percentage_error(last_value, truth) > 0.03
    assert forecast.trend_per_hour == pytest.approx(2.0, abs=0.2)
    assert forecast.seasonal_amplitude == pytest.approx(80.0, rel=0.05)
    assert forecast.samples == len(times)


def test_forecast_times_run_from_one_step_after_the_last_sample_to_the_horizon() -> None:
    times, values = _daily_series(days=1.5)
    now = float(times[-1])
    forecast = forecast_series(times, values, 2 * HOUR)
    assert forecast.times_s == tuple(now + 900.0 * i for i in range(1, 9))
    odd = forecast_series(times, values, 1000.0, step_s=300.0)
    assert odd.times_s == (now + 300.0, now + 600.0, now + 900.0, now + 1000.0)
    single = forecast_series(times, values, 5 * HOUR, step_s=5 * HOUR)
    assert single.times_s == (now + 5 * HOUR,)
    assert len(single.values) == 1


def test_less_than_a_period_fits_the_trend_only() -> None:
    times = T0 + np.arange(0.0, 12 * HOUR, 900.0)
    noise = np.random.default_rng(3).normal(0.0, 0.5, len(times))
    values = 50.0 + 3.0 * (times - T0) / HOUR + noise
    forecast = forecast_series(times, values, 4 * HOUR, step_s=HOUR)
    assert forecast.seasonal_amplitude == 0.0
    assert forecast.trend_per_hour == pytest.approx(3.0, abs=0.1)
    expected = 50.0 + 3.0 * (np.array(forecast.times_s) - T0) / HOUR
    np.testing.assert_allclose(forecast.values, expected, rtol=0.02)


def test_fewer_than_three_samples_repeat_the_last_value() -> None:
    forecast = forecast_series([T0, T0 + 900.0], [10.0, 30.0], HOUR)
    assert forecast.values == (30.0,) * 4
    assert forecast.trend_per_hour == 0.0
    assert forecast.seasonal_amplitude == 0.0
    assert forecast.samples == 2
    assert forecast_series([T0], [7.0], 900.0).values == (7.0,)


def test_never_negative_for_non_negative_input() -> None:
    times = T0 + np.arange(0.0, 6 * HOUR, 900.0)
    falling = np.maximum(100.0 - 20.0 * (times - T0) / HOUR, 0.0) + 0.0
    forecast = forecast_series(times, falling, 12 * HOUR)
    assert min(forecast.values) == 0.0
    assert all(v >= 0.0 for v in forecast.values)
    # A series that is negative itself (a balance, a delta) is not clipped.
    below = forecast_series(times, falling - 500.0, 6 * HOUR)
    assert min(below.values) < -500.0


def test_sparse_sampling_fits_only_the_harmonics_it_resolves() -> None:
    times = T0 + np.arange(0.0, 4 * DAY, 6 * HOUR)  # 4 samples a day: the first harmonic only
    values = _level(times)
    forecast = forecast_series(times, values, DAY, step_s=6 * HOUR)
    assert all(math.isfinite(v) for v in forecast.values)
    np.testing.assert_allclose(forecast.values, _level(np.array(forecast.times_s)), rtol=0.05)


@pytest.mark.parametrize(
    ("times", "values", "horizon", "message"),
    [
        ([1.0, 2.0], [1.0], 60.0, "differ in length"),
        ([], [], 60.0, "no samples"),
        ([1.0, 2.0, 3.0], [1.0, math.nan, 3.0], 60.0, "finite"),
        ([1.0, math.inf, 3.0], [1.0, 2.0, 3.0], 60.0, "finite"),
        ([1.0, 3.0, 3.0], [1.0, 2.0, 3.0], 60.0, "increase strictly: sample 2"),
        ([5.0, 3.0], [1.0, 2.0], 60.0, "increase strictly"),
        ([1.0, 2.0], [1.0, 2.0], 0.0, "horizon_s"),
        ([1.0, 2.0], [1.0, 2.0], -60.0, "horizon_s"),
        ([1.0, 2.0], [1.0, 2.0], math.nan, "horizon_s"),
    ],
)
def test_bad_input_is_refused_with_a_reason(times, values, horizon, message) -> None:
    with pytest.raises(ForecastError, match=message):
        forecast_series(times, values, horizon)


def test_bad_step_or_period_is_refused() -> None:
    with pytest.raises(ForecastError, match="step_s"):
        forecast_series([1.0, 2.0], [1.0, 2.0], 60.0, step_s=0.0)
    with pytest.raises(ForecastError, match="period_s"):
        forecast_series([1.0, 2.0], [1.0, 2.0], 60.0, period_s=-1.0)
    assert issubclass(ForecastError, ValueError)


# -- LoadHistory --------------------------------------------------------------------------------


def test_history_aligns_domains_that_come_and_go() -> None:
    history = LoadHistory()
    history = history.append(T0, {"d1": {"qps": 1.0, "points": 10.0}}, max_samples=10)
    history = history.append(T0 + 60, {"d1": {"qps": 2.0}, "d2": {"qps": 5.0}}, max_samples=10)
    history = history.append(T0 + 120, {"d2": {"qps": 6.0}}, max_samples=10)
    assert history.times_s == (T0, T0 + 60, T0 + 120)
    d1, d2 = history.series["d1"], history.series["d2"]
    assert d1["qps"][:2] == (1.0, 2.0)
    assert math.isnan(d1["qps"][2])
    assert d1["points"][0] == 10.0
    assert all(math.isnan(v) for v in d1["points"][1:])
    assert math.isnan(d2["qps"][0])
    assert d2["qps"][1:] == (5.0, 6.0)
    assert history.points("d1", "qps") == ([T0, T0 + 60], [1.0, 2.0])
    assert history.points("nowhere", "qps") == ([], [])


def test_history_is_bounded_and_forgets_domains_with_no_value_left() -> None:
    history = LoadHistory()
    history = history.append(T0, {"gone": {"qps": 9.0}, "d": {"qps": 0.0}}, max_samples=3)
    for i in range(1, 6):
        history = history.append(T0 + i, {"d": {"qps": float(i)}}, max_samples=3)
    assert history.times_s == (T0 + 3, T0 + 4, T0 + 5)
    assert history.series == {"d": {"qps": (3.0, 4.0, 5.0)}}
    assert len(history.append(T0 + 6, {}, max_samples=1).times_s) == 1


def test_history_same_time_merges_earlier_time_is_refused() -> None:
    history = LoadHistory().append(T0, {"d": {"qps": 1.0, "points": 5.0}}, max_samples=5)
    history = history.append(T0, {"d": {"qps": 2.0}, "e": {"qps": 3.0}}, max_samples=5)
    assert history.times_s == (T0,)
    assert history.series == {"d": {"qps": (2.0,), "points": (5.0,)}, "e": {"qps": (3.0,)}}
    with pytest.raises(ForecastError, match="before the last one"):
        history.append(T0 - 1, {"d": {"qps": 1.0}}, max_samples=5)
    with pytest.raises(ForecastError, match="max_samples"):
        history.append(T0 + 1, {}, max_samples=0)
    with pytest.raises(ForecastError, match="finite"):
        history.append(math.nan, {}, max_samples=5)


# -- predictions --------------------------------------------------------------------------------


def test_predict_domain_metrics_forecasts_each_series_to_the_horizon() -> None:
    times, values = _daily_series()
    history = LoadHistory()
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        sample = {"busy": {"qps": float(v), "points": 1000.0 + i}}
        if i < 10:
            sample["early"] = {"qps": 4.0}
        history = history.append(float(t), sample, max_samples=len(times))
    now = float(times[-1])
    predicted = predict_domain_metrics(history, now_s=now, horizon_s=6 * HOUR)
    assert set(predicted) == {"busy", "early"}
    assert set(predicted["busy"]) == {"qps", "points"}
    assert predicted["busy"]["qps"] == pytest.approx(
        float(_level(np.array([now + 6 * HOUR]))[0]), rel=0.03
    )
    assert predicted["busy"]["points"] == pytest.approx(1000.0 + len(times) - 1 + 24, rel=1e-3)
    # "early" stopped reporting long ago: its forecast runs from its own last sample.
    assert predicted["early"]["qps"] == pytest.approx(4.0)
    # Samples after now_s are not used.
    earlier = predict_domain_metrics(history, now_s=float(times[100]), horizon_s=HOUR)
    direct = forecast_series(times[:101], values[:101], HOUR, step_s=HOUR).values[-1]
    assert earlier["busy"]["qps"] == pytest.approx(direct)
    assert predict_domain_metrics(LoadHistory(), now_s=now, horizon_s=HOUR) == {}
    with pytest.raises(ForecastError, match="horizon_s"):
        predict_domain_metrics(history, now_s=now, horizon_s=0.0)


# -- scoring ------------------------------------------------------------------------------------


def test_mape_by_hand() -> None:
    assert mean_absolute_percentage_error([110.0, 90.0, 50.0], [100.0, 100.0, 100.0]) == (
        pytest.approx((0.1 + 0.1 + 0.5) / 3)
    )
    # An actual 0 counts as a bounded 100% miss; (0, 0) is perfect and left out.
    assert mean_absolute_percentage_error([5.0, 0.0, 10.0], [0.0, 0.0, 20.0]) == pytest.approx(
        (1.0 + 0.5) / 2
    )
    assert mean_absolute_percentage_error([0.0], [0.0]) == 0.0
    with pytest.raises(ForecastError, match="differ in length"):
        mean_absolute_percentage_error([1.0], [1.0, 2.0])
    with pytest.raises(ForecastError, match="no values"):
        mean_absolute_percentage_error([], [])
    with pytest.raises(ForecastError, match="finite"):
        mean_absolute_percentage_error([math.nan], [1.0])


def test_ledger_scores_what_fell_due_and_keeps_the_rest() -> None:
    ledger = PredictionLedger()
    assert ledger.mape is None
    ledger = ledger.record({"d1": {"qps": 110.0, "points": 50.0}, "d2": {"qps": 5.0}}, due_s=100.0)
    ledger = ledger.record({"d1": {"qps": 80.0, "bad": math.nan}}, due_s=200.0)
    assert len(ledger.pending) == 4
    assert ledger.pending[-1] == PendingPrediction("d1", "qps", 200.0, 80.0)

    actual = {"d1": {"qps": 100.0, "points": 0.0}}  # d2 reports nothing
    scored = ledger.score(actual, now_s=150.0)
    # d1/qps: |110-100|/100 = 0.1; d1/points: actual 0 -> 1.0; d2/qps: no actual, dropped.
    assert sorted(scored.errors) == pytest.approx([0.1, 1.0])
    assert scored.mape == pytest.approx(0.55)
    assert scored.pending == (PendingPrediction("d1", "qps", 200.0, 80.0),)

    later = scored.score({"d1": {"qps": 100.0}}, now_s=200.0)
    assert later.pending == ()
    assert later.mape == pytest.approx((0.1 + 1.0 + 0.2) / 3)
    # A prediction of 0 for a domain with 0 is perfect, not a division by zero, and not scored.
    zero = PredictionLedger().record({"d": {"qps": 0.0}}, 1.0).score({"d": {"qps": 0.0}}, 1.0)
    assert zero.errors == ()
    assert zero.pending == ()
    assert zero.mape is None


def test_ledger_is_bounded() -> None:
    ledger = PredictionLedger()
    for i in range(MAX_PENDING + 10):
        ledger = ledger.record({"d": {"qps": float(i + 1)}}, due_s=float(i))
    assert len(ledger.pending) == MAX_PENDING
    assert ledger.pending[0].predicted == 11.0  # the oldest ones went
    ledger = ledger.score({"d": {"qps": 1.0}}, now_s=1e9)
    assert len(ledger.errors) == MAX_ERRORS
    assert ledger.pending == ()
    assert ledger.errors[-1] == pytest.approx(MAX_PENDING + 10 - 1)  # the latest ones stay
