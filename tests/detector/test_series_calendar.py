"""``--calendar``: each record's hour of day and day of week (UTC) beside its window, so a level
normal in the afternoon can be an anomaly at night."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detector.bundles.bundle import load_bundle
from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.series.stream import window_records
from detector.series.windows import SeriesSpec, calendar_values, make_windows
from tests.conftest import DATA, TINY


def test_hour_and_weekday_are_utcs() -> None:
    assert calendar_values(0.0) == ("0", "3")  # 1 January 1970, a Thursday
    monday = pd.Timestamp("2026-01-05T13:59:59Z").timestamp()
    assert calendar_values(monday) == ("13", "0")
    assert calendar_values(-1.0) == ("23", "2")  # the second before: a Wednesday, 23:59:59


def test_a_table_and_records_one_at_a_time_get_the_same_calendar() -> None:
    times = pd.date_range("2026-01-04T22:00Z", periods=8, freq="37min")
    frame = pd.DataFrame({"ts": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "cpu": np.arange(8.0)})
    spec = SeriesSpec("ts", window=2, calendar=True)
    table = make_windows(frame, spec).frame
    assert list(table.columns) == ["cpu", "cpu[-1]", "ts[hour]", "ts[weekday]"]
    assert list(table["ts[hour]"]) == [str(t.hour) for t in times]
    assert list(table["ts[weekday]"]) == [str(t.weekday()) for t in times]
    histories: dict = {}
    for i, record in enumerate(frame.to_dict("records")):
        out = window_records(spec, ["cpu"], [record], histories)
        histories = {**histories, **out.histories}
        assert out.records == [table.iloc[i].to_dict()]


def daily(days: int, *, seed: int = 0) -> pd.DataFrame:
    """One host every 20 minutes: cpu near 80 from 9:00 to 17:00 UTC, near 20 otherwise."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2026-01-05", periods=days * 72, freq="20min", tz="UTC")
    busy = (times.hour >= 9) & (times.hour < 17)
    cpu = np.where(busy, 80.0, 20.0) + rng.normal(0, 2.0, len(times))
    return pd.DataFrame({"ts": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "cpu": cpu})


@pytest.mark.parametrize("calendar", [True, False])
def test_a_daytime_level_at_night_is_an_anomaly_only_with_the_calendar(calendar: bool) -> None:
    detector = VAEDetector(time_column="ts", window=1, calendar=calendar, **TINY).fit(daily(6))
    night = daily(1, seed=1)
    row = 9  # 03:00
    night.loc[row, "cpu"] = 80.0  # the afternoon's level, at 3 am
    scores = detector.anomaly_score(night)
    others = np.delete(scores, row)
    assert (scores[row] > others.max()) == calendar


def test_the_calendar_needs_a_time_column() -> None:
    with pytest.raises(ConfigError, match=r"calendar judges rows within a series: set time_column"):
        VAEDetector(calendar=True, **TINY).fit(daily(1))


def test_series_options_without_a_time_column_name_only_those_given() -> None:
    with pytest.raises(ConfigError) as raised:
        VAEDetector(series_columns=["host"], level_hours=6, **TINY).fit(daily(1))
    assert "series_columns, level_hours judge rows within a series" in str(raised.value)
    assert "short_window" not in str(raised.value)


def test_a_file_scored_with_the_calendar_gets_no_pandas_warning(tmp_path) -> None:
    # Assigned to a window read from a file (a frame of a block per column), the calendar's
    # columns printed pandas' "DataFrame is highly fragmented" twice in training, six times in
    # evaluate, on the user's screen (pytest makes the warning an error here).
    from detector.batch.scored_chunks import iter_scored

    options = {**TINY, "epochs": 1}
    train = pd.read_csv(DATA / "fleet_train.csv").groupby("host").head(60)  # 11 metrics
    detector = VAEDetector(time_column="ts", series_columns=["host"], calendar=True, **options)
    detector.fit(train).save(tmp_path / "model")
    scored = pd.read_csv(DATA / "fleet_eval.csv").drop(columns=["label", "anomaly_kind"])
    scored.groupby("host").head(30).to_csv(tmp_path / "next.csv", index=False)
    chunks = list(iter_scored(load_bundle(tmp_path / "model"), tmp_path / "next.csv"))
    assert sum(len(c.result.anomaly_score) for c in chunks if c.result is not None) > 0
