"""Directory inputs (#19): every file a directory gives up is one every reader takes, read with
its own delimiter. Before, `.tsv.gz` and `.txt.gz` files were picked up and then refused by
name ("cannot tell the format"), and `.tsv` files were read as one comma-separated column by
`anomaly train` and `anomaly evaluate`."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd

from detector.io.frames import read_table
from detector.io.sources import open_source
from detector.io.tables import expand_inputs, table_format

FRAME = pd.DataFrame({"host": ["web-01", "web-02"], "cpu": [12.5, 80.0], "mem": [1.0, 2.0]})


def _write(path: Path) -> None:
    name = path.name
    if name.endswith((".parquet", ".pq")):
        FRAME.to_parquet(path)
        return
    text = FRAME.to_csv(index=False, sep="\t" if ".tsv" in name else ",")
    data = text.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)


def test_every_file_a_directory_gives_up_is_read_with_its_columns(tmp_path) -> None:
    names = ["a.csv", "b.csv.gz", "c.tsv", "d.tsv.gz", "e.txt", "f.txt.gz", "g.parquet", "h.pq"]
    for name in names:
        _write(tmp_path / name)
    (tmp_path / "notes.md").write_text("not a table\n")

    files = expand_inputs([tmp_path])

    assert [Path(f).name for f in files] == names
    for path in files:
        # The Spark engine checks inputs by name; the pandas reader serves train and evaluate.
        assert table_format(path) in ("csv", "parquet"), path
        pd.testing.assert_frame_equal(read_table(path), FRAME, obj=path)
        with open_source(path) as source:
            assert source.columns == ("host", "cpu", "mem"), path


def test_a_tsv_output_is_tab_separated_whatever_the_input(fitted, eval_frame, tmp_path) -> None:
    """A `.tsv` name means tabs on the way out too: the output reads back with its columns,
    and a `.tsv` input copied into a `.csv` output is not left tab-separated inside it."""
    from detector.batch.files import score_file

    records = eval_frame.drop(columns=["label", "anomaly_kind"]).head(50)
    for source_name, target_name in [("in.tsv", "out.tsv"), ("in.csv", "out.tsv.gz")]:
        source = tmp_path / source_name
        records.to_csv(source, index=False, sep="\t" if source_name.endswith(".tsv") else ",")
        target = tmp_path / target_name
        score_file(fitted.bundle_, source, target)
        back = pd.read_csv(target, sep="\t")
        assert list(back.columns[: records.shape[1]]) == list(records.columns)
        assert back["anomaly_score"].notna().all() and len(back) == len(records)
    score_file(fitted.bundle_, tmp_path / "in.tsv", tmp_path / "out.csv")
    back = pd.read_csv(tmp_path / "out.csv")
    assert list(back.columns[: records.shape[1]]) == list(records.columns)
    pd.testing.assert_frame_equal(back[records.columns], records)
