"""Metric streams as windows (``detector.series.windows``): series ordered per key, rows that
cannot be placed reported with a reason, gaps restarting a window, and every other row kept,
in input order, with the rows before it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from detector.errors import SchemaError
from detector.series.stream import parse_time
from detector.series.windows import SeriesSpec, SeriesState, make_windows, parse_times


def fleet() -> pd.DataFrame:
    """Two hosts, shuffled: cpu is 10 * minute + (0 for a, 1000 for b)."""
    rows = [
        {"ts": 60 * m, "host": host, "cpu": 10.0 * m + offset}
        for host, offset in (("a", 0.0), ("b", 1000.0))
        for m in range(6)
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)


def test_each_row_gets_the_previous_rows_of_its_own_series_in_input_order() -> None:
    frame = fleet()
    windows = make_windows(frame, SeriesSpec("ts", ("host",), window=3))
    assert list(windows.rows) == list(range(len(frame)))  # nothing rejected, input order
    out = windows.frame
    assert list(out.columns) == ["cpu", "cpu[-1]", "cpu[-2]"]
    for i, row in frame.iterrows():
        offset = 0.0 if row["host"] == "a" else 1000.0
        minute = row["ts"] // 60
        expected = [10.0 * max(minute - lag, 0) + offset for lag in range(3)]
        assert list(out.loc[i]) == expected, (row.to_dict(), list(out.loc[i]))
    # Warming up: the first two minutes of each host, whose window borrowed its oldest row.
    assert set(frame.loc[windows.warming_up, "ts"]) == {0, 60}
    assert windows.warming_up.sum() == 4


def test_the_deviation_is_the_row_minus_the_mean_of_the_rows_before_it() -> None:
    frame = fleet()
    windows = make_windows(frame, SeriesSpec("ts", ("host",), window=3, representation="deviation"))
    out = windows.frame
    assert list(out.columns) == ["cpu", "cpu[-mean]"]
    late = (frame["ts"] >= 120).to_numpy()
    # cpu rises 10 a minute: the mean of the two rows before is 15 below the row.
    np.testing.assert_allclose(out.loc[late, "cpu[-mean]"], 15.0)


def test_a_lags_window_may_carry_the_deviation_from_a_shorter_history_too() -> None:
    """``deviation_window`` 3 on a window of 4: the lags, and each deviation column's row less
    the mean of its 2 rows before (a value that is not a number counts as missing)."""
    frame = fleet().assign(mem=lambda f: f["cpu"].astype(object))
    frame.loc[(frame["host"] == "a") & (frame["ts"] == 120), "mem"] = "n/a"
    spec = SeriesSpec(
        "ts", ("host",), window=4, deviation_window=3, deviation_columns=("cpu", "mem")
    )
    out = make_windows(frame, spec).frame
    assert list(out.columns[-2:]) == ["cpu[-mean]", "mem[-mean]"]
    assert "cpu[-3]" in out
    late = (frame["ts"] >= 120).to_numpy()
    np.testing.assert_allclose(out.loc[late, "cpu[-mean]"], 15.0)  # cpu rises 10 a minute
    # host a's minute 2 has no number: its own deviation and the next two minutes' are missing
    missing = frame.loc[out["mem[-mean]"].isna().to_numpy(), "ts"]
    assert sorted(missing) == [120, 180, 240]
    assert "difference from the mean of the 2 rows before it" in spec.describe()
    with pytest.raises(
        SchemaError, match=r"deviation_window 5 must be 0 \(none\) or in \[2, window 4\]"
    ):
        make_windows(frame, SeriesSpec("ts", ("host",), window=4, deviation_window=5))


def test_bad_times_missing_keys_and_duplicates_are_rejected_with_their_reason() -> None:
    frame = pd.DataFrame(
        {
            "ts": ["2026-01-01T00:00:00Z", "yesterday", "2026-01-01T00:01:00Z",
                   "2026-01-01T00:01:00Z", "2026-01-01T00:02:00+00:00", "2026-01-01T00:03:00"],
            "host": ["a", "a", None, "a", "a", "a"],
            "cpu": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )  # fmt: skip
    frame.loc[len(frame)] = ["2026-01-01T00:02:00Z", "a", 7.0]  # same time as row 4, later
    windows = make_windows(frame, SeriesSpec("ts", ("host",), window=2))
    rejected = {r.row: r.code for r in windows.rejections}
    assert rejected == {1: "bad_timestamp", 2: "missing_key", 6: "duplicate_timestamp"}
    assert "'yesterday' is not a time" in windows.rejections[0].reason
    assert sorted([*windows.rows, *rejected]) == list(range(len(frame)))  # every row accounted
    # Row 3 (00:01) follows row 0 (00:00); row 5 (zone-less, UTC) follows row 4 (00:02).
    assert list(windows.frame["cpu[-1]"]) == [1.0, 1.0, 4.0, 5.0]


def test_an_iso_time_too_far_off_for_the_clock_says_so_not_that_it_is_no_time() -> None:
    frame = pd.DataFrame(
        {"ts": ["2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01", "2026-02-30"],
         "cpu": [1.0, 2.0, 3.0, 4.0]}
    )  # fmt: skip
    reasons = [r.reason for r in make_windows(frame, SeriesSpec("ts", window=2)).rejections]
    assert len(reasons) == 3
    assert "'9999-12-31T23:59:59Z' is a time this tool cannot place" in reasons[0]
    assert "between the years 1678 and 2261" in reasons[0]
    assert "'0001-01-01' is a time this tool cannot place" in reasons[1]
    assert "'2026-02-30' is not a time" in reasons[2]  # no such day: a typo after all
    # pandas parses the year 9999 alone (at a unit of seconds) but not beside a nanosecond
    # time: either way it is no time, so no row's fate hangs on the rows read with it.
    for company in (["2026-01-01T00:00:00Z"], ["2026-01-01T00:00:00.123456789Z"], []):
        times = parse_times(pd.Series([*company, "9999-12-31T23:59:59Z"]))
        assert times.iloc[-1] != times.iloc[-1]  # NaN
        assert parse_time("9999-12-31T23:59:59Z") is None
    assert (
        parse_time("2026-01-01T00:00:00.5Z")
        == parse_times(pd.Series(["x", "2026-01-01T00:00:00.5Z"])).iloc[1]
    )


@pytest.mark.parametrize("deviation", [0, 2])
def test_a_batch_whose_every_row_is_rejected_windows_to_nothing_and_reports_each(
    deviation: int,
) -> None:
    frame = pd.DataFrame({"ts": ["later", "soon", None], "host": ["a", "b", "a"], "cpu": 1.0})
    spec = SeriesSpec("ts", ("host",), window=3, deviation_window=deviation,
                      deviation_columns=("cpu",) if deviation else ())  # fmt: skip
    windows = make_windows(frame, spec)
    assert len(windows.frame) == 0 and len(windows.rows) == 0
    assert [(r.row, r.code) for r in windows.rejections] == [
        (0, "bad_timestamp"), (1, "bad_timestamp"), (2, "bad_timestamp"),
    ]  # fmt: skip


def test_a_gap_longer_than_the_limit_starts_the_window_again() -> None:
    frame = pd.DataFrame({"ts": [0, 60, 120, 3600, 3660], "cpu": [1.0, 2.0, 3.0, 4.0, 5.0]})
    windows = make_windows(frame, SeriesSpec("ts", window=2, max_gap_seconds=300))
    assert windows.restarts == 1
    assert list(windows.frame["cpu[-1]"]) == [1.0, 1.0, 2.0, 4.0, 4.0]
    assert list(windows.warming_up) == [True, False, False, True, False]
    unlimited = make_windows(frame, SeriesSpec("ts", window=2))
    assert unlimited.restarts == 0 and list(unlimited.frame["cpu[-1]"])[3] == 3.0


def test_epoch_seconds_and_iso_text_read_as_the_same_times() -> None:
    iso = pd.Series(["1970-01-01T00:01:00Z", "1970-01-01T01:00:00+01:00", "soon", None])
    np.testing.assert_array_equal(parse_times(iso).to_numpy()[:2], [60.0, 0.0])
    assert parse_times(iso).isna().tolist() == [False, False, True, True]
    np.testing.assert_array_equal(parse_times(pd.Series(["60", "0"])), [60.0, 0.0])
    mixed = pd.Series(["1970-01-01T00:02:00Z", "60", None])  # one export, two writers
    np.testing.assert_array_equal(parse_times(mixed).to_numpy()[:2], [120.0, 60.0])
    empty = make_windows(pd.DataFrame({"ts": ["60", ""], "cpu": [1.0, 2.0]}), SeriesSpec("ts"))
    assert empty.rejections[0].reason == "ts is empty; every row needs its time"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (SeriesSpec("time"), r"no column \['time'\]"),
        (SeriesSpec("ts", ("ts",)), "must differ"),
        (SeriesSpec("ts", ("host", "host")), r"names \['host'\] more than once"),
        (SeriesSpec("ts", window=0), r"window 0 must be in \[1, 1000\]"),
        (SeriesSpec("ts", max_gap_seconds=0), "max_gap_seconds 0 must be positive"),
    ],
)
def test_a_spec_that_does_not_fit_the_table_is_refused_by_name(spec, message) -> None:
    with pytest.raises(SchemaError, match=message):
        make_windows(fleet(), spec)


def stream_of_three_hosts() -> pd.DataFrame:
    """Three hosts a minute apart, host c with a 20-minute hole; in time order."""
    rng = np.random.default_rng(7)
    rows = [
        {"ts": 60 * m, "host": host, "cpu": float(rng.normal()), "disk": float(rng.normal())}
        for m in range(40)
        for host in "abc"
        if not (host == "c" and 10 <= m < 30)
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("representation", ["lags", "deviation", "lags and deviation"])
def test_rows_streamed_in_batches_get_the_windows_of_the_whole_table(batch, representation):
    """The service's path (a few rows at a time, state carried) and the batch path (the whole
    table at once) window every row alike, warm-up and gap restarts included."""
    from detector.series.windows import SeriesState

    table = stream_of_three_hosts()
    both = representation == "lags and deviation"
    spec = SeriesSpec(
        "ts",
        ("host",),
        window=4,
        max_gap_seconds=300,
        representation="lags" if both else representation,
        deviation_window=4 if both else 0,
        deviation_columns=("cpu", "disk") if both else (),
    )
    whole = make_windows(table, spec)
    state = SeriesState(spec)
    parts = [state.window(table.iloc[i : i + batch]) for i in range(0, len(table), batch)]
    assert not any(part.rejections for part in parts)
    streamed = pd.concat([part.frame for part in parts], ignore_index=True)
    pd.testing.assert_frame_equal(streamed, whole.frame)
    np.testing.assert_array_equal(
        np.concatenate([part.warming_up for part in parts]), whole.warming_up
    )
    assert sum(part.restarts for part in parts) == whole.restarts == 1
    assert len(state) == 3


def test_a_row_older_than_what_was_seen_for_its_series_is_rejected_not_mixed_in() -> None:
    from detector.series.windows import SeriesState

    state = SeriesState(SeriesSpec("ts", ("host",), window=3))
    state.window(pd.DataFrame({"ts": [0, 60, 120], "host": ["a"] * 3, "cpu": [1.0, 2.0, 3.0]}))
    late = pd.DataFrame(
        {"ts": [60, 120, 180, 90], "host": ["a", "a", "a", "b"], "cpu": [9.0, 9.0, 4.0, 5.0]}
    )
    windows = state.window(late)
    codes = {r.row: r.code for r in windows.rejections}
    assert codes == {0: "out_of_order", 1: "duplicate_timestamp"}
    assert "send each series in time order" in windows.rejections[0].reason
    # Host b is new at 90 s even though a has seen later times: order is per series.
    assert list(windows.rows) == [2, 3]
    assert list(windows.frame["cpu[-1]"]) == [3.0, 5.0]
    assert list(windows.frame["cpu[-2]"]) == [2.0, 5.0]


def test_a_row_stamped_far_ahead_of_the_clock_is_rejected_and_its_series_goes_on() -> None:
    """A wrong clock's row, once placed, would make every later, correct row of its series
    late. Beyond the limit it is rejected; without one it is placed, and the rows it makes
    late name its time, so the culprit can be found."""
    from detector.series.windows import SeriesState

    spec = SeriesSpec("ts", ("host",), window=3)
    frame = pd.DataFrame(
        {"ts": [0, 60, 4_102_444_800, 120, 7200, 180, 3700], "host": ["a"] * 7, "cpu": [1.0] * 7}
    )  # 2100-01-01, then 2 h ahead of the clock (at 0 + 3600 s of room), then just past it
    windows = SeriesState(spec, clock=lambda: 0.0).window(frame)
    reasons = {r.row: (r.code, r.reason) for r in windows.rejections}
    assert set(reasons) == {2, 4, 6} and {c for c, _ in reasons.values()} == {"future_timestamp"}
    assert "ts 4102444800 is 130.0 years ahead of the clock (the limit: 1.0 h" in reasons[2][1]
    assert "ts 7200 is 2.0 h ahead" in reasons[4][1]
    # Not "1.0 h ahead (the limit: 1.0 h)", which reads as within it.
    assert "ts 3700 is 3,700 s ahead of the clock (the limit: 3,600 s" in reasons[6][1]
    assert list(windows.rows) == [0, 1, 3, 5]
    assert list(windows.warming_up) == [True, True, False, False]
    unlimited = SeriesState(spec, max_ahead_seconds=None, clock=lambda: 0.0)
    before = unlimited.window(frame.iloc[:3])
    assert list(before.rows) == [0, 1, 2]
    after = unlimited.window(frame.iloc[3:6].reset_index(drop=True))
    assert [r.code for r in after.rejections] == ["out_of_order"] * 3
    assert "seen for its series (2100-01-01T00:00:00Z)" in after.rejections[0].reason


def test_training_refuses_a_row_from_the_future_without_naming_an_option_it_lacks() -> None:
    from detector.series.windows import windowed_for_training

    frame = fleet().assign(ts=lambda f: f["ts"] + 1_780_000_000)
    frame.loc[3, "ts"] = 4_102_444_800  # 2100-01-01
    with pytest.raises(SchemaError) as refused:
        windowed_for_training(frame, SeriesSpec("ts", ("host",), window=3))
    message = str(refused.value)
    assert "1 training row(s) cannot be placed" in message
    assert "ahead of the clock (the limit: 1.0 h); fix the clock that stamped it" in message
    assert "max_ahead_seconds" not in message


def test_an_hour_repeated_by_a_clock_change_points_at_times_without_a_zone() -> None:
    """New York's local times across the end of summer time: 01:00 to 01:59 come twice."""
    from detector.series.windows import windowed_for_training

    spec = SeriesSpec("ts", ("host",), window=3)
    local = pd.date_range("2026-11-01 04:00", periods=180, freq="min", tz="UTC").tz_convert(
        "America/New_York"
    )
    frame = pd.DataFrame({"ts": [t.isoformat() for t in local], "host": "a", "cpu": 1.0})
    windowed_for_training(frame, spec)  # with their offsets, no two are the same instant
    frame["ts"] = [t.strftime("%Y-%m-%dT%H:%M:%S") for t in local]
    with pytest.raises(SchemaError) as refused:
        windowed_for_training(frame, spec)
    assert "60 training row(s) cannot be placed" in str(refused.value)
    assert "names no zone, so it is read as UTC" in str(refused.value)
    assert "an hour repeats where the clocks go back" in str(refused.value)
    # Scoring such times says the same for each row it rejects (2026-12-07: a plain
    # "duplicate" there, with no hint).
    state = SeriesState(spec, max_ahead_seconds=None)
    reasons = [r.reason for r in state.window(frame).rejections]
    assert len(reasons) == 60 and all("clocks go back" in r for r in reasons)
    # A time repeated with its zone is a repeated row: no talk of clocks. One in 180 (a
    # scraper's double send) is left out with a word, the first kept, as scoring keeps it (it
    # stopped a helper's training, 1 row in 20,000); more than 1% of the rows stop it.
    frame["ts"] = [t.isoformat() for t in local]
    frame.loc[10, "ts"] = frame.loc[9, "ts"]
    windows, said = windowed_for_training(frame, spec)
    assert len(windows.frame) == 179 and 10 not in windows.rows
    assert said is not None and said.startswith("1 training row(s) repeat a time")
    frame.loc[[20, 30], "ts"] = frame.loc[[19, 29], "ts"].to_numpy()
    with pytest.raises(SchemaError, match=r"\(rows? 11.*\); fix or drop them$"):
        windowed_for_training(frame, spec)


