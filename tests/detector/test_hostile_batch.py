"""Batch scoring against hostile input: stray quotes cost only the records they break, whether
a column holds numbers does not depend on where chunks fall, and a killed run's leftovers are
cleaned by the next one."""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.batch.files import score_file
from detector.bundles.bundle import load_bundle, save_bundle
from detector.cli.main import main
from detector.errors import DataError, SchemaError
from detector.io import csv_lines, csv_source
from detector.io import frames as csv_tables
from detector.io.sources import open_source
from detector.io.temporaries import partial_path, remove_stale_temporaries, staging_path
from detector.io.writers import TableWriter
from tests.conftest import DATA

pytestmark = pytest.mark.slow

EVAL = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["label", "anomaly_kind"])
HEADER = ",".join(EVAL.columns)
CPU = list(EVAL.columns).index("cpu_pct")


def records(n: int) -> list[list[str]]:
    """``n`` clean records of data/eval.csv (repeated as needed), as lists of fields."""
    rows = EVAL.to_numpy().tolist()
    return [list(rows[i % len(rows)]) for i in range(n)]


def write(path: Path, rows: list[list[str]] | list[str]) -> Path:
    lines = [r if isinstance(r, str) else ",".join(r) for r in rows]
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def score(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = main(["score", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


def rejects_of(ledger: dict) -> pd.DataFrame:
    if not ledger.get("rejects"):
        return pd.DataFrame(columns=["row", "source", "line", "code", "reason", "raw"])
    return pd.read_csv(ledger["rejects"], keep_default_na=False)


# -- stray quotes ------------------------------------------------------------------------


def with_quote(row: list[str], column: int, text: str) -> str:
    return ",".join([*row[:column], text, *row[column + 1 :]])


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        # A quote opening a field, never closed: its line alone is rejected.
        ({100: lambda r: with_quote(r, 1, '"' + r[1])}, [100]),
        # Inside a field a quote is text (as Arrow and Python's csv read it): nothing is lost.
        ({100: lambda r: with_quote(r, 0, r[0][:2] + '"' + r[0][2:])}, []),
        # Two stray quotes a few lines apart: the quote of row 20 "closes" on row 25 into a
        # record of the wrong width; both lines are rejected, the four between them scored.
        (
            {20: lambda r: with_quote(r, 1, '"' + r[1]), 25: lambda r: with_quote(r, 5, '"x')},
            [20, 25],
        ),
        # Far apart (more lines than a record may span) and on the very last line.
        (
            {
                3: lambda r: with_quote(r, 2, '"' + r[2]),
                150: lambda r: with_quote(r, 2, '"' + r[2]),
                200: lambda r: with_quote(r, 12, '"' + r[12]),
            },
            [3, 150, 200],
        ),
    ],
    ids=["opening-quote", "quote-inside-a-field", "two-close-together", "far-apart-and-last"],
)
def test_a_stray_quote_costs_only_the_records_it_breaks(
    capsys, bundle_dir: Path, tmp_path: Path, broken: dict, expected: list[int]
) -> None:
    rows = records(200)
    lines = [broken[i + 1](row) if i + 1 in broken else ",".join(row) for i, row in enumerate(rows)]
    path = write(tmp_path / "in.csv", lines)
    output = tmp_path / "out.csv"
    code, ledger, err = score(capsys, str(bundle_dir), str(path), "--output", str(output))
    assert code == 0, err
    assert ledger["rows_read"] == 200
    assert ledger["rows_scored"] == 200 - len(expected)
    assert ledger["rows_rejected"] == len(expected)
    rejects = rejects_of(ledger)
    assert rejects["row"].tolist() == expected
    assert rejects["line"].tolist() == [r + 1 for r in expected]  # the header is line 1
    assert set(rejects["code"]) <= {"unbalanced_quote"}
    for reject in rejects.itertuples():
        assert "unbalanced quote" in reject.reason and f"line {reject.line}" in reject.reason
        assert reject.raw == lines[reject.row - 1]
    # Every other record is scored, in order, with its own text.
    scored = pd.read_csv(output, dtype=str, keep_default_na=False)
    kept = [i for i in range(200) if i + 1 not in expected]
    assert scored["req_rate"].tolist() == [rows[i][3] for i in kept]


def test_a_stray_quote_does_not_depend_on_the_file_size(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~8 MB, parsed in 256 KB blocks: stray quotes on the first record, on lines around block
    ends, near the end, and a quoted field that legitimately spans lines."""
    monkeypatch.setattr(csv_source, "MAX_BLOCK_BYTES", 256 << 10)
    n = 90_000
    rows = records(n)
    lines = [",".join(row) for row in rows]
    stray = [1, 2_999, 3_000, 3_001, 45_000, 89_990]
    for r in stray:
        lines[r - 1] = with_quote(rows[r - 1], 1, '"' + rows[r - 1][1])
    lines[60_000 - 1] = with_quote(rows[60_000 - 1], 1, '"' + rows[60_000 - 1][1] + '\nx"')
    path = write(tmp_path / "big.csv", lines)
    assert path.stat().st_size > 7e6
    bundle = load_bundle(bundle_dir)
    report = score_file(bundle, str(path), tmp_path / "out.csv")
    assert (report.rows_read, report.rows_rejected) == (n, len(stray))
    assert report.rows_scored == n - len(stray)
    rejects = pd.read_csv(report.rejects, keep_default_na=False)
    assert rejects["row"].tolist() == stray
    assert rejects["line"].tolist() == [r + 1 for r in stray[:5]] + [stray[5] + 2]
    assert (rejects["code"] == "unbalanced_quote").all()
    scored = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert len(scored) == n - len(stray)
    assert scored["region"].str.contains("\n").sum() == 1  # the legitimate two-line field


def test_lines_stay_numbered_across_stray_quotes_and_quoted_newlines(tmp_path: Path) -> None:
    text = 'a,b,c\n1,2,3\n4,"5,6\n7,8,9\n\n10,"x\r\ny",12\n13,"14,15\n"16,17,18\n19,20,21'
    path = tmp_path / "in.csv"
    path.write_bytes(text.encode())
    good, bad = [], []
    with open_source(str(path)) as source:
        for chunk in source.chunks(2):
            numbered = zip(chunk.row_numbers, chunk.lines, strict=True)
            good += [(int(r), int(ln)) for r, ln in numbered]
            bad += [(r.row_number, r.line, r.code) for r in chunk.rejects]
    # Line 3's quote "closes" on line 6 into a record of two fields: line 3 alone is rejected
    # and line 4 read again. Lines 6-7 are one record (a quoted newline). Line 8's quote
    # closes on line 9 into four fields; line 9's is open at the end of the file.
    assert good == [(1, 2), (3, 4), (4, 6), (7, 10)]
    assert bad == [
        (2, 3, "unbalanced_quote"),
        (5, 8, "unbalanced_quote"),
        (6, 9, "unbalanced_quote"),
    ]


def test_a_stray_quote_in_a_big_file_keeps_memory_bounded(tmp_path: Path) -> None:
    """The reader never holds more than a block and a record's bounds, whatever follows a
    stray quote (before: the rest of the file, up to 64 MB, then an error)."""
    path = tmp_path / "big.csv"
    row = ",".join(records(1)[0])
    with path.open("w") as handle:
        handle.write(HEADER + "\n" + with_quote(records(1)[0], 1, '"us') + "\n")
        for _ in range(40):
            handle.write((row + "\n") * 10_000)
    largest = 0
    read = 0
    with open_source(str(path)) as source:
        for chunk in source.chunks(65_536):
            read += chunk.n_read
            if chunk.records is not None:
                largest = max(largest, chunk.records.buffers()[2].size)
    assert read == 400_001
    assert largest <= csv_source.MAX_BLOCK_BYTES + csv_lines.MAX_RECORD_BYTES


def test_blank_lines_are_counted_skipped_and_leave_no_block_behind(tmp_path: Path) -> None:
    """A block read record by record is freed as soon as it is done with, not at the garbage
    collector's next full sweep: a file of 4 million blank lines grew to 2 GB before."""
    path = tmp_path / "blank.csv"
    path.write_bytes(b"a,b\n1,2\n" + b"\n\r\n" * 50_000 + b"3,4\n\n5,6")
    blocks: list[weakref.ref[csv_lines.Lines]] = []
    made = csv_lines.Lines

    def tracked(*args: object, **kwargs: object) -> csv_lines.Lines:
        lines = made(*args, **kwargs)  # type: ignore[arg-type]
        blocks.append(weakref.ref(lines))
        return lines

    gc.disable()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(csv_source, "Lines", tracked)
            with open_source(str(path)) as source:
                found = [
                    (int(r), int(ln))
                    for chunk in source.chunks(1_000)
                    for r, ln in zip(chunk.row_numbers, chunk.lines, strict=True)
                ]
        assert found == [(1, 2), (2, 100_003), (3, 100_005)]
        assert len(blocks) > 10 and all(block() is None for block in blocks)
    finally:
        gc.enable()


def test_training_and_scoring_read_a_header_with_spaces_as_the_same_names(tmp_path: Path) -> None:
    """Training kept 'a ' where scoring strips it to 'a': a model refused its own file."""
    from detector.io.frames import read_table

    path = tmp_path / "spaced.csv"
    path.write_text("a ,  b,c  \n1,2,3\n4,5,6\n")
    with open_source(str(path)) as source:
        scored = list(source.columns)
    assert list(read_table(path).columns) == scored == ["a", "b", "c"]
    assert list(next(csv_tables.iter_table(path, chunk_rows=1)).columns) == scored
    path.write_text("a,a ,b\n1,2,3\n")  # one name once stripped
    with pytest.raises(DataError, match=r"repeats column name\(s\) \['a'\]"):
        read_table(path)


# -- "holds no numbers": the whole file's to decide ------------------------------------


def test_whether_a_column_holds_numbers_does_not_depend_on_chunking(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """100 bad values, once exactly filling chunk 2 (rows 101-200) and once across the
    boundary of chunks 2 and 3 (rows 151-250): the same outcome, each bad row rejected."""
    outcomes = []
    for first in (101, 151):
        rows = records(1_000)
        for r in range(first, first + 100):
            rows[r - 1][CPU] = "oops"
        path = write(tmp_path / f"in{first}.csv", rows)
        output = tmp_path / f"out{first}.csv"
        code, ledger, err = score(
            capsys, str(bundle_dir), str(path), "--output", str(output), "--chunk-rows", "100"
        )
        assert code == 0, err
        rejects = rejects_of(ledger)
        assert rejects["row"].tolist() == list(range(first, first + 100))
        assert (rejects["code"] == "not_a_number").all()
        outcomes.append((ledger["rows_read"], ledger["rows_scored"], ledger["rows_rejected"]))
    assert outcomes == [(1_000, 900, 100)] * 2


@pytest.mark.parametrize("chunk_rows", ["7", "65536"])
def test_a_column_with_no_number_in_the_whole_file_stops_the_run(
    capsys, bundle_dir: Path, tmp_path: Path, chunk_rows: str
) -> None:
    rows = records(300)
    for row in rows:
        row[CPU] = f"{row[CPU]}%"
    rows[10][CPU] = ""  # an empty value is not a number either
    path = write(tmp_path / "in.csv", rows)
    output = tmp_path / "out.csv"
    argv = [str(bundle_dir), str(path), "--output", str(output), "--chunk-rows", chunk_rows]
    code, _, err = score(capsys, *argv)
    assert code == 2
    assert "column 'cpu_pct' holds no numbers (e.g. '" in err and "%'; 299 values" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_evaluate_decides_over_the_whole_file_too(bundle_dir: Path, tmp_path: Path) -> None:
    from detector.batch.scored_chunks import iter_scored

    bundle = load_bundle(bundle_dir)
    rows = records(300)
    for r in range(50, 150):
        rows[r][CPU] = "oops"
    path = write(tmp_path / "in.csv", rows)
    parts = [p.result for p in iter_scored(bundle, path, chunk_rows=50) if p.result]
    assert sum(len(p.rejections) for p in parts) == 100
    assert sum(p.n_scored for p in parts) == 200
    for row in rows:
        row[CPU] = "oops"
    write(path, rows)
    with pytest.raises(SchemaError, match="holds no numbers"):
        list(iter_scored(bundle, path, chunk_rows=50))


def test_evaluate_reads_a_file_as_score_does(capsys, bundle_dir: Path, tmp_path: Path) -> None:
    """evaluate read files with pandas: one byte that is not UTF-8 or one stray quote failed
    the whole file, and a short row was called missing_value where score said ragged."""
    labelled = pd.read_csv(DATA / "eval.csv", dtype=str).drop(columns=["anomaly_kind"])
    rows = [",".join(r) for r in labelled.head(200).to_numpy().tolist()]
    good = rows[0].split(",")
    bad = [
        "web-01,us-east,3",  # ragged
        'web-01,"us-east,' + ",".join(good[2:]),  # a quote never closed
        ",".join(["caf\udce9", *good[1:]]),  # not UTF-8 (written as the byte 0xe9)
    ]
    path = tmp_path / "labelled.csv"
    text = "\n".join([",".join(labelled.columns), *rows[:100], *bad, *rows[100:]]) + "\n"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    code = main(["evaluate", str(bundle_dir), str(path), "--label-column", "label", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert (result["n"], result["n_rejected"]) == (200, 3)
    assert result["rejected_by_code"] == {"ragged": 1, "unbalanced_quote": 1, "encoding": 1}
    scored = tmp_path / "scored.csv"
    code, ledger, _ = score(
        capsys, str(bundle_dir), str(path), "--output", str(scored), "--keep-column", "label"
    )
    assert code == 0 and ledger["rejected_by_code"] == result["rejected_by_code"]


def test_train_and_evaluate_take_a_folder_as_score_does(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """A folder was "input file exports does not exist" to train, "Is a directory" to
    evaluate."""
    labelled = pd.read_csv(DATA / "eval.csv").drop(columns=["anomaly_kind"])
    folder = tmp_path / "exports"
    folder.mkdir()
    labelled.iloc[:1000].to_csv(folder / "a.csv", index=False)
    labelled.iloc[1000:].to_csv(folder / "b.csv", index=False)
    whole = tmp_path / "whole.csv"
    labelled.to_csv(whole, index=False)
    results = []
    for data in (folder, whole):
        argv = ["evaluate", str(bundle_dir), str(data), "--label-column", "label", "--json"]
        assert main(argv) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1]
    train = pd.read_csv(DATA / "train.csv").head(400)
    train.iloc[:150].to_csv(folder / "t1.csv.gz", index=False)
    train.iloc[150:].to_csv(tmp_path / "t2.csv", index=False)
    (folder / "a.csv").unlink()
    (folder / "b.csv").unlink()
    (tmp_path / "t2.csv").rename(folder / "t2.csv")
    train.to_csv(whole, index=False)
    tiny = ["--epochs", "1", "--hidden-units", "8", "--latent-dim", "2", "--quiet"]
    versions = []
    for i, data in enumerate((folder, whole)):
        assert main(["train", str(data), "--out", str(tmp_path / f"m{i}"), *tiny]) == 0
        versions.append(load_bundle(tmp_path / f"m{i}").version)
    assert versions[0] == versions[1]


# -- what a killed run leaves behind ---------------------------------------------------


def dead_pid() -> int:
    """The id of a process that has exited (and been waited for)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_the_same_target_are_removed(bundle_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    ours = partial_path(target)  # this process's: alive
    host = ours.name[len(".out.csv.") : -len(".partial")].rsplit("-", 2)[0]
    dead = tmp_path / f".out.csv.{host}-{dead_pid()}-0123abcd.partial"
    legacy_old = tmp_path / ".out.csv.89abcdef.partial"  # written before names held a pid
    legacy_new = tmp_path / ".out.csv.fedcba98.partial"
    elsewhere = tmp_path / f".out.csv.otherhost-{dead_pid()}-0123abcd.partial"
    other_target = tmp_path / f".other.csv.{host}-{dead_pid()}-0123abcd.partial"
    not_ours = tmp_path / ".out.csv.notes.partial"
    for path in (ours, dead, legacy_old, legacy_new, elsewhere, other_target, not_ours):
        path.write_text("x")
    two_hours_ago = time.time() - 7200
    os.utime(legacy_old, (two_hours_ago, two_hours_ago))
    writer = TableWriter(target)
    writer.write(pd.DataFrame({"a": [1]}))
    writer.close()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        p.name for p in (target, ours, legacy_new, elsewhere, other_target, not_ours)
    )
    # A bundle's staging and retired folders are cleaned the same way when it is saved again.
    bundle = load_bundle(bundle_dir)
    model = tmp_path / "model"
    save_bundle(bundle, model)
    stale_dirs = [
        model.with_name(f".model.tmp-{host}-{dead_pid()}-0123abcd"),
        model.with_name(f".model.old-{host}-{dead_pid()}-4567abcd"),
    ]
    live = staging_path(model, "tmp")
    for folder in (*stale_dirs, live):
        folder.mkdir()
        (folder / "model.keras").write_bytes(b"half written")
    assert sorted(remove_stale_temporaries(model)) == sorted(stale_dirs)
    save_bundle(bundle, model)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model")) == [live.name]


def start_scoring_from_a_pipe(bundle_dir: Path, output: Path) -> subprocess.Popen[bytes]:
    """``anomaly score`` reading stdin, given ~3 MB of records, then left waiting for more:
    by then it has written its first chunks to its partial file."""
    exe = Path(sys.executable).with_name("anomaly")
    process = subprocess.Popen(
        [str(exe), "score", str(bundle_dir), "-", "--output", str(output), "--quiet"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert process.stdin is not None
    lines = "\n".join(",".join(r) for r in records(30_000))
    process.stdin.write(f"{HEADER}\n{lines}\n".encode())
    process.stdin.flush()
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in output.parent.glob(f".{output.name}.*.partial")):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the scorer never started writing"
        time.sleep(0.05)
    return process


def test_a_run_killed_outright_is_cleaned_up_by_the_next(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.csv"
    process = start_scoring_from_a_pipe(bundle_dir, output)
    process.kill()  # SIGKILL: nothing of the run's own clean-up runs
    process.wait(timeout=30)
    assert process.stdin is not None and process.stderr is not None
    process.stdin.close()
    process.stderr.close()
    assert len(list(tmp_path.glob(".out.csv.*.partial"))) == 1
    path = write(tmp_path / "in.csv", records(50))
    code, ledger, err = score(capsys, str(bundle_dir), str(path), "--output", str(output))
    assert code == 0 and ledger["rows_scored"] == 50, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


def test_sigterm_removes_the_partial_output(bundle_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    process = start_scoring_from_a_pipe(bundle_dir, output)
    process.send_signal(signal.SIGTERM)
    assert process.stdin is not None and process.stderr is not None
    try:
        code = process.wait(timeout=60)
    finally:
        process.stdin.close()
    err = process.stderr.read().decode()
    process.stderr.close()
    assert code == 128 + signal.SIGTERM, err  # 143, as Kubernetes and systemd read it
    assert "no output was written" in err
    assert list(tmp_path.iterdir()) == []


def test_records_score_the_same_read_fast_or_record_by_record(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """Two stray quotes in one block send the whole block to Python's csv module, which reads
    every other record as Arrow does: each scores the same either way."""
    rows = records(400)
    clean = write(tmp_path / "clean.csv", rows)
    lines = [",".join(r) for r in rows]
    for r in (5, 8):
        lines[r - 1] = with_quote(rows[r - 1], 1, '"' + rows[r - 1][1])
    hostile = write(tmp_path / "hostile.csv", lines)
    bundle = load_bundle(bundle_dir)
    score_file(bundle, str(clean), tmp_path / "a.csv")
    report = score_file(bundle, str(hostile), tmp_path / "b.csv")
    assert (report.rows_scored, report.rows_rejected) == (398, 2)
    a = pd.read_csv(tmp_path / "a.csv").drop(index=[4, 7]).reset_index(drop=True)
    b = pd.read_csv(tmp_path / "b.csv")
    np.testing.assert_allclose(a.pop("anomaly_score"), b.pop("anomaly_score"), rtol=1e-6)
    np.testing.assert_allclose(a.pop("p_value"), b.pop("p_value"), rtol=1e-5)
    pd.testing.assert_frame_equal(a, b)


def test_a_manifest_a_killed_threshold_change_left_is_removed(
    bundle_dir: Path, tmp_path: Path
) -> None:
    from detector.bundles.bundle import set_target_fpr
    from detector.bundles.format import MANIFEST_FILE

    model = tmp_path / "model"
    shutil.copytree(bundle_dir, model)
    ours = partial_path(model / MANIFEST_FILE).name
    host = ours[len(f".{MANIFEST_FILE}.") : -len(".partial")].rsplit("-", 2)[0]
    left = model / f".{MANIFEST_FILE}.{host}-{dead_pid()}-0123abcd.partial"
    left.write_text("{half")
    set_target_fpr(model, 0.02)
    assert not left.exists()
    assert load_bundle(model).calibrator.target_fpr == 0.02


# -- outputs that cannot be written --------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--output", "{tmp}/in.csv/out.csv"], "in.csv is a file, not a folder"),
        (["--output", "{tmp}/out.csv", "--rejects", "{tmp}/in.csv/r.csv"], "is a file, not a"),
        (["--output", "{tmp}/folder.csv"], "folder.csv: it is a directory"),
        # The folder exists, but no file of that name can be made in it.
        (["--output", "{tmp}/" + "x" * 300 + ".csv"], "File name too long"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_scoring(
    capsys, bundle_dir: Path, tmp_path: Path, flags: list[str], expected: str
) -> None:
    """Found by trying: each was an internal error (FileExistsError, IsADirectoryError...),
    and only once the whole input had been scored."""
    source = write(tmp_path / "in.csv", records(20))
    (tmp_path / "folder.csv").mkdir()
    argv = [f.format(tmp=tmp_path) for f in flags]
    code, _, err = score(capsys, str(bundle_dir), str(source), *argv)
    assert code == 2, err
    assert err.startswith("error: cannot write ") and expected in err
    assert "internal error" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv", "in.csv"]


def test_a_bundle_or_report_that_cannot_be_written_is_refused_before_training(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", records(20))
    for argv in (
        ["train", str(source), "--out", f"{source}/model"],
        ["train", str(source), "--out", str(tmp_path / "m"), "--report", f"{source}/r.html"],
        [
            "evaluate",
            str(bundle_dir),
            str(source),
            "--label-column",
            "x",
            "--report",
            f"{source}/r.html",
        ],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"cannot write {source}/" in err and "is a file, not a folder" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so that a write fails rather than kills
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))


def _score_under_a_size_limit(bundle_dir: Path, source: Path, output: Path) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "detector.cli.main",
            "score",
            str(bundle_dir),
            str(source),
            "--output",
            str(output),
            "--quiet",
        ],
        preexec_fn=_limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.jsonl", "out.parquet"])
def test_a_write_the_system_refuses_midway_names_the_cause_and_leaves_nothing(
    bundle_dir: Path, tmp_path: Path, name: str
) -> None:
    """A full disk or a file size limit (``ulimit -f``, tried here: a full disk needs a
    small file system mounted) strikes after the output has begun: an error naming it and
    the output, not an internal error, and no partial output left behind. A .csv.gz left
    its partial file (closing the gzip stream wrote its rest, and failed again), and none
    named the file ('error: No space left on device: free space on that disk')."""
    source = write(tmp_path / "in.csv", records(6_000))  # ~1.4 MB scored, past the limit
    err = _score_under_a_size_limit(bundle_dir, source, tmp_path / name)
    assert f"error: File too large ({tmp_path / name}):" in err and "ulimit -f" in err, err
    assert "no output was written" in err and "internal" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


def test_rejects_past_the_limit_leave_neither_file(bundle_dir: Path, tmp_path: Path) -> None:
    """The rejects file hits the limit where the scores would not: its partial file was left
    (closing it wrote its buffer, and failed again), and it named the output's folder alone."""
    rows = records(3_000)
    for row in rows[100:]:
        row[CPU] = "not a number " + "x" * 200
    source = write(tmp_path / "in.csv", rows)
    output = tmp_path / "out.csv"
    err = _score_under_a_size_limit(bundle_dir, source, output)
    assert f"error: File too large ({output}.rejects.csv):" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


def _cli_under_a_size_limit(*argv: str) -> str:
    return _run_under_a_size_limit(*argv).stderr


def _run_under_a_size_limit(*argv: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "detector.cli.main", *argv],
        preexec_fn=_limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    return result


def test_a_bundle_the_disk_cannot_hold_is_named_and_the_old_one_kept(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """Training into a bundle's folder on a full disk: the error named no folder ('error: No
    space left on device: free space on that disk'); the bundle there stays as it was, and
    no staging folder is left."""
    out = tmp_path / "model"
    shutil.copytree(bundle_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    data = write(tmp_path / "train.csv", records(300))
    err = _cli_under_a_size_limit("train", str(data), "--out", str(out), "--epochs", "1")
    assert f"error: File too large ({out}):" in err and "no output was written" in err, err
    # A bundle has no smaller format: 'write a smaller output (.csv.gz or .parquet)' was said.
    assert "a bundle is written whole" in err and "smaller output" not in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.csv"]


def test_a_threshold_the_disk_cannot_hold_is_named_and_changes_nothing(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """``anomaly threshold`` rewrites the manifest beside itself: refused midway, the error
    named no file, and the manifest stays as it was."""
    bundle = tmp_path / "model"
    shutil.copytree(bundle_dir, bundle)
    manifest = (bundle / "manifest.json").read_bytes()
    assert len(manifest) > 50_000  # past the limit set below
    err = _cli_under_a_size_limit("threshold", str(bundle), "--fpr", "0.05")
    assert f"error: File too large ({bundle}):" in err, err
    assert "the bundle's manifest is rewritten whole" in err and "smaller output" not in err
    assert (bundle / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in bundle.iterdir()) == sorted(p.name for p in bundle_dir.iterdir())


def test_an_evaluation_whose_report_the_disk_refuses_is_still_printed(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """The report (~100 kB) is refused midway: the metrics were lost with it (nothing printed,
    exit 1); now they are printed, then the error names the report, and no partial is left."""
    report = tmp_path / "r.html"
    run = _run_under_a_size_limit(
        "evaluate", str(bundle_dir), str(DATA / "eval.csv"), "--label-column", "label",
        "--report", str(report),
    )  # fmt: skip
    assert "AUROC" in run.stdout and "best F1" in run.stdout, run.stdout
    assert "wrote report" not in run.stdout
    assert f"error: File too large ({report}):" in run.stderr, run.stderr
    assert "or leave out --report" in run.stderr and "smaller output" not in run.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_standard_output_on_a_full_disk_is_named_and_not_denied(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """Rows streamed to standard output redirected to a full disk (/dev/full: every write is
    ENOSPC): it said 'No space left on device: free space on that disk ...; no output was
    written', of a file that held the rows written until then."""
    source = write(tmp_path / "in.csv", records(3_000))
    command = [sys.executable, "-m", "detector.cli.main", "score", str(bundle_dir), str(source)]
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [*command, "--output", "-", "--quiet"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert result.returncode == 1, result.stderr
    assert "error: No space left on device (standard output): free space" in result.stderr
    assert "standard output holds the rows written so far, not a whole run" in result.stderr
    assert "no output was written" not in result.stderr


def test_a_category_spelled_as_a_missing_value_marker_is_named_in_the_refusal(
    capsys, tmp_path: Path
) -> None:
    """Found by trying: a region 'NA' (North America) is read as missing, as pandas reads it
    in training and the scorer reads it alike; the refusal said the column 'has 3 empty
    values' of a file with no empty cell."""
    rows = records(60)
    region = list(EVAL.columns).index("region")
    for row in rows[:3]:
        row[region] = "NA"
    path = write(tmp_path / "train.csv", rows)
    assert main(["train", str(path), "--out", str(tmp_path / "m"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "column 'region' has 3 empty values (empty cells, or text read as missing: NA" in err
    assert "(NA for North America) otherwise" in err


def test_parquet_lists_structs_and_huge_integers(capsys, bundle_dir: Path, tmp_path: Path) -> None:
    """Parquet holds what CSV cannot. A struct where a label belongs was an internal
    TypeError, a uint64 counter past 2**53 an ArrowInvalid for its whole chunk: now each such
    row is rejected with its reason, the counter scored as its float, and a list column the
    user carries through is written as it was."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"]).head(40)
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    iops = [2**64 - 1 if i == 5 else int(v) for i, v in enumerate(frame["disk_iops"])]
    table = table.set_column(
        table.schema.get_field_index("disk_iops"), "disk_iops", pa.array(iops, pa.uint64())
    ).append_column("tags", pa.array([[1, 2]] * len(frame)))
    path = tmp_path / "in.parquet"
    pq.write_table(table, path)
    output = tmp_path / "out.csv"
    argv = [str(bundle_dir), str(path), "--output", str(output), "--keep-column", "tags"]
    code, ledger, err = score(capsys, *argv)
    assert code == 0 and ledger["rows_scored"] == 40, err
    scored = pd.read_csv(output)
    assert scored["tags"].tolist() == ["[1, 2]"] * 40
    assert scored["disk_iops"].iloc[5] == float(2**64 - 1)

    structs = pa.array([{"name": r} for r in frame["region"]])
    at = table.schema.get_field_index("region")
    pq.write_table(table.set_column(at, "region", structs), path)
    code, ledger, err = score(capsys, *argv, "--max-reject-rate", "1")
    assert code == 0 and ledger["rows_rejected"] == 40, err
    reasons = rejects_of(ledger)
    assert set(reasons["code"]) == {"malformed"}
    region = frame["region"].iloc[0]
    assert f"column 'region': {{'name': '{region}'}} is a list or an object" in reasons["reason"][0]


def test_training_names_a_column_of_lists_or_objects_and_the_fix(capsys, tmp_path: Path) -> None:
    """A Parquet list column trained into NaN for 300 epochs, then 'training diverged'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(DATA / "train.csv").head(300)
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(
        table.append_column("tags", pa.array([[1, 2]] * len(frame))), tmp_path / "t.parquet"
    )
    out = tmp_path / "model"
    assert main(["train", str(tmp_path / "t.parquet"), "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "column 'tags' holds lists or objects (array([1, 2]) at row 1, 300 in all)" in err
    assert "--ignore-column tags" in err and not out.exists()


def test_lines_ending_in_a_lone_carriage_return_read_as_lines(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    """An old Mac export ends lines in "\\r" alone: pandas trains on it, and scoring said the
    file 'is empty'. Now it scores as the same file with "\\n" line ends, line numbers too."""
    rows = records(30)
    rows[4][CPU] = "oops"
    text = "\n".join([HEADER, *(",".join(r) for r in rows)]) + "\n"
    unix, mac = tmp_path / "unix.csv", tmp_path / "mac.csv"
    unix.write_text(text)
    mac.write_bytes(text.replace("\n", "\r").encode())
    results = []
    for path in (unix, mac):
        output = tmp_path / f"{path.stem}.out.csv"
        code, ledger, err = score(capsys, str(bundle_dir), str(path), "--output", str(output))
        assert code == 0, err
        results.append((pd.read_csv(output), rejects_of(ledger)[["row", "line", "code"]]))
    pd.testing.assert_frame_equal(results[0][0], results[1][0])
    pd.testing.assert_frame_equal(results[0][1], results[1][1])
    assert results[1][1]["line"].tolist() == [6]


def test_parquet_piped_in_is_named_as_parquet(tmp_path: Path) -> None:
    """Parquet on stdin was 'the header of <stdin> is not UTF-8 text; re-save it as UTF-8'."""
    path = tmp_path / "t.parquet"
    pd.read_csv(DATA / "train.csv").head(100).to_parquet(path)
    with pytest.raises(DataError, match="holds Parquet, which is read from its end"):
        csv_source.CsvSource.of_bytes(path.read_bytes(), "<stdin>")
    exe = Path(sys.executable).with_name("anomaly")
    trained = subprocess.run(
        [str(exe), "train", "-", "--out", str(tmp_path / "m")],
        input=path.read_bytes(),
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=300,
    )
    assert trained.returncode == 2
    assert b"<stdin> holds Parquet" in trained.stderr and b"give the file's path" in trained.stderr


def test_a_report_named_dot_and_a_key_of_bytes_say_so(monkeypatch) -> None:
    """'--report .' was "PosixPath('.') has an empty name"; a signing key the environment
    held as bytes failed with a UnicodeEncodeError once training was done."""
    from detector.bundles.integrity import BUNDLE_KEY_ENV, bundle_key
    from detector.errors import BundleError, ConfigError
    from detector.io.temporaries import check_writable

    with pytest.raises(ConfigError, match="it is a directory; name a file in it"):
        check_writable(".")
    with pytest.raises(ConfigError, match="'-' \\(standard output\\) is not taken here"):
        check_writable("-")  # --report - wrote a file named '-'

    monkeypatch.setenv(BUNDLE_KEY_ENV, "\udcff\udcfe")  # how os.environ keeps b"\xff\xfe"
    with pytest.raises(BundleError, match="holds bytes that are not text"):
        bundle_key()
