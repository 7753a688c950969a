"""What scoring gives back: ``ScoreResult``, the scores, p-values, decisions and per-column
contributions of one input table, with its rejected rows (``detector.scoring.scores`` makes
them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from detector.features.encoded import Rejection, Respelling, SpellingTally


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """Scores for the accepted rows of one input table, plus the rejected rows.

    Arrays have one entry per scored row, in input order; ``rows`` gives each one's 0-based
    position in the input. ``contributions`` ``(n_scored, len(columns))`` is each modelled
    source column's negative log-likelihood above its typical value on held-out normal data
    (higher = more to blame), with one-hot groups summed back to their column; ``columns`` are
    the modelled columns in input order (context columns are conditioned on, never blamed).
    ``context_unseen`` ``(n_scored,)``, for a conditional model only (else ``None``), is true
    where a context value was never seen in training and the row was scored without it.
    ``warming_up`` ``(n_scored,)``, for a series model only, is true where the row had fewer
    rows of its series before it than the window holds (it borrowed its oldest one).
    ``respelled`` holds, for each text column, the values that differ from a training label
    only in case or spaces around them ('US-EAST' for 'us-east'): each was scored as a label
    never seen, which raises its score; ``category_spelling`` says so in a sentence.
    """

    anomaly_score: np.ndarray
    p_value: np.ndarray
    is_anomaly: np.ndarray
    contributions: np.ndarray
    columns: tuple[str, ...]
    rows: np.ndarray
    rejections: tuple[Rejection, ...]
    threshold: float
    n_input: int
    model_version: str = ""
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    context_unseen: np.ndarray | None = None
    warming_up: np.ndarray | None = None
    #: The input's index, where the input was a DataFrame with one of its own (``to_frame``'s
    #: index then, so that ``frame.join(result.to_frame())`` lines each score up with its row).
    labels: pd.Index | None = None
    #: For each text column with values training knew only in another case: ``Respelling``.
    respelled: tuple[Respelling, ...] = ()

    @property
    def n_scored(self) -> int:
        return len(self.rows)

    @property
    def category_spelling(self) -> str | None:
        """What ``anomaly score`` warns of ``respelled`` (the columns, values and training's
        spellings, and what to do), or ``None`` where every label was written as in training."""
        tally = SpellingTally()
        tally.add_found(self.respelled)
        return tally.warning()

    def top_features(self, k: int = 3) -> list[list[str]]:
        """The ``k`` columns most to blame for each scored row, most first."""
        names = np.asarray(self.columns, dtype=object)
        return [list(r) for r in names[self.top_indices(k)]]

    def top_indices(self, k: int = 3) -> np.ndarray:
        """``(n_scored, min(k, len(columns)))``: each row's ``k`` largest contributions' column
        positions, largest first, ties in column order (a stable descending sort's first k;
        NaN counts as -inf).

        ``k`` passes of ``argmax``, which returns the first of equal maxima, instead of a full
        sort: ~5x cheaper for the few columns anyone reads.
        """
        k = min(k, len(self.columns))
        values = np.where(np.isnan(self.contributions), -np.inf, self.contributions)
        left = values.copy()
        order = np.empty((len(left), k), dtype=np.intp)
        rows = np.arange(len(left))
        exhausted = np.zeros(len(left), dtype=bool)
        for j in range(k):
            order[:, j] = np.argmax(left, axis=1)
            best = left[rows, order[:, j]]
            # Once only -inf is left, argmax could pick a column already taken.
            exhausted |= best == -np.inf
            left[rows, order[:, j]] = -np.inf
        if exhausted.any():
            sorted_rows = np.argsort(-values[exhausted], axis=1, kind="stable")
            order[exhausted] = sorted_rows[:, :k]
        return order

    def to_frame(self, *, top_k: int = 3) -> pd.DataFrame:
        """One row per scored record, indexed as the input was (a DataFrame's own index, else
        input position): ``anomaly_score``, ``p_value``, ``is_anomaly``, ``context_unseen``
        (conditional models), ``warming_up`` (series models) and ``top_feature_1..k``."""
        # By position, a filtered frame's `join` matched each score to another row, silently.
        index = self.rows if self.labels is None else self.labels.take(self.rows)
        frame = pd.DataFrame(
            {
                "anomaly_score": self.anomaly_score,
                "p_value": self.p_value,
                "is_anomaly": self.is_anomaly,
            },
            index=index,
        )
        if self.context_unseen is not None:
            frame["context_unseen"] = self.context_unseen
        if self.warming_up is not None:
            frame["warming_up"] = self.warming_up
        if top_k and len(self.rows):
            top = np.asarray(self.top_features(top_k), dtype=object)
            for j in range(top.shape[1]):
                frame[f"top_feature_{j + 1}"] = top[:, j]
        return frame

    def to_dict(self) -> dict[str, Any]:
        out = {
            "n_input": self.n_input,
            "n_scored": self.n_scored,
            "threshold": self.threshold,
            "rows": self.rows.tolist(),
            "anomaly_score": self.anomaly_score.tolist(),
            "p_value": self.p_value.tolist(),
            "is_anomaly": self.is_anomaly.tolist(),
            "rejections": [vars(r) for r in self.rejections],
        }
        if self.context_unseen is not None:
            out["context_unseen"] = self.context_unseen.tolist()
        if self.warming_up is not None:
            out["warming_up"] = self.warming_up.tolist()
        if warning := self.category_spelling:
            out["category_spelling"] = warning
        return out