def test_the_least_recently_seen_series_is_evicted_beyond_the_cap() -> None:
    state = SeriesState(SeriesSpec("ts", ("host",), window=2), max_keys=2)
    for second, host in enumerate("abca"):
        state.window(pd.DataFrame({"ts": [second], "host": [host], "cpu": [float(second)]}))
    assert len(state) == 2 and state.evicted == 2  # a, then b, went; a came back
    # a came back after its eviction: it warms up again rather than reaching for lost rows.
    back = state.window(pd.DataFrame({"ts": [10], "host": ["b"], "cpu": [7.0]}))
    assert list(back.warming_up) == [True] and list(back.frame["cpu[-1]"]) == [7.0]


def test_every_entry_point_defaults_to_the_same_clock_limit() -> None:
    """Written out where importing the windows would cost (the command line's --help, the
    scorer's import order): each must stay the one default."""
    import inspect

    from detector.batch.files import score_file
    from detector.batch.scored_chunks import iter_scored
    from detector.cli.commands import _labelled_scores
    from detector.cli.main import build_parser
    from detector.scoring.scores import score_frame
    from detector.series.windows import DEFAULT_MAX_AHEAD_SECONDS, DEFAULT_MAX_SERIES

    for function in (score_frame, score_file, _labelled_scores):
        default = inspect.signature(function).parameters["max_ahead_seconds"].default
        assert default == DEFAULT_MAX_AHEAD_SECONDS, function.__name__
    for function in (score_file, _labelled_scores, iter_scored):
        default = inspect.signature(function).parameters["max_series"].default
        assert default == DEFAULT_MAX_SERIES, function.__name__
    for argv in (["score", "m", "x.csv", "--output", "o.csv"], ["evaluate", "m", "x.csv"]):
        argv += ["--label-column", "y"] if argv[0] == "evaluate" else []
        parsed = build_parser().parse_args(argv)
        assert parsed.max_ahead_seconds == DEFAULT_MAX_AHEAD_SECONDS
        assert parsed.max_series == DEFAULT_MAX_SERIES


