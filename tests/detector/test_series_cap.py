"""A series file longer than ``--max-rows``: whole series kept, chosen by a seeded hash of their
keys, read in chunks, said and recorded; a file of no more rows trains as it always did."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from detector.io.frames import read_table
from detector.series.cap import cap_series
from tests.detector.caps import chunks_read_never_whole, manifests_under_caps
from tests.detector.test_cli import run
from tests.detector.test_large_tables import FLAGS


def hosts(n_hosts: int, minutes: int, *, seed: int = 0) -> pd.DataFrame:
    """``n_hosts`` hosts a minute apart, interleaved in time order as a scraper writes them;
    ``row``: each row's place in the file."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2026-01-01", periods=minutes, freq="min", tz="UTC")
    frame = pd.DataFrame(
        {
            "ts": np.repeat(times.strftime("%Y-%m-%dT%H:%M:%SZ"), n_hosts),
            "host": np.tile([f"h{h:02d}" for h in range(n_hosts)], minutes),
            "cpu": rng.normal(50, 5, n_hosts * minutes),
        }
    )
    return frame.assign(row=np.arange(len(frame)))


def kept_series(frame: pd.DataFrame, table: pd.DataFrame) -> tuple[set[str], dict[str, int]]:
    """The hosts ``frame`` holds whole, and those it holds only part of (with their rows)."""
    got, have = frame.groupby("host").size(), table.groupby("host").size()
    whole = {h for h, n in got.items() if n == have[h]}
    return whole, {h: int(n) for h, n in got.items() if h not in whole}


def test_a_long_series_file_keeps_whole_series_whatever_its_order(tmp_path) -> None:
    # A uniform sample of rows would tear every window apart; the whole file was read instead
    # (1,000,000 rows of 1,000 hosts: 5.77 GB), however long.
    table = hosts(20, 30)  # 600 rows, 30 a host
    table.to_csv(tmp_path / "t.csv", index=False)
    frame, cap = cap_series(
        tmp_path / "t.csv", max_rows=250, time_column="ts", key_columns=["host"], seed=0
    )
    assert (cap.rows_read, cap.rows_kept, cap.series_read) == (600, 250, 20)
    assert len(frame) == 250 and list(frame.index) == list(range(250))
    assert (np.diff(frame["row"]) > 0).all()  # file order
    whole, cut = kept_series(frame, table)
    assert len(whole) == cap.series_kept == 8 and cut == {next(iter(cut)): 10}
    (part,) = cut
    latest = table[table["host"] == part].tail(10)  # its most recent rows: its last ten
    assert frame[frame["host"] == part]["row"].tolist() == latest["row"].tolist()
    # The same series from the file in another order, or chunked otherwise (two files).
    shuffled = table.sample(frac=1, random_state=1)
    shuffled.to_csv(tmp_path / "s.csv", index=False)
    again, _ = cap_series(tmp_path / "s.csv", max_rows=250, time_column="ts", key_columns=["host"])
    assert kept_series(again, table) == (whole, cut)
    assert sorted(again["row"]) == sorted(frame["row"])
    (tmp_path / "parts").mkdir()
    table.iloc[:77].to_csv(tmp_path / "parts" / "a.csv", index=False)
    table.iloc[77:].to_csv(tmp_path / "parts" / "b.csv", index=False)
    parts, _ = cap_series(tmp_path / "parts", max_rows=250, time_column="ts", key_columns=["host"])
    pd.testing.assert_frame_equal(parts, frame)
    other, _ = cap_series(
        tmp_path / "t.csv", max_rows=250, time_column="ts", key_columns=["host"], seed=1
    )
    assert kept_series(other, table)[0] != whole


def test_only_the_kept_series_rows_are_held(tmp_path, monkeypatch) -> None:
    table = hosts(20, 30)
    table.to_csv(tmp_path / "t.csv", index=False)
    chunks = chunks_read_never_whole(monkeypatch)
    frame, cap = cap_series(
        tmp_path / "t.csv", max_rows=250, time_column="ts", key_columns=["host"]
    )
    assert (len(frame), cap.rows_read) == (250, 600)
    assert sum(chunks) == 600 and max(chunks) <= 250


def test_one_series_keeps_its_most_recent_rows_by_time(tmp_path) -> None:
    table = hosts(1, 600).drop(columns="host")
    table.sample(frac=1, random_state=2).to_csv(tmp_path / "t.csv", index=False)  # any order
    frame, cap = cap_series(tmp_path / "t.csv", max_rows=250, time_column="ts")
    assert (cap.rows_read, cap.rows_kept, cap.series_read, cap.series_cut) == (600, 250, 1, 1)
    assert sorted(frame["row"]) == list(range(350, 600))  # a contiguous time range
    assert "read 600 rows of one series and kept its most recent 250 (--max-rows 250" in (
        cap.describe()
    )


