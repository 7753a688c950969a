"""HTML reports: self-contained pages with the expected sections and real PNG figures."""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from detector.bundles.bundle import load_bundle
from detector.cli.main import main
from detector.cli.report import LabelledScores, evaluation_report, training_report, write_report
from detector.scoring.scores import score_frame
from tests.conftest import DATA

IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
TRAINING_SECTIONS = ('id="summary"', 'id="loss-curves"', 'id="heldout-scores"')
EVALUATION_SECTIONS = (
    'id="evaluation"',
    'id="roc"',
    'id="precision-recall"',
    'id="scores-by-label"',
)


def _check_page(page: str, *, images: int, sections: tuple[str, ...]) -> None:
    """Self-contained (nothing fetched from elsewhere), with the sections and ``images`` PNGs."""
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page
    for section in sections:
        assert section in page, section
    found = IMAGE.findall(page)
    assert len(found) == images
    for data in found:
        png = base64.b64decode(data, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
            assert image.format == "PNG"


def _labelled(bundle, frame: pd.DataFrame) -> LabelledScores:  # type: ignore[no-untyped-def]
    result = score_frame(bundle, frame.drop(columns=["label"]), passthrough=["anomaly_kind"])
    labels = frame["label"].to_numpy(dtype=bool)[result.rows]
    return LabelledScores(labels, result.anomaly_score, "data/eval.csv")


def test_training_report_shows_summary_losses_and_heldout_scores(fitted, tmp_path) -> None:
    path = tmp_path / "report.html"
    write_report(path, training_report(fitted.bundle_))
    page = path.read_text()
    _check_page(page, images=2, sections=TRAINING_SECTIONS)
    for term in ("loss", "nll", "kl", "neg_elbo"):
        assert f"val_{term}" in fitted.bundle_.training["history"]
    assert fitted.bundle_.version in page
    assert f"{fitted.bundle_.calibrator.threshold:.4f}" in page
    assert "warnings</th><td>none" in page
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no partial file left


def test_training_report_with_labels_has_the_auroc_sklearn_gives(fitted, eval_frame) -> None:
    labelled = _labelled(fitted.bundle_, eval_frame)
    page = training_report(fitted.bundle_, labelled=labelled)
    _check_page(page, images=5, sections=TRAINING_SECTIONS + EVALUATION_SECTIONS)
    auroc = roc_auc_score(labelled.labels, labelled.anomaly_score)
    assert f"<td>{auroc:.4f}</td>" in page


def test_evaluation_report_has_curves_and_histograms(fitted, eval_frame) -> None:
    page = evaluation_report(fitted.bundle_, _labelled(fitted.bundle_, eval_frame))
    _check_page(page, images=3, sections=('id="summary"', *EVALUATION_SECTIONS))
    assert 'id="loss-curves"' not in page


def test_evaluate_cli_writes_the_report(capsys, bundle_dir, tmp_path) -> None:
    path = tmp_path / "eval.html"
    argv = ["evaluate", str(bundle_dir), str(DATA / "eval.csv"), "--label-column", "label"]
    code = main([*argv, "--keep-column", "anomaly_kind", "--report", str(path)])
    out, _ = capsys.readouterr()
    assert code == 0 and f"wrote report {path}" in out
    page = path.read_text()
    _check_page(page, images=3, sections=EVALUATION_SECTIONS)
    auroc = float(re.search(r"AUROC (\d\.\d{4})", out).group(1))  # type: ignore[union-attr]
    assert f"<td>{auroc:.4f}</td>" in page


def test_a_report_named_as_the_data_is_refused_before_it_replaces_it(
    capsys, bundle_dir, tmp_path
) -> None:
    """``--report data.csv`` wrote the HTML over the user's data, in train and evaluate."""
    data = tmp_path / "eval.csv"
    data.write_bytes((DATA / "eval.csv").read_bytes())
    before = data.read_bytes()
    evaluate = ["evaluate", str(bundle_dir), str(data), "--label-column", "label"]
    assert main([*evaluate, "--keep-column", "anomaly_kind", "--report", str(data)]) == 2
    assert "--report" in capsys.readouterr().err
    train = ["train", str(data), "--out", str(tmp_path / "m"), "--ignore-column", "anomaly_kind"]
    assert (
        main([*train, "--label-column", "label", "--report", str(tmp_path / "." / "eval.csv")]) == 2
    )
    assert "is the input" in capsys.readouterr().err
    assert data.read_bytes() == before and not (tmp_path / "m").exists()


def test_the_validation_fpr_says_its_target_after_threshold(capsys, bundle_dir, tmp_path):
    # The report showed the training's validation FPR beside the moved target with nothing to
    # say it was measured at the training's threshold (``anomaly info`` says so).
    import shutil

    model = tmp_path / "m"
    shutil.copytree(bundle_dir, model)
    trained_at = load_bundle(model).calibrator.target_fpr
    assert main(["threshold", str(model), "--fpr", str(trained_at / 2)]) == 0
    report = tmp_path / "r.html"
    argv = ["evaluate", str(model), str(DATA / "eval.csv"), "--label-column", "label"]
    assert main([*argv, "--keep-column", "anomaly_kind", "--report", str(report)]) == 0
    capsys.readouterr()
    assert f"at the training&#x27;s target FPR {trained_at:.3%}" in report.read_text()


def test_a_data_file_name_that_is_not_utf8_is_shown_replaced(capsys, bundle_dir, tmp_path):
    """The page names the data file; a name of bytes that are not UTF-8 (Python holds them as
    lone surrogates) failed the page's write after scoring: 'internal error: UnicodeEncodeError'
    with no metrics printed."""
    data = tmp_path / os.fsdecode(b"bad\xff.csv")
    data.write_bytes((DATA / "eval.csv").read_bytes())
    report = tmp_path / "r.html"
    argv = ["evaluate", str(bundle_dir), str(data), "--label-column", "label"]
    assert main([*argv, "--keep-column", "anomaly_kind", "--report", str(report)]) == 0
    assert "AUROC" in capsys.readouterr().out
    assert "bad\ufffd.csv" in report.read_bytes().decode("utf-8")


def test_bidirectional_controls_in_a_group_are_escaped_everywhere(capsys, bundle_dir, tmp_path):
    """A group 'abc<U+202E>gnp.exe' was written raw into the page, where it read "abcexe.png";
    the terminal and --json escape it too."""
    frame = pd.read_csv(DATA / "eval.csv").head(300).drop(columns=["anomaly_kind"])
    frame["grp"] = np.where(frame.index % 2 == 0, "abc\u202egnp.exe", "x\u2066y\u200f")
    data = tmp_path / "g.csv"
    frame.to_csv(data, index=False)
    report = tmp_path / "r.html"
    argv = ["evaluate", str(bundle_dir), str(data), "--label-column", "label", "--by-column"]
    assert main([*argv, "grp", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert main([*argv, "grp", "--json"]) == 0
    shown = out + capsys.readouterr().out + report.read_text(encoding="utf-8")
    assert not re.search("[\u200e\u200f\u202a-\u202e\u2066-\u2069]", shown)
    assert "abc\\u202egnp.exe" in out and "abc\ufffdgnp.exe" in report.read_text()


def test_nothing_flagged_leaves_precision_undefined_in_json_and_the_report(fitted) -> None:
    """With no score above the threshold, precision is 0/0: --json said 0.0 and the page
    0.0000 (all false alarms), where the text said "- (nothing flagged)"."""
    import json

    from detector.scoring.evaluation import evaluate_scores

    threshold = fitted.bundle_.calibrator.threshold
    labels = np.arange(40) % 4 == 0
    scores = threshold - 1 - np.linspace(0, 1, 40)
    result = evaluate_scores(labels, scores, threshold)
    reported = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert reported["precision"] is None and reported["recall"] == reported["f1"] == 0.0
    page = evaluation_report(fitted.bundle_, LabelledScores(labels, scores, "eval.csv"))
    assert "precision - (nothing flagged), recall 0.0000, F1 0.0000" in page


def test_a_file_written_into_the_model_bundle_is_refused_before_it_breaks_it(
    capsys, bundle_dir, tmp_path
) -> None:
    """``--report MODEL/manifest.json`` replaced the bundle's manifest (exit 0), and the bundle
    no longer loaded; the same for score's --output and --rejects, and sample's --output."""
    import shutil

    model = tmp_path / "m"
    shutil.copytree(bundle_dir, model)
    before = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    inside = str(model / "manifest.json")
    data = str(DATA / "eval.csv")
    for argv in (
        ["evaluate", str(model), data, "--label-column", "label", "--report", inside],
        ["score", str(model), data, "--output", inside],
        ["score", str(model), data, "--output", str(tmp_path / "o.csv"), "--rejects", inside],
        ["sample", str(model), "-n", "5", "--output", inside],
        ["train", data, "--out", str(model), "--ignore-column", "anomaly_kind", "--report", inside],
        ["train", data, "--out", str(tmp_path / "new"), "--report", str(tmp_path / "new")],
    ):
        assert main(argv) == 2, argv
        assert "inside the model bundle" in capsys.readouterr().err, argv
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()} == before
    assert not (tmp_path / "new").exists() and not (tmp_path / "o.csv").exists()


TRAIN_FLAGS = ["--epochs", "4", "--hidden-units", "16,8", "--latent-dim", "2", "--quiet"]


@pytest.fixture(scope="module")
def small_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "small.csv"
    pd.read_csv(DATA / "train.csv").head(600).to_csv(path, index=False)
    return path


def test_train_cli_writes_a_report_with_heldout_labelled_data(capsys, small_train, tmp_path):
    report = tmp_path / "train.html"
    code = main(
        [
            "train",
            str(small_train),
            "--out",
            str(tmp_path / "m"),
            *TRAIN_FLAGS,
            "--report",
            str(report),
            "--report-data",
            str(DATA / "eval.csv"),
            "--report-label-column",
            "label",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"wrote report {report}" in out
    page = report.read_text()
    _check_page(page, images=5, sections=TRAINING_SECTIONS + EVALUATION_SECTIONS)
    # The curves come from the held-out file, scored by the saved bundle.
    bundle = load_bundle(tmp_path / "m")
    labelled = _labelled(bundle, pd.read_csv(DATA / "eval.csv"))
    auroc = roc_auc_score(labelled.labels, labelled.anomaly_score)
    assert f"<td>{auroc:.4f}</td>" in page


def test_report_data_labels_are_read_with_the_trainings_label_values(capsys, tmp_path):
    # Trained with --normal-value none, the same labels in --report-data were refused: "labels
    # must be 1/0 or true/false".
    data = tmp_path / "eval.csv"
    pd.read_csv(DATA / "eval.csv").head(1500).to_csv(data, index=False)
    report = tmp_path / "r.html"
    argv = ["train", str(data), "--out", str(tmp_path / "m"), *TRAIN_FLAGS]
    argv += ["--label-column", "anomaly_kind", "--normal-value", "none", "--ignore-column"]
    argv += ["label", "--report", str(report), "--report-data", str(data)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "wrote report" in capsys.readouterr().out and "AUROC" in report.read_text()
    # The very rows it trained on: the page says its curves are optimistic.
    assert "are rows the model was trained on" in report.read_text()


def test_a_failing_report_never_fails_training(capsys, monkeypatch, small_train, tmp_path):
    import detector.cli.report

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(detector.cli.report, "training_report", broken)
    report = tmp_path / "train.html"
    argv = ["train", str(small_train), "--out", str(tmp_path / "m"), *TRAIN_FLAGS]
    code = main([*argv, "--report", str(report)])
    out, err = capsys.readouterr()
    assert code == 0
    assert "saved bundle" in out
    assert "WARNING: could not write the report" in err and "no fonts today" in err
    assert load_bundle(tmp_path / "m").version
    assert not report.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--report-data", "{data}/eval.csv"], "add --report PATH.html"),
        (
            ["--report", "{tmp}/r.html", "--report-data", "{data}/eval.csv"],
            "--report-label-column COL",
        ),
        (
            [
                "--report",
                "{tmp}/r.html",
                "--report-data",
                "{data}/train.csv",
                "--report-label-column",
                "label",
            ],
            "column 'label' is not in",
        ),
        (["--report-label-column", "label"], "--report-data"),
    ],
)
def test_bad_report_flags_exit_2_before_training(capsys, small_train, tmp_path, flags, message):
    values = {"tmp": tmp_path, "data": DATA}
    argv = ["train", str(small_train), "--out", str(tmp_path / "m"), *TRAIN_FLAGS]
    code = main([*argv, *[f.format(**values) for f in flags]])
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err
    assert not (tmp_path / "m").exists()


def test_histogram_gathers_the_tail_into_the_last_bin() -> None:
    from detector.cli.report_figures import score_histogram

    scores = np.r_[np.random.default_rng(0).normal(size=500), 1e6]
    png = score_histogram({"normal": scores}, threshold=2.0)
    assert png.startswith(b"\x89PNG")


def test_writing_a_report_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    from detector.io.temporaries import partial_path
    from tests.detector.test_hostile_batch import dead_pid

    page = tmp_path / "report.html"
    ours = partial_path(page).name
    host = ours[len(".report.html.") : -len(".partial")].rsplit("-", 2)[0]
    left = tmp_path / f".report.html.{host}-{dead_pid()}-0123abcd.partial"
    left.write_text("<html>half")
    write_report(page, "<html></html>")
    assert page.read_text() == "<html></html>" and not left.exists()