def test_training_rows_refused_for_one_reason_are_listed_together() -> None:
    """Three rows with no key read as the same long reason three times."""
    from detector.series.windows import windowed_for_training

    frame = fleet()
    frame.loc[[0, 4, 8], "host"] = None
    with pytest.raises(SchemaError) as refused:
        windowed_for_training(frame, SeriesSpec("ts", ("host",), window=3))
    message = str(refused.value)
    assert "(rows 1, 5, 9: no value for key ['host']" in message
    assert message.count("no value for key") == 1


def _reasons(times: list[object] | pd.Series) -> list[str]:
    frame = pd.DataFrame({"ts": times, "cpu": 1.0})
    return [r.reason for r in make_windows(frame, SeriesSpec("ts", window=2)).rejections]


def test_a_date_written_without_separators_is_not_taken_for_epoch_seconds() -> None:
    # 2026-12-07: 20261104 was read as epoch seconds, 1970-08-23, and scored first in its
    # series, moving the scores of the rows after it; in a file, over HTTP and in training.
    for value in ("20261104", 20261104, 20261104.0):
        assert parse_times(pd.Series([value, 1_793_750_400])).isna().tolist() == [True, False]
        assert parse_time(value) is None
    (reason,) = _reasons(["20261104", 1_793_750_400])
    assert "'20261104' looks like a date written without separators (2026-11-04)" in reason
    assert "write it as ISO-8601 (2026-11-04) or as epoch seconds" in reason
    # Numbers that are no date stay epoch seconds (a clock counted from a start).
    for value in (19_999_999, 20_000_230, 2026, 60):
        assert parse_times(pd.Series([value])).tolist() == [float(value)]
        assert parse_time(value) == float(value)


