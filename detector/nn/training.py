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
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import keras
import numpy as np
import pandas as pd

from detector.bundles.bundle import Bundle
from detector.errors import ConfigError, SchemaError
from detector.features.encode import encode, listed
from detector.features.schema import (
    Schema,
    check_unique_names,
    fingerprint,
    fit_schema,
    label_spelling_warning,
    long_format_problem,
    numbers_from_decimals,
)
from detector.native import global_random_state_kept
from detector.nn.callbacks import KLWarmup, ProgressBar
from detector.nn.lite_graph import LiteScoreGraph, litert_available, to_flatbuffer
from detector.nn.models import MODELS
from detector.nn.options import (
    MODEL_OPTIONS,
    AdVAEOptions,
    CVAEOptions,
    FAEOptions,
    IWAEOptions,
    LSVAEOptions,
    SVDDOptions,
    conditioned_on,
    type_problems,
)
from detector.nn.progress import progress_line
from detector.nn.training_checks import (
    ACTIVE_UNIT_KL,
    active_units,
    check_finite,
    check_spread,
    constant,
)
from detector.nn.training_options import (
    DEVIATION_WEIGHT,
    METRIC_BANK_ROWS,
    METRIC_WEIGHT,
    TrainingOptions,
)
from detector.scoring.neighbours import (
    DEFAULT_LOCAL_FLOOR,
    DEFAULT_LOCAL_WEIGHT,
    TABLE_LOCAL_CEILING,
    TABLE_LOCAL_FLOOR,
    TABLE_LOCAL_WEIGHT,
    NeighbourBank,
    bank_rows,
)
from detector.scoring.neighbours import KINDS as NEIGHBOUR_KINDS
from detector.scoring.output_columns import check_names_free
from detector.scoring.scores import SCORE_KINDS, ScoreGraph, anomaly_scores, estimate_all
from detector.scoring.threshold import (
    MAX_CALIBRATION_ROWS,
    MIN_REFERENCE,
    Calibrator,
    calibration_warnings,
)
from detector.series.windows import (
    SeriesSpec,
    key_spelling_warning,
    metric_parts,
    series_of,
    warming_warning,
    window_parts,
    windowed_for_training,
    with_deviation,
)
from detector.wording import offered, option, printable, quoted

log = logging.getLogger(__name__)

#: Below this many training rows nothing is held out (``train``'s small-table path).
SMALL_TABLE_ROWS = 200
#: The score a bundle with a neighbour bank uses unless told otherwise; chosen on every
#: labelled family at once (README, "Detection quality").
DEFAULT_SCORE = "knn"
#: Validation rows scored once the network is fitted, at most (the distance's and a score's
#: standardisation, the held-out FPR, the latent check): as many as calibration keeps, so the
#: held-out FPR at a 1% target counts 200 expected false alarms. Early stopping watches every
#: validation row; scoring 150,000 of them again (a 1,000,000-row table, the distance's local
#: part searching them twice) took 39-45 s after the fit, 13-19 s so (tests/benchmarks/README.md,
#: "A budget of mini-batch updates").
MAX_SCORED_VALIDATION_ROWS = MAX_CALIBRATION_ROWS


