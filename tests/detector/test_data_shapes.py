"""Tables in the shapes users export them: long (a row per metric), numbers written with units
or separators, epoch times as numbers, counters, mostly empty columns. Each trained silently
into a model that flagged every later row, or was refused with the wrong fix."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from detector.cli.main import main
from detector.errors import DataError, InputError, SchemaError
from detector.estimator import VAEDetector
from detector.features.schema import MAX_FEATURES, fit_schema

ROWS = 300


def table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"cpu": rng.uniform(5, 95, ROWS).round(), "mem": rng.normal(50, 5, ROWS)})


@pytest.mark.parametrize(
    ("values", "said"),
    [
        (1_790_000_000 + 60.0 * np.arange(ROWS), "holds times as epoch seconds"),
        (1_790_000_000_000 + 60_000.0 * np.arange(ROWS), "holds times as epoch milliseconds"),
    ],
)
def test_epoch_times_as_numbers_are_refused_as_times_are(values, said) -> None:
    # Learnt as a measurement: every later time lay beyond training's, 100% flagged.
    frame = table().assign(ts=values)
    with pytest.raises(InputError, match=rf"column 'ts' {said} .*time_column='ts'"):
        fit_schema(frame)
    fit_schema(table().assign(response_time=values))  # a duration's name: a measurement


@pytest.mark.parametrize(
    ("written", "said"),
    [
        (lambda v: f"{v:.0f}%", r"numbers written with a unit \('\d+%', \.\.\.\).*strip '%'"),
        (lambda v: f"{v:.0f} ms", r"numbers written with a unit .*strip 'ms'"),
        (lambda v: hex(int(v)), r"numbers in hexadecimal \('0x"),
        (lambda v: f"{v * 100:,.1f}", r"thousands separators .*thousands=','"),
        (lambda v: f"{v:.2f}".replace(".", ","), r"decimal comma .*decimal=','"),
        (lambda v: f"${v * 100:,.2f}", r"amounts written with a currency sign \('\$"),
        (lambda v: f"€ {v:.2f}", r"amounts written with a currency sign"),
        (lambda v: f"{v * 100:,.1f}".translate(str.maketrans(",.", ".,")), r"decimal comma"),
    ],
)
def test_numbers_written_as_text_are_told_so(written, said) -> None:
    # '28%' trained as a category of 72 labels (AUROC .91 against .99), silently; past 200
    # distinct values it was called an identifier, to be left out.
    frame = table()
    frame["cpu"] = frame["cpu"].map(written)
    with pytest.raises(InputError, match=said):
        fit_schema(frame)
    assert fit_schema(frame, categorical=["cpu"]).categorical[0].name == "cpu"  # labels, if so


def test_a_long_table_is_told_to_be_pivoted() -> None:
    # ts, host, metric, value: 'metric' a category and 'value' one number (AUROC .53).
    wide = table().assign(ts=np.arange(ROWS) * 60, host="web-01")
    long = wide.melt(id_vars=["ts", "host"], var_name="metric", value_name="value")
    with pytest.raises(SchemaError, match=r"looks long, a row per metric: 'metric' names it"):
        VAEDetector(epochs=1).fit(long.drop(columns=["ts"]))


def test_a_long_series_table_refusal_names_its_pivot(capsys, tmp_path) -> None:
    # With --time-column each metric's row was "a duplicate" of its time's first: fix or drop.
    wide = table().assign(ts=np.arange(ROWS) * 60, host="web-01")
    long = wide.melt(id_vars=["ts", "host"], var_name="metric", value_name="value")
    long.to_csv(tmp_path / "long.csv", index=False)
    argv = ["train", str(tmp_path / "long.csv"), "--out", str(tmp_path / "m"), "--time-column",
            "ts", "--series-column", "host"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pivot_table(index=['ts', 'host'], columns='metric', values='value')" in err, err


def test_a_counter_is_warned_of_and_a_mostly_empty_column_told_to_be_left_out(caplog) -> None:
    frame = table().assign(bytes_total=np.cumsum(np.random.default_rng(1).uniform(1, 5, ROWS)))
    with caplog.at_level("WARNING"):
        VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(frame)
    assert "column 'bytes_total' only rises from row to row, like a counter" in caplog.text
    assert "'cpu' only rises" not in caplog.text
    sparse = table().assign(gpu=np.nan)
    sparse.loc[:2, "gpu"] = 1.0
    with pytest.raises(InputError, match=r"'gpu' has 297 empty.*: drop it from the data, or"):
        fit_schema(sparse)


def test_a_label_column_named_as_scoring_output_points_at_label_column(capsys, tmp_path) -> None:
    # "rename them in the data" would have trained the labels as a measurement.
    table().assign(is_anomaly=0).to_csv(tmp_path / "t.csv", index=False)
    argv = ["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"),
            "--ignore-column", "is_anomaly"]  # fmt: skip
    assert main(argv) == 2
    assert "give --label-column is_anomaly instead" in capsys.readouterr().err


def test_a_counter_in_each_series_is_warned_of(caplog) -> None:
    # Hosts interleaved in time order: each host's bytes_total rises, the file's column does
    # not; modelled as a level, AUROC .71 against .85 without it.
    from tests.conftest import fleet

    frame = fleet(60)  # in time order: each host's counter counts on from its last row
    frame["bytes_total"] = frame.groupby("host")["mem"].cumsum() + frame["host"].map(
        {"web-01": 1e6, "web-02": 0.0, "db-01": 5e5}
    )
    frame = frame.sample(frac=1.0, random_state=0)  # any order: each series is sorted
    with caplog.at_level("WARNING"):
        VAEDetector(
            epochs=1, hidden_units=(8,), latent_dim=2, time_column="ts", series_columns=("host",)
        ).fit(frame)
    assert "column 'bytes_total' only rises from row to row" in caplog.text
    assert "'mem' only rises" not in caplog.text


def test_a_column_of_label_words_is_warned_of_whatever_its_name(caplog) -> None:
    # 'status' of normal/anomalous was trained on as a category, without a word.
    frame = table().assign(status=["normal"] * (ROWS - 10) + ["anomalous"] * 10)
    with caplog.at_level("WARNING"):
        VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(frame)
    assert "column 'status' looks like labels and is trained on as data" in caplog.text


def test_a_column_naming_each_rows_attack_is_warned_of_with_the_flags_to_use(caplog) -> None:
    # NSL-KDD's 'attack' (normal, neptune, smurf ...) was trained on as a 23-label category:
    # a security helper's 11,743 attacks learnt as normal, without a word.
    kinds = ["normal"] * (ROWS - 30) + ["neptune", "smurf", "back"] * 10
    with caplog.at_level("WARNING"):
        VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(table().assign(kind=kinds))
    assert "column 'kind' holds 'normal' beside 3 other value(s), like labels" in caplog.text
    caplog.clear()
    hosts = ["web-01", "web-02", "db-01"] * (ROWS // 3) + ["web-01"] * (ROWS % 3)
    with caplog.at_level("WARNING"):  # a category without the word: no warning
        VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(table().assign(kind=hosts))
    assert "like labels" not in caplog.text


def test_hostile_cells_in_the_shape_checks_are_refused_as_before() -> None:
    # A 'metric' column of objects (a Parquet struct) crashed the long-table check with
    # "unhashable type: 'dict'"; a 100,000-digit value with a unit went whole into the message.
    nested = pd.DataFrame({"metric": [{"a": 1}, {"b": 2}] * 50, "value": np.arange(100.0)})
    with pytest.raises(InputError, match="column 'metric' holds lists or objects"):
        VAEDetector(epochs=1).fit(nested)
    huge = table()
    huge["cpu"] = ["9" * 100_000 + "%"] * ROWS
    with pytest.raises(InputError, match=r"with a unit \('9{40}\.\.\.', \.\.\.\)") as told:
        fit_schema(huge)
    assert len(str(told.value)) < 2_000


def test_a_small_tables_measure_with_a_stray_word_is_refused_not_made_labels() -> None:
    # 60 rows: under 200 distinct values, 'cpu' with one 'oops' trained as 60 labels silently.
    frame = table().head(60).astype({"cpu": object})
    frame.loc[7, "cpu"] = "oops"
    with pytest.raises(
        InputError,
        match=r"'cpu' holds numbers but for 1 value\(s\) .*'oops', at row 8.*categorical=\[.cpu.\]",
    ):
        fit_schema(frame)
    codes = frame.assign(cpu=np.where(np.arange(60) % 3, "200", "404"))  # labels that are numbers
    codes.loc[7, "cpu"] = "TIMEOUT"
    assert fit_schema(codes).categorical[0].categories == ("200", "404", "TIMEOUT")


def test_a_huge_cell_is_named_not_kept_as_a_label() -> None:
    # A 100 MB cell in 41 rows became a label held in the manifest: a bundle of 100 MB that
    # its own loader refused ("it is not one this tool wrote").
    frame = table().head(41).astype({"cpu": object})
    frame.loc[40, "cpu"] = "1" + "x" * 200_000
    with pytest.raises(
        InputError, match=r"first '1xxxxxxx.*\.\.\. \(200,001 characters\)', at row 41"
    ):
        fit_schema(frame)
    frame["cpu"] = np.where(np.arange(41) % 2, "a", "b")
    frame.loc[40, "cpu"] = "y" * 20_000
    with pytest.raises(InputError, match=r"'cpu' holds a value of 20,000 characters \(at row 41;"):
        fit_schema(frame, categorical=["cpu"])


def test_a_table_too_wide_to_model_is_refused_naming_its_widest_columns(capsys, tmp_path) -> None:
    # 300 text columns of 150 labels: 45,300 features, 15 GB to train, a 532 MB bundle and 19
    # rows a second, with no word before.
    labels = np.array([f"v{i}" for i in range(150)])
    wide = pd.DataFrame({f"t{i}": np.roll(np.resize(labels, 600), i) for i in range(70)})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    assert main(["train", str(tmp_path / "wide.csv"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "encode to 10,570 features (0 numbers, 70 text columns" in err, err
    assert "over the 10,000 a model is trained on" in err and "--ignore-column COL" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("suffix", [".csv", ".tsv.gz", ".parquet"])
def test_a_header_too_wide_to_model_is_refused_before_the_rows_are_read(
    capsys, monkeypatch, tmp_path, suffix
) -> None:
    # A header of 1,000,000 columns was read with its rows (50 s, 3 GB) to end in "internal
    # error: MemoryError"; one of 100,000 took 30 s and 1.1 GB to be told it was too wide.
    import detector.io.frames

    def rows_read(*args: object, **kwargs: object) -> None:
        raise DataError("the rows were read")

    monkeypatch.setattr(detector.io.frames, "read_table", rows_read)
    monkeypatch.setattr(detector.io.frames, "iter_table", rows_read)  # --max-rows' chunks
    names = [f"c{i}" for i in range(MAX_FEATURES + 2)]
    path = tmp_path / f"wide{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({n: [1.0] for n in names}), path)
    else:
        sep = "\t" if suffix == ".tsv.gz" else ","
        # Rows that are no rows: read, they would be refused for what they are.
        text = (sep.join(names) + '\n\x00"garbage\n').encode()
        path.write_bytes(gzip.compress(text) if suffix.endswith(".gz") else text)
    assert main(["train", str(path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert f"cannot train on {path}: its header names 10,002 columns to model" in err, err
    assert "over the 10,000 a model is trained on" in err and "--ignore-column COL" in err
    assert "the rows were read" not in err and not (tmp_path / "m").exists()
    # Columns named for another role are not modelled: the 10,000 left are read, rows and all.
    argv = ["train", str(path), "--out", str(tmp_path / "m"), "--label-column", "c0"]
    assert main([*argv, "--ignore-column", "c1"]) == 2
    assert "the rows were read" in capsys.readouterr().err


def test_a_heavy_tailed_column_is_modelled_as_its_logarithm(tmp_path, capsys) -> None:
    """Amounts: the largest lay tens of scales out and the rest crowded near 0, so a distance
    saw little else (a fraud helper's AUROC .73, .89 given their logarithm)."""
    from detector.cli.main import main
    from detector.features.encode import decode, encode

    amount = np.random.default_rng(2).lognormal(3.0, 1.5, ROWS).round(2)
    frame = table().assign(amount=amount)
    detector = VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(frame)
    schema = detector.bundle_.schema
    assert detector.bundle_.logged_columns == ("amount",)  # cpu and mem are not heavy-tailed
    column = next(c for c in schema.numeric if c.name == "amount")
    assert column.log and column.maximum == pytest.approx(np.log1p(amount.max()))
    # Encoded as its logarithm, decoded (as `anomaly sample` draws) back in dollars.
    decoded = decode(schema, encode(schema, frame).values)["amount"]
    np.testing.assert_allclose(decoded, amount, rtol=1e-5)  # float32 encoding
    # A record scores as in a table, and a far larger amount higher; an empty one imputed
    # with the median in dollars.
    records = frame.head(3).assign(amount=[amount.max(), amount.max() * 100, np.nan])
    table_scores = detector.score_records(records, impute="median").anomaly_score
    assert table_scores[1] > table_scores[0]
    alone = detector.score_records({k: float(v) for k, v in records.iloc[1].items()})
    assert alone.anomaly_score[0] == table_scores[1]
    median = frame.iloc[[2]].assign(amount=float(column.raw(column.median)))  # in dollars
    assert column.raw(column.median) == pytest.approx(np.median(amount), rel=0.05)
    assert table_scores[2] == pytest.approx(detector.score_records(median).anomaly_score[0])
    # Said at training and by `info`; --raw-tails keeps it as it is.
    frame.to_csv(tmp_path / "t.csv", index=False)
    for flags, said in (([], True), (["--raw-tails"], False)):
        out = str(tmp_path / f"m{len(flags)}")
        assert main(["train", str(tmp_path / "t.csv"), "--out", out, "--epochs", "1", *flags]) == 0
        assert main(["info", out]) == 0
        text = capsys.readouterr().out
        assert text.count("modelled as their logarithm: 'amount' (--raw-tails") == 2 * said, text
