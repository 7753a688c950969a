"""Detection quality against labels: AUROC, AUPRC, precision/recall/F1 at the threshold, best F1."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from detector.errors import DataError
from detector.wording import retarget_command


@dataclass(frozen=True)
class Evaluation:
    """Metrics for labelled records (label 1 = anomaly); ``anomaly_score`` higher = more
    anomalous. ``by_group`` holds, per value of a grouping column, ``group_metrics``."""

    n: int
    n_anomalies: int
    n_rejected: int
    auroc: float
    auprc: float
    threshold: float
    #: ``None`` where nothing is flagged: 0/0, which 0.0 would misstate as all false alarms.
    precision: float | None
    recall: float
    f1: float
    false_positive_rate: float
    best_f1: float
    #: Flagging scores above it (the tool's rule, ``>``) gives ``best_f1``: halfway between the
    #: lowest score flagged and the highest not.
    best_f1_threshold: float
    by_group: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Groups beyond ``MAX_GROUPS`` (the smallest), not in ``by_group``.
    groups_left_out: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UnlabelledRows(DataError):
    """Rows whose label is empty: no spelling of the labels would read them."""


def check_labelled(values: pd.Series, text: pd.Series, column: str) -> None:
    """``UnlabelledRows`` where a label (``text``: ``values`` as stripped text) is empty."""
    empty = (text.isna() | (text == "") | (text.str.lower() == "nan")).to_numpy(dtype=bool)
    if empty.any():
        raise UnlabelledRows(
            f"label column '{column}' is empty in {int(empty.sum())} row(s) (first: data row "
            f"{_data_row(values, int(np.flatnonzero(empty)[0]))}); give every row a label, or "
            "drop the unlabelled rows"
        )


def parse_labels(values: pd.Series, column: str) -> np.ndarray:
    """0/1 or true/false labels as a boolean array; anything else is a ``DataError`` naming the
    first bad value's data row (1-based, as the rejects file counts), read from ``values``'
    index where it holds the rows' 0-based positions in their file."""
    text = values.astype("string").str.strip().str.lower()
    check_labelled(values, text, column)
    mapping = {"1": True, "0": False, "true": True, "false": False, "1.0": True, "0.0": False}
    parsed = text.map(mapping)
    bad = parsed.isna()
    if bad.any():
        example = values[bad].iloc[0]
        if isinstance(example, np.generic):
            example = example.item()  # shown as 2, not np.int64(2)
        raise DataError(
            f"label column '{column}' holds {example!r} (data row "
            f"{_data_row(values, int(np.flatnonzero(bad)[0]))}); labels must be 1/0 or "
            "true/false, with 1 = anomaly"
        )
    return parsed.to_numpy(dtype=bool)


def _data_row(values: pd.Series, position: int) -> int:
    """The 1-based data row of ``values``' row at ``position``: from the index where it holds
    the rows' 0-based positions in their file."""
    index = values.index
    return int(index[position]) + 1 if pd.api.types.is_integer_dtype(index) else position + 1


#: Groups measured by ``evaluate_scores``, the largest first: a column of a few groups (an
#: anomaly kind, a host) is what a breakdown is for. An id column's 30,720 groups took 55 s
#: and 850 MB, and printed a line each.
MAX_GROUPS = 100


def evaluate_scores(
    labels: np.ndarray,
    anomaly_score: np.ndarray,
    threshold: float,
    *,
    n_rejected: int = 0,
    groups: np.ndarray | None = None,
) -> Evaluation:
    """Metrics for scored rows: ``labels`` bool ``(n,)``, ``anomaly_score`` ``(n,)``."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(anomaly_score, dtype=np.float64)
    if labels.all() or not labels.any():
        raise DataError(
            "the labelled rows hold only one class; evaluation needs both normal (0) and "
            "anomalous (1) records"
        )
    flagged = scores > threshold
    tp = int((flagged & labels).sum())
    fp = int((flagged & ~labels).sum())
    fn = int((~flagged & labels).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn)
    # Precision and recall's harmonic mean, written so that it needs no precision: with nothing
    # flagged it is 0 (every anomaly missed), defined where precision is not.
    f1 = 2 * tp / (2 * tp + fp + fn)
    curve_p, curve_r, curve_t = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1s = np.where(curve_p + curve_r > 0, 2 * curve_p * curve_r / (curve_p + curve_r), 0.0)
    best = int(np.argmax(f1s[:-1])) if len(f1s) > 1 else 0
    by_group: dict[str, dict[str, Any]] = {}
    left_out = 0
    if groups is not None:
        codes, values = pd.factorize(np.asarray(groups), use_na_sentinel=False)
        sizes = np.bincount(codes, minlength=len(values))
        largest = np.argsort(-sizes, kind="stable")[:MAX_GROUPS]
        left_out = len(values) - len(largest)
        for code in largest:
            mask = codes == code
            by_group[str(values[code])] = group_metrics(
                labels[mask], scores[mask], flagged[mask], normal_scores=scores[~labels]
            )
    return Evaluation(
        n=len(labels),
        n_anomalies=int(labels.sum()),
        n_rejected=n_rejected,
        auroc=float(roc_auc_score(labels, scores)),
        auprc=float(average_precision_score(labels, scores)),
        threshold=float(threshold),
        precision=precision,
        recall=recall,
        f1=f1,
        false_positive_rate=fp / int((~labels).sum()),
        best_f1=float(f1s[best]),
        best_f1_threshold=_cut_below(scores, float(curve_t[best]))
        if len(curve_t)
        else float(threshold),
        by_group=by_group,
        groups_left_out=left_out,
    )


#: How far above its target a labelled set's false-positive rate may be before it is warned
#: of (and 3 standard deviations of chance, a Poisson count's), and the false alarms the
#: target must expect among its normal rows for that to be told.
FPR_OVER_TARGET = 1.5
FPR_EXPECTED_ALARMS = 5


def fpr_warning(result: Evaluation, target_fpr: float) -> str | None:
    """What to say where these normal rows cross the threshold well above its target: a
    fraud team's month was flagged at 1.72% against 1%, and the report said "warnings none".
    Retraining is the fix it names: on drifted rows, a target lowered from 1% to 0.01% left
    their false-positive rate at 20% and recall fell from 1.00 to 0.72, where retraining on
    recent rows gave 2.7% at recall 0.98."""
    normals = result.n - result.n_anomalies
    rate = result.false_positive_rate
    expected = normals * target_fpr
    chance = expected + 3 * expected**0.5
    if expected < FPR_EXPECTED_ALARMS or rate * normals <= max(FPR_OVER_TARGET * expected, chance):
        return None
    return (
        f"{rate:.2%} of these {normals:,} normal rows are flagged, {rate / target_fpr:.1f}x the "
        f"target {target_fpr:.2%}: they differ from the training rows (another period, drift, "
        "hosts or sources training never saw): retrain on recent normal rows. A lower target "
        f"({retarget_command()}) only flags fewer rows, at the cost of missed anomalies"
    )


def precision_text(result: Evaluation) -> str:
    """``result``'s precision to 4 places, or a dash saying why there is none."""
    return "- (nothing flagged)" if result.precision is None else f"{result.precision:.4f}"