def test_a_number_too_large_for_epoch_seconds_is_told_its_likely_unit() -> None:
    # Every such number was told to be divided by 1000: a microsecond one still failed, and a
    # YYYYMMDDHHMM one (202611010000) became a time in 1976, accepted.
    reasons = _reasons([1_793_750_400_000, 1_793_750_400_000_000, 1_793_750_400_000_000_000,
                        202_611_010_000, 20_261_101_000_000])  # fmt: skip
    assert "epoch milliseconds, divide by 1,000" in reasons[0]
    assert "epoch microseconds, divide by 1,000,000" in reasons[1]
    assert "epoch nanoseconds, divide by 1,000,000,000" in reasons[2]
    assert "without separators (2026-11-01T00:00:00)" in reasons[3]
    assert "without separators (2026-11-01T00:00:00)" in reasons[4]


def test_periods_are_read_as_times_and_durations_or_truths_refused() -> None:
    # From Python: a column of periods was read as its ordinals (minutes since 1970, taken for
    # seconds), durations as microseconds, truths as 0 and 1 s.
    periods = pd.Series(pd.period_range("2026-11-04", periods=2, freq="15min"))
    assert parse_times(periods).tolist() == [1_793_750_400.0, 1_793_751_300.0]
    durations = pd.Series(pd.to_timedelta([0, 900], unit="s"))
    assert parse_times(durations).isna().all()
    assert all("is a duration, not a time" in r for r in _reasons(durations))
    # As a Parquet file's rows give them: objects, which failed with a TypeError.
    assert parse_times(durations.astype(object)).isna().all()
    assert all("is a duration" in r for r in _reasons(durations.astype(object)))
    assert parse_times(pd.Series([True, False])).isna().all()
    mixed = pd.Series([True, 1_793_750_400], dtype=object)
    assert parse_times(mixed).isna().tolist() == [True, False]
    assert "True is a truth value, not a time" in _reasons(mixed)[0]


