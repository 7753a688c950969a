"""HTML reports: one self-contained page that shows how a model trained and how well it detects.

``training_report`` shows a bundle's summary, its per-epoch loss curves (each loss term for the
fit rows beside the validation rows) and the anomaly scores of the held-out calibration rows
(normal records the network never fitted on) against the threshold learned from them. Given
scores of a labelled held-out file it adds the evaluation: metrics, ROC and precision-recall
curves, and the score distribution per label. ``evaluation_report`` is that evaluation alone,
for an existing bundle (``anomaly evaluate --report``); both pages use the same figures.

Pages need nothing outside themselves: the CSS is inline and every figure is a PNG embedded as
base64, drawn by matplotlib's Agg canvas on a ``Figure`` of its own (no pyplot, so no global
figure state and no display). Scores are ``anomaly_score``: higher = more anomalous.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from detector.cli.report_figures import (
    loss_curves,
    precision_recall_figure,
    roc_figure,
    score_histogram,
)
from detector.io.temporaries import (
    partial_path,
    remove_stale_temporaries,
    told_as,
    written_path,
)
from detector.scoring.evaluation import (
    Evaluation,
    evaluate_scores,
    fpr_warning,
    group_name,
    left_out_note,
    precision_text,
)
from detector.wording import leave_one_out_note, measured_at_note, scored_note, training_end

if TYPE_CHECKING:
    from detector.bundles.bundle import Bundle


@dataclass(frozen=True, eq=False)
class LabelledScores:
    """Anomaly scores ``(n,)`` (higher = more anomalous) of labelled records the model did not
    train on, with their labels ``(n,)`` (True = anomaly), and where they came from; ``groups``
    ``(n,)``, where given, is each record's value of the column ``group_column``, for the
    report's detection per group (``anomaly evaluate --by-column``); ``warnings``, what
    ``anomaly evaluate`` warned of them (rows the model trained on, say)."""

    labels: np.ndarray
    anomaly_score: np.ndarray
    source: str
    n_rejected: int = 0
    groups: np.ndarray | None = None
    group_column: str | None = None
    warnings: tuple[str, ...] = ()

    def evaluate(self, threshold: float) -> Evaluation:
        return evaluate_scores(
            self.labels,
            self.anomaly_score,
            threshold,
            n_rejected=self.n_rejected,
            groups=self.groups,
        )


def training_report(bundle: Bundle, *, labelled: LabelledScores | None = None) -> str:
    """The training page for ``bundle`` (its summary, loss history and held-out scores), plus
    the evaluation of ``labelled`` when given."""
    training = bundle.training
    sections = [_section("Model", "summary", _table(_summary_rows(bundle)))]
    history = training.get("history") or {}
    if history:
        sections.append(
            _section(
                "Loss curves",
                "loss-curves",
                _paragraph(
                    "Each loss term per epoch, on the rows the network fitted and on the "
                    "validation rows early stopping watched; the dotted line marks the epoch "
                    "whose weights were kept. Lower is better."
                )
                + _image(loss_curves(history, best_epoch=training.get("best_epoch")), "loss"),
            )
        )
    calibrator = bundle.calibrator
    sections.append(
        _section(
            "Held-out normal scores",
            "heldout-scores",
            _paragraph(
                f"Anomaly scores of the {len(calibrator.reference)} held-out calibration rows "
                "(normal records neither training nor early stopping saw); the threshold is "
                f"set so that {calibrator.target_fpr:.2%} of normal records score above it."
            )
            + _image(
                score_histogram(
                    {"held-out normal": calibrator.reference},
                    threshold=calibrator.threshold,
                ),
                "held-out normal score histogram",
            ),
        )
    )
    if labelled is not None:
        sections += _evaluation_sections(bundle, labelled)
    return _page(f"Training report: {bundle.model_type} {bundle.version}", sections)


def evaluation_report(bundle: Bundle, labelled: LabelledScores) -> str:
    """The evaluation page: ``bundle``'s summary, then ``labelled``'s metrics and curves."""
    sections = [_section("Model", "summary", _table(_summary_rows(bundle)))]
    sections += _evaluation_sections(bundle, labelled)
    return _page(f"Evaluation report: {bundle.model_type} {bundle.version}", sections)


def write_report(path: str | os.PathLike[str], page: str) -> None:
    """Write ``page`` to ``path`` atomically (a partial file renamed into place), first removing
    what killed writers of the same report left."""
    target = written_path(path)
    remove_stale_temporaries(target)
    partial = partial_path(target)
    try:
        with told_as(target):
            partial.write_text(page, encoding="utf-8")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


# Control characters (a NUL in a column name) and lone surrogates (a file name that is not
# UTF-8, as Python decodes it) cannot be written as UTF-8 text, or make a page tools take for
# binary; bidirectional controls (Unicode's Bidi_Control) reorder the text around them, so a
# group 'abc\u202egnp.exe' read "abcexe.png". Each shows as U+FFFD, as the terminal escapes them.
_UNWRITABLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _escape(text: str) -> str:
    return html.escape(_UNWRITABLE.sub("\ufffd", text))


# ---- figures: each returns PNG bytes ---------------------------------------------------------


def _evaluation_sections(bundle: Bundle, labelled: LabelledScores) -> list[str]:
    threshold = bundle.calibrator.threshold
    result = labelled.evaluate(threshold)
    labels = np.asarray(labelled.labels, dtype=bool)
    scores = np.asarray(labelled.anomaly_score, dtype=np.float64)
    metrics = [
        ("data", labelled.source),
        ("records scored", f"{result.n} ({result.n_anomalies} labelled anomalous)"),
        ("records rejected", str(result.n_rejected)),
        ("AUROC", f"{result.auroc:.4f}"),
        ("average precision (AUPRC)", f"{result.auprc:.4f}"),
        (
            f"at threshold {threshold:.4f}",
            f"precision {precision_text(result)}, recall {result.recall:.4f}, F1 {result.f1:.4f}, "
            f"false-positive rate {result.false_positive_rate:.2%}",
        ),
        (
            "best F1",
            f"{result.best_f1:.4f} at threshold {result.best_f1_threshold:.4f} (chosen on "
            "these labels)",
        ),
    ]
    metrics += [("warning", warning) for warning in labelled.warnings]
    if warning := fpr_warning(result, bundle.calibrator.target_fpr):
        metrics.append(("warning", warning))
    sections = [_section("Detection on labelled data", "evaluation", _table(metrics))]
    if result.by_group:
        sections.append(_group_section(result, labelled.group_column or "group"))
    return [
        *sections,
        _section("ROC curve", "roc", _image(roc_figure(labels, scores, result.auroc), "ROC curve")),
        _section(
            "Precision-recall curve",
            "precision-recall",
            _image(precision_recall_figure(labels, scores, result.auprc), "precision-recall curve"),
        ),
        _section(
            "Scores by label",
            "scores-by-label",
            _image(
                score_histogram(
                    {"normal (label 0)": scores[~labels], "anomalous (label 1)": scores[labels]},
                    threshold=threshold,
                ),
                "score histogram by label",
            ),
        ),
    ]


#: The per-group table's columns: heading, key in ``group_metrics``, format.
_GROUP_COLUMNS = (
    ("records", "n", "{:d}"),
    ("labelled anomalous", "n_anomalies", "{:d}"),
    ("flagged", "flagged", "{:.2%}"),
    ("recall", "recall", "{:.4f}"),
    ("AUROC", "auroc", "{:.4f}"),
    ("AUPRC", "auprc", "{:.4f}"),
)


def _alone(stats: Mapping[str, Any]) -> bool:
    return bool(stats.get("against") == "every normal record")


def _group_section(result: Evaluation, column: str) -> str:
    """Detection per value of ``column``; a metric a group's labels cannot give shows as '-',
    with the reason in the last column."""
    header = [column, *(title for title, _, _ in _GROUP_COLUMNS), "note"]
    rows = [
        [
            group_name(value),
            *(
                "-" if stats[key] is None else fmt.format(stats[key])
                for _, key, fmt in _GROUP_COLUMNS
            ),
            stats["unavailable"]
            or ("AUROC, AUPRC: against every normal record of the file" if _alone(stats) else ""),
        ]
        for value, stats in sorted(result.by_group.items())
    ]
    return _section(
        f"Detection by {column}",
        "by-group",
        _paragraph(
            f"Per value of {column}: the share of its records flagged at the threshold, the "
            "share of its anomalies flagged (recall), and how well scores rank its anomalies "
            "above its normal records (AUROC, AUPRC); a value holding anomalies only (an "
            "anomaly kind) is ranked against every normal record of the file instead."
        )
        + _grid(header, rows)
        + (_paragraph(left_out_note(result)) if result.groups_left_out else ""),
    )


def _summary_rows(bundle: Bundle) -> list[tuple[str, str]]:
    t = bundle.training
    rows = [
        ("model type", bundle.model_type),
        ("version", bundle.version),
        ("columns", f"{len(bundle.schema.column_order)} -> {bundle.schema.n_features} features"),
        ("score", bundle.describe_score()),
        (
            "threshold",
            f"{bundle.calibrator.threshold:.4f} at target false-positive rate "
            f"{bundle.calibrator.target_fpr:.2%}",
        ),
    ]
    if t:
        in_force = bundle.calibrator.target_fpr
        counts = (t.get(k, 0) for k in ("rows", "fit_rows", "validation_rows", "calibration_rows"))
        overlap = leave_one_out_note(*(int(c or 0) for c in counts))
        rows += [
            ("network", "-".join(map(str, t.get("hidden_units", [])))),
            ("latent", f"{t.get('latent_dim')} ({t.get('active_latent_units')} active units)"),
            (
                "rows",
                f"{t.get('rows')}: {t.get('fit_rows')} fit, {t.get('validation_rows')} "
                f"validation, {t.get('calibration_rows')} calibration{overlap}",
            ),
            (
                "epochs",
                f"{t.get('epochs_run')} run, best {t.get('best_epoch')} "
                f"({training_end(bool(t.get('stopped_early')), None, t.get('budget'))})",
            ),
            ("validation ELBO", _number(-_float(t.get("val_neg_elbo")), "nats/record")),
            (
                "held-out validation FPR",
                f"{_float(t.get('validation_fpr')):.2%}"
                + measured_at_note(t.get("target_fpr", in_force), in_force)
                + scored_note(t.get("validation_scored"), t.get("validation_rows")),
            ),
            ("training time", _number(_float(t.get("seconds")), "s")),
        ]
    # One row per warning: each is a sentence with its own "; ", so joined they would blur.
    rows += [("warning", str(w)) for w in t.get("warnings", [])] or [("warnings", "none")]
    return rows


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _number(value: float, unit: str) -> str:
    return f"{value:.3f} {unit}" if np.isfinite(value) else "unknown"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
table { border-collapse: collapse; } td, th { padding: 0.3em 0.8em; text-align: left;
  border-bottom: 1px solid #ddd; vertical-align: top; } th { font-weight: 600; }
img { max-width: 100%; } .note { color: #555; }
"""


def _page(title: str, sections: list[str]) -> str:
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<h1>{_escape(title)}</h1>\n<p class="note">written {created}; anomaly_score: '
        "higher = more anomalous</p>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )


def _section(title: str, anchor: str, body: str) -> str:
    return f'<section id="{anchor}">\n<h2>{_escape(title)}</h2>\n{body}\n</section>'


def _paragraph(text: str) -> str:
    return f'<p class="note">{_escape(text)}</p>\n'


def _table(rows: Iterable[tuple[str, str]]) -> str:
    body = "\n".join(
        f"<tr><th>{_escape(str(k))}</th><td>{_escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>\n{body}\n</table>"


def _grid(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table with a heading row, every cell text."""
    head = "".join(f"<th>{_escape(str(h))}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{_escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_escape(alt)}">'