@pytest.mark.parametrize("suffix", ["csv.gz", "parquet", "jsonl"])
def test_each_format_keeps_the_series_a_csv_keeps(tmp_path, suffix) -> None:
    table = hosts(20, 30)
    table.to_csv(tmp_path / "t.csv", index=False)
    path = tmp_path / f"t.{suffix}"
    if suffix == "parquet":
        table.to_parquet(path, index=False, row_group_size=100)
    elif suffix == "jsonl":
        table.to_json(path, orient="records", lines=True)
    else:
        table.to_csv(path, index=False, compression="gzip")
    flags: dict[str, Any] = {"max_rows": 250, "time_column": "ts", "key_columns": ["host"]}
    frame, cap = cap_series(path, **flags)
    assert cap.rows_read == 600
    pd.testing.assert_frame_equal(frame, cap_series(tmp_path / "t.csv", **flags)[0])
    for most in (600, 1_000_000):  # no more rows: read as it always was
        whole, cap = cap_series(path, **{**flags, "max_rows": most})
        assert not cap.capped
        pd.testing.assert_frame_equal(whole, read_table(path))


def test_rows_without_a_series_are_kept_and_stop_training_as_before(capsys, tmp_path) -> None:
    # Left out with the series not kept, a row with no key would train silently on one cap,
    # and stop the training on another.
    table = hosts(20, 30)
    table.loc[[5, 590], "host"] = ""
    table.to_csv(tmp_path / "t.csv", index=False)
    frame, _ = cap_series(tmp_path / "t.csv", max_rows=250, time_column="ts", key_columns=["host"])
    assert {5, 590} <= set(frame["row"])
    argv = ["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--time-column"]
    code, _, err = run(capsys, *argv, "ts", "--series-column", "host", "--max-rows", "250", *FLAGS)
    assert code == 2 and "cannot be placed in their series" in err and "no value for key" in err


def test_train_says_and_records_which_series_it_kept(capsys, tmp_path) -> None:
    from tests.conftest import fleet

    data = tmp_path / "fleet.csv"
    fleet(120).to_csv(data, index=False)  # 3 hosts, 360 rows
    out = tmp_path / "m"
    argv = ["train", str(data), "--out", str(out), "--time-column", "ts", "--series-column"]
    flags = [f for f in FLAGS if f != "--quiet"]
    code, said, err = run(capsys, *argv, "host", "--max-rows", "250", *flags)
    assert code == 0, err
    assert (
        "read 360 rows of 3 series and kept 250: 2 whole series and the most recent rows of one "
        "more, chosen by a seeded hash of each series' key (--max-rows 250; --max-rows 0 trains "
        "on every row)" in said
    )
    assert "training: read 360 rows, kept 250 (" in err
    assert "training: placing 250 rows in their series' windows" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data_fingerprint"]["rows"] == 250
    training = manifest["training"]
    assert (training["rows_read"], training["max_rows"]) == (360, 250)
    assert (training["series_read"], training["series_kept"], training["series_cut"]) == (3, 2, 1)
    code, said, _ = run(capsys, "info", str(out))
    assert code == 0
    assert (
        "(2 whole series and the most recent rows of one more of the 3 series and 360 rows read)"
        in said
    )


def test_a_series_file_under_the_cap_trains_the_very_same_bundle(capsys, tmp_path) -> None:
    from tests.conftest import fleet

    data = tmp_path / "fleet.csv"
    fleet(120).to_csv(data, index=False)
    argv = ["train", str(data), "--time-column", "ts", "--series-column", "host"]
    trained = manifests_under_caps(capsys, [*argv, *FLAGS], ("0", "360", "1000000"), tmp_path)
    assert not [said for said, _ in trained if "kept" in said]
    manifests = [manifest for _, manifest in trained]
    assert manifests[0]["version"] == manifests[1]["version"] == manifests[2]["version"]
    assert "rows_read" not in manifests[0]["training"]
    assert manifests[0]["training"] == manifests[1]["training"] == manifests[2]["training"]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_key_that_looks_like_a_number_is_one_series_in_every_chunk(
    capsys, tmp_path, suffix
) -> None:
    # Typed per chunk, host '007' was the number 7 in a chunk of number-like keys and the text
    # '007' in the next, beside 'web': one host read as two series (4 of 3).
    table = hosts(3, 300)
    table["host"] = table["host"].map({"h00": "8", "h01": "007", "h02": "web"})
    table = table.sort_values("host", kind="stable", key=lambda h: h.map({"8": 0, "007": 1}))
    data = tmp_path / f"t.{suffix}"
    if suffix == "jsonl":
        table.to_json(data, orient="records", lines=True)
    else:
        table.to_csv(data, index=False)
    argv = ["train", str(data), "--out", str(tmp_path / "m"), "--time-column", "ts"]
    flags = [f for f in FLAGS if f != "--quiet"]
    code, said, err = run(capsys, *argv, "--series-column", "host", "--max-rows", "450", *flags)
    assert code == 0, err
    assert "read 900 rows of 3 series and kept 450" in said