def test_32_bit_float_times_are_refused_rather_than_rounded() -> None:
    # A float32 column (Parquet, Python) holds today's epoch seconds to the nearest 128 s:
    # rows moved by up to a minute, their scores with them.
    times = pd.Series(np.array([1_793_750_400, 1_793_750_460, 100], dtype=np.float32))
    assert parse_times(times).isna().tolist() == [True, True, False]
    reasons = _reasons(times)
    assert len(reasons) == 2 and "is a 32-bit float" in reasons[0]
    assert "store the times as 64-bit numbers" in reasons[0]


def test_iso_spellings_a_file_and_a_record_read_alike() -> None:
    # RFC 3339's lower-case t and z, ISO-8601's decimal comma: refused as no time before.
    # "1_793_750_400" was a time over HTTP (Python's float reads it), and not in a file.
    texts = ["2026-11-04t00:00:00z", "2026-11-04T00:00:00,5Z", "1_793_750_400", "null"]
    assert parse_times(pd.Series(texts)).tolist()[:2] == [1_793_750_400.0, 1_793_750_400.5]
    assert [parse_time(t) for t in texts] == [1_793_750_400.0, 1_793_750_400.5, None, None]
    assert parse_times(pd.Series(texts[2:])).isna().all()
    assert "ts is empty" in _reasons(texts)[-1]


