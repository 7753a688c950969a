"""What a new user hit on first use (issue #20): each test is one of the frictions, fixed."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.bundles.bundle import load_bundle, write_manifest
from detector.bundles.format import MANIFEST_FILE
from detector.cli.main import main
from tests.conftest import DATA

#: A network too small and short-trained to be good: these tests are about the command line.
TINY_FLAGS = [
    "--epochs",
    "2",
    "--hidden-units",
    "16,8",
    "--latent-dim",
    "2",
    "--kl-warmup-epochs",
    "1",
    "--batch-size",
    "256",
    "--neighbours",
    "0",
    "--score",
    "elbo",
    "--quiet",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def with_timestamp(frame: pd.DataFrame) -> pd.DataFrame:
    stamps = pd.date_range("2026-01-01", periods=len(frame), freq="min").astype(str)
    return frame.assign(timestamp=stamps)


@pytest.fixture(scope="module")
def timestamped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A bundle trained with ``--ignore-column timestamp``, and labelled records that still
    hold ``timestamp``."""
    root = tmp_path_factory.mktemp("first-use")
    train = root / "train.csv"
    with_timestamp(pd.read_csv(DATA / "train.csv").head(600)).to_csv(train, index=False)
    records = root / "eval.csv"
    with_timestamp(pd.read_csv(DATA / "eval.csv").head(400)).to_csv(records, index=False)
    model = root / "model"
    argv = ["train", train, "--out", model, "--ignore-column", "timestamp", *TINY_FLAGS]
    assert main([str(a) for a in argv]) == 0
    return model, records


# 1. The bundle remembers --ignore-column.


