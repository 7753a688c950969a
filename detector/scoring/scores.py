"""Scoring: records -> anomaly scores, p-values, decisions and per-column contributions.

``score_frame`` is the one scoring function: the CLI, the batch scorer and the HTTP service
all call it, so a record scores the same everywhere.

The model part is ``ScoreGraph``, one traced TensorFlow graph per bundle; a saved bundle runs
the same graph converted to LiteRT (``detector.nn.lite_graph``), without TensorFlow. It draws the
L latent samples with a fixed, seeded noise matrix ``eps`` of shape ``(L, latent_dim)`` shared
by every record: each record's Monte Carlo estimate is still unbiased, and a record's score no
longer depends on the batch it arrived in or on when it was scored (common random numbers).

Scores, each a log-likelihood estimate (higher = more normal) before the sign flip:

- ``recon_prob``: An & Cho (2015) reconstruction probability, log (1/L) sum_l p(x | z_l)
- ``mean_log_lik``: its mean-of-log variant, (1/L) sum_l log p(x | z_l)
- ``elbo``: the evidence lower bound, mean_log_lik - KL(q(z|x) || p(z))
- ``iwae``: the importance-weighted bound with k = L samples (Burda et al. 2016), tighter than
  the ELBO: log (1/L) sum_l p(x|z_l) p(z_l) / q(z_l|x)

``anomaly_score`` is the negative of the chosen estimate: higher = more anomalous.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from detector.features.encode import Imputation, encode
from detector.features.encoded import EncodedBatch, Rejection, Respelling
from detector.features.schema import Schema
from detector.scoring.results import ScoreResult

if TYPE_CHECKING:
    from detector.bundles.bundle import Bundle
    from detector.nn.lite_graph import LiteScoreGraph
    from detector.nn.models.vae import VAE
    from detector.scoring.neighbours import NeighbourBank
    from detector.series.stream import StreamWindows
    from detector.series.windows import SeriesState, Windows

T = TypeVar("T")

SCORE_KINDS = ("recon_prob", "mean_log_lik", "elbo", "iwae")
#: Rows per graph call: large enough to run at full speed, small enough to bound memory
#: (4096 rows x 16 samples x 64 features x 4 bytes = 16 MB per tensor).
GRAPH_BATCH = 4096


class ScoreGraph:
    """A compiled graph: encoded records ``(n, n_features)`` -> log-likelihood estimates.

    ``__call__`` returns a dict with ``recon_prob``, ``mean_log_lik``, ``elbo``, ``iwae`` and
    the model's ``extra_score_kinds`` (each ``(n,)``, higher = more normal) and ``term_nll``
    ``(n, n_terms)``, the negative log-likelihood of each model output term averaged over the
    L samples.
    """

    def __init__(self, model: VAE, *, n_samples: int, seed: int) -> None:
        import tensorflow as tf

        from detector.nn import losses

        self.n_samples = n_samples
        self.kinds = score_kinds(model)
        rng = np.random.default_rng(seed)
        eps = tf.constant(rng.standard_normal((n_samples, model.latent_dim)), dtype=tf.float32)
        ops = losses.ops

        def graph(x):  # type: ignore[no-untyped-def]
            mean, log_var = model.encode(x)
            z = mean[:, None, :] + ops.exp(0.5 * log_var)[:, None, :] * eps[None, :, :]
            term_ll = model.feature_log_likelihood(x[:, None, :], z)  # (n, L, terms)
            ll = ops.sum(term_ll, axis=-1)  # (n, L)
            kl = ops.sum(losses.kl_to_standard_normal(mean, log_var), axis=-1)
            log_prior = ops.sum(losses.standard_normal_log_density(z), axis=-1)
            log_q = ops.sum(
                losses.gaussian_log_density(z, mean[:, None, :], log_var[:, None, :]), axis=-1
            )
            mean_log_lik = ops.mean(ll, axis=1)
            estimates = [
                losses.log_mean_exp(ll, axis=1),
                mean_log_lik,
                mean_log_lik - kl,
                losses.log_mean_exp(ll + log_prior - log_q, axis=1),
            ]
            estimates += model.score_extras(
                x, mean, log_var, z, dict(zip(SCORE_KINDS, estimates, strict=True))
            )
            # One output tensor: each extra output costs a device-to-numpy copy per call,
            # which is most of a single row's latency.
            return ops.concatenate(
                [ops.stack(estimates, axis=1), -ops.mean(term_ll, axis=1)], axis=1
            )

        # A concrete function skips tf.function's per-call argument dispatch (~0.4 ms).
        self._graph = tf.function(
            graph,
            input_signature=[tf.TensorSpec([None, model.input_dim], tf.float32)],
        ).get_concrete_function()
        self._to_tensor = tf.convert_to_tensor

    @property
    def concrete_function(self) -> Any:
        """The traced TensorFlow function, ``(n, n_features)`` float32 -> ``(n, outputs)``."""
        return self._graph

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) <= GRAPH_BATCH:
            out = self._graph(self._to_tensor(x)).numpy()
        else:
            out = np.concatenate(
                [
                    self._graph(self._to_tensor(x[i : i + GRAPH_BATCH])).numpy()
                    for i in range(0, len(x), GRAPH_BATCH)
                ]
            )
        named = {kind: out[:, i] for i, kind in enumerate(self.kinds)}
        named["term_nll"] = out[:, len(self.kinds) :]
        return named


def score_kinds(model: VAE) -> tuple[str, ...]:
    """Every score a model's bundle can use: the four estimates, then the model's own."""
    return SCORE_KINDS + tuple(model.extra_score_kinds)


def estimate_all(
    graph: ScoreGraph | LiteScoreGraph,
    neighbours: NeighbourBank | None,
    values: np.ndarray,
    *,
    leave_one_out: bool = False,
    overflow: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The graph's estimates for encoded rows ``(n, n_features)`` plus, with a neighbour
    bank, its ``knn`` scores and per-feature ``knn_terms`` (``leave_one_out``: ``values`` are
    the bank's own rows, each measured against the others; ``overflow``:
    ``EncodedBatch.overflow``, how far values lay beyond the encoding's clip)."""
    estimates = graph(values)
    if neighbours is not None:
        estimates.update(
            neighbours.scores(values, estimates, leave_one_out=leave_one_out, overflow=overflow)
        )
    return estimates