def test_training_on_one_repeated_time_names_the_time_column() -> None:
    from detector.series.windows import windowed_for_training

    frame = pd.DataFrame({"ts": "2026-11-04T00:00:00Z", "host": "a", "cpu": np.arange(9.0)})
    with pytest.raises(SchemaError, match="every row has the same ts"):
        windowed_for_training(frame, SeriesSpec("ts", ("host",), window=2))


def test_a_leap_second_or_a_zone_name_is_told_as_such() -> None:
    # Both were "not a time", which sent their user looking for a typo.
    leap, named, typo = _reasons(
        ["2026-12-31T23:59:60Z", "2026-11-04 10:00:00 UTC", "2026-02-30T10:00:00Z"]
    )
    assert "is a leap second" in leap and "23:59:59" in leap
    assert "names its zone by name" in named and "offset (+02:00) or as Z" in named
    assert "is not a time" in typo


def test_warming_up_from_gaps_names_the_gap_not_the_series_length() -> None:
    # Rows 15 minutes apart and --max-gap-seconds 60: every window restarted, and the warning
    # said to train on longer series or a shorter window, neither of which helps.
    from detector.series.windows import warming_warning, windowed_for_training

    frame = pd.DataFrame(
        {"ts": 900 * np.arange(200), "host": np.repeat(["a", "b"], 100), "cpu": 1.0}
    )
    spec = SeriesSpec("ts", ("host",), window=5, max_gap_seconds=60)
    warning = warming_warning(windowed_for_training(frame, spec)[0], frame, spec)
    assert warning is not None and "100%" in warning
    assert "max_gap_seconds=60 restarted their series' windows 198 times" in warning
    assert "median step between rows is 900 s" in warning and "longer series" not in warning
    long = SeriesSpec("ts", ("host",), window=500)  # too long a window: that advice stays
    told = warming_warning(windowed_for_training(frame, long)[0], frame, long)
    assert "train on longer series" in str(told)


def test_keys_spelled_alike_are_warned_of() -> None:
    # 'web-01', 'web-01 ' and 'WEB-01' trained as three series of one host's rows, silently.
    from detector.series.windows import key_spelling_warning

    spec = SeriesSpec("ts", ("host",), window=3)
    keys = np.array(["web-01", "web-01 ", "db-01", "WEB-01", "web-01", "db-02"], dtype=object)
    warning = key_spelling_warning(keys, spec)
    assert warning is not None and warning.startswith("3 series keys differ from another")
    assert "'web-01 '" in warning and "'WEB-01'" in warning and "'db-0" not in warning
    assert key_spelling_warning(np.array(["web-01", "db-01"], dtype=object), spec) is None
    assert key_spelling_warning(keys, SeriesSpec("ts", window=3)) is None  # no key column


