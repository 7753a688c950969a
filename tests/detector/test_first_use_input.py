"""First use (#20): a file without a header, a gzip file of any name, detection per group, and
the commands' stderr free of LiteRT's start-up notice. Each test failed before its fix."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from detector.cli.report import LabelledScores, evaluation_report
from detector.errors import DataError
from detector.io.frames import read_table
from detector.io.sources import open_source
from detector.io.tables import check_names, header_looks_like_data, input_format
from detector.scoring.evaluation import evaluate_scores

REPO = Path(__file__).resolve().parents[2]
HEADER = "cpu,mem,latency\n"
ROWS = "0.00,0.00,12.5\n1.25,0.00,13.0\n0.50,2.00,11.0\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---- 1. a file without a header row ----------------------------------------------------------


def test_a_headerless_file_is_named_as_such_when_training(tmp_path) -> None:
    # Before: "repeats column name(s) ['0.00', '0.00.1'] in its header".
    path = _write(tmp_path / "data.csv", ROWS)
    with pytest.raises(DataError, match=r"no header row\? the first line must name the columns"):
        read_table(path)


def test_a_headerless_file_is_named_as_such_when_scoring(tmp_path) -> None:
    # Before: "repeats column name(s) ['0.00']"; the sample data's rows start with text.
    rows = (REPO / "data" / "train.csv").read_text().splitlines()[1:20]
    path = _write(tmp_path / "data.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"no header row\?"):
        open_source(str(path))
    with pytest.raises(DataError, match=r"no header row\?"):
        read_table(path)


@pytest.mark.parametrize(
    "names",
    [["cpu", "mem"], ["0", "1", "2"], ["id", "x1", "x2"], ["country", "2023", "2024"]],
)
def test_headers_of_names_are_headers(names) -> None:
    assert not header_looks_like_data(names)


@pytest.mark.parametrize(
    "names", [["0.5", "1.5"], ["web-01", "us-east", "3", "4.5"], ["a", "b", "7", "7", "c", "d"]]
)
def test_headers_of_values_are_data(names) -> None:
    assert header_looks_like_data(names)


def test_a_repeated_name_is_still_a_repeated_name(tmp_path) -> None:
    path = _write(tmp_path / "data.csv", "cpu,mem,cpu\n1,2,3\n")
    with pytest.raises(DataError, match=r"repeats column name\(s\) \['cpu'\]"):
        read_table(path)
    with pytest.raises(DataError, match=r"repeats column name\(s\) \['cpu'\]"):
        open_source(str(path))


# ---- 2. compression and format told by content -----------------------------------------------


@pytest.mark.parametrize("name", ["x.data.gz", "export.log", "noext"])
def test_gzip_is_read_whatever_its_name(tmp_path, name) -> None:
    # Before: "cannot tell the format of x.data.gz: name it .csv, .csv.gz or .parquet".
    path = tmp_path / name
    path.write_bytes(gzip.compress((HEADER + ROWS).encode()))
    assert read_table(path)["latency"].tolist() == [12.5, 13.0, 11.0]
    assert input_format(path) == "csv"
    with open_source(str(path)) as source:
        assert source.columns == ("cpu", "mem", "latency")
        assert sum(chunk.table.num_rows for chunk in source.chunks(100)) == 3


def test_text_under_an_unknown_suffix_reads_as_csv(tmp_path) -> None:
    path = _write(tmp_path / "export.data", HEADER + ROWS)
    assert len(read_table(path)) == 3
    with open_source(str(path)) as source:
        assert source.columns == ("cpu", "mem", "latency")


def test_parquet_is_told_by_content_too(tmp_path) -> None:
    path = tmp_path / "export.bin"
    pd.DataFrame({"cpu": [1.0, 2.0]}).to_parquet(path)
    assert read_table(path)["cpu"].tolist() == [1.0, 2.0]
    assert input_format(path) == "parquet"


def test_binary_under_an_unknown_suffix_names_the_formats_read(tmp_path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"nor JSON Lines \(plain or gzip\) nor Parquet"):
        read_table(path)
    with pytest.raises(DataError, match="nor Parquet"):
        open_source(str(path))


def test_bytes_that_are_no_header_are_not_called_empty(tmp_path) -> None:
    """A file of random bytes starting with ',' read as 'is empty'; NUL bytes in a header were
    taken as a column name and echoed back in the fix."""
    path = tmp_path / "noise.csv"
    path.write_bytes(b"," + np.random.default_rng(6).bytes(4999))  # one such file
    with pytest.raises(DataError, match="cannot read a header row in") as err:
        open_source(str(path))
    assert "empty" not in str(err.value)
    _write(path, "\0\0garbage\0\n1\n")
    with pytest.raises(DataError, match="holds NUL bytes, so it is not CSV text"):
        open_source(str(path))


# ---- 3. detection per group ------------------------------------------------------------------


def _grouped() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=bool)
    scores = np.array([0.1, 0.4, 0.3, 0.9, 0.1, 0.2, 0.8, 0.95])
    groups = np.array(["mixed", "mixed", "mixed", "mixed", "normal", "normal", "bad", "bad"])
    return labels, scores, groups


def test_the_best_f1_threshold_gives_the_best_f1_by_the_tools_own_rule() -> None:
    # The curve's threshold flags scores at or above it; the tool flags those above: an
    # anomaly scoring exactly the reported 7.1057 was counted in best F1 .9530 and not by
    # `score > 7.1057` (F1 .9495).
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=400), 1)  # many ties
    labels = scores + rng.normal(scale=0.7, size=400) > 1.2
    result = evaluate_scores(labels, scores, 0.5)
    flagged = scores > result.best_f1_threshold
    tp = (flagged & labels).sum()
    f1 = 2 * tp / (flagged.sum() + labels.sum())
    assert f1 == pytest.approx(result.best_f1)
    assert round(result.best_f1_threshold, 4) not in set(scores.tolist())


def test_by_group_gives_recall_auroc_and_auprc_or_says_why_not() -> None:
    labels, scores, groups = _grouped()
    result = evaluate_scores(labels, scores, 0.5, groups=groups).to_dict()["by_group"]
    mixed = result["mixed"]
    # ranked 0.1 < 0.3 < 0.4 < 0.9: one of the four normal/anomalous pairs is out of order.
    assert mixed["auroc"] == pytest.approx(0.75)
    assert mixed["auprc"] == pytest.approx(0.8333, abs=1e-3)
    assert mixed["recall"] == 0.5 and mixed["flagged"] == 0.25
    assert mixed["unavailable"] is None
    normal = result["normal"]
    assert (normal["recall"], normal["auroc"], normal["auprc"]) == (None, None, None)
    assert "no anomalies" in normal["unavailable"]
    # A group of anomalies only (an anomaly kind) is ranked against every normal record of
    # the file: 0.8 and 0.95 above 0.1, 0.4, 0.1, 0.2.
    bad = result["bad"]
    assert bad["recall"] == 1.0 and bad["auroc"] == 1.0 and bad["auprc"] == 1.0
    assert bad["against"] == "every normal record" and bad["unavailable"] is None
    assert mixed["against"] == "the group's normal records"
    assert normal["against"] is None


def test_a_column_of_many_values_is_broken_down_by_its_largest_groups(fitted) -> None:
    """Found by trying: --by-column on an id (30,720 values) took 55 s and 850 MB, printed a
    line per record and wrote a 6.6 MB report."""
    from detector.scoring.evaluation import MAX_GROUPS

    rng = np.random.default_rng(0)
    labels = rng.random(5_000) < 0.1
    scores = rng.random(5_000) + labels
    groups = np.r_[np.repeat(["big", "bigger"], [300, 400]), np.arange(4_300).astype(str)]
    result = evaluate_scores(labels, scores, 0.5, groups=groups)
    assert len(result.by_group) == MAX_GROUPS
    assert result.groups_left_out == 4_302 - MAX_GROUPS
    assert result.by_group["bigger"]["n"] == 400 and result.by_group["big"]["n"] == 300
    # The groups kept are measured as before (the whole of each group).
    mask = groups == "big"
    assert result.by_group["big"]["auroc"] == pytest.approx(
        roc_auc_score(labels[mask], scores[mask])
    )
    page = evaluation_report(fitted.bundle_, LabelledScores(labels, scores, "x.csv", groups=groups))
    assert f"and {4_302 - MAX_GROUPS:,} smaller groups, left out" in page


def test_a_file_of_anomalies_only_says_why_a_group_has_no_auroc() -> None:
    from detector.scoring.evaluation import group_metrics

    labels = np.ones(3, dtype=bool)
    stats = group_metrics(labels, np.array([0.2, 0.5, 0.9]), labels, normal_scores=np.zeros(0))
    assert stats["auroc"] is None and stats["recall"] == 1.0
    assert "only anomalies" in stats["unavailable"]


def test_the_evaluation_report_shows_detection_per_group(fitted) -> None:
    labels, scores, groups = _grouped()
    labelled = LabelledScores(
        labels, scores, "eval.csv", groups=groups, group_column="anomaly_kind"
    )
    page = evaluation_report(fitted.bundle_, labelled)
    assert "Detection by anomaly_kind" in page
    assert "<th>AUROC</th><th>AUPRC</th>" in page
    assert "<td>mixed</td><td>4</td><td>2</td><td>" in page
    assert "against every normal record of the file" in page
    assert "no anomalies (label 1) in this group" in page


# ---- 4. no LiteRT notice on stderr -------------------------------------------------------------

NOTICE = "XNNPACK delegate"


def _anomaly(*argv: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("anomaly")
    return subprocess.run(
        [str(exe), *argv],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
        check=False,
    )


def test_commands_keep_litert_start_up_notice_off_stderr(bundle_dir, tmp_path) -> None:
    # Before: info and evaluate (and every command but score) printed "INFO: Created
    # TensorFlow Lite XNNPACK delegate for CPU."
    eval_rows = pd.read_csv(REPO / "data" / "eval.csv").head(300)
    data = tmp_path / "eval.csv"
    eval_rows.to_csv(data, index=False)
    runs = {
        "score": _anomaly(
            "score",
            str(bundle_dir),
            str(data),
            "--output",
            str(tmp_path / "out.csv"),
            "--keep-column",
            "label",
            "--keep-column",
            "anomaly_kind",
        ),
        "evaluate": _anomaly(
            "evaluate",
            str(bundle_dir),
            str(data),
            "--label-column",
            "label",
            "--keep-column",
            "anomaly_kind",
        ),
        "info": _anomaly("info", str(bundle_dir)),
    }
    for name, done in runs.items():
        assert done.returncode == 0, (name, done.stderr)
        assert NOTICE not in done.stderr, name


class _Counted(str):
    """A name that counts how often it is compared: a linear check compares few, a quadratic
    one (``names.count(n)`` for every name) compares every pair."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _Counted.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_a_header_of_many_columns_is_checked_in_linear_time() -> None:
    # A 100,000-column header took 100 s of CPU before `anomaly score` said a word: each
    # name was counted among all of them to find repeats.
    names = [_Counted(f"k{i}") for i in range(2_000)]
    _Counted.compared = 0
    check_names(names, "wide.csv")
    assert _Counted.compared < 10 * len(names)
    with pytest.raises(DataError, match=r"repeats column name\(s\) \['k1'\]"):
        check_names([*names, _Counted("k1")], "wide.csv")


