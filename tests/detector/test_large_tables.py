"""Training on a table longer than ``--max-rows``: a seeded uniform sample, read in chunks, said
and recorded; a table of no more rows trains as it always did."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

import detector.io.frames
import detector.io.json_lines
from detector.cli.main import main
from detector.io.frames import read_table, sample_table
from tests.conftest import DATA
from tests.detector.caps import chunks_read_never_whole, manifests_under_caps
from tests.detector.test_cli import TINY_FLAGS, run

FLAGS = [*TINY_FLAGS[TINY_FLAGS.index("--hidden-units") :], "--epochs", "4"]


def numbered(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {"row": np.arange(rows), "x": rng.normal(size=rows), "kind": rng.choice(["a", "b"], rows)}
    )


def test_a_longer_table_gives_a_seeded_uniform_sample_in_file_order(tmp_path) -> None:
    path = tmp_path / "t.csv"
    numbered(1000).to_csv(path, index=False)
    frame, read = sample_table(path, max_rows=300, seed=0)
    assert read == 1000 and len(frame) == 300
    rows = frame["row"].to_numpy()
    assert (np.diff(rows) > 0).all()  # file order, no row twice
    assert list(frame.index) == list(range(300))
    # Uniform: not the first 300, and spread over the whole file.
    assert 0.4 < (rows >= 500).mean() < 0.6 and rows.max() > 900
    kept = read_table(path).set_index("row").loc[rows]
    np.testing.assert_array_equal(frame["x"].to_numpy(), kept["x"].to_numpy())
    assert sample_table(path, max_rows=300, seed=0)[0].equals(frame)
    assert not np.array_equal(sample_table(path, max_rows=300, seed=1)[0]["row"], rows)


def test_the_rows_left_out_are_never_held_together(tmp_path, monkeypatch) -> None:
    # read_table held a 3,000,000-row CSV whole (4.1 GB at its peak) to train on all of it.
    path = tmp_path / "t.csv"
    numbered(1000).to_csv(path, index=False)
    chunks = chunks_read_never_whole(monkeypatch)
    frame, read = sample_table(path, max_rows=300, seed=0)
    assert (len(frame), read) == (300, 1000)
    assert sum(chunks) == 1000 and max(chunks) <= 300


def test_a_long_json_lines_file_is_sampled_as_its_csv_is_never_held_whole(
    tmp_path, monkeypatch
) -> None:
    # A .jsonl was read whole (every record's text, then one CSV text of them all) before it
    # was cut into chunks: a long one was held whole, as a CSV no longer is.
    table = numbered(1000)
    table.to_csv(tmp_path / "t.csv", index=False)
    path = tmp_path / "t.jsonl"
    table.to_json(path, orient="records", lines=True)
    converted: list[int] = []  # rows made CSV text at once
    real = detector.io.frames.csv_bytes

    def spy(table: Any) -> bytes:
        converted.append(table.num_rows)
        return real(table)

    monkeypatch.setattr(detector.io.frames, "csv_bytes", spy)
    monkeypatch.setattr(detector.io.json_lines, "_BLOCK_LINES", 128)  # blocks unlike chunks
    frame, read = sample_table(path, max_rows=300, seed=0)
    assert (len(frame), read) == (300, 1000)
    assert sum(converted) == 1000 and max(converted) <= 300
    # The rows of the seeded draw, whatever the chunking: each row's key in file order.
    keys = np.random.default_rng(0).random(1000)
    assert list(frame["row"]) == sorted(np.argsort(keys)[:300])
    pd.testing.assert_frame_equal(frame, sample_table(tmp_path / "t.csv", max_rows=300)[0])
    # A file of no more rows is one chunk, read as it always was.
    for cap in (1000, 1_000_000):
        whole, read = sample_table(path, max_rows=cap, seed=0)
        assert read == 1000
        pd.testing.assert_frame_equal(whole, read_table(path))
        pd.testing.assert_frame_equal(whole, table)


def test_files_of_a_glob_are_sampled_as_one_table(tmp_path) -> None:
    table = numbered(900)
    table.iloc[:400].to_csv(tmp_path / "a.csv", index=False)
    table.iloc[400:, ::-1].to_csv(tmp_path / "b.csv", index=False)  # columns in another order
    frame, read = sample_table(tmp_path / "*.csv", max_rows=250, seed=3)
    assert read == 900 and len(frame) == 250 and list(frame.columns) == ["row", "x", "kind"]
    rows = frame["row"].to_numpy()
    assert (np.diff(rows) > 0).all() and (rows < 400).any() and (rows >= 400).any()


@pytest.mark.parametrize("suffix", ["csv", "csv.gz", "parquet"])
def test_a_table_of_no_more_rows_is_read_as_it_always_was(tmp_path, suffix) -> None:
    table = numbered(800)
    path = tmp_path / f"t.{suffix}"
    if suffix == "parquet":
        table.to_parquet(path, index=False, row_group_size=100)  # batches stop at row groups
    else:
        table.to_csv(path, index=False)
    for cap in (800, 1_000_000):
        frame, read = sample_table(path, max_rows=cap, seed=0)
        assert read == 800
        pd.testing.assert_frame_equal(frame, read_table(path))


def test_train_says_and_records_how_many_rows_it_read_and_kept(capsys, tmp_path) -> None:
    data = tmp_path / "t.csv"
    pd.read_csv(DATA / "train.csv").head(600).to_csv(data, index=False)
    out = tmp_path / "m"
    code, said, _ = run(capsys, "train", str(data), "--out", str(out), "--max-rows", "400", *FLAGS)
    assert code == 0
    assert "trained vae on 400 rows" in said
    assert (
        "read 600 rows and kept a uniform sample of 400 (--max-rows 400; --max-rows 0 trains on "
        "every row)" in said
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["rows"] == 400 and manifest["training"]["rows_read"] == 600
    code, said, _ = run(capsys, "info", str(out))
    assert code == 0 and "trained on 400 rows (a uniform sample of the 600 read)" in said


def test_a_table_under_the_cap_trains_the_very_same_bundle(capsys, tmp_path) -> None:
    data = tmp_path / "t.csv"
    pd.read_csv(DATA / "train.csv").head(600).to_csv(data, index=False)
    argv = ["train", str(data), *FLAGS]
    trained = manifests_under_caps(capsys, argv, ("0", "600", "1000000"), tmp_path)
    assert not [said for said, _ in trained if "uniform sample" in said]
    manifests = [manifest for _, manifest in trained]
    assert manifests[0]["version"] == manifests[1]["version"] == manifests[2]["version"]
    assert "rows_read" not in manifests[0]["training"]
    assert manifests[0]["training"] == manifests[1]["training"] == manifests[2]["training"]


@pytest.mark.parametrize("value", ["-1", "many", "10"])
def test_max_rows_must_be_a_count(capsys, tmp_path, value) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(DATA / "train.csv"), "--out", str(tmp_path / "m"), "--max-rows", value])
    assert exit_.value.code == 2
    assert "0 to train on every row" in capsys.readouterr().err


def test_a_series_file_of_no_more_rows_is_read_whole(capsys, tmp_path) -> None:
    # Sampling rows would tear each series' windows apart (a longer one keeps whole series:
    # tests/detector/test_series_cap.py).
    from tests.conftest import fleet

    data = tmp_path / "fleet.csv"
    fleet(120).to_csv(data, index=False)
    out = tmp_path / "m"
    argv = ["train", str(data), "--out", str(out), "--time-column", "ts", "--series-column"]
    flags = [f for f in FLAGS if f != "--quiet"]
    code, said, err = run(capsys, *argv, "host", "--max-rows", "360", *flags)
    assert code == 0 and "uniform sample" not in said and "kept" not in said
    rows = len(pd.read_csv(data))
    assert f"training: read {rows} rows (" in err
    assert f"training: placing {rows} rows in their series' windows" in err  # silent a minute
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data_fingerprint"]["rows"] == len(pd.read_csv(data))
    assert "rows_read" not in manifest["training"]


def test_a_sampled_tables_row_numbers_are_still_told_as_row_numbers(capsys, tmp_path) -> None:
    # Sampled, an id column no longer counts up by one, and training warned of it as of a
    # counter ("only rises ... like a counter (bytes_total)"), not as the row number it is.
    data = tmp_path / "t.csv"
    table = pd.read_csv(DATA / "train.csv").head(600)
    table.insert(0, "id", np.arange(1, 601))
    table.to_csv(data, index=False)
    for cap in ("400", "0"):
        out = tmp_path / f"m{cap}"
        code, said, err = run(
            capsys, "train", str(data), "--out", str(out), "--max-rows", cap, *FLAGS
        )
        assert code == 0
        told = said + err
        assert "column 'id' counts up by one from row to row, like a row number or id" in told
        assert "column 'id' only rises" not in told
    # A counter of the same table, sampled, is still told as a counter.
    table["id"] = np.arange(600) * 1000
    table.to_csv(data, index=False)
    code, said, err = run(
        capsys, "train", str(data), "--out", str(tmp_path / "c"), "--max-rows", "400", *FLAGS
    )
    assert code == 0 and "column 'id' only rises" in said + err
