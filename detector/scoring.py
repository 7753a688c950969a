"""Scoring: records -> anomaly scores, p-values, decisions and per-column contributions.

``score_frame`` is the one scoring function: the CLI, the batch scorer and the HTTP service
all call it, so a record scores the same everywhere.

The model part is ``ScoreGraph``, one traced TensorFlow graph per bundle; a saved bundle runs
the same graph converted to LiteRT (``detector.lite_graph``), without TensorFlow. It draws the
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from detector.features import EncodedBatch, Imputation, Rejection, Schema, encode

if TYPE_CHECKING:
    from detector.bundle import Bundle
    from detector.lite_graph import LiteScoreGraph
    from detector.models.vae import VAE
    from detector.neighbours import NeighbourBank

SCORE_KINDS = ("recon_prob", "mean_log_lik", "elbo", "iwae")
#: Rows per graph call: large enough to run at full speed, small enough to bound memory
#: (4096 rows x 16 samples x 64 features x 4 bytes = 16 MB per tensor).
GRAPH_BATCH = 4096
#: Up to this many rows go through the numpy mirror of the graph instead: a TensorFlow call
#: costs ~0.5-0.9 ms of fixed overhead, most of a single record's scoring time.
SMALL_BATCH = 16


class ScoreGraph:
    """A compiled graph: encoded records ``(n, n_features)`` -> log-likelihood estimates.

    ``__call__`` returns a dict with ``recon_prob``, ``mean_log_lik``, ``elbo``, ``iwae`` and
    the model's ``extra_score_kinds`` (each ``(n,)``, higher = more normal) and ``term_nll``
    ``(n, n_terms)``, the negative log-likelihood of each model output term averaged over the
    L samples.
    """

    def __init__(self, model: VAE, *, n_samples: int, seed: int) -> None:
        import tensorflow as tf

        from detector import losses

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
        self._small = SmallBatchForward.for_model(model, eps.numpy())

    @property
    def concrete_function(self) -> Any:
        """The traced TensorFlow function, ``(n, n_features)`` float32 -> ``(n, outputs)``."""
        return self._graph

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._small is not None and len(x) <= SMALL_BATCH:
            out = self._small(x)
        elif len(x) <= GRAPH_BATCH:
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


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda h: np.maximum(h, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda h: 1.0 / (1.0 + np.exp(-h)),
    "elu": lambda h: np.where(h > 0, h, np.expm1(np.minimum(h, 0.0))),
    "softplus": lambda h: np.logaddexp(0.0, h),
    "linear": lambda h: h,
}


class SmallBatchForward:
    """The scoring graph's arithmetic in numpy, for a few rows at a time.

    Same weights, same fixed noise, same formulas as ``ScoreGraph``'s graph (the log-densities
    of ``detector.losses``, written for numpy); a test checks the two agree to float32
    rounding. It exists for latency only: for one record, numpy's per-operation cost (~1 us)
    beats TensorFlow's per-call overhead by an order of magnitude. Models with an activation
    not listed in ``_ACTIVATIONS`` use the graph for every batch size.
    """

    def __init__(self, model: VAE, eps: np.ndarray) -> None:
        from detector.models.vae import ENCODER_LOG_VAR_RANGE

        def dense(layer: Any) -> tuple[np.ndarray, np.ndarray]:
            kernel, bias = layer.get_weights()
            return kernel.astype(np.float32), bias.astype(np.float32)

        self.act = _ACTIVATIONS[model.activation]
        self.encoder = [dense(d) for d in model.encoder_body.dense]
        self.decoder = [dense(d) for d in model.decoder_body.dense]
        self.z_mean = dense(model.z_mean)
        self.z_log_var = dense(model.z_log_var)
        self.n_numeric = model.n_numeric
        self.group_sizes = model.group_sizes
        self.x_mean = dense(model.x_mean) if model.x_mean is not None else None
        self.x_log_var = (
            np.asarray(model.x_log_var(np.zeros((1, 1), np.float32)))[0]
            if model.x_log_var is not None
            else None
        )
        self.x_logits = dense(model.x_logits) if model.x_logits is not None else None
        self.eps = eps.astype(np.float32)
        self.log_var_range = ENCODER_LOG_VAR_RANGE

    @classmethod
    def for_model(cls, model: VAE, eps: np.ndarray) -> SmallBatchForward | None:
        from detector.models.vae import VAE

        # Only the plain VAE: subclasses change the arithmetic this class mirrors.
        if type(model) is not VAE or model.activation not in _ACTIVATIONS:
            return None
        return cls(model, eps)

    def _mlp(self, h: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        for kernel, bias in layers:
            h = self.act(h @ kernel + bias)
        return h

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(n, n_features)`` -> ``(n, 4 + n_terms)``, the graph's output layout."""
        h = self._mlp(x, self.encoder)
        mean = h @ self.z_mean[0] + self.z_mean[1]
        log_var = np.clip(h @ self.z_log_var[0] + self.z_log_var[1], *self.log_var_range)
        std = np.exp(0.5 * log_var)
        z = mean[:, None, :] + std[:, None, :] * self.eps[None, :, :]  # (n, L, latent)
        d = self._mlp(z, self.decoder)
        terms = []
        if self.x_mean is not None and self.x_log_var is not None:
            x_num = x[:, None, : self.n_numeric]
            mu = d @ self.x_mean[0] + self.x_mean[1]
            lv = self.x_log_var
            terms.append(-0.5 * (_LOG_2PI + lv + np.square(x_num - mu) * np.exp(-lv)))
        if self.x_logits is not None:
            logits = d @ self.x_logits[0] + self.x_logits[1]
            one_hot = x[:, None, self.n_numeric :]
            start, parts = 0, []
            for size in self.group_sizes:
                block = logits[..., start : start + size]
                log_p = block - _logsumexp(block, axis=-1, keepdims=True)
                parts.append(np.sum(one_hot[..., start : start + size] * log_p, axis=-1))
                start += size
            terms.append(np.stack(parts, axis=-1))
        term_ll = terms[0] if len(terms) == 1 else np.concatenate(terms, axis=-1)
        ll = term_ll.sum(axis=-1)
        kl = (0.5 * (np.exp(log_var) + np.square(mean) - 1.0 - log_var)).sum(axis=-1)
        log_prior = (-0.5 * (_LOG_2PI + np.square(z))).sum(axis=-1)
        log_q = (-0.5 * (_LOG_2PI + log_var[:, None, :] + np.square(self.eps)[None])).sum(axis=-1)
        count = np.log(np.float32(ll.shape[1]))
        mean_log_lik = ll.mean(axis=1)
        estimates = np.stack(
            [
                _logsumexp(ll, axis=1) - count,
                mean_log_lik,
                mean_log_lik - kl,
                _logsumexp(ll + log_prior - log_q, axis=1) - count,
            ],
            axis=1,
        )
        return np.concatenate([estimates, -term_ll.mean(axis=1)], axis=1)


