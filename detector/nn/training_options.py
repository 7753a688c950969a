"""The options every model takes (``detector.nn.options`` has each model's own and says how
all of them are used)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from detector.nn.options import MODEL_OPTIONS, Options, describe, opt, share, sizes
from detector.scoring.neighbours import DEFAULT_FAR_WEIGHT
from detector.series.levels import DEFAULT_LEVEL_HOURS, MAX_LEVEL_HOURS
from detector.wording import option

#: Rows a series record is judged with, and the newest rows the distance also judges it on
#: alone, chosen on SMD, ASD and the Donut KPIs at once (tests/benchmarks/README.md, "Metric
#: streams"; ``bench_series.py --study scales``).
DEFAULT_WINDOW = 20
DEFAULT_SHORT_WINDOW = 5
DEFAULT_DEVIATION_WINDOW = 10
#: The newest rows each metric is judged on alone, in the whole window's place, the weight of
#: those parts' mean, and the bank rows (spread over the training period) each such part
#: searches at most (``bench_series.py --study metrics``).
DEFAULT_COLUMN_WINDOW = 20
METRIC_WEIGHT = 0.75
METRIC_BANK_ROWS = 250
#: How much the deviation part counts beside the window's other parts (``--study scales``).
DEVIATION_WEIGHT = 0.5
#: Latent samples a record at most: a bundle with more does not load (a record would take
#: seconds to score).
MAX_SAMPLES = 10_000
#: Mini-batch updates a training runs at most (``--max-updates``): above every data set of the
#: quality benchmarks at its protocol's epochs (the most, 39,000: an SMD machine's 16,586 fitted
#: rows, 130 batches of 128, 300 epochs; tests/benchmarks/README.md, "A budget of mini-batch
#: updates"), so none of their bundles changes; a table of 1,000,000 rows (6,485 batches an
#: epoch) trains 15 epochs at most where 300 were allowed (15:34 to 1:46-2:26 on 2 cores).
DEFAULT_MAX_UPDATES = 100_000


@dataclass(frozen=True)
class TrainingOptions(Options):
    """The options every model takes; ``None`` sizes the network from the data."""

    model: str = opt(
        "vae",
        "the model: "
        + ", ".join(f"{name} ({describe(name)})" for name in MODEL_OPTIONS)
        + "; each one's own options are listed under its name",
        choices=tuple(MODEL_OPTIONS),
    )
    categorical: tuple[str, ...] = opt(
        (), "treat a numeric-looking column as categorical", metavar="COL"
    )
    epochs: int = opt(300, "maximum epochs")
    batch_size: int = opt(128, "rows per mini-batch")
    learning_rate: float = opt(1e-3, "Adam's learning rate")
    latent_dim: int | None = opt(None, "latent width", shown="from the data")
    hidden_units: tuple[int, ...] | None = opt(
        None,
        "encoder layer sizes, e.g. 64,32",
        metavar="N,N",
        parse=sizes,
        shown="from the data",
    )
    activation: str = opt("relu", "the hidden layers' activation (a Keras name)", flag=None)
    kl_warmup_epochs: int = opt(10, "epochs over which the KL term's weight rises to 1")
    patience: int = opt(20, "epochs without a better validation ELBO before training stops")
    max_updates: int = opt(
        DEFAULT_MAX_UPDATES,
        "at most this many mini-batch updates: a longer table's --epochs are cut to fit "
        "them, and its --kl-warmup-epochs and --patience in proportion; 0: no cap",
        metavar="N",
    )
    min_scale: float = opt(0.3, "decoder standard-deviation floor, standardised units")
    max_scale: float = opt(2.0, "decoder standard-deviation ceiling", flag=None)
    #: ``schema.fit_schema`` says why, README "Column scaling" when to raise it.
    range_floor: float = opt(
        0.05,
        "each numeric column's scale is at least this fraction of its training range; 0.25 "
        "scales nearly every column by its range, as min-max scaling does",
    )
    #: ``schema.heavy_tail_ratio`` says which columns; README "How it works" why.
    raw_tails: bool = opt(
        False,
        "keep heavy-tailed numeric columns as they are; by default each one with no negative "
        "value, skewed past 5 and its largest value 50x its median (amounts, durations, byte "
        "counts) is modelled as its logarithm",
    )
    #: ``detector.scoring.neighbours`` (``far``) says how; tests/benchmarks/README.md, Round 10,
    #: why 0.1 (the labelled sets' mean rank; 2 flagged NSL-KDD's drifted normals).
    far_weight: float = opt(
        DEFAULT_FAR_WEIGHT,
        "how much a value past the training range adds to the distance: this x log(1 + how "
        "far); raise it (e.g. 1) where a value far past anything seen must alarm whatever "
        "else the record holds",
        metavar="W",
    )
    clip: float = opt(10.0, "standardised values are clipped to +-clip", flag=None)
    validation_fraction: float = opt(
        0.15, "share of the rows early stopping watches, in [0.05, 0.4]", flag=None
    )
    calibration_fraction: float = opt(
        0.15, "share of the rows the threshold is calibrated on, in [0.05, 0.4]", flag=None
    )
    target_fpr: float = opt(
        0.01, "false-positive rate the threshold is set for, e.g. 0.01 or 1%", parse=share
    )
    n_samples: int = opt(8, "latent samples L per scored record", flag="--samples")
    score_kind: str | None = opt(
        None,
        "score: knn (distance to the nearest normal rows), elbo_knn, recon_prob, mean_log_lik, "
        "elbo or iwae, or a model's own (vae-svdd: svdd_distance, combined, either; advae: "
        "recon_error)",
        flag="--score",
        metavar="KIND",
        shown="knn; elbo for the other models and with --neighbours 0",
    )
    #: The bundle keeps a bank of training rows only when its score uses it.
    neighbours: int = opt(
        5,
        "k of the distance to the nearest normal training rows, which the bundle keeps; 0 "
        "keeps no training rows in the bundle and scores with the model alone",
        metavar="K",
    )
    random_state: int = opt(0, "random seed", flag="--seed")
    #: ``detector.series.windows`` says how a series is ordered, windowed and checked.
    time_column: str | None = opt(
        None,
        "a column of times (ISO-8601, epoch seconds or timestamps): each record is judged "
        "with the rows before it in its series",
        metavar="COL",
    )
    series_columns: tuple[str, ...] = opt(
        (),
        "a column naming a series, e.g. host (with --time-column)",
        flag="--series-column",
        metavar="COL",
    )
    window: int = opt(
        DEFAULT_WINDOW, "rows a record is judged with, itself included (with --time-column)"
    )
    short_window: int = opt(
        DEFAULT_SHORT_WINDOW,
        "the distance also judges a record on the newest N rows of its window alone and adds "
        "the two, each standardised (with --time-column); 0, or N not below --window, judges "
        "the whole window only",
        metavar="N",
    )
    deviation_window: int = opt(
        DEFAULT_DEVIATION_WINDOW,
        "the default model's distance also judges the newest row's difference from the mean "
        "of the N - 1 rows before it, each metric's, with the --short-window rows (without "
        f"them: with the newest row, at weight {DEVIATION_WEIGHT:g}); with --time-column; "
        "capped at --window; 0 or 1: not",
        metavar="N",
    )
    column_window: int = opt(
        DEFAULT_COLUMN_WINDOW,
        "the default model's distance judges each metric alone on its newest N rows, to "
        "the same rows of that metric in training, instead of the whole window at once, and "
        f"adds {METRIC_WEIGHT:g} x the mean of those distances (with --time-column; capped at "
        "--window); 0 or 1: "
        "the whole window at once",
        metavar="N",
    )
    level_hours: int = opt(
        DEFAULT_LEVEL_HOURS,
        "the default model judges each series record's score against the median of its "
        "series' hourly mean scores over the N hours before its own hour, so that hours when "
        "a whole series runs high count less (with --time-column); 0: not",
        metavar="N",
    )
    max_gap_seconds: float | None = opt(
        None, "a longer gap in a series starts its window again (with --time-column)"
    )
    calendar: bool = opt(
        False,
        "add each record's hour of day and day of week (UTC) as columns TIME[hour] and "
        "TIME[weekday] (with --time-column; a cvae takes them as --context)",
    )
    #: ``anomaly train`` shows progress unless --quiet or --json.
    progress: bool = opt(False, "show training progress on stderr", flag=None)

    def problems(self, model: str) -> list[str]:
        problems = []
        if model not in MODEL_OPTIONS:
            problems.append(f"model {model!r} is not one of {sorted(MODEL_OPTIONS)}")
        for name in ("validation_fraction", "calibration_fraction"):
            value = getattr(self, name)
            if not 0.05 <= value <= 0.4:
                problems.append(f"{name} {value} must be in [0.05, 0.4]")
        if self.neighbours < 0:
            problems.append("neighbours must be 0 (no bank) or at least 1")
        for name in ("epochs", "batch_size", "n_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.n_samples > MAX_SAMPLES:
            problems.append(
                f"{option('n_samples')} {self.n_samples} must be at most {MAX_SAMPLES:,}"
            )
        if self.patience < 0:
            problems.append(f"{option('patience')} {self.patience} must be 0 or more epochs")
        if self.max_updates < 0:
            problems.append(
                f"{option('max_updates')} {self.max_updates} must be 0 (no cap) or a number of "
                "mini-batch updates"
            )
        if self.latent_dim is not None and self.latent_dim < 1:
            problems.append("latent_dim must be at least 1")
        if self.hidden_units is not None and (not self.hidden_units or min(self.hidden_units) < 1):
            problems.append("hidden_units must be a non-empty list of positive sizes")
        if not 0 < self.min_scale < self.max_scale:
            # max_scale has no flag: the message names the range, not a setting users lack.
            problems.append(
                f"{option('min_scale')} {self.min_scale} must be in (0, {self.max_scale:g})"
            )
        if self.kl_warmup_epochs < 0:
            problems.append(
                f"{option('kl_warmup_epochs')} {self.kl_warmup_epochs} must be 0 or more epochs"
            )
        if not 0 <= self.far_weight < math.inf:
            problems.append(f"{option('far_weight')} {self.far_weight} must be 0 or more")
        if not 0 <= self.range_floor <= 1:
            problems.append(f"range_floor {self.range_floor} must be a fraction in [0, 1]")
        if not 0 < self.target_fpr < 0.5:
            problems.append(f"target_fpr {self.target_fpr} must be in (0, 0.5)")
        series = {
            "series_columns": bool(self.series_columns),
            "window": self.window != DEFAULT_WINDOW,
            "short_window": self.short_window != DEFAULT_SHORT_WINDOW,
            "deviation_window": self.deviation_window != DEFAULT_DEVIATION_WINDOW,
            "column_window": self.column_window != DEFAULT_COLUMN_WINDOW,
            "level_hours": self.level_hours != DEFAULT_LEVEL_HOURS,
            "max_gap_seconds": self.max_gap_seconds is not None,
            "calendar": self.calendar,
        }
        if self.time_column is None and any(series.values()):
            # Only the options given: naming all eight sent users looking for ones they never set.
            given = [option(name) for name, on in series.items() if on]
            verb = "judges" if len(given) == 1 else "judge"
            problems.append(
                f"{', '.join(given)} {verb} rows within a series: set {option('time_column')}"
            )
        if not 1 <= self.window <= 1000:
            problems.append(f"window {self.window} must be in [1, 1000] rows")
        if self.short_window < 0:
            short = option("short_window")
            problems.append(f"{short} {self.short_window} must be 0 (off) or a row count")
        if self.deviation_window < 0:
            deviation = option("deviation_window")
            problems.append(f"{deviation} {self.deviation_window} must be 0 (off) or a row count")
        if self.column_window < 0:
            column = option("column_window")
            problems.append(f"{column} {self.column_window} must be 0 (off) or a row count")
        if not 0 <= self.level_hours <= MAX_LEVEL_HOURS:
            level = option("level_hours")
            problems.append(
                f"{level} {self.level_hours} must be 0 (off) or in [1, {MAX_LEVEL_HOURS}] hours"
            )
        if self.max_gap_seconds is not None and not self.max_gap_seconds > 0:
            problems.append(f"max_gap_seconds {self.max_gap_seconds} must be positive")
        if not 0 <= self.random_state < 2**32:  # what numpy and TensorFlow take
            problems.append(
                f"{option('random_state')} {self.random_state} must be in [0, 2**32 - 1]"
            )
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):  # NaN too
            problems.append(
                f"{option('learning_rate')} {self.learning_rate} must be a positive number"
            )
        return problems