def test_keys_writing_one_number_otherwise_are_warned_of() -> None:
    # A key is its text as written: '007', '7' and '7.0' are three series, where a
    # spreadsheet (or a float column) rewriting one host's name most likely split it, unsaid.
    from detector.series.windows import key_spelling_warning

    spec = SeriesSpec("ts", ("host",), window=3)
    keys = np.array(["007", "7", "7.0", "8", "1e3", "1000", "0x1", "1"], dtype=object)
    warning = key_spelling_warning(keys, spec)
    assert warning is not None and warning.startswith("5 series keys differ from another")
    assert "or in how a number is written ('007', '7', '7.0', '1e3')" in warning
    ids = np.array(["1" * 30, "1" * 29 + "2", "web-01", "1e9999999", "1e9999998"], dtype=object)
    assert key_spelling_warning(ids, spec) is None  # exact, however long


def test_a_key_in_another_unicode_form_is_the_same_series_in_a_file_and_a_record() -> None:
    # 'wéb-01' with its accent as a character of its own (NFD, as macOS writes some files)
    # was a series of its own: its rows warmed up apart from the composed spelling's.
    import unicodedata

    from detector.series.stream import series_key

    composed, decomposed = "wéb-01", unicodedata.normalize("NFD", "wéb-01")
    assert composed != decomposed
    frame = pd.DataFrame(
        {"ts": [0, 60, 120], "host": [composed, decomposed, composed], "cpu": [1.0, 2.0, 3.0]}
    )
    spec = SeriesSpec("ts", ("host",), window=3)
    windows = make_windows(frame, spec)
    assert list(windows.frame["cpu[-1]"]) == [1.0, 1.0, 2.0]  # one series, in time order
    assert list(windows.warming_up) == [True, True, False]
    assert series_key(spec, {"host": decomposed}) == series_key(spec, {"host": composed})
    assert windows.keys[1] == series_key(spec, {"host": decomposed})


def test_excel_serial_days_as_the_time_are_refused_in_training() -> None:
    # 46327.0104 read as epoch seconds: every row within a day of 1970-01-01, a second apart,
    # and the model trained on it (normal rows then flagged 12% against 4%).
    from detector.series.windows import windowed_for_training

    spec = SeriesSpec("ts", ("host",), window=3)
    days = 46_327.0 + np.arange(40) / 1_440  # a minute apart
    frame = pd.DataFrame({"ts": days, "host": "a", "cpu": np.arange(40.0)})
    with pytest.raises(SchemaError, match=r"ts 46327\.0 looks like Excel serial days \(2026-11"):
        windowed_for_training(frame, spec)
    seconds = frame.assign(ts=30_000.0 + 60 * np.arange(40))  # seconds counted from a start
    assert len(windowed_for_training(seconds, spec)[0].rows) == 40


def test_a_date_and_a_time_of_day_in_two_columns_are_told_to_be_joined() -> None:
    # --time-column date: "duplicates: fix or drop them" (drop nearly every row);
    # --time-column time: "'00:00:00' is not a time".
    from detector.series.windows import windowed_for_training

    stamps = pd.date_range("2026-11-04", periods=60, freq="h")
    frame = pd.DataFrame(
        {"date": stamps.strftime("%Y-%m-%d"), "time": stamps.strftime("%H:%M:%S"), "cpu": 1.0}
    )
    join = r"join the two into one ISO-8601 time"
    with pytest.raises(SchemaError, match=rf"date holds dates without a time of day; .*{join}"):
        windowed_for_training(frame, SeriesSpec("date", window=3))
    with pytest.raises(
        SchemaError, match=rf"'00:00:00' is a time of day without its date; .*{join}"
    ):
        windowed_for_training(frame, SeriesSpec("time", window=3))


