"""``bench_series.py``'s event-wise measures: labelled segments found and false alarms per day,
counted as runs of alarms outside every labelled segment."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

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


def test_scaling_study_names_the_current_setting_once_and_reports_it() -> None:
    from detector.scoring.neighbours import DEFAULT_K, DEFAULT_MARGIN, DEFAULT_RANGE_FLOOR

    settings = bench_series.scalings()
    names = [s.name for s in settings]
    assert len(set(names)) == len(names)
    current = [s for s in settings if s.name.endswith("(current)")]
    assert [(s.range_floor, s.margin, s.k, s.clip) for s in current] == [
        (DEFAULT_RANGE_FLOOR, DEFAULT_MARGIN, DEFAULT_K, True)
    ]

    # Four series: the first setting is best on three, the current one on the fourth.
    def scores(best: str) -> dict[str, dict[str, float]]:
        out = {n: {"auroc": 0.6, "auprc": 0.2} for n in [*names[:2], current[0].name]}
        out[best] = {"auroc": 0.9, "auprc": 0.5}
        return out

    runs = [
        {"family": "smd", "set": "a", "scores": scores(names[0])},
        {"family": "smd", "set": "b", "scores": scores(names[0])},
        {"family": "asd", "set": "c", "scores": scores(current[0].name)},
        {"family": "asd", "set": "d", "scores": scores(names[0])},
    ]
    report = bench_series.format_scaling({"command": "x", "minutes": 0.1, "runs": runs})
    # Left out, each series is judged with the setting that wins on the others.
    assert f"| smd a | {names[0]} | .900 / .500 | .600 / .200 |" in report
    assert f"| asd c | {names[0]} | .600 / .200 | .900 / .500 |" in report


def test_baselines_study_sees_only_the_past_and_keeps_a_training_like_score() -> None:
    # A score every 30 min: the level at each is the median of the earlier ones in the window.
    times = np.arange(6, dtype=np.float64) * 1800
    scores = np.array([1.0, 3.0, 2.0, 10.0, 4.0, 5.0])
    level = bench_series.past_level(times, scores, hours=1)
    assert np.isnan(level[0])  # nothing before the first
    np.testing.assert_array_equal(level[1:], [1.0, 2.0, 2.5, 6.0, 7.0])
    # Whole clock hours' means: hours 0 (1, 3), 1 (2, 10), 2 (4, 5); the level is the median
    # of the earlier hours' means, the score's own hour left out.
    hourly = bench_series.past_level(times, scores, hours=24, how="hourly")
    np.testing.assert_array_equal(hourly, [np.nan, np.nan, 2.0, 2.0, 4.0, 4.0])
    # Scores at the validation median's level keep their distance from it; a high level divides.
    out = bench_series.relative(np.array([3.0, 3.0, 3.0]), np.array([np.nan, 1.0, 5.0]), 1.0)
    np.testing.assert_array_equal(out, [2.0, 2.0, 0.4])


def test_segment_ranks_show_where_a_long_segment_holds_the_auroc_down() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros(1000, dtype=int)
    y[100:103] = 1  # short, scored above every normal row
    y[500:700] = 1  # long, scored as the normal rows are
    scores = rng.random(1000)
    scores[100:103] = 2.0
    found = bench_series.ranked_segments(y, scores)
    (a, b, short), (c, d, long) = found["segments"]
    assert (a, b, c, d) == (100, 103, 500, 700)
    assert short == 1.0 and abs(long - 0.5) < 0.1
    assert found["long_share"] == 200 / 203
    # The AUROC is the rows' mean rank; with the short one already first, nothing to gain.
    assert abs(found["auroc"] - (3 + 200 * long) / 203) < 1e-3
    assert found["short_first"] == (3 + 200 * long) / 203
    scores[100:103] = -1.0  # the short segment now last: its rows are what ranking it gains
    last = bench_series.ranked_segments(y, scores)
    assert last["short_first"] == found["short_first"]
    assert abs(last["auroc"] - 200 * long / 203) < 1e-3


def test_bank_study_runs_on_the_families_asked_for(tmp_path: Path) -> None:
    # Before, --study banks read SMD whatever --families said: a data root holding only Donut
    # KPIs stopped at "benchmark data not found" for SMD's machines.
    rng = np.random.default_rng(0)
    n = 600
    label = np.zeros(n, dtype=int)
    label[[100, 450, 451, 520]] = 1  # anomalies in both halves: the test half needs both labels
    value = np.sin(np.arange(n) / 10) + rng.normal(0, 0.05, n) + 3 * label
    (tmp_path / "donut_kpi").mkdir()
    pd.DataFrame({"timestamp": np.arange(n) * 300, "value": value, "label": label}).to_csv(
        tmp_path / "donut_kpi" / "kpi.csv", index=False
    )
    out = tmp_path / "banks"
    argv = ["--study", "banks", "--families", "donut", "--data-dir", str(tmp_path), "--out"]
    assert bench_series.main([*argv, str(out)]) == 0
    report = out.with_suffix(".md").read_text()
    assert "| bank rows | Donut AUROC / AUPRC, last 15 rows |" in report
    assert "SMD" not in report
    # Without --families the probe stays on SMD, as its committed report was made.
    assert bench_series.parse_args(["--study", "banks"]).families == "smd"
    assert bench_series.parse_args([]).families == "smd,asd,donut"