def anomaly_scores(estimates: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """The user-facing score for one estimate kind: its negative, higher = more anomalous."""
    return -estimates[kind].astype(np.float64)


def score_frame(
    bundle: Bundle,
    frame: pd.DataFrame,
    *,
    impute: Imputation = None,
    passthrough: Iterable[str] = (),
    max_ahead_seconds: float | None = 3600.0,
) -> ScoreResult:
    """Score a table of records with a bundle; every input row is scored or rejected.

    Raises ``SchemaError`` when columns are missing or unknown (``passthrough`` names columns
    to tolerate unscored). Rows with bad values come back in ``rejections`` with reasons. A
    series model (``bundle.series``) judges each row with the rows before it in ``frame``
    (``score_series``), and rejects one stamped more than ``max_ahead_seconds`` after this
    machine's clock (``None``: never).
    """
    if bundle.series is not None:
        from detector.series.windows import SeriesState

        state = SeriesState(bundle.series, max_ahead_seconds=max_ahead_seconds)
        return score_series(bundle, frame, state=state, impute=impute, passthrough=passthrough)
    batch = encode(bundle.schema, frame, impute=impute, passthrough=passthrough)
    return score_batch(bundle, batch, n_input=len(frame))


def score_series(
    bundle: Bundle,
    frame: pd.DataFrame,
    *,
    state: SeriesState | None = None,
    impute: Imputation = None,
    passthrough: Iterable[str] = (),
) -> ScoreResult:
    """Score a series model's records, each with the rows before it in its series, from
    ``frame`` and ``state`` (rows earlier batches left; none by default: the first rows of a
    series warm up). A row that cannot be placed in its series is rejected with the reason."""
    from detector.series.values import ValueCheck
    from detector.series.windows import SeriesState

    assert bundle.series is not None
    state = SeriesState(bundle.series) if state is None else state
    carried = [c for c in passthrough if c in frame.columns]
    windows = state.window(frame.drop(columns=carried), check=ValueCheck(bundle.schema, impute))
    batch = encode(bundle.schema, windows.frame, impute=impute)
    adjust = against_levels(bundle, windows, state.levels)
    result = score_batch(bundle, batch, n_input=len(windows.frame), adjust=adjust)
    return in_input_rows(result, windows, n_input=len(frame))


class Levels(Protocol):
    """Where a scorer keeps its series' levels (``detector.series.levels.ScoreLevels``, or the
    service's shared store)."""

    def judge(
        self, keys: np.ndarray, seconds: np.ndarray, scores: np.ndarray, *, normal: float
    ) -> np.ndarray: ...


#: Scores of encoded rows ``(n,)`` and those rows' positions -> the scores to threshold.
Adjustment = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Runner(Protocol):
    """Where a scorer runs its pure computation (the encoding, the model call): ``here``, or a
    server's thread, while the rest (a series' state, its levels) stays with the caller."""

    def __call__(self, run: Callable[..., T], /, *args: Any) -> T: ...


def here(run: Callable[..., T], /, *args: Any) -> T:
    """``run(*args)``, in the calling thread: a ``Runner`` for callers without a thread."""
    return run(*args)


def against_levels(
    bundle: Bundle, windows: Windows | StreamWindows, levels: Levels
) -> Adjustment | None:
    """For a series model's ``windows.frame``: each score judged against its series' recent
    level (``detector.series.levels``), before the threshold and p-values; ``None`` for a
    bundle without ``level_hours``, whose scores are final as they are."""
    spec, bank = bundle.series, bundle.neighbours
    if spec is None or not spec.level_hours or bank is None or bundle.score_kind != "knn":
        return None
    normal = float(bank.location[1])

    def adjust(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return levels.judge(windows.keys[rows], windows.seconds[rows], scores, normal=normal)

    return adjust


def in_input_rows(
    result: ScoreResult, windows: Windows | StreamWindows, *, n_input: int
) -> ScoreResult:
    """A series model's ``result`` on ``windows.frame`` as a result on the ``n_input`` rows
    the windows came from: their positions, the rows windowing rejected added, each row marked
    if it was warming up and blamed by the newest step of its window (its own values), its
    values told of (``respelled``) by its own columns, not by the windows' copies of them."""
    from dataclasses import replace

    from detector.series.windows import is_window_column

    rejected = [Rejection(int(windows.rows[r.row]), r.reasons, r.code) for r in result.rejections]
    rejected += [Rejection(r.row, (r.reason,), r.code) for r in windows.rejections]
    newest = [i for i, c in enumerate(result.columns) if not is_window_column(c)]
    return replace(
        result,
        rows=windows.rows[result.rows],
        rejections=tuple(sorted(rejected, key=lambda r: r.row)),
        n_input=n_input,
        warming_up=windows.warming_up[result.rows],
        contributions=result.contributions[:, newest],
        columns=tuple(result.columns[i] for i in newest),
        respelled=tuple(r for r in result.respelled if not is_window_column(r.name)),
    )


def score_batch(
    bundle: Bundle,
    batch: EncodedBatch,
    *,
    n_input: int,
    adjust: Adjustment | None = None,
    runner: Runner = here,
) -> ScoreResult:
    """``score_frame``'s second half: score the output of ``encode`` for ``n_input`` rows (for
    a caller that encodes in one thread and scores in another); ``adjust`` and ``runner``: see
    ``score_encoded``."""
    return score_encoded(
        bundle,
        batch.values,
        rows=batch.rows,
        rejections=batch.rejections,
        n_input=n_input,
        context_unseen=batch.context_unseen,
        adjust=adjust,
        overflow=batch.overflow,
        respelled=batch.respelled,
        runner=runner,
    )


def score_encoded(
    bundle: Bundle,
    values: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    rejections: tuple[Rejection, ...] = (),
    n_input: int | None = None,
    context_unseen: np.ndarray | None = None,
    adjust: Adjustment | None = None,
    overflow: np.ndarray | None = None,
    respelled: tuple[Respelling, ...] = (),
    runner: Runner = here,
) -> ScoreResult:
    """Score already-encoded features ``(n, n_features)`` (the step after ``encode``).
    ``context_unseen`` is ``EncodedBatch.context_unseen``; for a schema with context columns
    and none given, no row is flagged. ``adjust`` (``against_levels``) turns the scores into
    the ones thresholded, given the rows' positions. ``overflow``: ``EncodedBatch.overflow``
    (the distance counts a value clipped in the encoding as far as it was); ``respelled``:
    ``EncodedBatch.respelled``, kept on the result. ``runner`` runs the model call
    (``measure``), a pure computation; ``adjust`` is called where this is."""
    if len(values):
        scores, contributions = runner(measure, bundle, values, overflow)
        if adjust is not None:
            scores = adjust(scores, np.arange(len(values)) if rows is None else rows)
    else:
        scores = np.zeros(0)
        contributions = np.zeros((0, len(bundle.schema.scored_columns)))
    calibrator = bundle.calibrator
    p_values = calibrator.p_values(scores)
    threshold = calibrator.threshold
    return ScoreResult(
        anomaly_score=scores,
        p_value=p_values,
        is_anomaly=scores > threshold,
        contributions=contributions,
        columns=bundle.schema.scored_columns,
        rows=np.arange(len(values)) if rows is None else rows,
        rejections=rejections,
        threshold=threshold,
        n_input=len(values) if n_input is None else n_input,
        model_version=bundle.version,
        context_unseen=_context_flags(bundle.schema, context_unseen, len(values)),
        respelled=respelled,
    )


def measure(
    bundle: Bundle, values: np.ndarray, overflow: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model call on encoded features ``(n, n_features)``: anomaly scores ``(n,)``
    (higher = more anomalous) and each source column's contribution ``(n, n_columns)``."""
    if bundle.score_kind == "knn" and bundle.neighbours is not None:
        # The distance alone: the network's graph would be computed for nothing. The
        # distance is to blame, not the likelihood: each column's share of it.
        estimates = bundle.neighbours.scores(values, {}, overflow=overflow)
        scores = anomaly_scores(estimates, bundle.score_kind)
        excess = _feature_terms(estimates["knn_terms"], bundle.schema)
    else:
        estimates = estimate_all(bundle.graph, bundle.neighbours, values, overflow=overflow)
        scores = anomaly_scores(estimates, bundle.score_kind)
        excess = estimates["term_nll"] - bundle.term_baseline
    return scores, _by_source_column(excess, bundle.schema)


def _context_flags(schema: Schema, flags: np.ndarray | None, n: int) -> np.ndarray | None:
    if not schema.context:
        return None
    return np.zeros(n, dtype=bool) if flags is None else np.asarray(flags, dtype=bool)


def _feature_terms(features: np.ndarray, schema: Schema) -> np.ndarray:
    """Per-feature values ``(n, n_features)`` -> per-term ``(n, n_terms)``: numerics as they
    are, each categorical one-hot group summed into one term; context slots dropped."""
    starts = schema.term_starts
    if not len(starts):
        return np.zeros((len(features), 0), dtype=features.dtype)
    # One reduceat instead of a sum per group: a record's scoring pays per numpy call.
    return np.add.reduceat(
        features[:, : schema.n_numeric + sum(schema.group_sizes)], starts, axis=1
    )


def _by_source_column(terms: np.ndarray, schema: Schema) -> np.ndarray:
    """Model terms ``(n, n_terms)`` -> modelled source columns in the user's order
    ``(n, len(schema.scored_columns))``.

    There is one term per source column already (a one-hot group is one categorical term whose
    log-probability sums its slots), listed numerics first; users read their own column order.
    """
    return terms[:, schema.scored_order]