def test_a_time_of_1970_is_refused_where_training_was_decades_later() -> None:
    # Training refused Excel serial days; scoring took them (and negative epoch seconds) as
    # the morning of 1970-01-01 and scored them with no word: 12% flagged against 10%.
    from detector.series.stream import window_records

    trained = SeriesSpec("ts", ("host",), window=3, trained_from=1_793_491_200.0)  # 2026-11-01
    frame = pd.DataFrame(
        {
            "ts": [46_337.5, -5.0, 2_000.0, 1_793_577_600.0],
            "host": "a",
            "cpu": [1.0, 2.0, 3.0, 4.0],
        }
    )
    windows = SeriesState(trained).window(frame)
    assert list(windows.rows) == [3]
    reasons = [r.reason for r in windows.rejections]
    assert [r.code for r in windows.rejections] == ["bad_timestamp"] * 3
    assert reasons[0].startswith("ts 46337.5 read as epoch seconds is 1970-01-01T12:52:17")
    assert "Excel serial days (2026-11-11T12:00)" in reasons[0]
    assert "from 2026-11-01" in reasons[1] and "Excel" not in reasons[1]
    records = frame.to_dict("records")
    streamed = window_records(trained, ["cpu"], records, {})
    assert [r.reason for r in streamed.rejections] == reasons
    # Training of 1970 itself (seconds counted from a start), or a bundle from before
    # trained_from was kept, scores such times as before.
    for spec in (SeriesSpec("ts", ("host",), window=3), replace(trained, trained_from=0.0)):
        assert len(SeriesState(spec).window(frame).rows) == 4


def test_a_whole_number_key_is_one_series_whether_read_as_an_int_or_a_float() -> None:
    # A host column with an empty cell reads as floats (7.0), as does a JSON emitter's 7.0:
    # each was a series apart from 7's, warming up again.
    from detector.series.stream import series_key

    spec = SeriesSpec("ts", ("host",), window=3)
    frame = pd.DataFrame({"ts": [0, 60, 120], "host": [7.0, np.nan, 7.0], "cpu": [1.0, 2.0, 3.0]})
    windows = SeriesState(spec).window(frame)
    assert list(windows.keys) == ["7", "7"] and list(windows.warming_up) == [True, True]
    mixed = SeriesState(spec).window(frame.assign(host=pd.Series([7, "x", 7.0], dtype=object)))
    assert mixed.keys[0] == mixed.keys[2] == "7"
    assert series_key(spec, {"host": 7.0}) == series_key(spec, {"host": 7}) == "7"
    assert series_key(spec, {"host": 7.5}) == "7.5"
    assert series_key(spec, {"host": np.float64(8.0)}) == "8"


def test_a_boolean_key_is_the_text_a_file_and_json_write() -> None:
    # A Parquet file's or a frame's True was the series 'True', a CSV's true the series 'true'
    # (one scoring run over both files, or HTTP JSON beside CSV bodies): two series.
    from detector.series.stream import series_key

    spec = SeriesSpec("ts", ("host",), window=3)
    typed = pd.DataFrame({"ts": [0, 60], "host": [True, False], "cpu": [1.0, 2.0]})
    assert list(SeriesState(spec).window(typed).keys) == ["true", "false"]
    mixed = typed.assign(host=pd.Series([True, "web"], dtype=object))
    assert list(SeriesState(spec).window(mixed).keys) == ["true", "web"]
    assert series_key(spec, {"host": True}) == series_key(spec, {"host": "true"}) == "true"
    assert series_key(spec, {"host": np.bool_(False)}) == "false"


def test_rows_repeating_a_date_without_a_time_of_day_are_told_so_at_scoring() -> None:
    # Training says so; scoring rejected 788 rows of 800 as repeats with no word of dates.
    spec = SeriesSpec("ts", ("host",), window=3)
    frame = pd.DataFrame({"ts": ["2026-11-04"] * 3, "host": "a", "cpu": [1.0, 2.0, 3.0]})
    windows = SeriesState(spec).window(frame)
    assert [r.code for r in windows.rejections] == ["duplicate_timestamp"] * 2
    assert "'2026-11-04' is a date without a time of day" in windows.rejections[0].reason


def test_a_row_without_one_of_two_key_columns_is_told_which() -> None:
    # "no value for key ['host', 'region']" left the user to find which one was empty.
    from detector.series.stream import window_records

    spec = SeriesSpec("ts", ("host", "region"), window=3)
    frame = pd.DataFrame(
        {"ts": [0, 60, 120], "host": ["a", "a", None], "region": ["eu", None, None], "cpu": 1.0}
    )
    reasons = [r.reason for r in SeriesState(spec).window(frame).rejections]
    assert reasons[0].startswith("no value for key ['region']: it is empty")
    assert reasons[1].startswith("no value for key ['host', 'region']: it is empty")
    streamed = window_records(spec, ["cpu"], frame.to_dict("records"), {})
    assert [r.reason for r in streamed.rejections] == reasons
