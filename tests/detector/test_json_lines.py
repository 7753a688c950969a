"""JSON Lines inputs (one JSON object a line, as log shippers and `jq -c` write records): read
by `anomaly score`, `evaluate` and `train` as the CSV of the same values, each bad line
rejected alone. Before, a `.jsonl` file was read as CSV: training made a model of columns named
'{"host":"web-01"' (1,802 features) without a word, and scoring refused the file naming them."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from detector.batch.files import score_file
from detector.bundles.bundle import load_bundle
from detector.cli.main import main
from detector.errors import ConfigError, DataError
from detector.io import json_lines
from detector.io.frames import read_table
from detector.io.sources import open_source
from detector.io.tables import check_header_row, expand_inputs, input_format
from tests.conftest import DATA

pytestmark = pytest.mark.slow

EVAL = pd.read_csv(DATA / "eval.csv").drop(columns=["label", "anomaly_kind"])


def write_json_lines(frame: pd.DataFrame, path: Path) -> Path:
    text = frame.to_json(orient="records", lines=True)
    path.write_bytes(gzip.compress(text.encode()) if path.name.endswith(".gz") else text.encode())
    return path


@pytest.mark.parametrize("name", ["in.jsonl", "in.ndjson.gz", "records.json", "records.log"])
def test_json_lines_score_as_the_csv_of_the_same_records(
    bundle_dir: Path, tmp_path: Path, name: str
) -> None:
    records = EVAL.head(300)
    csv = tmp_path / "in.csv"
    records.to_csv(csv, index=False)
    source = write_json_lines(records, tmp_path / name)
    assert input_format(source) == "jsonl"  # by content: `.json` and `.log` names too

    report = score_file(load_bundle(bundle_dir), source, tmp_path / "from_json.csv")
    assert main(["score", str(bundle_dir), str(csv), "--output", str(tmp_path / "o.csv")]) == 0

    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (300, 300, 0)
    assert (tmp_path / "from_json.csv").read_bytes() == (tmp_path / "o.csv").read_bytes()


def test_each_bad_line_is_rejected_alone_with_its_line_and_reason(
    capsys, bundle_dir: Path, tmp_path: Path
) -> None:
    good = [json.dumps(r) for r in EVAL.head(8).to_dict(orient="records")]
    first = json.loads(good[0])
    lines = [
        good[0],  # line 1, row 1
        "not json",  # line 2, row 2
        "",  # line 3: blank, not a row
        json.dumps({**first, "host": {"name": "web-01"}}),  # line 4, row 3: nested
        good[1][:-1] + ', "cpu_pct": 1e9}',  # line 5, row 4: a key twice
        "[1, 2]",  # line 6, row 5: not an object
        json.dumps({**first, "cpu_pct": None}),  # line 7, row 6: missing value
        json.dumps({**first, "cpu_pct": True}),  # line 8, row 7: not a number
        good[2] + "\r",  # line 9, row 8: a Windows line ending
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"host": "\xff"}\n')  # line 10

    code = main(["score", str(bundle_dir), str(path), "--output", str(tmp_path / "o.csv")])

    assert code == 0
    out = capsys.readouterr().out
    assert "rows read 9 = scored 2 + rejected 7" in out
    rejects = pd.read_csv(tmp_path / "o.csv.rejects.csv").set_index("line")
    assert rejects["row"].to_dict() == {2: 2, 4: 3, 5: 4, 6: 5, 10: 9, 7: 6, 8: 7}
    assert rejects.loc[2, "reason"].startswith("line 2 is not JSON (Expecting value")
    assert "write one object a line" in rejects.loc[2, "reason"]
    assert "['host'] hold objects or lists" in rejects.loc[4, "reason"]
    assert "['cpu_pct'] given more than once" in rejects.loc[5, "reason"]
    assert rejects.loc[6, "reason"] == "record is not a JSON object"
    assert rejects.loc[10, "code"] == "encoding"
    assert rejects.loc[7, "code"] == "missing_value"
    assert rejects.loc[8, "code"] == "not_a_number"
    assert rejects.loc[6, "raw"] == "[1, 2]"
    scored = pd.read_csv(tmp_path / "o.csv")
    assert scored["host"].tolist() == [first["host"], json.loads(good[2])["host"]]


def test_a_key_outside_the_first_records_rejects_its_record_naming_it(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first records' keys are the file's columns (a record that leaves out a null key
    does not lose the column); a later record with another key is rejected, not scored
    without it."""
    records = EVAL.head(4).to_dict(orient="records")
    sparse = {k: v for k, v in records[0].items() if k != "disk_iops"}  # a null left out
    lines = [sparse, records[1], {**records[2], "note": "restarted"}, records[3]]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    first_two = path.read_text().split("\n")[:2]
    monkeypatch.setattr(json_lines, "COLUMNS_FROM_BYTES", sum(map(len, first_two)))

    with open_source(str(path)) as source:
        assert source.columns == tuple(EVAL.columns)  # disk_iops from line 2
        (chunk,) = source.chunks(100)
    assert chunk.table.num_rows == 3 and chunk.table.column("disk_iops")[0].as_py() is None
    (reject,) = chunk.rejects
    assert (reject.row_number, reject.line, reject.code) == (3, 3, "malformed")
    assert "['note'] not among the file's columns" in reject.reason


