"""The labeling Job's progress as the DomainMap status shows it (pure)."""

from __future__ import annotations

import pytest

from librarian.operator.labeling import labeling_job_name, labeling_progress
from librarian.services.labeling_job import RangeProgress


def test_progress_sums_workers_and_rates_each_over_the_time_it_ran() -> None:
    ranges = [
        RangeProgress(labeled=500, done=True, started_at=100.0, updated_at=110.0, attempts=1),
        RangeProgress(labeled=300, skipped=2, started_at=104.0, updated_at=109.0, attempts=2),
        None,  # that worker has not started
    ]
    status = labeling_progress(ranges, total=2000, now=114.0)
    assert status["labeled"] == 800
    assert status["total"] == 2000
    assert status["workersDone"] == 1
    # 500 points in the 10 s the first ran; 300 in the 10 s the second has run until now
    assert status["pointsPerSecond"] == pytest.approx(50.0 + 30.0)
    assert [w["labeled"] for w in status["perWorker"]] == [500, 300, 0]
    assert [w["attempts"] for w in status["perWorker"]] == [1, 2, 0]
    assert status["perWorker"][1]["skipped"] == 2


def test_nothing_recorded_yet_is_zero_progress() -> None:
    status = labeling_progress([None, None], total=10, now=5.0)
    assert (status["labeled"], status["workersDone"], status["pointsPerSecond"]) == (0, 0, 0.0)


def test_job_names_fit_kubernetes() -> None:
    name = labeling_job_name("x" * 80, 123456)
    assert name == "x" * 40 + "-label-v123456"
    assert len(name) <= 63
