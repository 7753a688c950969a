"""Spark in local mode: the same scores and the same ledger as the streaming scorer.

Skipped, with the reason, where pyspark or Java is missing; in CI (``CI`` set) their absence
is a failure instead, so the Spark path cannot go untested there unnoticed.
"""

from __future__ import annotations

import codecs
import json
import os
import resource
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from detector.cli.main import main
from tests.conftest import DATA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


def _missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Java is not installed (Spark needs Java 17+)"
    return None


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Spark test: {reason}")
        pytest.skip(reason)
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYSPARK_PYTHON", sys.executable)
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        # The Python workers keep their copies of shipped bundles under the temporary folder
        # (spark_scoring.unpacked_bundle): the test run's own, so that runs do not pile them up.
        env.setenv("TMPDIR", str(tmp_path_factory.mktemp("spark-workers")))
        session = (
            SparkSession.builder.master("local[2]")
            .appName("anomaly-test")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


def test_without_pyspark_the_spark_engine_names_the_install(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    bundle_dir: Path,
    tmp_path: Path,
) -> None:
    # Installed without the extra, this was "internal error: ModuleNotFoundError" (exit 1):
    # the handler of Spark's own refusals imported pyspark itself.
    for name in [m for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("pyspark", "pyspark.sql", "pyspark.errors", "py4j", "py4j.protocol"):
        monkeypatch.setitem(sys.modules, name, None)  # import of it raises ImportError
    code = main(["score", str(bundle_dir), str(DATA / "eval.csv"), "--output",
                 str(tmp_path / "out.parquet"), "--engine", "spark"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--engine spark needs pyspark: pip install 'anomaly-detector[spark]'" in err


def test_spark_scores_and_accounts_like_the_streaming_scorer(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    from detector.batch.spark import score_files

    frame = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["label", "anomaly_kind"])
    parts = tmp_path / "parts"
    parts.mkdir()
    first = frame.iloc[:150].copy()
    first.loc[7, "cpu_pct"] = "oops"
    first.loc[9, "mem_pct"] = "nan"  # empty to the local reader: Spark's must agree
    first.to_csv(parts / "a.csv", index=False)
    with (parts / "b.csv").open("w") as handle:
        frame.iloc[150:300].to_csv(handle, index=False)
        handle.write("web-01,us-east,3\n")  # ragged

    out = tmp_path / "spark.parquet"
    report = score_files(str(bundle_dir), [str(parts)], str(out), session=spark)
    assert (
        main(["score", str(bundle_dir), str(parts), "--output", str(tmp_path / "s.csv"), "--json"])
        == 0
    )
    stream = json.loads(capsys.readouterr().out)

    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (301, 298, 3)
    assert (stream["rows_read"], stream["rows_scored"]) == (301, 298)
    assert [f.rows_read for f in report.files] == [150, 151]
    assert report.anomalies == stream["anomalies"]
    assert report.rejected_by_code == {"malformed": 1, "not_a_number": 1, "missing_value": 1}
    assert stream["rejected_by_code"] == {"not_a_number": 1, "missing_value": 1, "ragged": 1}

    scored = pd.read_parquet(out)
    streamed = pd.read_csv(tmp_path / "s.csv")
    key = ["host", "hour", "req_rate"]
    merged = scored.merge(streamed, on=key, suffixes=("_spark", "_stream"))
    assert len(merged) == 298 and scored["cpu_pct"].dtype == np.float64
    # Batches differ between the engines; float32 kernels may move the last digit.
    np.testing.assert_allclose(
        merged["anomaly_score_spark"], merged["anomaly_score_stream"], rtol=1e-6
    )
    assert (merged["top_feature_1_spark"] == merged["top_feature_1_stream"]).all()

    parts_written = sorted((tmp_path / "spark.parquet.rejects").glob("part-*.csv"))
    rejects = pd.concat([pd.read_csv(p) for p in parts_written if p.stat().st_size])
    assert sorted(rejects["code"]) == ["malformed", "missing_value", "not_a_number"]
    assert "'oops' is not a number" in " ".join(rejects["reason"])
    assert rejects["source"].str.endswith(("a.csv", "b.csv")).all()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    # A clean run to the same output: the rejects before would pass for its own.
    frame.iloc[:50].to_csv(tmp_path / "clean.csv", index=False)
    clean = score_files(str(bundle_dir), [str(tmp_path / "clean.csv")], str(out), session=spark)
    assert clean.rows_rejected == 0 and not (tmp_path / "spark.parquet.rejects").exists()


def test_spark_csv_holds_the_values_and_words_of_the_streaming_engine(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """Spark's CSV trimmed a kept '  5  ' to '5', wrote booleans as true/false, and its
    reasons named options as Python spells them (impute='median') on the command line; a kept
    'NA', 'None' or empty field came out empty (2026-12-07)."""
    from detector.batch.spark import score_files
    from detector.wording import speaking_to

    frame = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["label", "anomaly_kind"])
    frame = frame.head(40).assign(id=["  5  ", "NA", "None", "x"] * 10)
    frame.loc[4, "id"] = ""
    frame.loc[3, "cpu_pct"] = None
    frame.to_csv(tmp_path / "in.csv", index=False)
    with speaking_to("cli"):
        score_files(str(bundle_dir), [str(tmp_path / "in.csv")], str(tmp_path / "spark.csv"),
                    keep_columns=["id"], session=spark)  # fmt: skip
    parts = sorted((tmp_path / "spark.csv").glob("part-*.csv"))
    read = {"dtype": str, "keep_default_na": False}
    scored = pd.concat([pd.read_csv(p, **read) for p in parts if p.stat().st_size])
    assert sorted(scored["id"]) == sorted(frame.drop(index=3)["id"])  # row 3 is rejected
    assert set(scored["is_anomaly"]) <= {"True", "False"}
    rejects = sorted((tmp_path / "spark.csv.rejects").glob("part-*.csv"))
    (reason,) = pd.concat([pd.read_csv(p) for p in rejects if p.stat().st_size])["reason"]
    assert "--impute median" in reason


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": "cpu_pct"}, "b.parquet: missing column(s) ['cpu_pct']"),
        ({"add": "rid"}, "b.parquet: unknown column(s) ['rid']"),
    ],
)
def test_each_parquet_file_of_a_folder_is_checked_as_the_default_engine_checks_it(
    spark, capsys, bundle_dir: Path, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    # Spark reads a folder with its first file's columns: a file without a model column had
    # every row rejected (exit 0), one with another column had it dropped without a word.
    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(40)
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.head(20).to_parquet(folder / "a.parquet", index=False)
    other = frame.tail(20)
    other = other.drop(columns=change["drop"]) if "drop" in change else other.assign(rid=1)
    other.to_parquet(folder / "b.parquet", index=False)
    for engine in ("stream", "spark"):
        argv = ["score", str(bundle_dir), str(folder), "--engine", engine, "--quiet"]
        assert main([*argv, "--output", str(tmp_path / f"{engine}.parquet")]) == 2
        assert message in capsys.readouterr().err, engine


def test_csv_files_of_one_folder_in_other_column_orders_are_told_before_spark_reads(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # Spark reads every CSV file with the first one's header: a platform helper's reordered
    # file stopped the run after 17 s of Java trace; the default engine scores both.
    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(40)
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.head(20).to_csv(folder / "a.csv", index=False)
    frame.tail(20)[frame.columns[::-1]].to_csv(folder / "b.csv", index=False)
    argv = ["score", str(bundle_dir), str(folder), "--quiet", "--output"]
    assert main([*argv, str(tmp_path / "stream.csv")]) == 0
    assert main([*argv, str(tmp_path / "spark.parquet"), "--engine", "spark"]) == 2
    said = capsys.readouterr().err
    assert "b.csv holds the columns of" in said and "in another order" in said


def test_spark_writes_the_format_its_output_is_named(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # o.tsv was written comma-separated, o.parquet.gz as gzipped CSV parts, without a word.
    source = tmp_path / "in.csv"
    pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(30).to_csv(
        source, index=False
    )
    argv = ["score", str(bundle_dir), str(source), "--engine", "spark", "--quiet", "--output"]
    assert main([*argv, str(tmp_path / "o.tsv")]) == 0, capsys.readouterr().err
    parts = sorted((tmp_path / "o.tsv").glob("part-*"))
    scored = pd.concat([pd.read_csv(p, sep="\t") for p in parts if p.stat().st_size])
    assert len(scored) == 30 and "anomaly_score" in scored.columns
    assert main([*argv, str(tmp_path / "o.parquet.gz")]) == 2
    assert "name it .parquet" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet.gz").exists()


def test_a_killed_spark_run_is_cleaned_up_by_the_next(
    spark, bundle_dir: Path, tmp_path: Path
) -> None:
    # What a Spark run killed before its rename leaves: a staging folder of part files named
    # for its (now gone) process; the next run writing the same output removes it.
    from detector.batch.spark import score_files
    from detector.io.temporaries import partial_path
    from tests.detector.test_hostile_batch import dead_pid

    out = tmp_path / "spark.csv"
    ours = partial_path(out).name  # .spark.csv.HOST-PID-RANDOM.partial
    host = ours[len(".spark.csv.") : -len(".partial")].rsplit("-", 2)[0]
    left = tmp_path / f".spark.csv.{host}-{dead_pid()}-0123abcd.partial"
    left.mkdir()
    (left / "part-00000.csv").write_text("host\nweb-01\n")
    unrelated = tmp_path / ".spark.csv.notes"
    unrelated.write_text("not a name of ours")
    inputs = [str(DATA / "eval.csv")]
    keep = ("label", "anomaly_kind")
    score_files(str(bundle_dir), inputs, str(out), keep_columns=keep, session=spark)
    assert out.is_dir() and not left.exists() and unrelated.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_workers_share_one_copy_of_a_shipped_bundle(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spark ends its Python workers with os._exit, so a copy per worker would stay behind.
    import tempfile

    from detector.batch.spark_scoring import _WorkerBundles, bundle_files
    from detector.io.temporaries import staging_path
    from tests.detector.test_hostile_batch import dead_pid

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    files = bundle_files(bundle_dir)
    first, second = _WorkerBundles(), _WorkerBundles()
    one = first.get("digest", files, str(bundle_dir))
    copies = list(tmp_path.glob("anomaly-bundles-*/*"))
    assert len(copies) == 1 and one.path == copies[0]
    assert {p.name: p.read_bytes() for p in copies[0].iterdir()} == files
    # A worker killed while writing its copy of another bundle left it half written.
    left = staging_path(copies[0].with_name("other"), "tmp")
    left = left.with_name(f"{left.name.rsplit('-', 2)[0]}-{dead_pid()}-0123abcd")
    left.mkdir()
    two = second.get("digest", files, str(bundle_dir))
    assert two.path == one.path and left.exists()
    three = second.get("other", files, str(bundle_dir))
    assert not left.exists() and three.path == copies[0].with_name("other")
    assert len(list(tmp_path.glob("anomaly-bundles-*/*"))) == 2


def test_spark_windows_each_series_as_the_local_scorer_does(spark, tmp_path: Path) -> None:
    from detector.batch.spark import score_files
    from detector.estimator import VAEDetector
    from tests.conftest import TINY, fleet

    model = tmp_path / "fleet"
    series = {"time_column": "ts", "series_columns": ("host",), "window": 3}
    VAEDetector(**series, **TINY).fit(fleet(200)).save(model)
    stream = fleet(30, start="2026-01-02", seed=1).astype({"cpu": str})
    stream.loc[4, "cpu"] = "oops"  # rejected, and kept out of its host's series
    stream.loc[9, "ts"] = "later"
    parts = tmp_path / "parts"
    parts.mkdir()
    # Two files, each holding every host; the second's rows before the first's.
    stream.iloc[45:].to_csv(parts / "a.csv", index=False)
    stream.iloc[:45].to_csv(parts / "b.csv", index=False)
    out = tmp_path / "spark.parquet"
    report = score_files(str(model), [str(parts)], str(out), session=spark)
    local = tmp_path / "local.csv"
    assert main(["score", str(model), str(parts / "b.csv"), str(parts / "a.csv"),
                 "--output", str(local)]) == 0  # fmt: skip

    scored = pd.read_parquet(out).sort_values(["host", "ts"], ignore_index=True)
    streamed = pd.read_csv(local).sort_values(["host", "ts"], ignore_index=True)
    assert report.rows_read == 90 and report.rows_rejected == len(stream) - len(streamed)
    # The first 2 placed rows of each host warm up ('oops' is kept out of web-02's series).
    assert len(scored) == len(streamed) and scored["warming_up"].sum() == 3 * 2
    np.testing.assert_allclose(scored["anomaly_score"], streamed["anomaly_score"], rtol=1e-5)
    assert (scored["warming_up"] == streamed["warming_up"]).all()


def test_spark_loses_no_row_of_a_hostile_file_and_names_columns_as_the_local_reader(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """Found by trying: a stray quote on line 21 of 200 made Spark read the rest of the file as
    one record ("rows read 20"), a header with spaces around its names was "missing ...
    unknown ' region '", and a byte that is not UTF-8 was scored as an unseen category."""
    from detector.batch.spark import score_files
    from detector.errors import DataError

    frame = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["label", "anomaly_kind"])
    lines = frame.iloc[:200].to_csv(index=False).splitlines()
    lines[0] = " , ".join(lines[0].split(","))
    lines[5] += ",extra"  # ragged
    lines[21] = '"' + lines[21]  # a quote never closed
    text = ("\n".join(lines) + "\n").encode()
    host = lines[40].split(",")[0].encode()
    text = text.replace(b"\n" + host + b",", b"\ncaf\xe9,", 1)  # one record's host garbled
    path = tmp_path / "hostile.csv"
    path.write_bytes(text)

    report = score_files(str(bundle_dir), [str(path)], str(tmp_path / "k.parquet"), session=spark)
    assert (
        main(["score", str(bundle_dir), str(path), "--output", str(tmp_path / "s.csv"), "--json"])
        == 0
    )
    stream = json.loads(capsys.readouterr().out)
    assert (
        (report.rows_read, report.rows_scored)
        == (200, 197)
        == (
            stream["rows_read"],
            stream["rows_scored"],
        )
    )
    assert report.rejected_by_code == {"malformed": 2, "encoding": 1}
    assert stream["rejected_by_code"] == {"ragged": 1, "unbalanced_quote": 1, "encoding": 1}

    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("\n".join(line.replace(",", ";") for line in lines[:3]) + "\n")
    with pytest.raises(DataError, match="its fields look separated by ';'"):
        score_files(str(bundle_dir), [str(semicolons)], str(tmp_path / "x.parquet"), session=spark)


@pytest.mark.parametrize("flag", ["--output", "--rejects"])
def test_spark_refuses_to_replace_a_folder_of_other_files(
    spark, capsys, bundle_dir: Path, tmp_path: Path, flag: str
) -> None:
    # The folder was deleted with the user's files in it, the rejects one even by a run that
    # rejected nothing.
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "q3.txt").write_text("precious")
    source = tmp_path / "in.csv"
    pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(20).to_csv(
        source, index=False
    )
    targets = {"--output": str(tmp_path / "out"), "--rejects": str(tmp_path / "out.rejects")}
    targets[flag] = str(folder)
    argv = ["score", str(bundle_dir), str(source), "--engine", "spark", "--quiet"]
    code = main([*argv, "--output", targets["--output"], "--rejects", targets["--rejects"]])
    assert (
        code == 2 and "holding files Spark did not write (e.g. 'q3.txt')" in capsys.readouterr().err
    )
    assert (folder / "q3.txt").read_text() == "precious"
    # A folder an earlier Spark run wrote is replaced as before.
    targets[flag] = str(tmp_path / "again")
    argv += ["--output", targets["--output"], "--rejects", targets["--rejects"]]
    assert main(argv) == 0 and main(argv) == 0, capsys.readouterr().err


def test_an_input_spark_cannot_read_is_an_error_not_its_java_stack(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # "internal error: Py4JJavaError ... please report it" and hundreds of lines of Java.
    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(20)
    whole = tmp_path / "whole.parquet"
    frame.to_parquet(whole)
    (tmp_path / "cut.parquet").write_bytes(whole.read_bytes()[:-100])
    argv = ["score", str(bundle_dir), str(tmp_path / "cut.parquet"), "--engine", "spark"]
    code = main([*argv, "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Spark could not read ") and "\tat " not in err
    assert "score it without --engine spark" in err and not (tmp_path / "out").exists()


def test_spark_reads_a_series_instants_whatever_the_session_zone(spark, tmp_path: Path) -> None:
    """Spark hands pandas its timestamps as the session zone's wall-clock times, which were
    read as UTC: on a machine set to Asia/Kolkata 716 of 800 scores differed from the default
    engine's, and reasons named times 5:30 off while saying Z."""
    from detector.batch.spark_scoring import score_dataframe
    from detector.estimator import VAEDetector
    from tests.conftest import TINY, fleet

    model = tmp_path / "fleet"
    series = {"time_column": "ts", "series_columns": ("host",), "window": 3}
    VAEDetector(**series, **TINY).fit(fleet(200)).save(model)
    stream = fleet(30, start="2026-01-02", seed=1)
    stream["ts"] = pd.to_datetime(stream["ts"], utc=True)
    stream.loc[7, "ts"] = stream.loc[4, "ts"]  # a repeated time, named in its reason
    source = tmp_path / "in.parquet"
    stream.to_parquet(source)
    local = tmp_path / "local.csv"
    assert main(["score", str(model), str(source), "--output", str(local), "--quiet"]) == 0
    zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Asia/Kolkata")
    try:
        written = tmp_path / "spark.parquet"
        score_dataframe(spark.read.parquet(str(source)), model).write.parquet(str(written))
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)
    scored = pd.read_parquet(written)
    assert "_anomaly_epoch_seconds" not in scored.columns
    kept = scored[scored["reject_code"].isna()].sort_values(["host", "anomaly_score"])
    streamed = pd.read_csv(local).sort_values(["host", "anomaly_score"])
    np.testing.assert_allclose(kept["anomaly_score"], streamed["anomaly_score"], rtol=1e-5)
    (reason,) = scored["reject_reason"].dropna()
    assert stream.loc[4, "ts"].strftime("%Y-%m-%dT%H:%M:%SZ") in reason


def test_spark_writes_timestamps_as_instants_as_the_local_engine_does(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """Spark's default Parquet timestamps (INT96) read back as zone-less times, so the two
    engines' outputs of one input did not even join on their time column."""
    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(50)
    frame["seen_at"] = pd.date_range("2026-11-01", periods=50, freq="min", tz="UTC")
    source = tmp_path / "in.parquet"
    frame.to_parquet(source)
    for engine in ("spark", "stream"):
        argv = ["score", str(bundle_dir), str(source), "--keep-column", "seen_at"]
        out = tmp_path / f"{engine}.parquet"
        assert main([*argv, "--output", str(out), "--engine", engine, "--quiet"]) == 0, (
            capsys.readouterr().err
        )
        written = pd.read_parquet(out).sort_values("seen_at")
        assert str(written["seen_at"].dt.tz) == "UTC"
        pd.testing.assert_series_equal(
            written["seen_at"].reset_index(drop=True),
            frame["seen_at"].astype(written["seen_at"].dtype),
        )


def test_spark_refuses_an_input_holding_a_column_scoring_adds(
    spark, bundle_dir: Path, tmp_path: Path
) -> None:
    # --keep-column p_value (or reject_code) was an AMBIGUOUS_REFERENCE internal error.
    from detector.batch.spark import score_files
    from detector.errors import SchemaError

    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(20)
    path = tmp_path / "in.csv"
    frame.assign(p_value=0.5, reject_code="x").to_csv(path, index=False)
    with pytest.raises(SchemaError, match=r"already has column\(s\) \['p_value', 'reject_code'\]"):
        score_files(
            str(bundle_dir),
            [str(path)],
            str(tmp_path / "out.parquet"),
            keep_columns=["p_value", "reject_code"],
            session=spark,
        )


def test_spark_refuses_a_column_named_like_one_scoring_adds_in_another_case(
    spark, bundle_dir: Path, tmp_path: Path
) -> None:
    # Spark tells names apart without regard to case (spark.sql.caseSensitive is false): a
    # kept Anomaly_Score was an AMBIGUOUS_REFERENCE internal error, its Java stack logged. The
    # default engine, which tells them apart, writes both.
    from detector.batch.spark import score_files
    from detector.errors import SchemaError

    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(20)
    path = tmp_path / "in.csv"
    frame.assign(Anomaly_Score="mine", TOP_FEATURE_1="x").to_csv(path, index=False)
    with pytest.raises(SchemaError) as err:
        score_files(
            str(bundle_dir),
            [str(path)],
            str(tmp_path / "out.parquet"),
            keep_columns=["Anomaly_Score", "TOP_FEATURE_1"],
            session=spark,
        )
    said = str(err.value)
    assert "already has column(s) ['Anomaly_Score', 'TOP_FEATURE_1']" in said
    assert "without regard to case" in said


def test_spark_warns_of_a_label_in_another_case_as_the_streaming_engine_does(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # 'US-EAST' where training saw 'us-east': the default engine warned naming the column, the
    # values and training's spelling (--json: category_spelling); --engine spark said nothing.
    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(100)
    frame.assign(region=frame["region"].str.upper()).to_csv(tmp_path / "upper.csv", index=False)
    frame.to_csv(tmp_path / "asis.csv", index=False)
    said = {}
    for engine in ("stream", "spark"):
        argv = ["score", str(bundle_dir), str(tmp_path / "upper.csv"), "--engine", engine,
                "--output", str(tmp_path / f"{engine}.parquet")]  # fmt: skip
        assert main(argv) == 0
        said[engine] = capsys.readouterr().out
        assert main([*argv, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["category_spelling"] is not None
        assert f"warning: {report['category_spelling']}" in said[engine]
    assert "column 'region': 100 values (" in said["spark"]
    assert "'US-EAST' for 'us-east'" in said["spark"]
    assert "write it as training did" in said["spark"]
    argv = ["score", str(bundle_dir), str(tmp_path / "asis.csv"), "--engine", "spark",
            "--output", str(tmp_path / "asis.parquet")]  # fmt: skip
    assert main(argv) == 0
    assert "only in case" not in capsys.readouterr().out
    written = pd.read_parquet(tmp_path / "spark.parquet")
    assert not [c for c in written.columns if c.startswith("_")]


def test_both_engines_warn_of_labels_in_another_case_in_the_same_words(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # Of more values than the warning shows, the default engine named the first seen and the
    # Spark engine the first in sorted order ('WEB-03', 'WEB-04', 'WEB-05' against 'WEB-01',
    # 'WEB-02', 'WEB-03'), its columns ordered by name where the other's came as seen. Both now
    # name the columns by name and the first few values in sorted order, whatever the batches.
    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(200)
    upper = frame.assign(region=frame["region"].str.upper(), host=frame["host"].str.upper())
    parts = tmp_path / "parts"
    parts.mkdir()
    late = upper["host"] >= sorted(upper["host"].unique())[3]
    upper[late].to_csv(parts / "a.csv", index=False)  # hosts first seen are not the first
    upper[~late].to_csv(parts / "b.csv", index=False)
    said = {}
    for engine in ("stream", "spark"):
        argv = ["score", str(bundle_dir), str(parts), "--engine", engine, "--json",
                "--output", str(tmp_path / f"{engine}.parquet")]  # fmt: skip
        assert main(argv) == 0
        said[engine] = json.loads(capsys.readouterr().out)["category_spelling"]
    assert said["stream"] == said["spark"]
    hosts = sorted(upper["host"].unique())[:3]
    shown = ", ".join(f"{h!r} for {h.lower()!r}" for h in hosts)
    assert f"column 'host': 200 values ({shown}); column 'region'" in said["spark"]


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_spark_reads_a_csv_in_another_encoding_as_the_default_engine_does(
    spark, capsys, bundle_dir: Path, tmp_path: Path, encoding: str
) -> None:
    # --engine spark refused --encoding ("reads UTF-8 text: convert the files once"). Spark's
    # CSV reader decodes in Latin-1 as it is, in cp1252 (Spark 4 takes it only as a "legacy"
    # Java charset); a byte cp1252 leaves undefined rejects its row in both engines.
    frame = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["label", "anomaly_kind"])
    frame = frame.head(60).assign(id=[f"r{i}" for i in range(60)])
    frame.loc[::3, "host"] = "café-01"  # an unseen host, as any other
    frame.loc[1::3, "id"] = "Müller " + frame["id"]
    frame.loc[5, "host"] = "web-x"
    text = frame.to_csv(index=False).encode(encoding)
    if encoding == "cp1252":
        text = text.replace(b"\nweb-x,", b"\nweb-\x81,")  # no character of cp1252
    path = tmp_path / "in.csv"
    path.write_bytes(text)
    scored, reports = {}, {}
    for engine in ("stream", "spark"):
        out = tmp_path / f"{engine}.parquet"
        argv = ["score", str(bundle_dir), str(path), "--engine", engine, "--encoding", encoding,
                "--keep-column", "id", "--json", "--output", str(out)]  # fmt: skip
        assert main(argv) == 0
        reports[engine] = json.loads(capsys.readouterr().out)
        scored[engine] = pd.read_parquet(out).sort_values("id")
    undefined = 1 if encoding == "cp1252" else 0
    for report in reports.values():
        assert (report["rows_read"], report["rows_scored"]) == (60, 60 - undefined)
        assert report["encoding"] == codecs.lookup(encoding).name
    spark_rows, stream_rows = scored["spark"], scored["stream"]
    assert list(spark_rows["host"]) == list(stream_rows["host"])
    assert (spark_rows["host"] == "café-01").sum() == 20
    assert list(spark_rows["id"]) == list(stream_rows["id"])
    assert (spark_rows["id"].str.startswith("Müller ")).sum() == 20
    np.testing.assert_allclose(spark_rows["anomaly_score"], stream_rows["anomaly_score"], rtol=1e-6)
    if undefined:
        rejects = sorted((tmp_path / "spark.parquet.rejects").glob("part-*.csv"))
        (reason,) = pd.concat([pd.read_csv(p) for p in rejects if p.stat().st_size])["reason"]
        (stream_reason,) = pd.read_csv(tmp_path / "stream.parquet.rejects.csv")["reason"]
        assert reason.startswith("not cp1252 text; the file may be in an encoding other")
        assert stream_reason.startswith(reason)
        # An encoding Java has no charset of is refused, naming the ways out.
        argv = ["score", str(bundle_dir), str(path), "--engine", "spark", "--encoding",
                "mac-roman", "--output", str(tmp_path / "mac.parquet")]  # fmt: skip
        assert main(argv) == 2
        assert "Java's charsets, which have none of that name" in capsys.readouterr().err


def test_a_byte_not_utf8_in_a_kept_column_rejects_its_row_in_both_engines(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # Spark decodes a byte that is not UTF-8 as U+FFFD: in a --keep-column column it wrote
    # 'n\ufffdne' out and scored the row (rows scored 20 of 20), which the default engine
    # rejects as not UTF-8 text (19 of 20).
    frame = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["label"]).head(20)
    text = frame.to_csv(index=False).encode().replace(b",none\n", b",n\xe9ne\n", 1)
    path = tmp_path / "in.csv"
    path.write_bytes(text)
    reports = {}
    for engine in ("stream", "spark"):
        out = tmp_path / f"{engine}.parquet"
        argv = ["score", str(bundle_dir), str(path), "--engine", engine,
                "--keep-column", "anomaly_kind", "--json", "--output", str(out)]  # fmt: skip
        assert main(argv) == 0
        reports[engine] = json.loads(capsys.readouterr().out)
        assert "\ufffd" not in "".join(pd.read_parquet(out)["anomaly_kind"])
    for report in reports.values():
        assert (report["rows_read"], report["rows_scored"]) == (20, 19)
        assert report["rejected_by_code"] == {"encoding": 1}
    parts = sorted((tmp_path / "spark.parquet.rejects").glob("part-*.csv"))
    (reason,) = pd.concat([pd.read_csv(p) for p in parts if p.stat().st_size])["reason"]
    (stream_reason,) = pd.read_csv(tmp_path / "stream.parquet.rejects.csv")["reason"]
    assert reason.startswith("not UTF-8 text; give its encoding (--encoding cp1252)")
    assert stream_reason.startswith(reason)


def test_a_callers_session_keeps_its_own_settings_after_a_run(
    spark, bundle_dir: Path, tmp_path: Path
) -> None:
    # A cp1252 run left spark.sql.legacy.javaCharsets true in the caller's session (every
    # later read of it could take Java's legacy charsets), and every run its zone set to UTC.
    from detector.batch.spark import score_files

    frame = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["label", "anomaly_kind"])
    path = tmp_path / "in.csv"
    path.write_bytes(frame.head(20).to_csv(index=False).encode("cp1252"))
    charsets, zone = "spark.sql.legacy.javaCharsets", "spark.sql.session.timeZone"
    spark.conf.set(charsets, "false")
    spark.conf.set(zone, "Asia/Kolkata")
    try:
        report = score_files(str(bundle_dir), [str(path)], str(tmp_path / "o.parquet"),
                             encoding="cp1252", session=spark)  # fmt: skip
        assert report.rows_scored == 20
        assert (spark.conf.get(charsets), spark.conf.get(zone)) == ("false", "Asia/Kolkata")
        spark.conf.unset(charsets)
        spark.conf.unset(zone)
        score_files(str(bundle_dir), [str(path)], str(tmp_path / "o.parquet"),
                    encoding="cp1252", session=spark)  # fmt: skip
        assert charsets not in spark.conf.getAll and zone not in spark.conf.getAll
    finally:
        spark.conf.unset(charsets)
        spark.conf.unset(zone)


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux's prlimit")
def test_a_write_the_disk_refuses_is_named_and_leaves_nothing(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """Measured on a full 2 MiB tmpfs: 'error: Spark could not read big.csv: ...
    [TASK_WRITE_FAILED] ...; score it without --engine spark' (exit 2), the rejects already in
    place and the output's staging folder left beside them, where the default engine says
    'No space left on device (PATH): ...; no output was written' and leaves nothing. Here
    the JVM's file size limit (ulimit -f) refuses the scores' write as a full disk does."""
    frame = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["label", "anomaly_kind"])
    frame.loc[::50, "cpu_pct"] = "oops"  # rejects, written (and refused nothing) first
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)  # ~450 kB of scores
    argv = ["score", str(bundle_dir), str(source), "--engine", "spark", "--quiet"]
    # The Python workers started first, under no limit: they write the shipped bundle.
    assert main([*argv, "--output", str(tmp_path / "warm.csv")]) == 0
    for name in ("warm.csv", "warm.csv.rejects"):
        shutil.rmtree(tmp_path / name)
    jvm = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    limits = resource.prlimit(jvm, resource.RLIMIT_FSIZE)
    resource.prlimit(jvm, resource.RLIMIT_FSIZE, (200_000, limits[1]))
    try:
        code = main([*argv, "--output", str(tmp_path / "out.csv")])
    finally:
        resource.prlimit(jvm, resource.RLIMIT_FSIZE, limits)
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"error: File too large ({tmp_path / 'out.csv'}): " in err, err
    assert "no output was written" in err and "could not read" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


def test_a_replacement_character_in_parquet_is_scored_by_both_engines(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # Parquet holds text, not bytes to decode: its U+FFFD is a character of the file's, which
    # the default engine scores (20 of 20), where Spark rejected each such row as 'not UTF-8
    # text; give its encoding (--encoding cp1252)', an option Parquet has no use for (18).
    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label"]).head(20)
    frame.loc[3, "anomaly_kind"] = "n\ufffdne"
    frame.loc[5, "host"] = "web-\ufffd"  # an unseen host, as any other
    source = tmp_path / "in.parquet"
    frame.to_parquet(source)
    for engine in ("stream", "spark"):
        out = tmp_path / f"{engine}.parquet"
        argv = ["score", str(bundle_dir), str(source), "--engine", engine, "--json",
                "--keep-column", "anomaly_kind", "--output", str(out)]  # fmt: skip
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["rows_scored"] == 20, engine


def test_a_header_not_utf8_is_refused_in_the_default_engines_words(
    spark, capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # Spark read the byte as U+FFFD, and the refusal was "unknown column(s) ['label',
    # 'anomaly_k\ufffdnd'] (drop them, or keep them ... --keep-column 'anomaly_k\ufffdnd')".
    text = (DATA / "eval.csv").read_bytes()[:3000].rsplit(b"\n", 1)[0] + b"\n"
    path = tmp_path / "in.csv"
    path.write_bytes(text.replace(b"anomaly_kind", b"anomaly_k\xefnd", 1))
    said = {}
    for engine in ("stream", "spark"):
        argv = ["score", str(bundle_dir), str(path), "--engine", engine,
                "--output", str(tmp_path / f"{engine}.parquet")]  # fmt: skip
        assert main(argv) == 2
        said[engine] = capsys.readouterr().err.strip().splitlines()[-1]
    assert said["spark"] == said["stream"]
    assert said["spark"] == (
        f"error: the header of {path} is not UTF-8 text; give its encoding (--encoding "
        "cp1252), or re-save it as UTF-8"
    )
    # Only the first file's header was checked: a later one's ended in "Spark could not read
    # two: ... [FAILED_READ_FILE.NO_HINT] ... b.csv".
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "a.csv").write_bytes(text)
    path.rename(folder / "b.csv")
    for engine in ("stream", "spark"):
        argv = ["score", str(bundle_dir), str(folder), "--engine", engine, "--keep-column",
                "label", "--keep-column", "anomaly_kind",
                "--output", str(tmp_path / f"{engine}-two.parquet")]  # fmt: skip
        assert main(argv) == 2
        said[engine] = capsys.readouterr().err.strip().splitlines()[-1]
    assert said["spark"] == said["stream"]
    assert said["spark"].startswith(f"error: the header of {folder / 'b.csv'} is not UTF-8 text")
