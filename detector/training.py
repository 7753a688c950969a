"""Training: a table of normal records -> a checked, calibrated ``Bundle``.

The training rows are split three ways, seeded: the network fits on one part, early stopping
watches the validation ELBO on a second, and the calibration (threshold, p-values, per-column
baselines) is fitted on a third that neither the network nor early stopping saw. Training
refuses to hand back a broken model silently: a NaN loss or near-constant held-out scores end
in ``TrainingError``; posterior collapse ends in a warning in the summary, as do too few
calibration rows for the target false-positive rate and a held-out FPR far above the target
(``threshold.calibration_warnings`` states the rules).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from detector import losses
from detector.bundle import Bundle
from detector.errors import ConfigError, TrainingError
from detector.features import encode
from detector.lite_graph import LiteScoreGraph, litert_available, to_flatbuffer
from detector.models import MODELS, VAE
from detector.neighbours import DEFAULT_K, NeighbourBank
from detector.neighbours import KINDS as NEIGHBOUR_KINDS
from detector.schema import DEFAULT_CLIP, DEFAULT_RANGE_FLOOR, fingerprint, fit_schema
from detector.scoring import SCORE_KINDS, ScoreGraph, anomaly_scores, estimate_all
from detector.threshold import (
    MAX_CALIBRATION_ROWS,
    MIN_REFERENCE,
    Calibrator,
    calibration_warnings,
)
from detector.wording import option

log = logging.getLogger(__name__)

#: A latent unit whose mean KL on validation data is below this carries no information.
ACTIVE_UNIT_KL = 0.01
#: Below this many training rows nothing is held out (``train``'s small-table path).
SMALL_TABLE_ROWS = 200
#: The score a bundle with a neighbour bank uses unless told otherwise; chosen on every
#: labelled family at once (README, "Detection quality").
DEFAULT_SCORE = "knn"


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters; ``None`` sizes the network from the data."""

    model: str = "vae"
    latent_dim: int | None = None
    hidden_units: tuple[int, ...] | None = None
    activation: str = "relu"
    min_scale: float = 0.3
    max_scale: float = 2.0
    #: Each numeric column's scale is at least this fraction of its training range;
    #: ``features.fit_schema`` says why, README "Column scaling" when to raise it.
    range_floor: float = DEFAULT_RANGE_FLOOR
    epochs: int = 300
    batch_size: int = 128
    learning_rate: float = 1e-3
    kl_warmup_epochs: int = 10
    patience: int = 20
    validation_fraction: float = 0.15
    calibration_fraction: float = 0.15
    target_fpr: float = 0.01
    n_samples: int = 8
    #: ``None``: ``DEFAULT_SCORE`` for the plain VAE with ``neighbours``, else the model's own.
    score_kind: str | None = None
    #: k of the distance to the nearest fitted rows (``detector.neighbours``). The bundle keeps a
    #: bank of training rows only when its score uses it; 0 rules the ``knn`` scores out.
    neighbours: int = DEFAULT_K
    categorical: tuple[str, ...] = ()
    #: cvae: the columns the model is conditioned on (inputs, not modelled); other models: none.
    context: tuple[str, ...] = ()
    #: cvae: the probability that training hides a context column from a row, so the model also
    #: learns to score a record whose context was never seen (scored with no context).
    context_dropout: float = 0.1
    clip: float = DEFAULT_CLIP
    random_state: int = 0
    progress: bool = False
    #: vae-svdd: the weight eta of the Deep SVDD term mean ||mu(x) - c||^2 in the loss.
    svdd_weight: float = 0.1
    #: vae-svdd: ``None`` for one-class Deep SVDD, else the soft-boundary share nu in (0, 1].
    svdd_nu: float | None = None
    #: advae: the paper's lambda, the weight of the transformer's KL term in G and T's update.
    #: The paper tunes it per data set (.003 to .1); .01 is its most common value.
    advae_lambda: float = 0.01
    #: advae: the paper's gamma, the weight of the encoder-adversarial KL terms (paper: .001).
    advae_gamma: float = 0.001
    #: advae: m_x, the least squared distance between G(z) and G(z_T), in squared standardised
    #: units summed over features (paper: 2, on min-max scaled features).
    advae_margin_x: float = 2.0
    #: advae: m_z, the least KL (nats) from the prior of a generated record's encoding. The
    #: paper tunes it per data set (20 or 40); 40 is its most common value.
    advae_margin_z: float = 40.0

    def check(self) -> None:
        problems = []
        if self.model not in MODELS:
            problems.append(f"model {self.model!r} is not one of {sorted(MODELS)}")
        else:
            kinds = SCORE_KINDS + MODELS[self.model].extra_score_kinds
            kinds += NEIGHBOUR_KINDS if self.neighbours else ()
            if self.score_kind is not None and self.score_kind not in kinds:
                problems.append(
                    f"score_kind {self.score_kind!r} is not one of {list(kinds)} for "
                    f"model {self.model!r}"
                )
        for name in ("validation_fraction", "calibration_fraction"):
            value = getattr(self, name)
            if not 0.05 <= value <= 0.4:
                problems.append(f"{name} {value} must be in [0.05, 0.4]")
        if self.score_kind in NEIGHBOUR_KINDS and not self.neighbours:
            problems.append(f"score_kind {self.score_kind!r} needs neighbours >= 1")
        if self.neighbours < 0:
            problems.append("neighbours must be 0 (no bank) or at least 1")
        for name in ("epochs", "batch_size", "n_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.latent_dim is not None and self.latent_dim < 1:
            problems.append("latent_dim must be at least 1")
        if self.hidden_units is not None and (not self.hidden_units or min(self.hidden_units) < 1):
            problems.append("hidden_units must be a non-empty list of positive sizes")
        if not 0 < self.min_scale < self.max_scale:
            problems.append("need 0 < min_scale < max_scale")
        if not 0 <= self.range_floor <= 1:
            problems.append(f"range_floor {self.range_floor} must be a fraction in [0, 1]")
        if not 0 < self.target_fpr < 0.5:
            problems.append(f"target_fpr {self.target_fpr} must be in (0, 0.5)")
        if self.learning_rate <= 0:
            problems.append("learning_rate must be positive")
        if not (math.isfinite(self.svdd_weight) and self.svdd_weight >= 0):
            problems.append(f"svdd_weight {self.svdd_weight} must be a number >= 0")
        if self.svdd_nu is not None and not 0 < self.svdd_nu <= 1:
            problems.append(f"svdd_nu {self.svdd_nu} must be in (0, 1], or None for no radius")
        svdd_set = self.svdd_weight != TrainingConfig.svdd_weight or self.svdd_nu is not None
        if svdd_set and self.model != "vae-svdd":
            problems.append(f"svdd_weight and svdd_nu are for model 'vae-svdd', not {self.model!r}")
        problems += self._check_advae()
        if self.model in MODELS:
            problems += self._check_context(MODELS[self.model].conditional)
        if problems:
            raise ConfigError("invalid training settings: " + "; ".join(problems))

    def _check_advae(self) -> list[str]:
        names = ("advae_lambda", "advae_gamma", "advae_margin_x", "advae_margin_z")
        problems = [
            f"{name} {getattr(self, name)} must be a number >= 0"
            for name in names
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0)
        ]
        changed = [n for n in names if getattr(self, n) != getattr(TrainingConfig, n)]
        if changed and self.model != "advae":
            problems.append(f"{', '.join(changed)} are for model 'advae', not {self.model!r}")
        return problems

    def _check_context(self, conditional: bool) -> list[str]:
        problems = []
        if conditional and not self.context:
            problems.append(
                f"model {self.model!r} is conditioned on context columns: name at least one, "
                f"e.g. {option('context', 'host')}"
            )
        if not conditional and self.context:
            context = option("context")
            problems.append(
                f"model {self.model!r} takes no context; {context} is for "
                f"{option('model', 'cvae')} (or drop {context})"
            )
        if not 0 <= self.context_dropout < 1:
            problems.append(f"context_dropout {self.context_dropout} must be in [0, 1)")
        return problems