def _is_activation(name: str) -> bool:
    import keras  # the caller trains next: TensorFlow is loaded anyway

    try:
        keras.activations.get(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TrainingConfig(
    FAEOptions,
    LSVAEOptions,
    IWAEOptions,
    AdVAEOptions,
    SVDDOptions,
    CVAEOptions,
    TrainingOptions,
):
    """Every training option, flat: ``TrainingOptions`` and each model's own
    (``detector.nn.options`` defines them, defaults and meanings); ``None`` sizes the network from
    the data."""

    def problems(self, model: str | None = None) -> list[str]:
        """What is wrong with these settings for ``model`` (by default this config's)."""
        model = self.model if model is None else model
        wrong = type_problems(self)
        if wrong:  # the checks below compare values of the right types
            return wrong
        problems = TrainingOptions.of(self).problems(model)
        needs_rows = self.score_kind in NEIGHBOUR_KINDS and not self.neighbours
        if model in MODELS and not needs_rows:  # that one is told below, with its own fix
            kinds = SCORE_KINDS + MODELS[model].extra_score_kinds
            kinds += NEIGHBOUR_KINDS if self.neighbours else ()
            if self.score_kind is not None and self.score_kind not in kinds:
                problems.append(
                    f"{option('score_kind')} {self.score_kind!r} is not one of {list(kinds)} "
                    f"for model {model!r}"
                )
        if self.activation != "relu" and not _is_activation(self.activation):
            problems.append(
                f"activation {self.activation!r} is not a Keras activation (e.g. relu, tanh, "
                "elu, gelu)"
            )
        if needs_rows:
            # "'knn' is not one of [...] for model 'vae'; ... needs neighbours >= 1" blamed
            # the model and named no fix (a models helper).
            problems.append(
                f"{option('score_kind')} {self.score_kind!r} measures the distance to normal "
                f"training rows, which {option('neighbours', 0)} keeps none of: drop "
                f"{option('neighbours', 0)}, or choose another score (e.g. "
                f"{option('score_kind', 'elbo')})"
            )
        if self.time_column is not None:
            placing = {self.time_column, *self.series_columns}
            for name, named in (("categorical", self.categorical), ("context", self.context)):
                both = [c for c in named if c in placing]
                if both:
                    problems.append(
                        f"{option(name)} names {both}, the series' time or key column(s): they "
                        f"place each row in its series and are not scored; leave them out of "
                        f"{option(name)}"
                    )
        for options in MODEL_OPTIONS.values():
            problems += options.of(self).problems(model)
        return problems

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("invalid training settings: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainingSummary:
    """What happened in training, as the CLI prints it and the manifest stores it.
    ``calibration_rows`` overlap the fitted ones where they were measured leave-one-out (a
    small table, or a bank keeping them): then the three counts add up to more than ``rows``."""

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
    #: Where ``max_updates`` cut the epochs (``within_budget``): the cap, the mini-batches of an
    #: epoch, the updates run, and the epochs, KL warm-up and patience trained with; ``None``
    #: where it did not (and the manifest holds no such entry).
    budget: dict[str, int] | None = None
    #: The validation rows ``validation_fpr`` (and the score's standardisation) was measured on,
    #: a uniform sample of ``MAX_SCORED_VALIDATION_ROWS``, where there were more; ``None`` where
    #: every one was (and the manifest holds no such entry).
    validation_scored: int | None = None
    #: A sentence for each text column whose rare labels share a slot (``Schema.describe_rare``);
    #: none where no column has them (and the manifest holds no such entry).
    rare_labels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self)
        for name in ("budget", "validation_scored"):
            if found[name] is None:
                found.pop(name)
        if not found["rare_labels"]:
            found.pop("rare_labels")
        return found


def default_architecture(n_features: int) -> tuple[tuple[int, ...], int]:
    """Hidden sizes and latent width from the encoded width: two layers, the first about
    twice the input rounded up to a power of two (32..256), the latent a quarter of the input."""
    first = int(min(256, max(32, 2 ** math.ceil(math.log2(max(2 * n_features, 2))))))
    latent = int(min(32, max(2, n_features // 4)))
    return (first, first // 2), latent


#: One training at a time in a process: Keras seeds one process-wide generator (and numpy's
#: and Python's), so two fits in threads drew from each other's seeds and gave other models
#: than the same fits one after the other. A fit uses every core already.
_TRAINING = threading.RLock()


def train(
    frame: pd.DataFrame, config: TrainingConfig, *, sampled_from: int | None = None
) -> tuple[Bundle, TrainingSummary]:
    """Fit the VAE, its calibration and checks on normal records ``(n_rows, n_columns)``.
    ``sampled_from``: the rows of the table ``frame`` is a uniform sample of, in file order
    (``frames.sample_table``), where it is one.

    Fits in one process run one at a time (``_TRAINING``), and leave the caller's global
    random state (numpy's, Python's) as it was: seeding the fit is no business of the
    caller's other draws."""
    with _TRAINING, global_random_state_kept():
        return _train(frame, config, sampled_from)


def _train(
    frame: pd.DataFrame, config: TrainingConfig, sampled_from: int | None = None
) -> tuple[Bundle, TrainingSummary]:
    config.check()
    started = time.perf_counter()
    check_unique_names(frame.columns)  # before any column is read by its name
    frame = numbers_from_decimals(frame)
    series = series_of(config)
    context = bool(conditioned_on(config))
    check_names_free(map(str, frame.columns), "the columns", context=context, series=bool(series))
    warming: str | None = None  # what to say of a series' warming-up rows
    repeated: str | None = None  # what to say of rows left out for a repeated time
    spelling: str | None = None  # what to say of series keys spelled alike
    placing = () if series is None else (series.time_column, *series.key_columns)
    if long := long_format_problem(frame, placing, config.categorical):
        raise SchemaError(long)
    lookalikes = _lookalike_warnings(
        frame[[c for c in frame.columns if c not in placing]], sampled_from=sampled_from
    )
    if series is not None:
        named = [(option("time_column"), series.time_column)]
        named += [(option("series_columns"), c) for c in series.key_columns]
        absent = [f"{flag} {column}" for flag, column in named if column not in frame.columns]
        if absent:
            raise SchemaError(
                f"{', '.join(absent)}: not a column of the training data; its columns are "
                f"{listed([str(c) for c in frame.columns])}"
            )
        # A minute at 1,000,000 rows of 1,000 hosts, between the reading's line and the fit's.
        progress_line(
            f"placing {len(frame):,} rows in their series' windows", enabled=config.progress
        )
        if _judged_by_parts(config):
            exclude = (*config.categorical, *conditioned_on(config))
            series = with_deviation(series, frame, config.deviation_window, exclude)
            if (config.score_kind or DEFAULT_SCORE) == "knn":  # the distance's own units
                series = replace(series, level_hours=config.level_hours)
        # The series' own columns first, as the user named them: a stray word in 'cpu' would
        # otherwise be reported in the windows' columns ('cpu[-19]'), which the user never made.
        fit_schema(
            frame.drop(columns=[series.time_column, *series.key_columns]),
            categorical=config.categorical,
            context=conditioned_on(config),
            clip=config.clip,
            range_floor=config.range_floor,
            log_tails=not config.raw_tails,
        )
        windows, repeated = windowed_for_training(frame, series)
        if len(windows.seconds):  # scoring then knows a time of 1970 for a unit's mistake
            series = replace(series, trained_from=float(windows.seconds.min()))
        # A counter rises within each series, not down a file of interleaved hosts.
        by_time = np.lexsort((windows.seconds, windows.keys))
        keys = windows.keys[by_time]
        lookalikes = _lookalike_warnings(
            frame[[c for c in frame.columns if c not in placing]],
            series_order=(windows.rows[by_time], keys[1:] == keys[:-1]),
        )
        warming = warming_warning(windows, frame, series)
        spelling = key_spelling_warning(windows.keys, series)
        frame = windows.frame
        del windows  # its frame is let go with ``frame`` once encoded
    schema = fit_schema(
        frame,
        categorical=config.categorical,
        context=conditioned_on(config),
        clip=config.clip,
        range_floor=config.range_floor,
        log_tails=not config.raw_tails,
    )
    values = encode(schema, frame).values
    # The table is let go once encoded, and the encoded rows once split: a series' 1,000,000
    # windows of 420 features are 3.4 GB as a frame, 1.7 GB encoded, and were held to the end.
    trained_on = {"sha256": fingerprint(frame), "rows": len(frame)}
    del frame
    n_rows = len(values)
    # A table too small to hold rows out (ADBench's Hepatitis trains on ~40) lets every row do
    # every job: the distance is calibrated leave-one-out, the network checked in-sample.
    small = n_rows < SMALL_TABLE_ROWS
    fit_x, val_x, cal_x = (values, values, values) if small else _split(values, config)
    del values

    hidden, latent = default_architecture(schema.n_features)
    hidden = tuple(config.hidden_units or hidden)
    latent = config.latent_dim or latent
    batches = math.ceil(len(fit_x) / config.batch_size)
    asked = config
    # The options as given go in the bundle's params; the epochs cut to the budget train.
    config = within_budget(config, batches)
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
    cut = "" if config == asked else f", the budget of {option('max_updates', asked.max_updates)}"
    progress_line(
        f"fitting the network on {len(fit_x):,} rows of {schema.n_features} features "
        f"({batches:,} batch{'es' if batches > 1 else ''} of {config.batch_size} rows an epoch, "
        f"at most {config.epochs} epoch{'s' if config.epochs > 1 else ''}{cut})",
        enabled=config.progress,
    )
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
            KLWarmup(config.kl_warmup_epochs),
            keras.callbacks.TerminateOnNaN(),
            stopper,
            ProgressBar(config.epochs, enabled=config.progress),
            *model.training_callbacks(fit_x, config),
        ],
    ).history
    check_finite(history, config)

    # The split permuted the rows: the first validation rows are a uniform sample of them, the
    # same rows for the same seed, and every row of a table with no more.
    scored_x = val_x[:MAX_SCORED_VALIDATION_ROWS]
    # Silent, this took a minute at 1,000,000 rows (when 150,000 validation rows were searched).
    progress_line(
        f"scoring the {len(scored_x):,} validation and {len(cal_x):,} calibration rows for the "
        "score's scale and the threshold",
        enabled=config.progress,
    )
    traced = ScoreGraph(model, n_samples=config.n_samples, seed=config.random_state)
    model.finish_training(traced, scored_x)
    # Calibrate with the engine the bundle will score with, so the threshold is exact for it.
    scorer, graph = _scoring_engine(traced, schema.n_features)
    # The distance is the default of the default model, where it was measured (README,
    # "Detection quality"); the other models keep the score they are chosen for.
    score_kind = config.score_kind or (
        DEFAULT_SCORE if config.model == "vae" and config.neighbours else model.default_score_kind
    )
    bank, metric_count, whole = None, 0, False
    bank_x = fit_x
    if score_kind in NEIGHBOUR_KINDS:
        column = config.column_window if series is not None and _judged_by_parts(config) else 0
        found = window_bank_parts(schema, series, config.short_window, column)
        parts, weights, rows = found or (None, None, None)
        metric_count = 0 if rows is None else int((rows > 0).sum())  # only theirs are capped
        # Where the bank has room, a table's distance keeps the calibration rows too, each
        # then measured against the others (leave-one-out): more normal rows to judge by and
        # to calibrate on (``tests/benchmarks/README.md``, "Round 9: every row in the bank").
        whole = _whole_table_bank(score_kind, schema, small, found is None, len(fit_x) + len(cal_x))
        bank_x = np.concatenate([fit_x, cal_x]) if whole else fit_x
        bank = NeighbourBank.fit(
            schema,
            bank_x,
            scored_x,
            anomaly_scores(graph(scored_x), "elbo"),
            k=config.neighbours,
            seed=config.random_state,
            leave_one_out=small,
            parts=parts,
            part_weights=weights,
            part_rows=rows,
            # Chosen apart (``tests/benchmarks/README.md``, Round 8): a ceiling takes back most
            # of ASD's windows' gain (AUROC .852 to .81), and a table's row needs one (NSL-KDD).
            local_weight=TABLE_LOCAL_WEIGHT if found is None else DEFAULT_LOCAL_WEIGHT,
            local_floor=TABLE_LOCAL_FLOOR if found is None else DEFAULT_LOCAL_FLOOR,
            local_ceiling=TABLE_LOCAL_CEILING if found is None else np.inf,
            far_weight=config.far_weight,
        )
    measured = bank_x if whole else cal_x
    cal = estimate_all(graph, bank, measured, leave_one_out=(small or whole) and bank is not None)
    cal_scores = anomaly_scores(cal, score_kind)
    fallback = None
    if bank is not None and config.score_kind is None and constant(cal_scores):
        # Every held-out row has k exact copies among the bank's (a table of a few categories):
        # the distance is 0 for all of them and cannot rank records; the model's own can.
        fallback = (
            f"the distance to the {bank.k} nearest training rows is the same for every "
            "held-out row (each has exact copies among the training rows, as in a table of a "
            f"few categories), so it cannot rank records: scoring with "
            f"{model.default_score_kind} instead"
        )
        score_kind, bank, whole, measured = model.default_score_kind, None, False, cal_x
        cal = graph(cal_x)
        cal_scores = anomaly_scores(cal, score_kind)
    check_spread(cal_scores)
    calibrator = Calibrator.fit(cal_scores, target_fpr=config.target_fpr)
    val_scores = (
        cal_scores if small else anomaly_scores(estimate_all(graph, bank, scored_x), score_kind)
    )
    active = active_units(model, scored_x)

    warnings = [] if fallback is None else [fallback]
    if bank is not None and bank.parts.shape[0] > 1 and series is not None:
        # The distance's parts read the newest rows only: the window's older ones feed the
        # network, which this score never asks (a helper: --window 40 scored as 20 did).
        lengths = {
            "column_window": config.column_window,
            "deviation_window": series.deviation_window,
            "short_window": config.short_window,
        }
        widest = max(lengths, key=lambda name: lengths[name])
        read = lengths[widest]
        if series.window > read:
            warnings.append(
                f"{option('window', series.window)} keeps {series.window - 1} rows before "
                f"each record, but the default score reads the last {read} "
                f"({option(widest, read)}): the older rows change nothing; raise "
                f"{option('column_window')} to judge each metric on more rows"
            )
    if score_kind == "knn" and config.model != "vae":
        # Every model scored alike with knn (a models helper compared six to the digit).
        own = model.default_score_kind
        warnings.append(
            f"{option('score_kind', score_kind)} measures distances between the encoded input "
            f"rows, which the {config.model} network does not change: these scores are any "
            f"model's; to score with {config.model}, give {option('score_kind', own)}"
        )
    elif score_kind != "knn" and len(history["loss"]) <= config.kl_warmup_epochs:
        # The network's scores ranked unseen categories below normal rows at 2 epochs, and
        # vae-svdd's hypersphere starts after the warm-up, so it had none (a models helper).
        warnings.append(
            f"training ended within the KL warm-up ({len(history['loss'])} epochs of "
            f"{option('kl_warmup_epochs', config.kl_warmup_epochs)}): the {score_kind} score "
            f"comes from a network barely trained; train for more {option('epochs')}"
        )
    if repeated is not None:
        warnings.append(repeated)
    if warming is not None:
        warnings.append(warming)
    if spelling is not None:
        warnings.append(spelling)
    if labels_alike := label_spelling_warning(schema):
        warnings.append(labels_alike)
    for text in (c for c in schema.categorical if c.rare):
        # bench_rare_labels.py: a merchant column of 400 or 2,000 labels kept lifted AUROC
        # (.71 to .80, .75) and cut AUPRC (.40 to .23, .10) against leaving it out, its rare
        # labels' rows judged as one; at 200 labels, every one with a slot, it lifted both.
        compare = (
            "compare the two on labelled rows (anomaly evaluate) and --ignore-column it if it loses"
        )
        if text.name in config.categorical and _all_numbers(text.labels):
            # Given to --categorical, a count of 608 values trained with 18% of its rows in
            # one slot, and the warning named leaving it out, not modelling it as a number.
            compare = (
                f"its labels are numbers, given to {option('categorical')}: where their order "
                f"means something (an amount, a count), drop "
                f"{option('categorical', text.name)} to model it as a number; where they are "
                f"codes (a zip code, a product id), {compare}"
            )
        warnings.append(
            f"column '{printable(text.name)}': its {len(text.rare):,} rarest labels "
            f"({text.rare_share:.1%} of rows) share one slot, which may find fewer anomalies "
            "than leaving the column out (a generated table: AUPRC .23 kept, .40 left out); "
            f"{compare}"
        )
    if active == 0:
        collapse = (
            "posterior collapse: no latent unit carries information (KL per unit < "
            f"{ACTIVE_UNIT_KL} nats on validation data), so the model scores columns as if "
            f"independent; try {option('kl_warmup_epochs')} higher or a smaller "
            f"{option('min_scale')}"
        )
        if score_kind == "knn":
            # The distance reads the encoded rows, never the network: its scores, threshold and
            # attribution are the same whatever the latent holds, so this is no warning.
            log.info(
                "%s (it matters to likelihood scores only: this model scores by the distance)",
                collapse,
            )
        else:
            warnings.append(collapse)
    validation_fpr = float(np.mean(val_scores > calibrator.threshold))
    warnings.extend(
        calibration_warnings(
            len(measured),
            config.target_fpr,
            validation_fpr,
            len(scored_x),
            max_calibration_rows=MAX_CALIBRATION_ROWS,
        )
    )
    if small:
        warnings.append(_small_table_warning(n_rows, score_kind))
    warnings.extend(lookalikes)
    one_value = [c.name for c in schema.numeric if c.minimum == c.maximum]
    one_value += [c.name for c in schema.categorical if len(c.categories) == 1]
    if one_value:
        # Found by a user: such a column jumped from 5 to 1,000,000 and the record was not
        # flagged. Its change is clipped as any far-off value is, and may not flag alone.
        warnings.append(
            f"column(s) {listed(one_value)} hold one value in every training row: a later "
            "change in them counts as any far-off value (clipped at 10 scales) or unseen "
            "category does, and may not flag a record alone; train on rows where they vary, or "
            "watch them with a rule of their own"
        )
    for message in warnings:
        # Marked: the command line prints them in its summary, and leaves these records out.
        log.warning(message, extra={"in_summary": True})

    # The epoch whose weights the model keeps: the best one watched, or the last where none
    # was (training ended within the KL warm-up, before early stopping watched an epoch).
    last = len(history["loss"]) - 1
    watched = getattr(stopper, "best_weights", None) is not None
    best = int(getattr(stopper, "best_epoch", last)) if watched else last
    summary = TrainingSummary(
        rows=n_rows,
        fit_rows=len(fit_x),
        validation_rows=len(val_x),
        calibration_rows=len(measured),
        n_features=schema.n_features,
        hidden_units=hidden,
        latent_dim=latent,
        epochs_run=len(history["loss"]),
        best_epoch=best + 1,
        stopped_early=len(history["loss"]) < config.epochs,
        budget=_budget(asked, config, batches, len(history["loss"])),
        train_neg_elbo=float(history["neg_elbo"][best]),
        val_neg_elbo=float(history["val_neg_elbo"][best]),
        val_nll=float(history["val_nll"][best]),
        val_kl=float(history["val_kl"][best]),
        active_latent_units=active,
        target_fpr=config.target_fpr,
        threshold=calibrator.threshold,
        validation_fpr=validation_fpr,
        validation_scored=len(scored_x) if len(scored_x) < len(val_x) else None,
        seconds=round(time.perf_counter() - started, 2),
        warnings=tuple(warnings),
        history={k: [float(v) for v in vals] for k, vals in history.items()},
        rare_labels=schema.describe_rare(),
    )
    params = asdict(asked)
    if config == asked:
        # Where the cap does not bind, the params (and so the version) are those of a bundle
        # trained before the cap was an option.
        params.pop("max_updates")
    params.update(
        metric_parts=metric_count,  # metrics the distance judges alone, to describe the score
        hidden_units=list(hidden),
        latent_dim=latent,
        categorical=list(config.categorical),
        context=list(config.context),
    )
    bundle = Bundle(
        trained_network=model,
        schema=schema,
        calibrator=calibrator,
        score_kind=score_kind,
        model_type=config.model,
        n_samples=config.n_samples,
        noise_seed=config.random_state,
        # The held-out rows' terms: where the bank keeps every row, the ones it adds last.
        term_baseline=np.median(cal["term_nll"][len(measured) - len(cal_x) :], axis=0),
        params=params,
        training=summary.to_dict(),
        data_fingerprint=trained_on,
        scorer=scorer,
        kinds=traced.kinds,
        neighbours=bank,
        series=series,
    )
    bundle.__dict__["graph"] = graph  # reuse the compiled graph instead of tracing it again
    return bundle, summary


def _whole_table_bank(score_kind: str, schema: Schema, small: bool, table: bool, rows: int) -> bool:
    """Whether a table's distance keeps the calibration rows in its bank beside the fitted
    ones, ``rows`` in all, and calibrates on them leave-one-out: the plain distance (the
    default), a table (a series' windows were chosen with their own bank), not one already
    small, and every one of them within the bank's cap and the calibration's."""
    cap = min(bank_rows(schema.n_features), MAX_CALIBRATION_ROWS)
    return score_kind == "knn" and table and not small and rows <= cap


def _judged_by_parts(config: TrainingConfig) -> bool:
    """Whether a series model's score is the default model's distance, the one its window's
    deviation part was measured for: other models see the window's lags alone."""
    kind = config.score_kind or (DEFAULT_SCORE if config.neighbours else None)
    return config.model == "vae" and kind in NEIGHBOUR_KINDS


def window_bank_parts(
    schema: Schema, series: SeriesSpec | None, short: int, column: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The parts the distance judges a series record on, each one's weight in the sum and the
    bank rows it searches at most (0: all): the newest ``short`` rows of its window, with the
    deviations where the window has them, and the whole window (or, when ``short`` is 0 or
    not below it, the whole window and the newest row with its deviations, at
    ``DEVIATION_WEIGHT``). With ``column`` 2 or more, each metric alone on its newest
    ``column`` rows (at most the window) takes the whole window's place: they share
    ``METRIC_WEIGHT``, so that together they count as their mean at that weight does, and each
    searches ``METRIC_BANK_ROWS`` bank rows at most.
    ``None`` (every column at once) for a table, or a window judged whole and alone."""
    if series is None:
        return None
    lengths = (short, series.window) if 0 < short < series.window else (series.window,)
    parts = window_parts(schema, lengths)
    weights = np.ones(len(parts))
    if series.deviates and len(lengths) == 1:  # the deviations' own part, the last
        weights[-1] = DEVIATION_WEIGHT
    rows = np.zeros(len(parts), dtype=np.int64)
    metrics = metric_parts(schema, min(column, series.window)) if column >= 2 else parts[:0]
    if len(metrics):
        whole = len(lengths) - 1  # the whole window's part
        keep = np.arange(len(parts)) != whole
        parts = np.concatenate([parts[keep], metrics])
        weights = np.concatenate(
            [weights[keep], np.full(len(metrics), METRIC_WEIGHT / len(metrics))]
        )
        rows = np.concatenate([rows[keep], np.full(len(metrics), METRIC_BANK_ROWS)])
    return (parts, weights, rows) if len(parts) > 1 else None


#: Column names that usually hold labels, not a measurement.
_LABEL_NAMES = frozenset(
    {"label", "labels", "is_anomaly", "anomaly", "target", "class", "y", "attack", "is_attack",
     "fraud", "is_fraud", "outlier", "is_outlier", "ground_truth"}
)  # fmt: skip
#: The value a column naming each row's attack or fault gives its normal rows (NSL-KDD's
#: 'normal', CIC-IDS's 'BENIGN'), beside at most ``_MAX_KINDS`` other values.
_NORMAL_WORDS = frozenset({"normal", "benign"})
_MAX_KINDS = 100
#: The words a column of labels is written in, whatever its name ('status': normal/anomalous).
_LABEL_WORDS = frozenset(
    {"normal", "anomaly", "anomalous", "abnormal", "attack", "fraud", "benign", "malicious",
     "outlier", "inlier"}
)  # fmt: skip


def _labels_in_words(values: pd.Series) -> bool:
    """Whether a column's (at most two) values are label words: normal, anomalous..."""
    if pd.api.types.is_numeric_dtype(values):
        return False
    distinct = values.dropna().astype(str).str.strip().str.lower().unique()
    return 1 <= len(distinct) <= 2 and set(distinct) <= _LABEL_WORDS


def _normal_of_kinds(values: pd.Series) -> tuple[str, int] | None:
    """The value (as written) a column of kinds gives its normal rows, and how many other
    values it holds: NSL-KDD's 'attack' is 'normal' or one of 22 attacks' names."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    distinct = values.dropna().astype(str).unique()
    if not 2 <= len(distinct) <= _MAX_KINDS + 1:
        return None
    normal = [v for v in distinct if v.strip().rstrip(".").lower() in _NORMAL_WORDS]
    return (str(normal[0]), len(distinct) - 1) if len(normal) == 1 else None


def _all_numbers(labels: tuple[str, ...]) -> bool:
    """Whether every label reads as a number: a numeric column given to ``--categorical``."""
    return bool(pd.to_numeric(pd.Series(labels, dtype=object), errors="coerce").notna().all())


def _lookalike_warnings(
    frame: pd.DataFrame,
    series_order: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    sampled_from: int | None = None,
) -> list[str]:
    """Columns trained on as measurements that look like something else: labels (two values,
    a label's name), whose anomalous rows then stay in training; or row numbers (whole numbers
    counting up by one), which make every later row look new (95% of the next 300 normal rows
    of a table were flagged); or counters, rising row after row (in file order, or with
    ``series_order``, the rows in each series' time order and where the next row is of the
    same series). ``sampled_from``: the rows of the table ``frame`` is a sample of, whose
    row numbers then lie apart (``_row_numbers``)."""
    found = []
    # The command line has flags for both; in Python the caller drops the column.
    cli = offered("ignore_column")
    for column in frame.columns:
        values = frame[column]
        leave_out = f"leave it out: {option('ignore_column', column)}" if cli else "drop it"
        named = str(column).strip().lower() in _LABEL_NAMES and values.nunique(dropna=True) <= 2
        if named or _labels_in_words(values):
            labelled = f"give --label-column {column} (its anomalous rows are left out), or "
            found.append(
                f"column '{column}' looks like labels and is trained on as data: "
                f"{labelled if cli else ''}{leave_out}"
            )
        elif kinds := _normal_of_kinds(values):
            # NSL-KDD's 'attack' (normal, neptune, smurf ...) trained as a 23-label category:
            # 11,743 attacks learnt as normal, without a word.
            normal, others = kinds
            flags = f"--label-column {quoted(column)} --normal-value {quoted(normal)}"
            labelled = f"give {flags} (its other rows are left out), or "
            found.append(
                f"column '{printable(column)}' holds {printable(repr(normal))} beside {others} "
                "other value(s), like labels naming each row's attack or fault, and is trained "
                "on as data: "
                f"{labelled if cli else ''}{leave_out}"
            )
        elif _row_numbers(values, sampled_from):
            found.append(
                f"column '{column}' counts up by one from row to row, like a row number or id: "
                f"later rows hold numbers training never saw; {leave_out}"
            )
        elif _only_rises(values, series_order):
            # A counter's later values all lie beyond training's: the next day's rows of a
            # helper's bytes_total were 100% flagged.
            found.append(
                f"column '{column}' only rises from row to row, like a counter (bytes_total) or "
                "a column the rows are sorted by: "
                "later rows hold values training never saw; give its rate instead (each "
                f"row's increase over the row before), or {leave_out}"
            )
    return found


def _row_numbers(values: pd.Series, sampled_from: int | None = None) -> bool:
    """Whether a column holds whole numbers counting up by one (in any order), or, in a sample
    of a table of ``sampled_from`` rows, whole numbers no two alike within a range of that
    many: a row number or id column of the table, of which the sample kept some."""
    if not pd.api.types.is_integer_dtype(values) or len(values) <= 2:
        return False
    steps = np.diff(np.sort(values.to_numpy()))
    if sampled_from is None or sampled_from <= len(values):
        return bool((steps == 1).all())
    numbers = values.to_numpy()
    span = int(numbers.max()) - int(numbers.min())
    return bool((steps >= 1).all()) and span < sampled_from


def _only_rises(
    values: pd.Series, series_order: tuple[np.ndarray, np.ndarray] | None = None
) -> bool:
    """Whether a numeric column rises (never falls) over nearly all its rows, in file order or
    ``series_order``'s, and strictly over most: a counter. 50 steps at least; a reset or two is
    allowed."""
    if not (pd.api.types.is_float_dtype(values) or pd.api.types.is_integer_dtype(values)):
        return False  # text, truths, complex numbers (refused later, by name)
    numbers = values.to_numpy(dtype=np.float64)
    if series_order is None:
        steps = np.diff(numbers)
    else:
        order, same_series = series_order
        steps = np.diff(numbers[order])[same_series]
    steps = steps[np.isfinite(steps)]
    return len(steps) >= 49 and (steps >= 0).mean() >= 0.99 and (steps > 0).mean() >= 0.5


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


def within_budget(config: TrainingConfig, batches: int) -> TrainingConfig:
    """``config`` with its epochs cut to ``config.max_updates`` mini-batch updates of
    ``batches`` an epoch (at least one epoch), and its KL warm-up and patience cut in the same
    proportion (at least one epoch each, where they were any), so that they keep their share
    of the training; ``config`` itself where the cap does not bind (0: no cap). A 1,000,000-row
    table ran 6,485 updates an epoch (14-45 s on 2 shared cores), and at least 31 epochs before
    early stopping could end it."""
    if not config.max_updates or config.epochs * batches <= config.max_updates:
        return config
    epochs = max(1, config.max_updates // batches)
    share = epochs / config.epochs

    def cut(count: int) -> int:
        return min(count, max(1, math.ceil(count * share))) if count else 0

    return replace(
        config,
        epochs=epochs,
        kl_warmup_epochs=cut(config.kl_warmup_epochs),
        patience=cut(config.patience),
    )


def _budget(
    asked: TrainingConfig, config: TrainingConfig, batches: int, epochs_run: int
) -> dict[str, int] | None:
    """What the training summary records of a cap that cut the epochs; ``None`` where none did."""
    if config == asked:
        return None
    return {
        "max_updates": asked.max_updates,
        "batches_per_epoch": batches,
        "updates": epochs_run * batches,
        "epochs": config.epochs,
        "kl_warmup_epochs": config.kl_warmup_epochs,
        "patience": config.patience,
    }


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
