"""The report's figures, each a PNG drawn by matplotlib's Agg canvas on a ``Figure`` of its
own (no pyplot: no global figure state, no display): loss curves, score histograms, ROC and
precision-recall curves. Scores are ``anomaly_score``: higher = more anomalous."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

#: Histograms cut their x axis here and gather everything beyond into the last bin: anomalies
#: score orders of magnitude above normal records and would squash the rest into one bar.
TAIL_QUANTILE = 0.99
NORMAL_COLOR = "#4c72b0"
ANOMALY_COLOR = "#dd5246"
VALIDATION_COLOR = "#dd8452"
LEADING_TERMS = ("loss", "neg_elbo", "nll", "kl")


def loss_curves(history: Mapping[str, Sequence[float]], *, best_epoch: int | None = None) -> bytes:
    """One panel per loss term: ``history[term]`` (fit rows) and ``history["val_" + term]``."""
    found = [k for k in history if not k.startswith("val_")]
    found += [k[4:] for k in history if k.startswith("val_") and k[4:] not in history]
    # The objective first, then the ELBO and its two parts, then whatever else the model adds.
    terms = [k for k in LEADING_TERMS if k in found] + [k for k in found if k not in LEADING_TERMS]
    columns = min(3, len(terms))
    rows = -(-len(terms) // columns)
    fig = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    for i, term in enumerate(terms):
        ax = fig.add_subplot(rows, columns, i + 1)
        for key, label, color in (
            (term, "train", NORMAL_COLOR),
            (f"val_{term}", "validation", VALIDATION_COLOR),
        ):
            if key in history:
                values = np.asarray(history[key], dtype=np.float64)
                ax.plot(np.arange(1, len(values) + 1), values, label=label, color=color, lw=1.3)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls=":", lw=1)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return png_bytes(fig)


def score_histogram(
    groups: Mapping[str, np.ndarray], *, threshold: float, colors: Iterable[str] = ()
) -> bytes:
    """Overlaid density histograms of anomaly scores per group, with the threshold line."""
    colors = list(colors) or [NORMAL_COLOR, ANOMALY_COLOR]
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in groups.values()])
    low = float(values.min())
    high = max(float(np.quantile(values, TAIL_QUANTILE)), threshold)
    high = high + 0.05 * (high - low) if high > low else low + 1.0
    bins = np.linspace(low, high, 61).tolist()
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for (name, scores), color in zip(groups.items(), colors, strict=False):
        scores = np.asarray(scores, dtype=np.float64)
        beyond = int((scores > high).sum())
        label = f"{name} (n={len(scores)}" + (
            f"; {beyond} beyond the axis, in the last bin)" if beyond else ")"
        )
        ax.hist(
            np.clip(scores, low, high),
            bins=bins,
            density=True,
            alpha=0.55,
            color=color,
            label=label,
        )
    ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:.4g}")
    ax.set_xlabel("anomaly_score (higher = more anomalous)")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return png_bytes(fig)


def roc_figure(labels: np.ndarray, anomaly_score: np.ndarray, auroc: float) -> bytes:
    """The ROC curve of ``anomaly_score`` against ``labels`` (True = anomaly)."""
    fpr, tpr, _ = roc_curve(labels, anomaly_score)
    fig = Figure(figsize=(4.6, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color=NORMAL_COLOR, lw=1.5, label=f"AUROC {auroc:.4f}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate (recall)")
    ax.set_title("ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return png_bytes(fig)


def precision_recall_figure(
    labels: np.ndarray, anomaly_score: np.ndarray, average_precision: float
) -> bytes:
    """The precision-recall curve, with the share of anomalies (a random ranking's precision)."""
    precision, recall, _ = precision_recall_curve(labels, anomaly_score)
    fig = Figure(figsize=(4.6, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.step(
        recall,
        precision,
        where="post",
        color=ANOMALY_COLOR,
        lw=1.5,
        label=f"AP {average_precision:.4f}",
    )
    ax.axhline(float(np.mean(labels)), color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return png_bytes(fig)


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


# ---- page pieces -----------------------------------------------------------------------------