@dataclass(frozen=True)
class TrainingSummary:
    """What happened in training, as the CLI prints it and the manifest stores it."""

    rows: int
    fit_rows: int
    validation_rows: int
    calibration_rows: int
    n_features: int
    hidden_units: tuple[int, ...]
    latent_dim: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    train_neg_elbo: float
    val_neg_elbo: float
    val_nll: float
    val_kl: float
    active_latent_units: int
    target_fpr: float
    threshold: float
    validation_fpr: float
    seconds: float
    warnings: tuple[str, ...] = ()
    history: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_architecture(n_features: int) -> tuple[tuple[int, ...], int]:
    """Hidden sizes and latent width from the encoded width: two layers, the first about
    twice the input rounded up to a power of two (32..256), the latent a quarter of the input."""
    first = int(min(256, max(32, 2 ** math.ceil(math.log2(max(2 * n_features, 2))))))
    latent = int(min(32, max(2, n_features // 4)))
    return (first, first // 2), latent


def train(frame: pd.DataFrame, config: TrainingConfig) -> tuple[Bundle, TrainingSummary]:
    """Fit the VAE, its calibration and checks on normal records ``(n_rows, n_columns)``."""
    config.check()
    started = time.perf_counter()
    schema = fit_schema(
        frame,
        categorical=config.categorical,
        context=config.context,
        clip=config.clip,
        range_floor=config.range_floor,
    )
    values = encode(schema, frame).values
    # A table too small to hold rows out (ADBench's Hepatitis trains on ~40) lets every row do
    # every job: the distance is calibrated leave-one-out, the network checked in-sample.
    small = len(values) < SMALL_TABLE_ROWS
    fit_x, val_x, cal_x = (values, values, values) if small else _split(values, config)

    hidden, latent = default_architecture(schema.n_features)
    hidden = tuple(config.hidden_units or hidden)
    latent = config.latent_dim or latent
    keras.utils.set_random_seed(config.random_state)
    model = MODELS[config.model].from_training(
        config=config,
        n_numeric=schema.n_numeric,
        group_sizes=schema.group_sizes,
        latent_dim=latent,
        hidden_units=hidden,
        # Only a conditional model takes context widths (check() refuses context otherwise).
        **({"context_sizes": schema.context_sizes} if schema.context else {}),
    )
    model.build((None, schema.n_features))
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    stopper = keras.callbacks.EarlyStopping(
        monitor=model.monitor,
        mode="min",
        patience=config.patience,
        restore_best_weights=True,
        start_from_epoch=config.kl_warmup_epochs,
    )
    history = model.fit(
        fit_x,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(val_x,),
        shuffle=True,
        verbose=0,
        callbacks=[
            _KLWarmup(config.kl_warmup_epochs),
            keras.callbacks.TerminateOnNaN(),
            stopper,
            _ProgressBar(config.epochs, enabled=config.progress),
            *model.training_callbacks(fit_x, config),
        ],
    ).history
    _check_finite(history, config)

    traced = ScoreGraph(model, n_samples=config.n_samples, seed=config.random_state)
    model.finish_training(traced, val_x)
    # Calibrate with the engine the bundle will score with, so the threshold is exact for it.
    scorer, graph = _scoring_engine(traced, schema.n_features)
    # The distance is the default of the default model, where it was measured (README,
    # "Detection quality"); the other models keep the score they are chosen for.
    score_kind = config.score_kind or (
        DEFAULT_SCORE if config.model == "vae" and config.neighbours else model.default_score_kind
    )
    bank = None
    if score_kind in NEIGHBOUR_KINDS:
        bank = NeighbourBank.fit(
            schema,
            fit_x,
            val_x,
            anomaly_scores(graph(val_x), "elbo"),
            k=config.neighbours,
            seed=config.random_state,
            leave_one_out=small,
        )
    cal = estimate_all(graph, bank, cal_x, leave_one_out=small and bank is not None)
    cal_scores = anomaly_scores(cal, score_kind)
    fallback = None
    if bank is not None and config.score_kind is None and _constant(cal_scores):
        # Every held-out row has k exact copies among the bank's (a table of a few categories):
        # the distance is 0 for all of them and cannot rank records; the model's own can.
        fallback = (
            f"the distance to the {bank.k} nearest training rows is the same for every "
            "held-out row (each has exact copies among the training rows, as in a table of a "
            f"few categories), so it cannot rank records: scoring with "
            f"{model.default_score_kind} instead"
        )
        score_kind, bank = model.default_score_kind, None
        cal = graph(cal_x)
        cal_scores = anomaly_scores(cal, score_kind)
    _check_spread(cal_scores)
    calibrator = Calibrator.fit(cal_scores, target_fpr=config.target_fpr)
    val_scores = (
        cal_scores if small else anomaly_scores(estimate_all(graph, bank, val_x), score_kind)
    )
    active = _active_units(model, val_x)

    warnings = [] if fallback is None else [fallback]
    if active == 0:
        warnings.append(
            "posterior collapse: no latent unit carries information (KL per unit < "
            f"{ACTIVE_UNIT_KL} nats on validation data), so the model scores columns as if "
            f"independent; try {option('kl_warmup_epochs')} higher or a smaller "
            f"{option('min_scale')}"
        )
    validation_fpr = float(np.mean(val_scores > calibrator.threshold))
    warnings.extend(
        calibration_warnings(
            len(cal_x),
            config.target_fpr,
            validation_fpr,
            len(val_x),
            max_calibration_rows=MAX_CALIBRATION_ROWS,
        )
    )
    if small:
        warnings.append(_small_table_warning(len(values), score_kind))
    for message in warnings:
        log.warning(message)

    best = int(getattr(stopper, "best_epoch", len(history["loss"]) - 1))
    summary = TrainingSummary(
        rows=len(values),
        fit_rows=len(fit_x),
        validation_rows=len(val_x),
        calibration_rows=len(cal_x),
        n_features=schema.n_features,
        hidden_units=hidden,
        latent_dim=latent,
        epochs_run=len(history["loss"]),
        best_epoch=best + 1,
        stopped_early=len(history["loss"]) < config.epochs,
        train_neg_elbo=float(history["neg_elbo"][best]),
        val_neg_elbo=float(history["val_neg_elbo"][best]),
        val_nll=float(history["val_nll"][best]),
        val_kl=float(history["val_kl"][best]),
        active_latent_units=active,
        target_fpr=config.target_fpr,
        threshold=calibrator.threshold,
        validation_fpr=validation_fpr,
        seconds=round(time.perf_counter() - started, 2),
        warnings=tuple(warnings),
        history={k: [float(v) for v in vals] for k, vals in history.items()},
    )
    params = asdict(config)
    params.update(
        hidden_units=list(hidden),
        latent_dim=latent,
        categorical=list(config.categorical),
        context=list(config.context),
    )
    bundle = Bundle(
        network=model,
        schema=schema,
        calibrator=calibrator,
        score_kind=score_kind,
        model_type=config.model,
        n_samples=config.n_samples,
        noise_seed=config.random_state,
        term_baseline=np.median(cal["term_nll"], axis=0),
        params=params,
        training=summary.to_dict(),
        data_fingerprint={"sha256": fingerprint(frame), "rows": len(frame)},
        scorer=scorer,
        kinds=traced.kinds,
        neighbours=bank,
    )
    bundle.__dict__["graph"] = graph  # reuse the compiled graph instead of tracing it again
    return bundle, summary


def _small_table_warning(n: int, score_kind: str) -> str:
    held = (
        "the distance is calibrated leave-one-out (each row against the other rows)"
        if score_kind in NEIGHBOUR_KINDS
        else f"the {score_kind} score is calibrated on the rows the network fitted, so its "
        "threshold is optimistic: expect more false alarms than the target (the default "
        "score, knn, is calibrated leave-one-out instead)"
    )
    return (
        f"small table: {n} rows are too few to hold rows out (fewer than {SMALL_TABLE_ROWS}), "
        f"so every row fits, validates and calibrates the model; {held}; give at least "
        f"{SMALL_TABLE_ROWS} normal rows for held-out calibration"
    )


def _scoring_engine(
    traced: ScoreGraph, n_features: int
) -> tuple[bytes | None, ScoreGraph | LiteScoreGraph]:
    """The trained graph as a LiteRT flatbuffer and the engine that runs it; TensorFlow's
    graph itself (and no flatbuffer) where LiteRT is not installed or cannot convert it."""
    if not litert_available():
        return None, traced
    try:
        scorer = to_flatbuffer(traced)
    except Exception as exc:  # the converter raises many types; scoring still works without
        log.warning("could not convert the scoring graph for LiteRT (%s); it will score "
                    "with TensorFlow", exc)  # fmt: skip
        return None, traced
    return scorer, LiteScoreGraph(scorer, traced.kinds, n_features=n_features)


def _holdout_sizes(n: int, config: TrainingConfig) -> tuple[int, int]:
    """Rows held out of ``n`` training rows for calibration and for validation."""
    n_cal = min(max(round(config.calibration_fraction * n), MIN_REFERENCE), MAX_CALIBRATION_ROWS)
    return n_cal, max(round(config.validation_fraction * n), 10)


def fit_row_count(n: int, config: TrainingConfig) -> int:
    """How many of ``n`` training rows the model fits on, after the hold-outs; what a fixed
    budget of mini-batch updates converts to epochs with."""
    n_cal, n_val = _holdout_sizes(n, config)
    return n - n_cal - n_val


def holdout_indices(n: int, config: TrainingConfig) -> tuple[np.ndarray, ...]:
    """Row positions (fit, validation, calibration) of ``n`` training rows, as ``train`` splits
    them: the calibration rows are neither fitted nor used to pick the weights, so they are
    the one part of the training data a trained model has never seen."""
    order = np.random.default_rng(config.random_state).permutation(n)
    n_cal, n_val = _holdout_sizes(n, config)
    if n - n_cal - n_val < 20:
        raise ConfigError(
            f"{n} training rows leave too few to fit after holding out {n_val} for validation "
            f"and {n_cal} for calibration; give more normal rows"
        )
    cal, val, fit = np.split(order, [n_cal, n_cal + n_val])
    return fit, val, cal


def _split(values: np.ndarray, config: TrainingConfig) -> tuple[np.ndarray, ...]:
    fit, val, cal = holdout_indices(len(values), config)
    return values[fit], values[val], values[cal]


def _check_finite(history: dict[str, list[float]], config: TrainingConfig) -> None:
    losses = np.asarray(history.get("loss", []), dtype=np.float64)
    if len(losses) == 0 or not np.isfinite(losses).all():
        epoch = int(np.flatnonzero(~np.isfinite(losses))[0]) + 1 if len(losses) else 0
        raise TrainingError(
            f"training diverged: the loss became NaN/inf at epoch {epoch}; lower "
            f"{option('learning_rate')} (now {config.learning_rate}) or look for extreme values "
            "in the data"
        )


def _constant(scores: np.ndarray) -> bool:
    spread = float(np.std(scores))
    return not np.isfinite(scores).all() or spread <= 1e-6 * (1.0 + abs(float(np.mean(scores))))


def _check_spread(scores: np.ndarray) -> None:
    if _constant(scores):
        raise TrainingError(
            "held-out anomaly scores are (nearly) constant, so the model cannot tell records "
            f"apart; check that the training columns vary, or train longer ({option('epochs')})"
        )


def _active_units(model: VAE, x: np.ndarray) -> int:
    mean, log_var = model.encode(x)
    kl = np.asarray(losses.kl_to_standard_normal(mean, log_var)).mean(axis=0)
    return int((kl > ACTIVE_UNIT_KL).sum())


class _KLWarmup(keras.callbacks.Callback):  # type: ignore[misc]
    """Raise the KL weight linearly from 1/warmup to 1 over the first ``epochs`` epochs."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        weight = 1.0 if self.epochs <= 0 else min(1.0, (epoch + 1) / self.epochs)
        self.model.kl_weight.assign(weight)


class _ProgressBar(keras.callbacks.Callback):  # type: ignore[misc]
    """Training progress on stderr, showing the training and validation negative ELBO: one
    tqdm bar on a terminal; elsewhere (a log file, a CI job, a container) a plain line at the
    first epoch, every tenth of the epochs and the last, since a bar's carriage returns make an
    unreadable log and no output at all looked like a hang."""

    def __init__(self, epochs: int, *, enabled: bool) -> None:
        super().__init__()
        self.epochs = epochs
        self.lines = enabled and not sys.stderr.isatty()
        self.bar = tqdm(
            total=epochs, unit="epoch", desc="training", disable=not enabled or self.lines
        )
        self.started = time.monotonic()
        self.last_epoch = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        loss = logs.get("neg_elbo", float("nan"))
        val = logs.get("val_neg_elbo", float("nan"))
        self.bar.set_postfix(neg_elbo=f"{loss:.3f}", val=f"{val:.3f}")
        self.bar.update(1)
        self.last_epoch = epoch + 1
        every = max(1, self.epochs // 10)
        if self.lines and (epoch == 0 or self.last_epoch % every == 0):
            self._line(f"epoch {self.last_epoch}/{self.epochs}: neg_elbo {loss:.3f}, val {val:.3f}")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.bar.close()
        if self.lines and self.last_epoch % max(1, self.epochs // 10):
            self._line(f"stopped after epoch {self.last_epoch}/{self.epochs}")

    def _line(self, text: str) -> None:
        print(f"training: {text} ({time.monotonic() - self.started:.0f} s)", file=sys.stderr)