def test_training_reads_json_lines_as_the_csv_of_the_same_values(tmp_path: Path) -> None:
    frame = pd.read_csv(DATA / "train.csv").head(200)
    frame["site"] = ["01", "02"] * 100  # a label that looks like a number
    frame.to_csv(tmp_path / "t.csv", index=False)
    write_json_lines(frame.astype({"site": str}), tmp_path / "t.jsonl.gz")

    for text_columns in [(), ("site",)]:
        pd.testing.assert_frame_equal(
            read_table(tmp_path / "t.jsonl.gz", text_columns=text_columns),
            read_table(tmp_path / "t.csv", text_columns=text_columns),
        )


def test_training_refuses_a_bad_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1, "b": 2}\n{"a": 3, "b": [4]}\n')
    with pytest.raises(DataError, match=r"line 2: field\(s\) \['b'\] hold objects or lists"):
        read_table(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"a": 1}, {"a": 2}]', r"holds a JSON array, not JSON Lines .* jq -c '\.\[\]'"),
        ('{\n  "a": 1\n}\n', r"is not JSON Lines: no line of its first 1 MB is a JSON object"),
        ("\n\n", "is empty: give JSON Lines"),
        ('{" a": 1, "a ": 2}\n', "'a' is named more than once"),
    ],
)
def test_what_is_not_json_lines_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        open_source(str(path))