#: How the group of empty values ('' in ``by_group``: an empty cell is read as empty, never
#: as text) is shown in the text and the HTML report.
EMPTY_GROUP = "(empty)"


def group_name(value: str) -> str:
    """A ``by_group`` key as a table shows it."""
    return value or EMPTY_GROUP


def left_out_note(result: Evaluation) -> str:
    """What the breakdown of ``result`` leaves out, if anything ('' where nothing)."""
    if not result.groups_left_out:
        return ""
    return (
        f"... and {result.groups_left_out:,} smaller groups, left out: the breakdown shows the "
        f"{MAX_GROUPS} largest, as it is for a column of a few values (an anomaly kind, a host)"
    )


def group_metrics(
    labels: np.ndarray,
    anomaly_score: np.ndarray,
    flagged: np.ndarray,
    *,
    normal_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """One group's detection: ``n`` records, ``n_anomalies``, ``flagged`` (the share above the
    threshold), ``recall`` (the share of its anomalies flagged), ``auroc`` and ``auprc``
    (``anomaly_score`` higher = more anomalous), from bool ``labels``, scores and ``flagged``
    ``(n,)``. A group of anomalies only (a group per anomaly kind, say) is ranked against
    ``normal_scores``, every normal record of the file, if given: how well that kind stands out
    from normal traffic. A metric the group cannot give is ``None``, and ``unavailable`` says
    why (``None`` where every metric is given); ``against`` says what AUROC and AUPRC compare."""
    n_anomalies = int(labels.sum())
    both = 0 < n_anomalies < len(labels)
    only_anomalies = n_anomalies == len(labels) > 0
    against_all = only_anomalies and normal_scores is not None and len(normal_scores) > 0
    ranked_labels, ranked_scores = labels, anomaly_score
    if against_all:
        assert normal_scores is not None
        ranked_labels = np.r_[labels, np.zeros(len(normal_scores), dtype=bool)]
        ranked_scores = np.r_[anomaly_score, normal_scores]
    ranked = both or against_all
    metrics: dict[str, Any] = {
        "n": len(labels),
        "n_anomalies": n_anomalies,
        "flagged": float(flagged.mean()),
        "recall": float(flagged[labels].mean()) if n_anomalies else None,
        "auroc": float(roc_auc_score(ranked_labels, ranked_scores)) if ranked else None,
        "auprc": float(average_precision_score(ranked_labels, ranked_scores)) if ranked else None,
        "against": (
            "the group's normal records" if both else "every normal record" if ranked else None
        ),
        "unavailable": None,
    }
    if not n_anomalies:
        metrics["unavailable"] = (
            "no anomalies (label 1) in this group: recall, AUROC and AUPRC need some; "
            "'flagged' is its false-positive rate"
        )
    elif not ranked:
        metrics["unavailable"] = (
            "only anomalies (label 1) here and no normal record in the file: AUROC and AUPRC "
            "need normal records too; 'recall' is the share of them flagged"
        )
    return metrics


def _cut_below(scores: np.ndarray, lowest_flagged: float) -> float:
    """A threshold that flags with ``>`` exactly the scores at or above ``lowest_flagged``
    (scikit-learn's curves cut with ``>=``: a score equal to the one reported was flagged
    there and not by the tool), halfway to the next lower score so it survives rounding."""
    below = scores[scores < lowest_flagged]
    if not len(below):
        return float(np.nextafter(lowest_flagged, -np.inf))
    return float((lowest_flagged + below.max()) / 2)
