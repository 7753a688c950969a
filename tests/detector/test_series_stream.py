"""Windows for records arriving a few at a time (``detector.series.stream``): the same windows,
warm-up and rejections as ``make_windows`` gives the whole table, from each key's stored
``History`` alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detector.series.stream import History, parse_time, window_records
from detector.series.windows import MAX_KEY_CHARS, SeriesSpec, make_windows, parse_times

COLUMNS = ("cpu", "state")


def fleet(seed: int = 0) -> pd.DataFrame:
    """Three hosts a minute apart with irregular steps, a repeated time, a long gap and a
    categorical column, in time order (ties across hosts in any order)."""
    rng = np.random.default_rng(seed)
    rows = []
    for host in ("a", "b", "c"):
        t = 0.0
        for _ in range(25):
            t += float(rng.choice([60.0, 60.0, 120.0, 0.0, 4000.0], p=[0.6, 0.2, 0.1, 0.05, 0.05]))
            rows.append(
                {"ts": t, "host": host, "cpu": float(rng.normal()), "state": str(rng.integers(3))}
            )
    frame = pd.DataFrame(rows)
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def stream(frame: pd.DataFrame, spec: SeriesSpec, size: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """Window ``frame`` ``size`` records at a time, shuffled within each call (rows of one key
    and time keep their order: the first to arrive is the one kept), keeping each key's
    history between calls as a store would (round-tripped through JSON)."""
    rng = np.random.default_rng(seed)
    records = frame.to_dict("records")
    stored: dict[str, str] = {}
    windows, rows, warming, rejected = [], [], [], {}
    for start in range(0, len(records), size):
        order = rng.permutation(min(size, len(records) - start)) + start
        same = frame.iloc[order].groupby(["host", "ts"], sort=False).indices.values()
        for slots in same:
            order[slots] = np.sort(order[slots])
        batch = [records[i] for i in order]
        histories = {k: History.from_json(v) for k, v in stored.items()}
        out = window_records(spec, COLUMNS, batch, histories)
        stored |= {k: h.to_json() for k, h in out.histories.items()}
        windows += out.records
        rows += [int(order[i]) for i in out.rows]
        warming += list(out.warming_up)
        rejected |= {int(order[r.row]): r.code for r in out.rejections}
    table = pd.DataFrame(windows, index=rows).sort_index()
    return table, pd.Series(warming, index=rows).sort_index(), rejected


@pytest.mark.parametrize("size", [1, 7])
@pytest.mark.parametrize("gap", [None, 600.0])
@pytest.mark.parametrize("deviation", [0, 3])
def test_records_streamed_a_few_at_a_time_get_the_windows_of_the_whole_table(
    size: int, gap: float | None, deviation: int
) -> None:
    """The same windows to the last bit, the deviation columns (``cpu[-mean]``, the row less
    the mean of the rows before it) included: a record must score alike either way."""
    frame = fleet()
    spec = SeriesSpec(
        "ts",
        ("host",),
        window=4,
        max_gap_seconds=gap,
        deviation_window=deviation,
        deviation_columns=("cpu",) if deviation else (),
    )
    whole = make_windows(frame, spec)
    assert ("cpu[-mean]" in whole.frame) == bool(deviation)
    table, warming, rejected = stream(frame, spec, size)
    assert rejected == {r.row: r.code for r in whole.rejections}
    assert "duplicate_timestamp" in rejected.values()  # the fleet has repeated times
    assert list(table.index) == list(whole.rows)
    expected = whole.frame.set_axis(whole.rows)
    pd.testing.assert_frame_equal(
        table[list(expected.columns)], expected, check_dtype=False, check_exact=True
    )
    assert list(warming) == list(whole.warming_up)


def test_a_key_too_long_to_keep_is_refused_alike_in_a_table_and_a_stream() -> None:
    """The service keeps a bounded number of keys; a key of 100,000 characters would make
    that bound meaningless. Rejected by both readers alike, the other rows untouched."""
    frame = fleet()
    long = {"ts": 30.0, "host": "h" * (MAX_KEY_CHARS + 1), "cpu": 0.0, "state": "1"}
    frame = pd.concat([frame, pd.DataFrame([long, long | {"ts": 90.0}])], ignore_index=True)
    spec = SeriesSpec("ts", ("host",), window=4)
    whole = make_windows(frame, spec)
    codes = {r.row: r.code for r in whole.rejections}
    assert {row for row, code in codes.items() if code == "long_key"} == {75, 76}
    (reason,) = {r.reason for r in whole.rejections if r.code == "long_key"}
    assert "its key ['host'] is 1,025 characters long; a series' key may be at most 1,024" in reason
    others = {row: code for row, code in codes.items() if row < 75}
    assert others == {r.row: r.code for r in make_windows(frame.head(75), spec).rejections}
    assert stream(frame, spec, 7)[2] == codes
    frame.loc[75:, "host"] = "h" * MAX_KEY_CHARS  # at the bound: a series like any other
    assert "long_key" not in {r.code for r in make_windows(frame, spec).rejections}


def test_keys_of_two_columns_that_join_alike_are_refused_not_made_one_series() -> None:
    """Key values are joined with U+001F: ('a\\x1fb', 'c') and ('a', 'b\\x1fc') were one
    series, the second host's rows rejected as the first's repeated times. Each row holding
    the character is refused alike by both readers, naming its column; the others score."""
    spec = SeriesSpec("ts", ("host", "region"), window=3)
    keys = [("a\x1fb", "c"), ("a", "b\x1fc"), ("a", "b")]
    frame = pd.DataFrame(
        [
            {"ts": 60.0 * t, "host": host, "region": region, "cpu": float(t), "state": "1"}
            for t in range(4)
            for host, region in keys
        ]
    )
    whole = make_windows(frame, spec)
    codes = {r.row: r.code for r in whole.rejections}
    assert codes == {row: "bad_key" for row in range(12) if row % 3 != 2}
    reasons = {r.row: r.reason for r in whole.rejections}
    assert reasons[0].startswith("its 'host' value holds the control character U+001F")
    assert reasons[1].startswith("its 'region' value holds the control character U+001F")
    assert "remove it from the value" in reasons[0]
    assert list(whole.rows) == [2, 5, 8, 11] and set(whole.keys) == {"a\x1fb"}
    assert stream(frame, spec, 5)[2] == codes
    # One key column's value is its key as written: nothing to tell apart.
    alone = make_windows(frame.drop(columns="region"), SeriesSpec("ts", ("host",), window=3))
    assert set(alone.keys) == {"a\x1fb", "a"}
    assert {r.code for r in alone.rejections} == {"duplicate_timestamp"}  # ('a', *) twice


def test_a_late_record_and_a_repeated_time_are_rejected_with_the_reason() -> None:
    spec = SeriesSpec("ts", ("host",), window=3)
    first = window_records(spec, ["cpu"], [{"ts": 120, "host": "a", "cpu": 1.0}], {})
    late = window_records(
        spec,
        ["cpu"],
        [{"ts": 60, "host": "a", "cpu": 2.0}, {"ts": 120, "host": "a", "cpu": 3.0}],
        first.histories,
    )
    assert [r.code for r in late.rejections] == ["out_of_order", "duplicate_timestamp"]
    assert "send each series in time order" in late.rejections[0].reason
    assert late.records == [] and late.histories["a"] == first.histories["a"]


def test_bad_times_and_missing_keys_are_rejected_and_the_rest_scored() -> None:
    spec = SeriesSpec("ts", ("host",), window=2)
    records = [
        {"ts": "soon", "host": "a", "cpu": 1.0},
        {"ts": None, "host": "a", "cpu": 1.0},
        {"ts": 60, "host": None, "cpu": 1.0},
        {"ts": "1970-01-01T00:02:00Z", "host": "a", "cpu": 2.0},
    ]
    out = window_records(spec, ["cpu"], records, {})
    assert [(r.row, r.code) for r in out.rejections] == [
        (0, "bad_timestamp"), (1, "bad_timestamp"), (2, "missing_key")
    ]  # fmt: skip
    assert "'soon' is not a time" in out.rejections[0].reason
    assert "is empty" in out.rejections[1].reason
    assert list(out.rows) == [3] and out.records == [{"cpu": 2.0, "cpu[-1]": 2.0}]
    assert out.histories["a"].times == (120.0,)


def test_times_read_as_the_table_reads_them() -> None:
    assert parse_time(90) == 90.0
    assert parse_time("90.5") == 90.5
    assert parse_time("1970-01-01T00:01:30") == 90.0  # zone-less: UTC
    assert parse_time("1970-01-01T01:01:30+01:00") == 90.0
    for bad in (True, None, float("nan"), float("inf"), "-inf", "", "  ", "noon", [1]):
        assert parse_time(bad) is None
    table = parse_times(pd.Series([90, float("inf"), 1_764_547_200_000]))
    assert table[0] == 90.0 and np.isnan(table[1]) and np.isnan(table[2])  # ms: no seconds
    mixed = parse_times(pd.Series(["90", "inf", "1970-01-01T00:01:30Z"], dtype=object))
    assert mixed[0] == mixed[2] == 90.0 and np.isnan(mixed[1])


@pytest.mark.parametrize(
    "dtype",
    ["timestamp[ns, tz=UTC][pyarrow]", "timestamp[us, tz=Europe/Berlin][pyarrow]",
     "timestamp[s][pyarrow]", "datetime64[ns, UTC]"],
)  # fmt: skip
def test_pyarrow_timestamps_read_as_numpy_ones(dtype: str) -> None:
    # read_parquet(dtype_backend="pyarrow") gives these: ArrowInvalid ("Integer value
    # 1793491200000000000 not in range") in training and scoring alike.
    times = ["2026-11-01T00:00:00Z", None, "2026-11-01T01:00:00+01:00"]
    seconds = parse_times(pd.Series(pd.to_datetime(times, utc=True)).astype(dtype))
    midnight = pd.Timestamp("2026-11-01", tz="UTC").timestamp()
    assert seconds[0] == seconds[2] == midnight and np.isnan(seconds[1])


@pytest.mark.parametrize("value", [1_764_547_200_000, "1764547200000", -1e12, 10**400])
def test_epoch_milliseconds_are_no_time_in_a_stream_or_a_table(value: object) -> None:
    """Read as seconds, milliseconds would put a series 54,000 years on, its gaps a thousand
    times too long: refused alike by both readers, with the fix."""
    assert parse_time(value) is None
    assert np.isnan(parse_times(pd.Series([value, 90], dtype=object))[0])
    frame = pd.DataFrame({"ts": [value], "cpu": [1.0]}, dtype=object)
    (rejection,) = make_windows(frame, SeriesSpec("ts")).rejections
    assert rejection.code == "bad_timestamp"
    if value != 10**400:
        assert "if it is epoch milliseconds, divide by 1,000" in rejection.reason
    assert len(rejection.reason) < 200  # a value of 400 digits is not echoed whole


@pytest.mark.parametrize("key", ["NA", " null ", "", "  ", "None", "nan"])
def test_a_key_a_file_reads_as_missing_is_missing_in_a_stream_too(key: str) -> None:
    """A CSV reader takes 'NA' for an empty cell: the same record as JSON must not start a
    series 'NA' that the file's rows never join. A real key that merely holds the text stays."""
    spec = SeriesSpec("ts", ("host",), window=2)
    records = [
        {"ts": 60.0, "host": key, "cpu": 1.0, "state": "0"},
        {"ts": 60.0, "host": "NAS-1", "cpu": 1.0, "state": "0"},
    ]
    streamed = window_records(spec, list(COLUMNS), records, {})
    table = make_windows(pd.DataFrame(records), spec)
    assert [(r.row, r.code) for r in streamed.rejections] == [(0, "missing_key")]
    assert [(r.row, r.code) for r in table.rejections] == [(0, "missing_key")]
    assert list(streamed.rows) == list(table.rows) == [1]


def test_a_key_of_a_list_or_an_object_is_no_key() -> None:
    """A Parquet struct for a key was an internal TypeError in a file (it cannot be hashed)."""
    spec = SeriesSpec("ts", ("host",), window=2)
    records = [
        {"ts": 60.0, "host": {"name": "a"}, "cpu": 1.0, "state": "0"},
        {"ts": 60.0, "host": "a", "cpu": 1.0, "state": "0"},
    ]
    streamed = window_records(spec, list(COLUMNS), records, {})
    table = make_windows(pd.DataFrame(records), spec)
    for out in (streamed, table):
        assert [(r.row, r.code) for r in out.rejections] == [(0, "missing_key")]
        assert "a list or an object" in out.rejections[0].reason