def test_a_column_named_like_pandas_renames_a_repeat_is_a_column_of_its_own(tmp_path) -> None:
    # "cpu" and "cpu.1" were refused as "repeats column name(s) ['cpu']": pandas renames a
    # repeated 'cpu' to 'cpu.1', and training told the two apart by names alone.
    path = tmp_path / "t.csv"
    path.write_text("cpu,cpu.1, mem\n1,2,3\n4,5,6\n")
    assert list(read_table(path).columns) == ["cpu", "cpu.1", "mem"]
    path.write_text("cpu,cpu ,mem\n1,2,3\n")
    with pytest.raises(DataError, match=r"repeats column name\(s\) \['cpu'\]"):
        read_table(path)


def test_blank_lines_above_the_header_are_skipped_as_training_skips_them(tmp_path) -> None:
    # Training (pandas) read the header below them; scoring said the file "is empty".
    path = tmp_path / "in.csv"
    path.write_text("\n \r\n\t\ncpu,mem\n1,2\nx\n")
    assert list(read_table(path).columns) == ["cpu", "mem"]
    with open_source(str(path)) as source:
        assert source.columns == ("cpu", "mem")
        (chunk,) = source.chunks(10)
    assert chunk.lines.tolist() == [5]
    assert [(r.row_number, r.line, r.code) for r in chunk.rejects] == [(2, 6, "ragged")]


def test_training_names_utf16_and_archives_as_scoring_does(tmp_path) -> None:
    # Training printed the codec's own words ("'utf-8' codec can't decode byte 0xff ...") and
    # took a ZIP or bzip2 file for text that is not UTF-8.
    import bz2
    import zipfile

    text = "cpu,mem\n" + "".join(f"{i},{i % 7}\n" for i in range(60))
    (tmp_path / "u16.csv").write_bytes(text.encode("utf-16"))
    with zipfile.ZipFile(tmp_path / "z.csv", "w") as archive:
        # A header time whose bytes fail to decode past the first slice read (the test's own
        # time decided, before: CI failed 1 in ~20 runs).
        stamped = zipfile.ZipInfo("z.csv", date_time=(2026, 12, 7, 5, 0, 20))
        archive.writestr(stamped, text + "é\n")  # a byte past ASCII, as most data has
    (tmp_path / "b.csv").write_bytes(bz2.compress(text.encode()))
    for name, needle in [("u16.csv", "it looks like UTF-16"), ("z.csv", "is a ZIP file"),
                         ("b.csv", "is a bzip2 file")]:  # fmt: skip
        with pytest.raises(DataError, match=needle):
            read_table(tmp_path / name)