def test_a_line_without_end_is_refused_in_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(json_lines, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n{"a": "' + "x" * 5000)
    with pytest.raises(DataError, match="line 2 is longer than"), open_source(str(path)) as source:
        list(source.chunks(10))


def test_a_folder_gives_up_its_json_lines_and_spark_names_them(tmp_path: Path) -> None:
    from detector.batch.spark import _spark_paths

    for name in ["a.jsonl", "b.ndjson", "c.jsonl.gz", "d.ndjson.gz"]:
        write_json_lines(EVAL.head(3), tmp_path / name)
    assert [Path(f).name for f in expand_inputs([tmp_path])] == [
        "a.jsonl",
        "b.ndjson",
        "c.jsonl.gz",
        "d.ndjson.gz",
    ]
    with pytest.raises(DataError, match="--engine spark reads CSV and Parquet, not JSON Lines"):
        _spark_paths([str(tmp_path)])


def test_a_csv_header_that_is_json_says_so() -> None:
    with pytest.raises(DataError, match="the header reads as JSON"):
        check_header_row(['{"host": "web-01"', '"cpu": 3}'], "<stdin>")


def test_json_lines_on_stdin_plain_or_gzip(bundle_dir: Path, tmp_path: Path) -> None:
    records = EVAL.head(40)
    records.to_csv(tmp_path / "in.csv", index=False)
    assert main(["score", str(bundle_dir), str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "o.csv")]) == 0  # fmt: skip
    text = records.to_json(orient="records", lines=True).encode()
    exe = Path(sys.executable).with_name("anomaly")
    for data in (text, gzip.compress(text)):
        done = subprocess.run(
            [str(exe), "score", str(bundle_dir), "-", "--output", "-"],
            input=data,
            capture_output=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout == (tmp_path / "o.csv").read_bytes()


def test_json_lines_out_hold_the_csv_outputs_values_typed(bundle_dir: Path, tmp_path: Path) -> None:
    records = EVAL.head(200)
    records.to_csv(tmp_path / "in.csv", index=False)
    broken = records.astype({"cpu_pct": object})
    broken.loc[3, "cpu_pct"] = "oops"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    for name in ["out.jsonl", "out.ndjson.gz"]:
        argv = ["score", str(bundle_dir), str(tmp_path / "broken.csv"), "--output"]
        assert main([*argv, str(tmp_path / name), "--rejects", str(tmp_path / "r.jsonl")]) == 0
        assert main([*argv, str(tmp_path / "out.csv")]) == 0

        got = pd.read_json(tmp_path / name, lines=True, dtype=False)
        want = pd.read_csv(tmp_path / "out.csv")
        assert len(got) == 199 and list(got.columns) == list(want.columns)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)  # hour: 0.0 against 0
        assert got["is_anomaly"].dtype == bool and got["cpu_pct"].dtype == float
        (reject,) = pd.read_json(tmp_path / "r.jsonl", lines=True).to_dict(orient="records")
        assert (reject["row"], reject["line"], reject["code"]) == (4, 5, "not_a_number")


def test_json_lines_to_stdout_and_its_rejects_to_stderr(bundle_dir: Path, tmp_path: Path) -> None:
    # `tail -f x.jsonl | anomaly score M - --output - | jq` had CSV to parse: stdout was CSV only.
    broken = EVAL.head(50).astype({"cpu_pct": object})
    broken.loc[3, "cpu_pct"] = "oops"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    argv = ["score", str(bundle_dir), str(tmp_path / "broken.csv"), "--output"]
    assert main([*argv, str(tmp_path / "o.jsonl"), "--rejects", str(tmp_path / "r.jsonl")]) == 0
    done = subprocess.run(
        [str(Path(sys.executable).with_name("anomaly")), *argv, "-", "--output-format", "jsonl"],
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == (tmp_path / "o.jsonl").read_bytes()
    reject = json.loads(done.stderr.decode().splitlines()[0])
    assert reject == json.loads((tmp_path / "r.jsonl").read_text())


def test_an_output_format_a_file_name_contradicts_is_refused(bundle_dir: Path, tmp_path) -> None:
    # An explicit csv for an output named .jsonl or .parquet was ignored without a word.
    bundle = load_bundle(bundle_dir)
    for name, given in (("scored.csv", "jsonl"), ("scored.jsonl", "csv"), ("s.parquet", "csv")):
        with pytest.raises(ConfigError, match=rf"{given} contradicts the output .*{name}, whose"):
            score_file(bundle, DATA / "eval.csv", tmp_path / name, stream_format=given)
    records = EVAL.head(20)
    records.to_csv(tmp_path / "in.csv", index=False)
    report = score_file(bundle, tmp_path / "in.csv", tmp_path / "o.jsonl", stream_format="jsonl")
    assert report.rows_scored == 20  # the name and the option agree


def test_json_lines_bytes_write_null_for_what_json_cannot_say() -> None:
    import pyarrow as pa

    from detector.io.writers import json_lines_bytes

    table = pa.table(
        {
            "x": [1.5, float("nan"), float("inf")],
            "t": pa.array([0, 1, 2], pa.timestamp("s", tz="UTC")),
            "s": ["é", None, '"q"'],
        }
    )
    lines = [json.loads(line) for line in json_lines_bytes(table).decode().splitlines()]
    assert [r["x"] for r in lines] == [1.5, None, None]
    assert lines[0]["t"] == "1970-01-01T00:00:00+00:00" and [r["s"] for r in lines] == [
        "é",
        None,
        '"q"',
    ]


def test_spark_refuses_a_json_lines_output_before_starting(bundle_dir: Path) -> None:
    from detector.batch.spark import score_files

    with pytest.raises(DataError, match="--engine spark writes a folder of CSV or Parquet"):
        score_files(str(bundle_dir), [str(DATA / "eval.csv")], "scored.jsonl")


def test_a_file_of_one_key_reads_its_values_as_text(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n{"a": [1]}\n{}\n{"a": 0.1}\n{"a": true}\n{"a": 1e400}\n')
    with open_source(str(path)) as source:
        (chunk,) = source.chunks(100)
    assert chunk.table.column("a").to_pylist() == ["1", None, "0.1", "true", "inf"]
    assert chunk.row_numbers.tolist() == [1, 3, 4, 5, 6]
    (reject,) = chunk.rejects
    assert (reject.row_number, reject.raw) == (2, '{"a": [1]}')


def test_a_model_or_kept_column_left_out_of_the_first_records_is_still_read(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serialiser that drops null values leaves a key out of a file's first records; the
    model's columns and the kept ones are columns all the same (the records without them
    have them missing), rather than a file refused for a "missing column" it holds."""
    monkeypatch.setattr(json_lines, "COLUMNS_FROM_BYTES", 1)
    records = EVAL.head(5).to_dict(orient="records")
    first = {k: v for k, v in records[0].items() if k != "disk_iops"}
    lines = [first, *({**r, "note": "x"} for r in records[1:])]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    argv = ["score", str(bundle_dir), str(path), "--output", str(tmp_path / "o.csv")]

    assert main([*argv, "--keep-column", "note"]) == 0

    scored = pd.read_csv(tmp_path / "o.csv")
    assert scored["note"].tolist() == ["x"] * 4
    rejects = pd.read_csv(tmp_path / "o.csv.rejects.csv")
    assert rejects[["row", "code"]].values.tolist() == [[1, "missing_value"]]