def test_score_carries_the_ignored_column_through_unscored(capsys, timestamped, tmp_path):
    model, records = timestamped
    output = tmp_path / "scored.csv"
    code, _, err = run(
        capsys, "score", model, records, "--output", output, "--keep-column", "label",
        "--keep-column", "anomaly_kind", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    scored = pd.read_csv(output)
    assert len(scored) == 400
    # Echoed like a kept column: the timestamp is what finds a flagged row again.
    assert scored["timestamp"].tolist() == pd.read_csv(records)["timestamp"].tolist()
    assert not scored.filter(like="top_feature_").isin(["timestamp"]).any().any()


def test_score_does_not_need_the_ignored_column(capsys, timestamped, tmp_path):
    model, records = timestamped
    without = tmp_path / "plain.csv"
    pd.read_csv(records).drop(columns=["timestamp", "label", "anomaly_kind"]).to_csv(
        without, index=False
    )
    code, _, err = run(capsys, "score", model, without, "--output", tmp_path / "o.csv", "--quiet")
    assert code == 0, err
    assert "timestamp" not in pd.read_csv(tmp_path / "o.csv").columns


def test_evaluate_ignores_the_ignored_column(capsys, timestamped):
    model, records = timestamped
    code, out, err = run(
        capsys, "evaluate", model, records, "--label-column", "label",
        "--by-column", "anomaly_kind", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n"] == 400


def test_info_lists_the_ignored_columns(capsys, timestamped):
    code, out, _ = run(capsys, "info", timestamped[0], "--json")
    assert code == 0
    assert json.loads(out)["ignored_columns"] == ["timestamp"]


def test_a_bundle_written_before_the_field_loads_with_nothing_ignored(bundle_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    manifest.pop("ignored_columns", None)
    write_manifest(old, manifest)  # sealed again, as the bundle's writer did then
    assert load_bundle(old).ignored_columns == ()


# 2. evaluate names the missing label first.


def test_evaluate_names_a_missing_label_before_unknown_columns(capsys, bundle_dir, tmp_path):
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(DATA / "eval.csv").head(50).drop(columns=["label"]).to_csv(unlabelled, index=False)
    code, out, err = run(capsys, "evaluate", bundle_dir, unlabelled, "--label-column", "label")
    assert code == 2
    assert "column 'label' is not in" in err
    assert "unknown column" not in err
    assert "Traceback" not in out + err


def test_evaluate_leaves_out_a_column_the_model_does_not_score(capsys, bundle_dir, tmp_path):
    # The README's `anomaly evaluate MODEL data/eval.csv --label-column label` was refused for
    # eval.csv's anomaly_kind column, though evaluate writes no rows for it to be lost from.
    code, out, err = run(
        capsys, "evaluate", bundle_dir, DATA / "eval.csv", "--label-column", "label"
    )
    assert code == 0, err
    assert "not scored (not the model's columns): ['anomaly_kind']" in out and "AUROC" in out
    # A model column renamed is still refused: missing, whatever else the file holds.
    renamed = pd.read_csv(DATA / "eval.csv").head(50).rename(columns={"cpu_pct": "cpu"})
    path = tmp_path / "renamed.csv"
    renamed.to_csv(path, index=False)
    code, _, err = run(capsys, "evaluate", bundle_dir, path, "--label-column", "label")
    assert code == 2 and "missing" in err and "cpu_pct" in err


def test_evaluate_of_rows_that_all_fail_says_so_not_one_class(capsys, bundle_dir, tmp_path):
    """Every row rejected used to read 'the labelled rows hold only one class'."""
    frame = pd.read_csv(DATA / "eval.csv").head(50).drop(columns=["anomaly_kind"])
    frame["mem_pct"] = None
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    code, _, err = run(capsys, "evaluate", bundle_dir, path, "--label-column", "label")
    assert code == 2 and "one class" not in err
    assert "every one of its 50 rows was rejected (missing_value 50)" in err
    frame.head(0).to_csv(path, index=False)
    code, _, err = run(capsys, "evaluate", bundle_dir, path, "--label-column", "label")
    assert code == 2 and "has a header but no data rows" in err


def test_evaluate_says_what_its_rejected_rows_were_labelled(capsys, bundle_dir, tmp_path):
    """Half the anomalies rejected (an empty value) and recall read 1.0 without a word; all
    of them rejected read 'the labelled rows hold only one class', though the file holds two."""
    frame = pd.read_csv(DATA / "eval.csv").drop(columns=["anomaly_kind"])
    frame = pd.concat([frame[frame.label == 0].head(150), frame[frame.label == 1].head(30)])
    anomalous = frame.index[frame.label == 1]
    half, whole = tmp_path / "half.csv", tmp_path / "whole.csv"
    frame.assign(cpu_pct=frame["cpu_pct"].where(~frame.index.isin(anomalous[:15]))).to_csv(
        half, index=False
    )
    frame.assign(cpu_pct=frame["cpu_pct"].where(frame.label == 0)).to_csv(whole, index=False)
    code, out, _ = run(capsys, "evaluate", bundle_dir, half, "--label-column", "label", "--json")
    report = json.loads(out)
    assert code == 0 and report["rejected_anomalies"] == 15
    found = round(report["recall"] * report["n_anomalies"])
    assert report["recall_with_rejected"] == found / 30
    code, out, _ = run(capsys, "evaluate", bundle_dir, half, "--label-column", "label")
    assert "15 of the rejected rows are labelled anomalous; the metrics below leave them" in out
    code, _, err = run(capsys, "evaluate", bundle_dir, whole, "--label-column", "label")
    assert code == 2 and "one class" not in err
    assert "every row of" in err and "labelled anomalous (30) was rejected" in err


def test_evaluate_groups_empty_values_apart_and_numbers_in_order(capsys, bundle_dir, tmp_path):
    """Empty --by-column values made a group 'nan' (as the text 'nan' would), and groups named
    by numbers sorted as text: 10 before 2."""
    frame = pd.read_csv(DATA / "eval.csv").head(300).drop(columns=["anomaly_kind"])
    frame["grp"] = (frame.index % 12).astype(str)
    frame.loc[frame.index % 5 == 0, "grp"] = ""
    frame.to_csv(tmp_path / "g.csv", index=False)
    argv = ["evaluate", bundle_dir, tmp_path / "g.csv", "--label-column", "label"]
    code, out, _ = run(capsys, *argv, "--by-column", "grp")
    names = [line.split()[0] for line in out.split("by grp:")[1].splitlines()[1:] if line]
    assert code == 0 and names == [*map(str, range(12)), "(empty)"]


def test_evaluate_warns_where_the_label_is_one_of_the_models_inputs(capsys, tmp_path):
    """Trained with the label among its inputs, the scores saw the label: AUROC .999 against
    .9935 without it, and evaluate said nothing."""
    data = tmp_path / "eval.csv"
    pd.read_csv(DATA / "eval.csv").head(400).drop(columns=["anomaly_kind"]).to_csv(
        data, index=False
    )
    model = tmp_path / "m"
    assert run(capsys, "train", data, "--out", model, *TINY_FLAGS)[0] == 0
    argv = ["evaluate", model, data, "--label-column", "label"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "WARNING: the label column 'label' is one of the model's inputs" in out
    assert "these metrics are optimistic" in out and "--ignore-column label" in out
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0 and "one of the model's inputs" in json.loads(out)["warnings"][0]


def test_evaluate_keeps_empty_values_apart_from_the_text_empty(capsys, bundle_dir, tmp_path):
    """Empty --by-column values and the text '(empty)', the name they were shown by, made one
    group: one line, one set of metrics, for two kinds of row."""
    frame = pd.read_csv(DATA / "eval.csv").head(300).drop(columns=["anomaly_kind"])
    frame["grp"] = np.where(frame.index % 3 == 0, "(empty)", "a")
    frame.loc[frame.index % 3 == 1, "grp"] = ""
    frame.to_csv(tmp_path / "g.csv", index=False)
    argv = ["evaluate", bundle_dir, tmp_path / "g.csv", "--label-column", "label"]
    code, out, _ = run(capsys, *argv, "--by-column", "grp", "--json")
    groups = json.loads(out)["by_group"]
    assert code == 0 and {k: v["n"] for k, v in groups.items()} == {
        "(empty)": 100,
        "": 100,
        "a": 100,
    }
    report = tmp_path / "r.html"
    code, out, _ = run(capsys, *argv, "--by-column", "grp", "--report", report)
    table = out.split("by grp:")[1].split("wrote report")[0]
    names = [line.split()[0] for line in table.splitlines()[1:] if line]
    assert code == 0 and sorted(names) == ["(empty)", "(empty)", "a"]
    assert report.read_text().count("<tr><td>(empty)</td><td>100</td>") == 2


def test_evaluate_lists_a_group_whose_every_row_was_rejected(capsys, bundle_dir, tmp_path):
    """A host whose every row had a bad value was missing from the --by-column table, as if
    the file held none of it."""
    frame = pd.read_csv(DATA / "eval.csv").head(300).drop(columns=["anomaly_kind"])
    frame["grp"] = np.where(frame.index % 3 == 0, "a", "b")
    frame.loc[frame.index < 30, "grp"] = "gone"
    frame["cpu_pct"] = frame["cpu_pct"].astype(object)
    frame.loc[frame.index < 40, "cpu_pct"] = "n/a"  # all of 'gone', and 10 of the others
    frame.to_csv(tmp_path / "g.csv", index=False)
    argv = ["evaluate", bundle_dir, tmp_path / "g.csv", "--label-column", "label", "--by-column"]
    code, out, _ = run(capsys, *argv, "grp")
    lines = {line.split()[0]: line for line in out.split("by grp:")[1].splitlines()[1:] if line}
    assert code == 0 and lines["gone"].split(None, 1)[1] == "none scored (30 rejected)"
    assert lines["a"].endswith("(4 rejected)") and lines["b"].endswith("(6 rejected)")
    code, out, _ = run(capsys, *argv, "grp", "--json")
    assert json.loads(out)["rejected_by_group"] == {"gone": 30, "b": 6, "a": 4}


def test_a_column_both_left_out_and_used_is_named_so(capsys, tmp_path) -> None:
    # "--context names columns not in the data: ['host']", of a column that is.
    path = tmp_path / "t.csv"
    pd.read_csv(DATA / "train.csv").head(100).to_csv(path, index=False)
    for flags in (["--model", "cvae", "--context", "host"], ["--categorical", "hour"]):
        column = flags[-1]
        code, _, err = run(capsys, "train", path, "--out", tmp_path / "m", "--ignore-column",
                           column, *flags)  # fmt: skip
        assert code == 2 and f"['{column}'] would be left out (--ignore-column" in err


# 3. --out that is not a bundle fails before training.


@pytest.mark.parametrize("kind", ["folder of other files", "file"])
def test_train_refuses_an_out_that_is_not_a_bundle_before_training(
    capsys, monkeypatch, tmp_path, kind
):
    import detector.nn.training

    def no_training(*args: object, **kwargs: object) -> None:
        pytest.fail("trained before checking --out")

    monkeypatch.setattr(detector.nn.training, "train", no_training)
    out = tmp_path / "results"
    if kind == "file":
        out.write_text("not a bundle\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("keep me\n")
    code, _, err = run(capsys, "train", DATA / "train.csv", "--out", out, *TINY_FLAGS)
    assert code == 2
    assert f"--out {out}" in err
    assert "give a new" in err
    assert out.exists() and "Traceback" not in err


# 4. Text labels: evaluate --anomaly-value.


@pytest.fixture
def text_labelled(tmp_path: Path) -> Path:
    """Labels as KDD Cup 99 spells them: "normal." and "smurf."."""
    frame = pd.read_csv(DATA / "eval.csv").head(400)
    frame["label"] = frame["label"].map({0: "normal.", 1: "smurf."})
    path = tmp_path / "kdd_like.csv"
    frame.to_csv(path, index=False)
    return path


def test_train_reads_text_labels_as_evaluate_does(capsys, tmp_path, text_labelled):
    """train's --label-column took only 0/1: KDD-like labels could be evaluated but not left
    out of training."""
    out = tmp_path / "m"
    argv = ["train", text_labelled, "--out", out, "--ignore-column", "anomaly_kind"]
    argv += ["--label-column", "label", "--epochs", "1", "--json"]
    code, printed, err = run(capsys, *argv, "--normal-value", "normal.")
    assert code == 0, err
    normal = int((pd.read_csv(text_labelled)["label"] == "normal.").sum())
    assert json.loads(printed)["rows"] == normal < 400
    code, _, err = run(capsys, *argv, "--anomaly-value", "smurf")  # the dot left out
    assert code == 2 and "no row of" in err and "equal to ['smurf']" in err


def test_evaluate_anomaly_value_reads_text_labels(capsys, bundle_dir, text_labelled):
    code, out, err = run(
        capsys, "evaluate", bundle_dir, text_labelled, "--label-column", "label",
        "--keep-column", "anomaly_kind", "--anomaly-value", "smurf.", "--json",
    )  # fmt: skip
    assert code == 0, err
    expected = int((pd.read_csv(text_labelled)["label"] == "smurf.").sum())
    assert json.loads(out)["n_anomalies"] == expected > 0


def test_text_labels_without_anomaly_value_name_the_flag(capsys, bundle_dir, text_labelled):
    code, _, err = run(
        capsys, "evaluate", bundle_dir, text_labelled, "--label-column", "label",
        "--keep-column", "anomaly_kind",
    )  # fmt: skip
    assert code == 2
    assert "--anomaly-value" in err
    assert "'normal.'" in err


@pytest.mark.parametrize("flag", ["--anomaly-value", "--normal-value"])
def test_an_empty_text_label_is_refused_as_an_empty_0_1_label_is(
    capsys, bundle_dir, text_labelled, tmp_path, flag
):
    # Read as "every other value", 20 blanked anomaly labels became normal rows without a
    # word (148 anomalies counted as 128), or with --normal-value every blank an anomaly.
    frame = pd.read_csv(text_labelled)
    frame.loc[frame.index[frame["label"] == "smurf."][:5], "label"] = ""
    frame.to_csv(tmp_path / "blanks.csv", index=False)
    value = "smurf." if flag == "--anomaly-value" else "normal."
    code, _, err = run(
        capsys, "evaluate", bundle_dir, tmp_path / "blanks.csv", "--label-column", "label",
        "--keep-column", "anomaly_kind", flag, value,
    )  # fmt: skip
    assert code == 2 and "label column 'label' is empty in 5 row(s)" in err


def test_an_anomaly_value_that_matches_nothing_says_so(capsys, bundle_dir, text_labelled):
    code, _, err = run(
        capsys, "evaluate", bundle_dir, text_labelled, "--label-column", "label",
        "--keep-column", "anomaly_kind", "--anomaly-value", "smurf",
    )  # fmt: skip
    assert code == 2
    assert "no scored row" in err and "'smurf.'" in err


def test_evaluate_normal_value_reads_one_normal_label_among_many(capsys, bundle_dir, text_labelled):
    # KDD Cup 99 spells one normal label and many attack labels: name the normal one.
    code, out, err = run(
        capsys, "evaluate", bundle_dir, text_labelled, "--label-column", "label",
        "--keep-column", "anomaly_kind", "--normal-value", "normal.", "--json",
    )  # fmt: skip
    assert code == 0, err
    expected = int((pd.read_csv(text_labelled)["label"] != "normal.").sum())
    assert json.loads(out)["n_anomalies"] == expected > 0
    with pytest.raises(SystemExit) as exited:  # argparse: the two rules exclude each other
        run(
            capsys, "evaluate", bundle_dir, text_labelled, "--label-column", "label",
            "--normal-value", "normal.", "--anomaly-value", "smurf.",
        )  # fmt: skip
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_training_prints_progress_lines_when_stderr_is_not_a_terminal(capsys, tmp_path):
    # Training ran 22 minutes with no output under a CI job: the bar was only for terminals.
    flags = [f for f in TINY_FLAGS if f != "--quiet"]
    flags[flags.index("--epochs") + 1] = "20"
    train = tmp_path / "train.csv"
    pd.read_csv(DATA / "train.csv").head(300).to_csv(train, index=False)
    code, _, err = run(capsys, "train", train, "--out", tmp_path / "m", *flags, "--patience", "50")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("training: epoch ")]
    # The first epoch, then every tenth of the 20: 1, 2, 4, ..., 20.
    assert [line.split()[2].rstrip(":") for line in lines] == [
        "1/20",
        *(f"{e}/20" for e in range(2, 21, 2)),
    ]
    assert "neg_elbo" in lines[0] and "\r" not in err
    # Before the first epoch and after the last: a minute each, silent, at 1,000,000 rows.
    said = [line for line in err.splitlines() if line.startswith("training: ")]
    assert said[0] == f"training: reading {train}"
    assert said[1].startswith("training: read 300 rows (")
    trained = json.loads((tmp_path / "m" / MANIFEST_FILE).read_text())["training"]
    fit, val, cal = (trained[f"{part}_rows"] for part in ("fit", "validation", "calibration"))
    assert said[2] == (
        f"training: fitting the network on {fit} rows of {trained['n_features']} features (1 "
        "batch of 256 rows an epoch, at most 20 epochs)"
    )
    assert said[-1].startswith(f"training: scoring the {val} validation and {cal} calibration")
    code, _, err = run(capsys, "train", train, "--out", tmp_path / "q", *flags, "--quiet")
    assert code == 0 and "training: " not in err


def test_the_first_progress_lines_come_before_tensorflow_loads(tmp_path) -> None:
    # "training: reading ..." came after TensorFlow's ~20 s import: the command line imported
    # it before the command, and the line's function lived in a module that imports Keras.
    train = tmp_path / "train.csv"
    pd.read_csv(DATA / "train.csv").head(300).to_csv(train, index=False)
    flags = [f for f in TINY_FLAGS if f != "--quiet"]
    argv = ["train", str(train), "--out", str(tmp_path / "m"), *flags]
    # Each progress line, as it is written, with what of Keras and TensorFlow is loaded then.
    code = (
        "import sys\n"
        "from detector.cli.main import main\n"
        "class Watched:\n"
        "    def __init__(self, inner): self.inner = inner\n"
        "    def write(self, text):\n"
        "        if text.startswith('training: '):\n"
        "            loaded = [m for m in ('keras', 'tensorflow') if m in sys.modules]\n"
        "            print(text.split(' ')[1], *loaded, file=sys.stdout, flush=True)\n"
        "        return self.inner.write(text)\n"
        "    def __getattr__(self, name): return getattr(self.inner, name)\n"
        "sys.stderr = Watched(sys.stderr)\n"
        f"print('exit', main({argv!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.split()[0] in PROGRESS_WORDS]
    assert lines[:2] == ["reading", "read"], done.stdout + done.stderr
    assert lines[2] == "fitting keras tensorflow"  # loaded by then: the watch sees it
    assert done.stdout.splitlines()[-1] == "exit 0", done.stderr


#: The first word of each progress line before the epochs'.
PROGRESS_WORDS = ("reading", "read", "fitting")


def test_progress_lines_come_at_least_every_minute_off_a_terminal(capsys) -> None:
    # 300 epochs of a 1,000,000-row table, 20-45 s each: a line every 30 epochs was 10-20
    # minutes of silence in a CI log.
    from detector.nn.callbacks import ProgressBar

    now = [0.0]
    bar = ProgressBar(300, enabled=True, clock=lambda: now[0])
    for epoch in range(12):
        now[0] += 25.0
        bar.on_epoch_end(epoch, {"neg_elbo": 1.0, "val_neg_elbo": 1.0})
    lines = [line for line in capsys.readouterr().err.splitlines() if "training: epoch" in line]
    # Epoch 1, then the first epoch to end a minute or more after the last line: 4, 7, 10.
    assert [line.split()[2] for line in lines] == ["1/300:", "4/300:", "7/300:", "10/300:"]
    assert lines[1].endswith("(100 s)")


@pytest.mark.parametrize(
    ("rename", "ignore", "named"),
    [
        ({"disk_iops": "p_value"}, [], "the columns ['p_value']"),
        ({"disk_iops": "top_feature_1"}, [], "the columns ['top_feature_1']"),
        ({"host": "reject_code"}, [], "the columns ['reject_code']"),
        ({"host": "anomaly_score"}, ["anomaly_score"], "--ignore-column ['anomaly_score']"),
    ],
)
def test_training_refuses_a_column_named_as_one_scoring_adds(
    capsys, tmp_path, rename: dict[str, str], ignore: list[str], named: str
) -> None:
    # A model trained on a 'p_value' column trained, then refused every file it was given:
    # "already has column(s) ['p_value'], which scoring adds".
    train = tmp_path / "train.csv"
    pd.read_csv(DATA / "train.csv").head(200).rename(columns=rename).to_csv(train, index=False)
    flags = [a for c in ignore for a in ("--ignore-column", c)]
    code, _, err = run(capsys, "train", train, "--out", tmp_path / "m", *flags, *TINY_FLAGS)
    assert code == 2
    assert f"{named}: scoring adds columns of those names to its output" in err
    assert not (tmp_path / "m").exists()


def test_the_python_api_refuses_a_column_named_as_one_scoring_adds() -> None:
    from detector import VAEDetector
    from detector.errors import SchemaError

    frame = pd.read_csv(DATA / "train.csv").head(200).rename(columns={"cpu_pct": "is_anomaly"})
    with pytest.raises(SchemaError, match=r"\['is_anomaly'\]: scoring adds columns"):
        VAEDetector(epochs=1).fit(frame)


def test_training_refuses_a_file_scoring_would_read_otherwise(capsys, tmp_path) -> None:
    """pandas' to_csv writes the index as a nameless first column: training took it for a
    numeric column 'Unnamed: 0', and scoring then refused the same file ("have no name"). A
    delimiter ending each data line made pandas shift every value one column left, and
    training failed on "column 'disk_iops' has 799 empty values"."""
    frame = pd.read_csv(DATA / "train.csv").head(200)
    indexed = tmp_path / "indexed.csv"
    frame.to_csv(indexed)  # index=True, as pandas writes by default
    code, _, err = run(capsys, "train", indexed, "--out", tmp_path / "m", *TINY_FLAGS)
    assert code == 2 and "header column(s) [1] have no name" in err
    assert "to_csv writes unless index=False" in err
    trailing = tmp_path / "trailing.csv"
    lines = frame.to_csv(index=False).splitlines()
    trailing.write_text("\n".join([lines[0], *(f"{line}," for line in lines[1:])]) + "\n")
    code, _, err = run(capsys, "train", trailing, "--out", tmp_path / "m", *TINY_FLAGS)
    assert code == 2 and "its data rows have more fields than its header (13 names)" in err
    assert not (tmp_path / "m").exists()


def test_training_reads_a_parquet_file_as_scoring_does(capsys, tmp_path) -> None:
    """``frame.set_index('host').to_parquet(...)``: training took host for the frame's index
    and left it out of the model, so scoring the same file said "unknown column(s) ['host']".
    An index without a name, saved as '__index_level_0__', is refused, not trained on."""
    frame = pd.read_csv(DATA / "train.csv").head(200)
    named = tmp_path / "named.parquet"
    frame.set_index("host").to_parquet(named)
    code, _, err = run(capsys, "train", named, "--out", tmp_path / "m", *TINY_FLAGS)
    assert code == 0, err
    assert "host" in load_bundle(tmp_path / "m").input_columns
    code, _, err = run(capsys, "score", tmp_path / "m", named, "--output", tmp_path / "o.csv")
    assert code == 0, err
    shuffled = tmp_path / "shuffled.parquet"
    frame.set_index(pd.Index([i * 7 % 200 for i in range(200)])).to_parquet(shuffled)
    code, _, err = run(capsys, "train", shuffled, "--out", tmp_path / "m2", *TINY_FLAGS)
    assert code == 2 and "['__index_level_0__'], pandas' index saved beside the data" in err


def test_training_reads_parquet_decimals_as_numbers(capsys, tmp_path) -> None:
    """Spark, dbt and databases write exact NUMERIC columns as Parquet decimals, which reach
    pandas as Python ``Decimal`` objects: training took a metric for text ("4325 distinct text
    values, which looks like an identifier"), and one of few values for labels, while scoring's
    reader read them as numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(DATA / "train.csv").head(400)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name, digits in (("cpu_pct", 2), ("hour", 0)):
        exact = pa.array([Decimal(f"{v:.{digits}f}") for v in frame[name]], pa.decimal128(8, 2))
        table = table.set_column(table.schema.get_field_index(name), name, exact)
    decimals = tmp_path / "decimals.parquet"
    pq.write_table(table, decimals)
    code, _, err = run(capsys, "train", decimals, "--out", tmp_path / "m", *TINY_FLAGS)
    assert code == 0, err
    schema = load_bundle(tmp_path / "m").schema
    assert {"cpu_pct", "hour"} <= {c.name for c in schema.numeric}
    code, _, err = run(capsys, "score", tmp_path / "m", decimals, "--output", tmp_path / "o.csv")
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "o.csv")) == 400


def test_the_python_api_takes_decimals_and_refuses_durations() -> None:
    from detector import VAEDetector
    from detector.errors import DataError

    frame = pd.read_csv(DATA / "train.csv").head(200)
    exact = frame.assign(cpu_pct=[Decimal(str(v)) for v in frame["cpu_pct"]])
    fitted = VAEDetector(epochs=1, hidden_units=(8,), latent_dim=2).fit(exact)
    assert "cpu_pct" in {c.name for c in fitted.bundle_.schema.numeric}
    lasting = frame.assign(latency_p50_ms=pd.to_timedelta(frame["latency_p50_ms"], unit="ms"))
    with pytest.raises(DataError, match=r"'latency_p50_ms' holds durations .*total_seconds\(\)"):
        VAEDetector(epochs=1).fit(lasting)
    with pytest.raises(DataError, match="'cpu_pct' holds complex numbers"):
        VAEDetector(epochs=1).fit(frame.assign(cpu_pct=frame["cpu_pct"] + 1j))


def test_a_date_column_is_not_trained_as_labels(capsys, tmp_path) -> None:
    """A 'day' column of a few dates trained as labels, so every later day was one the model
    never saw; named as --categorical it is kept, and a Parquet date32 column then scores as
    the same dates as text do (read by numpy, '2026-01-01 00:00:00' matched no label: every
    row of the training file itself was flagged)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(DATA / "train.csv").head(300)
    days = pd.Series(pd.date_range("2026-01-01", periods=len(frame), freq="h")).dt.date
    dated = tmp_path / "dated.csv"
    frame.assign(day=days.astype(str)).to_csv(dated, index=False)
    code, _, err = run(capsys, "train", dated, "--out", tmp_path / "m", *TINY_FLAGS)
    assert code == 2 and "column 'day' holds times ('2026-01-01', ...)" in err
    assert "--ignore-column day" in err
    labels = ["--categorical", "day", *TINY_FLAGS]
    code, _, err = run(capsys, "train", dated, "--out", tmp_path / "m", *labels)
    assert code == 0, err
    table = pa.Table.from_pandas(frame, preserve_index=False).append_column(
        "day", pa.array(days.tolist(), pa.date32())
    )
    pq.write_table(table, tmp_path / "dated.parquet")
    for name in ("dated.csv", "dated.parquet"):
        code, _, err = run(
            capsys,
            "score",
            tmp_path / "m",
            tmp_path / name,
            "--output",
            tmp_path / f"{name}.out.csv",
        )
        assert code == 0, err
    text, parquet = (pd.read_csv(tmp_path / f"{n}.out.csv") for n in ("dated.csv", "dated.parquet"))
    assert np.allclose(text["anomaly_score"], parquet["anomaly_score"])
    assert parquet["is_anomaly"].mean() < 0.5