_LOG_2PI = np.float32(np.log(2.0 * np.pi))


def _logsumexp(a: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(a - top), axis=axis, keepdims=True)) + top
    return out if keepdims else np.squeeze(out, axis=axis)


def estimate_all(
    graph: ScoreGraph | LiteScoreGraph,
    neighbours: NeighbourBank | None,
    values: np.ndarray,
    *,
    leave_one_out: bool = False,
) -> dict[str, np.ndarray]:
    """The graph's estimates for encoded rows ``(n, n_features)`` plus, with a neighbour
    bank, its ``knn`` scores and per-feature ``knn_terms`` (``leave_one_out``: ``values`` are
    the bank's own rows, each measured against the others)."""
    estimates = graph(values)
    if neighbours is not None:
        estimates.update(neighbours.scores(values, estimates, leave_one_out=leave_one_out))
    return estimates


def anomaly_scores(estimates: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """The user-facing score for one estimate kind: its negative, higher = more anomalous."""
    return -estimates[kind].astype(np.float64)


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

    @property
    def n_scored(self) -> int:
        return len(self.rows)

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
        """One row per scored record, indexed by input position: ``anomaly_score``,
        ``p_value``, ``is_anomaly``, ``context_unseen`` (conditional models) and
        ``top_feature_1..k``."""
        frame = pd.DataFrame(
            {
                "anomaly_score": self.anomaly_score,
                "p_value": self.p_value,
                "is_anomaly": self.is_anomaly,
            },
            index=self.rows,
        )
        if self.context_unseen is not None:
            frame["context_unseen"] = self.context_unseen
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
        return out


def score_frame(
    bundle: Bundle,
    frame: pd.DataFrame,
    *,
    impute: Imputation = None,
    passthrough: Iterable[str] = (),
) -> ScoreResult:
    """Score a table of records with a bundle; every input row is scored or rejected.

    Raises ``SchemaError`` when columns are missing or unknown (``passthrough`` names columns
    to tolerate unscored). Rows with bad values come back in ``rejections`` with reasons.
    """
    batch = encode(bundle.schema, frame, impute=impute, passthrough=passthrough)
    return score_batch(bundle, batch, n_input=len(frame))


def score_batch(bundle: Bundle, batch: EncodedBatch, *, n_input: int) -> ScoreResult:
    """``score_frame``'s second half: score the output of ``encode`` for ``n_input`` rows (for
    a caller that encodes in one thread and scores in another)."""
    return score_encoded(
        bundle,
        batch.values,
        rows=batch.rows,
        rejections=batch.rejections,
        n_input=n_input,
        context_unseen=batch.context_unseen,
    )


def score_encoded(
    bundle: Bundle,
    values: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    rejections: tuple[Rejection, ...] = (),
    n_input: int | None = None,
    context_unseen: np.ndarray | None = None,
) -> ScoreResult:
    """Score already-encoded features ``(n, n_features)`` (the step after ``encode``).
    ``context_unseen`` is ``EncodedBatch.context_unseen``; for a schema with context columns
    and none given, no row is flagged."""
    if len(values):
        if bundle.score_kind == "knn" and bundle.neighbours is not None:
            # The distance alone: the network's graph would be computed for nothing. The
            # distance is to blame, not the likelihood: each column's share of it.
            estimates = bundle.neighbours.scores(values, {})
            scores = anomaly_scores(estimates, bundle.score_kind)
            excess = _feature_terms(estimates["knn_terms"], bundle.schema)
        else:
            estimates = estimate_all(bundle.graph, bundle.neighbours, values)
            scores = anomaly_scores(estimates, bundle.score_kind)
            excess = estimates["term_nll"] - bundle.term_baseline
        contributions = _by_source_column(excess, bundle.schema)
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
    )


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
