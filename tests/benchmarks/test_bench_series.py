"""``bench_series.py``'s event-wise measures: labelled segments found and false alarms per day,
counted as runs of alarms outside every labelled segment."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_series


def test_segments_found_and_false_alarm_runs_per_day() -> None:
    # Two labelled segments (rows 3-4 and 10-11), one of them alarmed; two false-alarm runs.
    y = np.zeros(1440, dtype=int)
    y[3:5] = 1
    y[10:12] = 1
    flagged = np.zeros(1440, dtype=bool)
    flagged[[0, 1, 4, 20]] = True
    measured = bench_series.event_metrics(y, flagged, minutes_per_row=2.0)  # 1440 rows = 2 days
    assert measured == {"events_found": 0.5, "false_alarms_per_day": 1.0}
