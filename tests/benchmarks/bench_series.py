"""Metric streams: does judging a row with its series' recent rows find more, on every
labelled time series in shared/data at once (SMD machines, ASD entities, Donut KPIs)?

Each series is windowed by the product's ``detector.series.windows.make_windows`` (one series
per file, a row a minute for SMD/ASD, five for Donut) and the product's detector is trained on
the windowed training rows with no other option; the test rows are windowed with the training
rows before them as history (known past rows, no labels). Candidates, each from the same split:

- ``W=1``: the row alone (today's default), the product's default score (``knn``) and ``elbo``;
- ``lags W=5`` / ``lags W=15``: the row and the 4 / 14 rows before it (a Donut-style flattened
  window), the same two scores;
- ``deviation W=15``: the row and its difference from the mean of the 14 rows before it;
- ``series W=10`` and ``series W=20, newest 5``: trained as a user trains, with the time
  column (``--time-column``; the training rows labelled anomalous left out first), at the
  10-row window alone and at the default (20 rows, and the newest 5 alone, summed);
- peers on the same rows: kNN (k=5, a 5,000-row bank) and IsolationForest, on the row and on
  the 15-row lag window (the issue's "IsolationForest on lag features").

Metrics per series: point-wise AUROC, AUPRC and best F1; the point-adjusted best F1 beside them
(never alone: a random score reaches .76 on SMD); at the detector's calibrated threshold (1%
target) the point-wise F1, the share of labelled segments with at least one alarm, and false
alarms per day (runs of alarms outside every labelled segment). The choice: mean rank over all
series (AUROC and AUPRC) and leave-one-series-out, as ``bench_quality.py`` does.

Donut KPIs: the first half trains (its labelled anomalies left out, as ``anomaly train
--label-column`` does), the second half tests.

Two studies on the product's default window (the last 5 rows, lags), every series:

- ``--study scaling``: the product's distance (``NeighbourBank``, no network) under range
  floors, clip margins, k and the encoding's clip, ranked over all series with the
  leave-one-series-out choice;
- ``--study tails``: ``bench_distance.py --study tails``' candidates (the distance with a term
  for columns beyond their normal range) on the row alone and on the default window, joined
  with the tables' run by ``bench_distance.py --join``;
- ``--study windows``: the product's distance (no network) on the last 1 to 30 rows;
- ``--study scales``: that distance at several lengths at once (standardised, summed or maxed),
  and with the row's deviation from the mean of its last 9, 14 or 19 rows as a third part,
  whole or at a weight;
- ``--study baselines``: the default score judged against its series' own recent level (the
  median of its scores in the hours before), a causal transformation a stream could keep;
- ``--study metrics``: each metric judged alone on its newest 10, 15 or 20 rows (one part per
  metric, their mean), in the whole window's place or beside it, at two weights, each part
  searching every bank row or at most 500 of them;
- ``--study weights``: the default's parts (the newest 5 rows with the deviations, each metric
  alone on its newest 20 rows) at other weights, with a third: each metric alone on its newest
  5 rows and its deviation (one part per metric, their mean);
- ``--study local``: the default distance exactly as training builds it, with each part also
  judged relative to the normal rows' spread around the record's neighbours (as the local
  outlier factor does), at several weights and floors of that spread, over 3 seeds;
- ``--study far``: the default distance exactly as training builds it, with a column beyond
  its bounds counting past them, log-compressed, at several weights, over 3 seeds;
- ``--study logs``: that distance with each heavy-tailed metric (none negative, skewed past 5,
  its largest value 50x its median) as its logarithm, over 3 seeds;
- ``--study models``: each registry model trained on the windows and scored with its own score
  (what ``anomaly train --model NAME`` scores with), ranked among the models per family, with
  the product's default (``knn``) and the peers beside them;
- ``--study segments``: where the default's AUROC is lost, each labelled segment's rows' mean
  rank among the normal test rows, and the AUROC if every short segment ranked first.

Usage::

    python tests/benchmarks/bench_series.py [--families smd,asd,donut] [--epochs 20] [--quick]
        [--out tests/benchmarks/results/series] [--only LABEL-TEXT]
    python tests/benchmarks/bench_series.py --study scaling
        --out tests/benchmarks/results/series_scaling
    python tests/benchmarks/bench_series.py --study models
        --out tests/benchmarks/results/series_models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
from bench_quality import (  # type: ignore[import-not-found]
    RANKED,
    knn_distance,
    leave_one_set_out,
    mean_ranks,
)
from bench_servers import (  # type: ignore[import-not-found]
    as_frame,
    best_f1,
    best_f1_point_adjusted,
    find_machines,
    load_machine,
    segments,
)
from common import (  # type: ignore[import-not-found]
    command_line,
    count,
    missing_data,
    progress,
    resolve_data_dir,
)

REPO = Path(__file__).resolve().parents[2]
#: (candidate prefix, window, representation) of the product's detector.
VARIANTS: tuple[tuple[str, int, str], ...] = (
    ("W=1", 1, "lags"),
    ("lags W=5", 5, "lags"),
    ("lags W=10", 10, "lags"),  # the default from --study windows to --study scales
    ("lags W=15", 15, "lags"),
)
VARIANTS += (("deviation W=15", 15, "deviation"),)
#: Trained as a user trains (``--time-column``, the training rows labelled anomalous left out
#: before windowing), with ``--window``, ``--short-window`` and ``--deviation-window``: the
#: window, the newest rows the distance also judges alone (0: the whole window only) and the
#: rows whose mean the newest row's deviation part is taken from (0: no such part).
#: The fifth: the rows each metric is judged on alone in the whole window's place (0: none).
PRODUCT_VARIANTS: tuple[tuple[str, int, int, int, int], ...] = (
    ("series W=10", 10, 0, 0, 0),  # the default before --study scales
    ("series W=20, newest 5", 20, 5, 0, 0),  # the default from --study scales
    ("series W=20, newest 5, deviation 10", 20, 5, 10, 0),  # from the deviation to --study metrics
    ("series W=20, newest 5, deviation 10, metrics 20", 20, 5, 10, 20),  # the default since
)
PEER_WINDOW = 15
BANK_ROWS = 5000


@dataclass
class Series:
    family: str
    name: str
    train: pd.DataFrame  # value columns only, in time order
    test: pd.DataFrame
    y_test: np.ndarray
    minutes_per_row: float


def server_series(data_dir: Path, family: str, quick: bool) -> Iterator[Series]:
    for machine in find_machines(data_dir, [family], None):
        train, test, labels = load_machine(machine.path)
        if quick:
            train, test, labels = train[-3000:], test[:3000], labels[:3000]
        yield Series(family, machine.name, as_frame(train), as_frame(test), labels, 1.0)


def family_series(data_dir: Path, family: str, quick: bool) -> Iterator[Series]:
    """Every series of ``family`` (smd, asd or donut), in file order."""
    if family == "donut":
        return donut_series(data_dir, quick)
    return server_series(data_dir, family, quick)


def family_name(family: str) -> str:
    """How reports name a family: SMD, ASD, Donut."""
    return "Donut" if family == "donut" else family.upper()


def donut_series(data_dir: Path, quick: bool) -> Iterator[Series]:
    paths = sorted((data_dir / "donut_kpi").glob("*.csv"))
    if not paths:  # else the family was left out of the report without a word
        missing_data([data_dir / "donut_kpi" / "*.csv"], "donut_kpi/*.csv")
    for path in paths:
        frame = pd.read_csv(path)
        half = len(frame) // 2
        train, test = frame.iloc[:half], frame.iloc[half:]
        if quick:
            train, test = train.iloc[-3000:], test.iloc[:3000]
        # Labelled anomalies stay in place as history but are not trained on (masked below).
        yield Series(
            "donut",
            path.stem,
            train[["value"]].assign(label=train["label"].to_numpy()),
            test[["value"]],
            test["label"].to_numpy(int),
            5.0,
        )


def windowed(series: Series, window: int, representation: str) -> tuple[pd.DataFrame, ...]:
    """The training rows' and the test rows' windows (the test's history runs into the
    training rows), and the training rows that are not labelled anomalies."""
    from detector.series.windows import SeriesSpec, make_windows

    train = series.train.drop(columns=["label"], errors="ignore")
    whole = pd.concat([train, series.test], ignore_index=True)
    whole.insert(0, "t", np.arange(len(whole), dtype=np.int64) * 60 * series.minutes_per_row)
    spec = SeriesSpec("t", window=window, representation=representation)  # type: ignore[arg-type]
    windows = make_windows(whole, spec)
    assert len(windows.rows) == len(whole), "a clean series loses no row"
    n = len(train)
    normal = series.train["label"].to_numpy() == 0 if "label" in series.train else None
    fit = windows.frame.iloc[:n]
    return (fit[normal] if normal is not None else fit), windows.frame.iloc[n:]


def event_metrics(y: np.ndarray, flagged: np.ndarray, minutes_per_row: float) -> dict[str, float]:
    """Share of labelled segments with an alarm, and alarm runs outside them per day."""
    spans = segments(y)
    found = [flagged[a:b].any() for a, b in spans]
    false = flagged & (y == 0)
    runs = int(np.sum(false[1:] & ~false[:-1]) + false[0]) if len(false) else 0
    days = len(y) * minutes_per_row / 1440
    return {
        "events_found": float(np.mean(found)) if found else float("nan"),
        "false_alarms_per_day": runs / days,
    }


def metrics(y: np.ndarray, scores: np.ndarray, threshold: float | None, mpr: float) -> dict:
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    out = {
        "auroc": float(roc_auc_score(y, scores)),
        "auprc": float(average_precision_score(y, scores)),
        "best_f1": best_f1(y, scores),
        "best_f1_pa": best_f1_point_adjusted(y, scores),
    }
    if threshold is not None:
        flagged = scores > threshold
        out["f1_threshold"] = float(f1_score(y, flagged, zero_division=0.0))
        out |= event_metrics(y, flagged, mpr)
    return out


def product_frames(series: Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The series as a user hands it to the product, with a time column ``t``: the training
    rows not labelled anomalous, and every row (training then test) to score, so that the
    test rows' windows run into the training rows."""
    train = series.train.drop(columns=["label"], errors="ignore")
    whole = pd.concat([train, series.test], ignore_index=True)
    whole.insert(0, "t", np.arange(len(whole), dtype=np.int64) * 60 * series.minutes_per_row)
    normal = series.train["label"].to_numpy() == 0 if "label" in series.train else None
    fit = whole.iloc[: len(train)]
    return (fit[normal] if normal is not None else fit), whole


def run_series(series: Series, epochs: int, only: str | None = None) -> dict[str, dict[str, float]]:
    from sklearn.ensemble import IsolationForest

    from detector.estimator import VAEDetector
    from detector.features.encode import encode
    from detector.nn.training import TrainingConfig, holdout_indices
    from detector.scoring.scores import anomaly_scores, estimate_all
    from detector.scoring.threshold import Calibrator

    y, mpr = series.y_test, series.minutes_per_row
    results: dict[str, dict[str, float]] = {}
    for label, window, representation in VARIANTS:
        if only and only not in label:
            continue
        train, test = windowed(series, window, representation)
        det = VAEDetector(epochs=epochs, random_state=0).fit(train)
        results[f"{label} knn"] = metrics(
            y, det.anomaly_score(test), det.bundle_.calibrator.threshold, mpr
        )
        # The elbo's threshold from the detector's own calibration rows, as a bundle sets it.
        x = encode(det.bundle_.schema, train).values
        calibration = holdout_indices(len(x), TrainingConfig(random_state=0))[2]
        graph = det.bundle_.graph
        elbo_cal = anomaly_scores(estimate_all(graph, None, x[calibration]), "elbo")
        elbo = anomaly_scores(
            estimate_all(graph, None, encode(det.bundle_.schema, test).values), "elbo"
        )
        threshold = Calibrator.fit(elbo_cal, target_fpr=0.01).threshold
        results[f"{label} elbo"] = metrics(y, elbo, threshold, mpr)
        aurocs = [results[f"{label} {score}"]["auroc"] for score in ("knn", "elbo")]
        progress(f"  {label}: AUROC knn {aurocs[0]:.3f}, elbo {aurocs[1]:.3f}")

    for label, window, short, deviation, column in PRODUCT_VARIANTS:
        if only and only not in label:
            continue
        train, whole = product_frames(series)
        det = VAEDetector(
            epochs=epochs,
            random_state=0,
            time_column="t",
            window=window,
            short_window=short,
            deviation_window=deviation,
            column_window=column,
        ).fit(train)
        scores = det.anomaly_score(whole)[len(whole) - len(y) :]
        results[f"{label} knn"] = metrics(y, scores, det.bundle_.calibrator.threshold, mpr)
        progress(f"  {label}: AUROC knn {results[f'{label} knn']['auroc']:.3f}")
    if only:
        return results

    rng = np.random.default_rng(0)
    for label, window in (("row", 1), (f"lags W={PEER_WINDOW}", PEER_WINDOW)):
        train, test = windowed(series, window, "lags")
        mean, scale = train.mean(), train.std().replace(0, 1.0)
        x_train, x_test = (((f - mean) / scale).to_numpy(float) for f in (train, test))
        bank = x_train[rng.choice(len(x_train), min(BANK_ROWS, len(x_train)), replace=False)]
        results[f"kNN (k=5), {label}"] = metrics(y, knn_distance(bank, x_test), None, mpr)
        forest = IsolationForest(n_estimators=100, random_state=0).fit(x_train)
        results[f"IsolationForest, {label}"] = metrics(y, -forest.score_samples(x_test), None, mpr)
    return results


def bank_study(
    data_dir: Path, families: list[str], quick: bool = False, window: int = PEER_WINDOW
) -> str:
    """``--study banks``: on each family's windows (SMD's by default), the distance to the
    nearest of 280 to 20,000 fitted rows in the encoding's own space (standardised, no distance
    scaling), mean AUROC / AUPRC over its series: is it the bank's size or the distance's
    scaling that holds the product's ``knn`` back?"""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from detector.features.encode import encode
    from detector.features.schema import fit_schema

    rng = np.random.default_rng(0)
    sizes = (280, 1000, 5000, 20000)
    found = {f: {n: [] for n in sizes} for f in families}
    for family in families:
        for series in family_series(data_dir, family, quick):
            train, test = windowed(series, window, "lags")
            schema = fit_schema(train)
            x, x_test = encode(schema, train).values, encode(schema, test).values
            fit = x[: int(len(x) * 0.7)]
            for n in sizes:
                bank = fit[rng.choice(len(fit), min(n, len(fit)), replace=False)]
                d = knn_distance(bank, x_test)
                found[family][n].append(
                    (roc_auc_score(series.y_test, d), average_precision_score(series.y_test, d))
                )
    heads = " | ".join(f"{family_name(f)} AUROC / AUPRC, last {window} rows" for f in families)
    lines = [f"| bank rows | {heads} |", "|---|" + "---|" * len(families)]
    for n in sizes:
        cells = [" / ".join(map(fmt, np.mean(found[f][n], axis=0))) for f in families]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---- studies on the default window --------------------------------------------------------

#: The window the first studies measured, the product's default then (``--window``).
STUDY_WINDOW = 5
NO_MARGIN = float("inf")
SCALING_FLOORS = (0.05, 0.25, 0.5, 1.0)
SCALING_MARGINS = (NO_MARGIN, 3.0, 1.0, 0.5)
#: The registry's models that train on a plain table (cvae needs a context column).
STUDY_MODELS = ("vae", "iwae", "lsvae", "fae", "vae-svdd", "advae", "conv-vae")


@dataclass(frozen=True)
class Scaling:
    """One setting of the product's distance: ``NeighbourBank.fit``'s range floor, clip margin
    (``inf``: none, only the encoding's clip) and k; ``clip``: the encoding's ±10 clip (off:
    the schema fitted with ``clip=inf``)."""

    range_floor: float
    margin: float
    k: int = 5
    clip: bool = True

    @property
    def name(self) -> str:
        from detector.features.schema import DEFAULT_RANGE_FLOOR as ENCODING_FLOOR
        from detector.scoring.neighbours import (
            DEFAULT_K,
            DEFAULT_MARGIN,
            DEFAULT_RANGE_FLOOR,
        )

        margin = "none" if not np.isfinite(self.margin) else f"{self.margin:g}"
        name = f"rf={self.range_floor:g} margin={margin} k={self.k}"
        if not self.clip:
            name += " no clip"
        current = (DEFAULT_RANGE_FLOOR, DEFAULT_MARGIN, DEFAULT_K, True)
        if (self.range_floor, self.margin, self.k, self.clip) == current:
            name += " (current)"
        elif self.range_floor <= ENCODING_FLOOR and not np.isfinite(self.margin):
            name += " (plain: the encoding's space)" if self.clip else " (plain, unclipped)"
        return name


def scalings() -> list[Scaling]:
    """Every range floor with every margin at k=5; k=1 and 10 at the current floor and
    margin; the encoding's own space without its clip."""
    from detector.scoring.neighbours import DEFAULT_MARGIN, DEFAULT_RANGE_FLOOR

    grid = [Scaling(rf, m) for rf in SCALING_FLOORS for m in SCALING_MARGINS]
    grid += [Scaling(DEFAULT_RANGE_FLOOR, DEFAULT_MARGIN, k) for k in (1, 10)]
    grid.append(Scaling(SCALING_FLOORS[0], NO_MARGIN, clip=False))
    return grid


def peer_knn(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The kNN peer (k=5, a ``BANK_ROWS`` bank) on the standardised rows, as ``run_series``."""
    mean, scale = train.mean(), train.std().replace(0, 1.0)
    x_train, x_test = (((f - mean) / scale).to_numpy(float) for f in (train, test))
    rng = np.random.default_rng(0)
    bank = x_train[rng.choice(len(x_train), min(BANK_ROWS, len(x_train)), replace=False)]
    return knn_distance(bank, x_test)  # type: ignore[no-any-return]


def scaling_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study scaling`` on one series: the product's distance, exactly as training builds
    it (its schema, its split, the fitted rows as the bank under the default bank cap, seed 0,
    the threshold calibrated on its calibration rows at 1%), at every ``scalings()`` setting;
    the kNN peer beside them."""
    from detector.features.encode import encode
    from detector.features.schema import DEFAULT_RANGE_FLOOR as ENCODING_FLOOR
    from detector.features.schema import fit_schema
    from detector.nn.training import TrainingConfig, holdout_indices
    from detector.scoring.neighbours import NeighbourBank, column_weights
    from detector.scoring.threshold import Calibrator

    config = TrainingConfig(random_state=0)
    y, mpr = series.y_test, series.minutes_per_row
    train, test = windowed(series, STUDY_WINDOW, "lags")
    fit, val, cal = holdout_indices(len(train), config)
    results: dict[str, dict[str, float]] = {}
    for clip in (True, False):
        schema = fit_schema(train) if clip else fit_schema(train, clip=np.inf)
        # The encoding's own floor gives weights of 1: "plain" is the encoding's space.
        assert np.all(column_weights(schema, ENCODING_FLOOR) == 1.0)
        x, x_test = encode(schema, train).values, encode(schema, test).values
        for scaling in (s for s in scalings() if s.clip == clip):
            bank = NeighbourBank.fit(
                schema,
                x[fit],
                x[val],
                np.zeros(len(val)),
                k=scaling.k,
                range_floor=scaling.range_floor,
                margin=scaling.margin,
                seed=config.random_state,
            )
            threshold = Calibrator.fit(bank.distances(x[cal]), target_fpr=0.01).threshold
            results[scaling.name] = metrics(y, bank.distances(x_test), threshold, mpr)
    results[f"kNN (k=5), lags W={STUDY_WINDOW}"] = metrics(y, peer_knn(train, test), None, mpr)
    return results


def representation_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study representations`` on one series: the product's distance (its defaults, no
    network) on the default window as lags, as the row and its deviation from the mean of
    the rows before it, as that deviation alone (blind to a level that drifts with its
    series), and the lags with the deviation from the last 15 rows beside them."""
    from detector.features.encode import encode
    from detector.features.schema import fit_schema
    from detector.nn.training import TrainingConfig, holdout_indices
    from detector.scoring.neighbours import NeighbourBank
    from detector.scoring.threshold import Calibrator

    def distance(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
        fit, val, cal = holdout_indices(len(train), TrainingConfig(random_state=0))
        schema = fit_schema(train)
        x, x_test = encode(schema, train).values, encode(schema, test).values
        bank = NeighbourBank.fit(schema, x[fit], x[val], np.zeros(len(val)), seed=0)
        threshold = Calibrator.fit(bank.distances(x[cal]), target_fpr=0.01).threshold
        return metrics(series.y_test, bank.distances(x_test), threshold, series.minutes_per_row)

    def change(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[[c for c in frame.columns if c.endswith("[-mean]")]]

    lags, lags_test = windowed(series, STUDY_WINDOW, "lags")
    deviation, deviation_test = windowed(series, STUDY_WINDOW, "deviation")
    long, long_test = (change(f) for f in windowed(series, 15, "deviation"))
    return {
        f"lags W={STUDY_WINDOW} (current)": distance(lags, lags_test),
        f"row + deviation W={STUDY_WINDOW}": distance(deviation, deviation_test),
        f"deviation alone W={STUDY_WINDOW}": distance(change(deviation), change(deviation_test)),
        "deviation alone W=15": distance(long, long_test),
        f"lags W={STUDY_WINDOW} + deviation W=15": distance(
            pd.concat([lags, long], axis=1), pd.concat([lags_test, long_test], axis=1)
        ),
    }


#: Windows ``--study windows`` measures the product's distance at.
STUDY_WINDOWS = (1, 3, 5, 8, 10, 15, 20, 30)


#: Windows at which ``--study windows`` also measures the box on the newest row alone.
NEWEST_BOX_WINDOWS = (5, 10, 15)


@dataclass(frozen=True)
class WindowBank:
    """The product's distance (its defaults, no network) on one window of a series, built as
    training builds it: the detector's schema and split, the fitted rows as the bank."""

    bank: Any
    schema: Any
    x: np.ndarray  # the training rows' windows, encoded
    x_test: np.ndarray
    val: np.ndarray
    cal: np.ndarray


def window_bank(series: Series, window: int, representation: str = "lags") -> WindowBank:
    """``WindowBank`` on the last ``window`` rows of ``series`` as ``representation``."""
    from detector.features.encode import encode
    from detector.features.schema import fit_schema
    from detector.nn.training import TrainingConfig, holdout_indices
    from detector.scoring.neighbours import NeighbourBank

    train, test = windowed(series, window, representation)
    fit, val, cal = holdout_indices(len(train), TrainingConfig(random_state=0))
    schema = fit_schema(train)
    x, x_test = encode(schema, train).values, encode(schema, test).values
    bank = NeighbourBank.fit(schema, x[fit], x[val], np.zeros(len(val)), seed=0)
    return WindowBank(bank, schema, x, x_test, val, cal)


def window_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study windows`` on one series: the product's distance (its defaults, no network,
    threshold from its calibration rows at 1%) on the last W rows as lags, for each of
    ``STUDY_WINDOWS``; at ``NEWEST_BOX_WINDOWS`` also with the normal rows' box on the newest
    row's columns only (the lag columns unbounded), so that a past spike does not count again
    in each of the next rows' windows."""
    import dataclasses

    from detector.scoring.threshold import Calibrator
    from detector.series.windows import is_window_column

    out = {}
    for window in STUDY_WINDOWS:
        built = window_bank(series, window)
        bank, schema, x, x_test, cal = built.bank, built.schema, built.x, built.x_test, built.cal
        banks = {f"W={window}": bank}
        if window in NEWEST_BOX_WINDOWS:
            lags = np.zeros(schema.n_features, dtype=bool)
            lags[: schema.n_numeric] = [is_window_column(c.name) for c in schema.numeric]
            banks[f"W={window}, box on the newest row"] = dataclasses.replace(
                bank,
                box_low=np.where(lags, -np.inf, bank.box_low).astype(np.float32),
                box_high=np.where(lags, np.inf, bank.box_high).astype(np.float32),
            )
        for name, chosen in banks.items():
            threshold = Calibrator.fit(chosen.distances(x[cal]), target_fpr=0.01).threshold
            out[name] = metrics(
                series.y_test, chosen.distances(x_test), threshold, series.minutes_per_row
            )
    return out


#: Window lengths ``--study scales`` scores each series at, and the sets of them it combines.
SCALE_WINDOWS = (1, 3, 5, 10, 20)
SCALE_SETS: tuple[tuple[int | str, ...], ...] = (
    (3, 10), (1, 10), (3, 20), (5, 20), (3, 10, 20), (1, 5, 20),
    # and, added after the default was built, the row with its deviation from the mean of
    # the 14 rows before it (``representation="deviation"``) as a third part
    (5, 20, "dev15"), (5, "dev15"),
    # and each deviation part at half weight (``NAME*WEIGHT``): the default next was the first
    (5, 20, "dev10*0.5"), (5, 20, "dev15*0.5"), (5, 20, "dev20*0.5"), (5, 20, "dev15*0.25"),
    (5, 20, "dev15*0.75"), (5, 20, "dev10"),
)  # fmt: skip


def scale_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study scales`` on one series: the product's distance on the last W rows for each
    of ``SCALE_WINDOWS``, each standardised by its median and IQR on the validation rows, then
    summed (``sum``) or maxed (``max``) over each of ``SCALE_SETS``: one record judged at
    several lengths at once, against the default window alone."""

    def standardised(built: WindowBank) -> tuple[np.ndarray, np.ndarray]:
        """The test rows' distance, plain and standardised on the validation rows."""
        at_val, plain = built.bank.distances(built.x[built.val]), built.bank.distances(built.x_test)
        spread = float(np.subtract(*np.percentile(at_val, [75, 25]))) or 1.0
        return plain, (plain - np.median(at_val)) / spread

    standard: dict[int | str, np.ndarray] = {}
    plain: dict[int, np.ndarray] = {}
    for window in SCALE_WINDOWS:
        plain[window], standard[window] = standardised(window_bank(series, window))
    for rows in (10, 15, 20):
        standard[f"dev{rows}"] = standardised(window_bank(series, rows, "deviation"))[1]
    y, mpr = series.y_test, series.minutes_per_row
    out = {f"W={w}": metrics(y, plain[w], None, mpr) for w in (5, 10)}

    def weighted(part: int | str) -> np.ndarray:
        """A part's standardised distance, times its weight where it is named ``NAME*W``."""
        if isinstance(part, str) and "*" in part:
            name, weight = part.split("*")
            return float(weight) * standard[name]
        return standard[part]

    for scales in SCALE_SETS:
        stacked = np.array([weighted(w) for w in scales])
        label = "+".join(map(str, scales))
        out[f"sum {label}"] = metrics(y, stacked.sum(axis=0), None, mpr)
        out[f"max {label}"] = metrics(y, stacked.max(axis=0), None, mpr)
    # and, added since, the default since: the deviation from the last 9 rows joined to the
    # newest 5 rows' part, two searches instead of three, as the product builds it
    out["sum (5 with dev10)+20, one bank"] = metrics(y, joined_distance(series), None, mpr)
    return out


def joined_distance(series: Series, window: int = 20, short: int = 5, rows: int = 10) -> Any:
    """The product's distance on ``window``-row windows that also carry the deviation from
    the mean of the last ``rows - 1`` rows, judged on two parts, the newest ``short`` rows
    with the deviations and the whole window (``window_parts``), standardised and summed."""
    bank, _, _, x_test = joined_bank(series, window, short, rows)
    return bank.distances(x_test)


def joined_bank(
    series: Series, window: int = 20, short: int = 5, rows: int = 10
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """``joined_distance``'s bank, with the encoded windows it is measured on: every training
    row's (time order, labelled anomalies included), the validation rows' and the test rows'."""
    from detector.features.encode import encode
    from detector.features.schema import fit_schema
    from detector.nn.training import TrainingConfig, holdout_indices
    from detector.scoring.neighbours import NeighbourBank
    from detector.series.windows import window_parts

    frame, fitted = joined_windows(series, window, rows)
    n = len(series.train)
    fit, val, _ = holdout_indices(len(fitted), TrainingConfig(random_state=0))
    schema = fit_schema(fitted)
    x, x_test = encode(schema, fitted).values, encode(schema, frame.iloc[n:]).values
    parts = window_parts(schema, (short, window))
    bank = NeighbourBank.fit(schema, x[fit], x[val], np.zeros(len(val)), seed=0, parts=parts)
    return bank, encode(schema, frame.iloc[:n]).values, x[val], x_test


def joined_windows(
    series: Series, window: int = 20, rows: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The series' windows with the deviation columns (training rows then test rows), and the
    training rows' that are not labelled anomalies (what the bank and schema are fitted on)."""
    frame, fitted, _ = joined_spec(series, window, rows)
    return frame, fitted


def joined_spec(series: Series, window: int = 20, rows: int = 10) -> tuple[Any, ...]:
    """``joined_windows``, and the ``SeriesSpec`` that made them."""
    from detector.series.windows import SeriesSpec, make_windows, with_deviation

    train = series.train.drop(columns=["label"], errors="ignore")
    whole = pd.concat([train, series.test], ignore_index=True)
    whole.insert(0, "t", np.arange(len(whole), dtype=np.int64) * 60 * series.minutes_per_row)
    spec = with_deviation(SeriesSpec("t", window=window), whole, rows, ())
    frame = make_windows(whole, spec).frame
    n = len(train)
    normal = series.train["label"].to_numpy() == 0 if "label" in series.train else None
    return frame, (frame.iloc[:n] if normal is None else frame.iloc[:n][normal]), spec


#: ``--study baselines``: how far back the score's recent level reaches, in hours.
BASELINE_HOURS = (6, 12, 24, 48)


def past_level(
    times: np.ndarray, scores: np.ndarray, hours: float, how: str = "median"
) -> np.ndarray:
    """For each score, a statistic of the scores in the ``hours`` before its time (``times``
    in seconds, ascending), its own excluded; NaN where there are none. ``how``: ``median``,
    ``iqr``, or ``hourly``: the median of the means of the whole clock hours before the
    score's own hour (at most ``hours`` of them), which a stream can keep in ``hours`` numbers
    a key."""
    index = pd.to_datetime(times, unit="s")
    if how == "hourly":
        hour = (times // 3600).astype(np.int64)
        means = pd.Series(scores).groupby(hour).mean()
        means = means.reindex(np.arange(hour.min(), hour.max() + 1))
        level = means.shift(1).rolling(int(hours), min_periods=1).median()
        return level.reindex(hour).to_numpy()
    past = pd.Series(scores, index=index).rolling(f"{hours}h", closed="left")
    if how == "iqr":
        return (past.quantile(0.75) - past.quantile(0.25)).to_numpy()
    return past.median().to_numpy()


def relative(
    scores: np.ndarray, level: np.ndarray, normal: float, floor: float = 0.5
) -> np.ndarray:
    """Each score over its series' recent level: ``(s - normal) / (level - normal + 1)``,
    the divisor at least ``floor``; ``normal`` is the validation rows' median, so a series whose
    scores run as in training keeps its score (less that median) and one whose scores run high
    for hours (drift, a noisy regime) is judged against that. No level yet: divided by 1."""
    divisor = np.where(np.isnan(level), 1.0, np.maximum(level - normal + 1.0, floor))
    return (scores - normal) / divisor


def baseline_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study baselines`` on one series: the default distance (``joined_distance``) judged
    against its own recent level, a causal transformation of the score: minus the median of
    the scores in the hours before, divided by it (``relative``), or standardised by their
    median and IQR; the level from the test rows only (``cold``: a series that starts to be
    scored at the test) or running on from the training rows' scores (``warm``)."""
    bank, x_history, x_val, x_test = joined_bank(series)
    test, normal = bank.distances(x_test), float(np.median(bank.distances(x_val)))
    history = bank.distances(x_history)
    step = 60.0 * series.minutes_per_row
    times = np.arange(len(history) + len(test), dtype=np.float64) * step
    y, mpr = series.y_test, series.minutes_per_row
    out = {"default": metrics(y, test, None, mpr)}
    for hours in BASELINE_HOURS:
        cold = past_level(times[len(history) :], test, hours)
        warm = past_level(times, np.concatenate([history, test]), hours)[len(history) :]
        out[f"minus the median, {hours}h, cold"] = metrics(
            y, test - np.nan_to_num(cold, nan=normal), None, mpr
        )
        out[f"relative to the median, {hours}h, cold"] = metrics(
            y, relative(test, cold, normal), None, mpr
        )
        out[f"relative to the median, {hours}h, warm"] = metrics(
            y, relative(test, warm, normal), None, mpr
        )
    for hours in (24,):
        cold = past_level(times[len(history) :], test, hours)
        iqr = past_level(times[len(history) :], test, hours, "iqr")
        standard = (test - np.nan_to_num(cold, nan=normal)) / np.maximum(
            np.nan_to_num(iqr, nan=1.0), 1e-3
        )
        out[f"standardised by the median and IQR, {hours}h, cold"] = metrics(y, standard, None, mpr)
        hourly = past_level(times[len(history) :], test, hours, "hourly")
        out[f"relative to the hourly means' median, {hours}h, cold"] = metrics(
            y, relative(test, hourly, normal), None, mpr
        )
    return out


#: ``--study metrics``: each metric's own rows, the weight of their mean, and the bank rows
#: each metric's part searches: every row, at most 500 spread over the bank (what
#: ``--column-window`` builds) or 250, or the bank's first 500 (its oldest rows).
METRIC_LENGTHS = (10, 15, 20)
METRIC_WEIGHTS = (0.75, 1.0)
METRIC_BANKS = (("all", 0), ("500", 500), ("250", 250), ("first 500", -500))


def metric_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study metrics`` on one series: the default distance's parts (``joined_bank``: the
    newest 5 rows with the deviations, all 20 rows) with each metric judged alone on its newest
    rows (``metric_parts``: one part per metric, each standardised on the validation rows, their
    mean at a weight), in the whole window's place (``short +``) or beside it (``both +``),
    then judged against the series' level as the product does (the hourly means' median over
    the 24 hours before, running on from the training rows)."""

    from detector.features.schema import fit_schema
    from detector.series.windows import metric_parts

    bank, x_history, x_val, x_test = joined_bank(series)
    x_all = np.concatenate([x_history, x_test])

    def judged(total: np.ndarray, val: np.ndarray) -> dict[str, float]:
        return _judged(series, len(x_history), total, val)

    parts, parts_val = _standard(bank.part_distances(x_all), bank.part_distances(x_val))
    short, short_val = parts[0], parts_val[0]
    both, both_val = parts.sum(axis=0), parts_val.sum(axis=0)
    out = {"default": judged(both, both_val)}
    schema = fit_schema(joined_windows(series)[1])
    m = len(bank.bank)
    for length in METRIC_LENGTHS:
        mine = metric_parts(schema, length)
        for label, rows in METRIC_BANKS:
            if rows > 0:
                kept = np.arange(0, m, -(-m // rows))
            else:
                kept = np.arange(min(m, -rows)) if rows < 0 else np.arange(m)
            mean, mean_val = _parts_mean(bank, kept, mine, x_all, x_val)
            for weight in METRIC_WEIGHTS:
                rows_said = "every bank row" if rows == 0 else f"{label} bank rows"
                said = f"{weight:g} x metrics {length}, {rows_said}"
                out[f"short + {said}"] = judged(
                    short + weight * mean, short_val + weight * mean_val
                )
                out[f"both + {said}"] = judged(both + weight * mean, both_val + weight * mean_val)
    return out


#: ``--study weights``: the weights of the newest rows' part (all metrics at once), of each
#: metric's newest 5 rows with its deviation (their mean) and of each metric's newest 20 rows
#: (their mean); the default is (1, 0, ``METRIC_WEIGHT``).
PART_WEIGHTS = tuple(
    (short, each_short, each)
    for short in (0.0, 0.5, 1.0)
    for each_short in (0.0, 0.5, 1.0)
    for each in (0.5, 0.75, 1.0)
    if short or each_short
)


def weight_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study weights`` on one series: ``PART_WEIGHTS``' sums of the parts, each part
    standardised on the validation rows and each metric's part searching at most
    ``METRIC_BANK_ROWS`` bank rows, as the product builds them, judged against the series'
    level as ``--study metrics`` judges."""

    from detector.features.schema import fit_schema
    from detector.nn.training_options import METRIC_BANK_ROWS
    from detector.series.windows import DEVIATION_SUFFIX, metric_parts

    bank, x_history, x_val, x_test = joined_bank(series)
    x_all = np.concatenate([x_history, x_test])
    schema = fit_schema(joined_windows(series)[1])
    names = [c.name for c in schema.numeric]
    names += [""] * (schema.n_features - len(names))
    m = len(bank.bank)
    kept = np.arange(0, m, -(-m // METRIC_BANK_ROWS))

    def mean_of(parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _parts_mean(bank, kept, parts, x_all, x_val)

    twenty = metric_parts(schema, 20)
    five = metric_parts(schema, 5)
    for part in five:  # each metric's newest 5 rows and its deviation from the rows before
        base = names[int(np.flatnonzero(part)[0])]
        part |= np.array([name == base + DEVIATION_SUFFIX for name in names])
    parts, parts_val = _standard(bank.part_distances(x_all), bank.part_distances(x_val))
    blocks = [(parts[0], parts_val[0]), mean_of(five), mean_of(twenty)]
    out = {}
    for weights in PART_WEIGHTS:
        total = sum(w * b[0] for w, b in zip(weights, blocks, strict=True))
        val = sum(w * b[1] for w, b in zip(weights, blocks, strict=True))
        label = "newest 5 rows {:g}, each metric's 5 {:g}, each metric's 20 {:g}".format(*weights)
        out[label] = _judged(series, len(x_history), np.asarray(total), np.asarray(val))
    return out


#: ``--study local``: the weight of each part's distance relative to the local spread of the
#: normal rows (beside the plain distance), that spread's floor (a fraction of its median), and
#: the seeds each is measured over (the bank's sample of rows and the held-out rows vary).
LOCAL_WEIGHTS = (0.0, 0.25, 0.5)
LOCAL_FLOORS = (0.5, 1.0, 2.0)
LOCAL_SEEDS = (0, 1, 2)
#: Then (weight, floor, ceiling): spreads also held under a multiple of the median, so a
#: sparse place discounts a record at most so many times (a table's row: 0.5, 1, 3).
LOCAL_CEILINGS = ((0.5, 1.0, 3.0), (0.25, 1.0, 3.0), (0.5, 1.0, 2.0), (0.25, 2.0, 4.0))


def local_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study local`` on one series: the default distance exactly as training builds it
    (its parts, weights and bank rows), with each part's distance relative to the normal rows'
    spread around its neighbours beside the plain one at ``LOCAL_WEIGHTS`` and
    ``LOCAL_FLOORS`` and at ``LOCAL_CEILINGS``, judged against the series' level; each measure
    is the mean over ``LOCAL_SEEDS``."""
    from detector.features.encode import encode
    from detector.features.schema import fit_schema
    from detector.nn.training import TrainingConfig, holdout_indices, window_bank_parts
    from detector.nn.training_options import DEFAULT_COLUMN_WINDOW, DEFAULT_SHORT_WINDOW
    from detector.scoring.neighbours import NeighbourBank

    frame, fitted, spec = joined_spec(series)
    n = len(series.train)
    schema = fit_schema(fitted)
    x, x_all = encode(schema, fitted).values, encode(schema, frame).values
    found = window_bank_parts(schema, spec, DEFAULT_SHORT_WINDOW, DEFAULT_COLUMN_WINDOW)
    assert found is not None
    parts, weights, rows = found
    settings = [(0.0, 1.0, np.inf)]
    settings += [(w, f, np.inf) for w in LOCAL_WEIGHTS if w for f in LOCAL_FLOORS]
    settings += list(LOCAL_CEILINGS)
    runs: dict[str, list[dict[str, float]]] = {}
    for seed in LOCAL_SEEDS:
        fit, val, _ = holdout_indices(len(x), TrainingConfig(random_state=seed))
        for weight, floor, ceiling in settings:
            bank = NeighbourBank.fit(
                schema,
                x[fit],
                x[val],
                np.zeros(len(val)),
                seed=seed,
                parts=parts,
                part_weights=weights,
                part_rows=rows,
                local_weight=weight,
                local_floor=floor,
                local_ceiling=ceiling,
            )
            label = "plain" if not weight else f"local {weight:g}, floor {floor:g}"
            if np.isfinite(ceiling):
                label += f", ceiling {ceiling:g}"
            total, total_val = bank.distances(x_all), bank.distances(x[val])
            runs.setdefault(label, []).append(_judged(series, n, total, total_val))
    return {
        label: {m: float(np.mean([r[m] for r in each])) for m in each[0]}
        for label, each in runs.items()
    }


#: ``--study far``: how much a column beyond its bounds counts past them (0: as before).
FAR_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def window_banks(
    series: Series, *, log_tails: bool = True, **fit: Any
) -> Iterator[tuple[Any, Any, np.ndarray]]:
    """For each of ``LOCAL_SEEDS``: the default distance on ``series``' windows exactly as
    training builds it (its parts, weights, bank rows and local judging; ``fit``: other
    ``NeighbourBank.fit`` settings), every window encoded as scoring encodes it (training's
    then the test's), and the validation windows."""
    from detector.features.encode import encode
    from detector.features.schema import fit_schema
    from detector.nn.training import TrainingConfig, holdout_indices, window_bank_parts
    from detector.nn.training_options import DEFAULT_COLUMN_WINDOW, DEFAULT_SHORT_WINDOW
    from detector.scoring.neighbours import (
        DEFAULT_LOCAL_FLOOR,
        DEFAULT_LOCAL_WEIGHT,
        NeighbourBank,
    )

    frame, fitted, spec = joined_spec(series)
    schema = fit_schema(fitted, log_tails=log_tails)
    x, every = encode(schema, fitted).values, encode(schema, frame)
    assert every.accepted.all()
    found = window_bank_parts(schema, spec, DEFAULT_SHORT_WINDOW, DEFAULT_COLUMN_WINDOW)
    assert found is not None
    parts, weights, rows = found
    for seed in LOCAL_SEEDS:
        fit_rows, val, _ = holdout_indices(len(x), TrainingConfig(random_state=seed))
        bank = NeighbourBank.fit(
            schema,
            x[fit_rows],
            x[val],
            np.zeros(len(val)),
            seed=seed,
            parts=parts,
            part_weights=weights,
            part_rows=rows,
            local_weight=DEFAULT_LOCAL_WEIGHT,
            local_floor=DEFAULT_LOCAL_FLOOR,
            **fit,
        )
        yield bank, every, x[val]


def _seed_means(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        label: {m: float(np.mean([r[m] for r in each])) for m in each[0]}
        for label, each in runs.items()
    }


def far_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study far`` on one series: ``window_banks`` with a column beyond its bounds
    counting past them at each of ``FAR_WEIGHTS`` (``NeighbourBank.far``), judged against the
    series' level; the mean over ``LOCAL_SEEDS``."""
    import dataclasses

    runs: dict[str, list[dict[str, float]]] = {}
    for bank, every, x_val in window_banks(series, far_weight=0.0):
        for weight in FAR_WEIGHTS:
            judged = dataclasses.replace(bank, far_weight=weight)
            total = judged.distances(every.values, overflow=every.overflow)
            label = "clipped (before)" if not weight else f"far {weight:g}"
            judgement = _judged(series, len(series.train), total, judged.distances(x_val))
            runs.setdefault(label, []).append(judgement)
    return _seed_means(runs)


def log_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study logs`` on one series: ``window_banks`` on the window's columns as they are
    and with each heavy-tailed one as its logarithm (``fit_schema``'s ``log_tails``), judged
    against the series' level; the mean over ``LOCAL_SEEDS``."""
    runs: dict[str, list[dict[str, float]]] = {}
    for label, logged in (("as they are", False), ("heavy tails logged", True)):
        for bank, every, x_val in window_banks(series, log_tails=logged):
            total = bank.distances(every.values, overflow=every.overflow)
            judgement = _judged(series, len(series.train), total, bank.distances(x_val))
            runs.setdefault(label, []).append(judgement)
    return _seed_means(runs)


#: A labelled segment longer than this many rows is "long" in ``--study segments``.
LONG_SEGMENT = 100


def segment_ranks(series: Series, epochs: int) -> dict[str, Any]:
    """``--study segments`` on one series: the default as ``anomaly train --time-column``
    trains it, its test scores through ``ranked_segments``."""
    from detector.estimator import VAEDetector

    y = series.y_test.astype(int)
    if not 0 < y.sum() < len(y):  # --quick cuts some series to one class
        return {"auroc": np.nan, "long_share": np.nan, "short_first": np.nan, "segments": []}
    train, whole = product_frames(series)
    det = VAEDetector(epochs=epochs, random_state=0, time_column="t").fit(train)
    return ranked_segments(y, det.anomaly_score(whole)[len(whole) - len(y) :])


def ranked_segments(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Where a score's AUROC is lost: each labelled segment's rows' mean rank among the
    normal rows (the share of them scoring lower; 1 = above every one), and the AUROC that
    would follow if every segment of at most ``LONG_SEGMENT`` rows ranked first, the long
    ones as they are (ties count as lower, so the AUROC is approached from below)."""
    from sklearn.metrics import roc_auc_score

    normal = np.sort(scores[y == 0])
    rank = np.searchsorted(normal, scores, side="left") / len(normal)
    spans = [(int(a), int(b), float(rank[a:b].mean())) for a, b in segments(y)]
    kept = sum((b - a) * (r if b - a > LONG_SEGMENT else 1.0) for a, b, r in spans)
    return {
        "auroc": float(roc_auc_score(y, scores)),
        "long_share": sum(b - a for a, b, _ in spans if b - a > LONG_SEGMENT) / y.sum(),
        "short_first": kept / y.sum(),
        "segments": spans,
    }


def format_segments(payload: dict[str, Any]) -> str:
    """``--study segments``' report: a line per series, then its long segments."""
    lines = [
        "# Where the default's AUROC is lost: each labelled segment's rank",
        "",
        f"Reproduce: `{payload['command']}`",
        "",
        f"`anomaly train --time-column`'s default, {payload['epochs']} epochs, seed 0; wall time "
        f"{payload['minutes']} min. A segment's rank: the mean over its rows of the share of "
        "normal test rows scoring lower (.5 = as a random score, 1 = above every one). "
        f'"Short first": the AUROC if every segment of at most {LONG_SEGMENT} rows ranked '
        "above every normal row and the longer ones stayed as they are.",
        "",
        "| series | AUROC | anomalous rows in long segments | short first | long segments "
        "(rows: rank) |",
        "|---|---|---|---|---|",
    ]
    by_family: dict[str, list[dict[str, Any]]] = {}
    for run in payload["runs"]:
        found = run["segments"]
        by_family.setdefault(run["family"], []).append(found)
        long = ", ".join(
            f"{b - a}: {r:.2f}".replace(" 0.", " .")
            for a, b, r in found["segments"]
            if b - a > LONG_SEGMENT
        )
        share = "-" if np.isnan(found["long_share"]) else f"{found['long_share']:.0%}"
        lines.append(
            f"| {run['family']} {run['set']} | {fmt(found['auroc'])} | {share} | "
            f"{fmt(found['short_first'])} | {long or '-'} |"
        )
    lines += ["", "| family | mean AUROC | mean with short segments first |", "|---|---|---|"]
    for family, found in by_family.items():
        aurocs = [f["auroc"] for f in found]
        firsts = [f["short_first"] for f in found]
        lines.append(f"| {family} | {fmt(np.mean(aurocs))} | {fmt(np.mean(firsts))} |")
    return "\n".join(lines) + "\n"


def _parts_mean(
    bank: Any, kept: np.ndarray, parts: np.ndarray, x_all: np.ndarray, x_val: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``parts``' distances, each searching the bank rows ``kept`` and
    standardised on the validation rows: (all rows, validation rows)."""
    import dataclasses

    alone = dataclasses.replace(
        bank,
        bank=bank.bank[kept],
        parts=parts,
        part_location=np.zeros(len(parts)),
        part_scale=np.ones(len(parts)),
        part_rows=None,
    )
    each, each_val = _standard(alone.part_distances(x_all), alone.part_distances(x_val))
    return each.mean(axis=0), each_val.mean(axis=0)


def _standard(raw: list[np.ndarray], val: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each part standardised by its validation median and IQR: (all rows, validation)."""
    from detector.scoring.neighbours import spread

    at = [
        ((a - np.median(v)) / spread(v), (v - np.median(v)) / spread(v))
        for a, v in zip(raw, val, strict=True)
    ]
    return np.array([a for a, _ in at]), np.array([v for _, v in at])


def _judged(series: Series, history: int, total: np.ndarray, val: np.ndarray) -> dict:
    """A score over the ``history`` training rows then the test rows, judged against the
    series' level as the product does (the hourly means' median over the 24 hours before,
    running on from the training rows), on the test rows."""
    times = np.arange(len(total), dtype=np.float64) * 60.0 * series.minutes_per_row
    level = past_level(times, total, 24, "hourly")[history:]
    judged = relative(total[history:], level, float(np.median(val)))
    return metrics(series.y_test, judged, None, series.minutes_per_row)


def format_weights(payload: dict[str, Any]) -> str:
    """``--study weights``' report: as ``format_windows``."""
    return _scores_report(payload, "# The parts' weights, and each metric's newest rows")


def format_local(payload: dict[str, Any]) -> str:
    """``--study local``'s report: as ``format_windows``."""
    return _scores_report(payload, "# Each part judged also against the local spread")


def format_far(payload: dict[str, Any]) -> str:
    """``--study far``'s report: as ``format_windows``."""
    return _scores_report(payload, "# A column beyond its bounds counting past them")


def format_logs(payload: dict[str, Any]) -> str:
    """``--study logs``' report: as ``format_windows``."""
    return _scores_report(payload, "# Each heavy-tailed metric as its logarithm")


def format_metrics(payload: dict[str, Any]) -> str:
    """``--study metrics``' report: as ``format_windows``."""
    return _scores_report(payload, "# Each metric judged alone on its newest rows")


def format_scales(payload: dict[str, Any]) -> str:
    """``--study scales``' report: as ``format_windows``."""
    return format_windows(payload).replace(
        "# The window's length under the product's distance",
        "# Several window lengths at once under the product's distance",
    )


def format_baselines(payload: dict[str, Any]) -> str:
    """``--study baselines``' report: as ``format_windows``."""
    return _scores_report(payload, "# The score against its series' recent level")


def _scores_report(payload: dict[str, Any], title: str) -> str:
    """``format_windows``' report under ``title``, its rows named scores."""
    return (
        format_windows(payload)
        .replace("# The window's length under the product's distance", title)
        .replace("| window |", "| score |")
        .replace("| representation |", "| score |")
    )


def format_windows(payload: dict[str, Any]) -> str:
    """``--study windows``' report: as ``format_representations``, with best F1 per family."""
    text = format_representations(payload).replace(
        "# Window representations under the product's distance",
        "# The window's length under the product's distance",
    )
    sets: Sets = {(r["family"], r["set"]): r["scores"] for r in payload["runs"]}
    families = list(dict.fromkeys(k[0] for k in sets))
    first = next(iter(next(iter(sets.values())).values()))
    calibrated = "f1_threshold" in first  # --study scales sets no threshold
    f1s = ("best_f1", "f1_threshold") if calibrated else ("best_f1",)
    what = "Best F1 / F1 at the calibrated 1% threshold" if calibrated else "Best F1"
    lines = ["", f"{what}, mean per family:", ""]
    lines += ["| window | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for name in next(iter(sets.values())):
        cells = [family_cell(sets, [k for k in sets if k[0] == f], name, f1s) for f in families]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return text + "\n".join(lines) + "\n"


def tail_windows() -> tuple[int, int]:
    """The rows ``--study tails`` windows by: the row alone, and the product's default."""
    from detector.nn.training_options import DEFAULT_WINDOW

    return (1, DEFAULT_WINDOW)


def tail_study_scores(series: Series) -> dict[str, dict[str, float]]:
    """``--study tails`` on one series: ``bench_distance.tail_scores`` (the distance with and
    without a term for columns beyond their normal range) on the row alone and on the default
    window; the keys say which (``W=1 ...``, ``W=10 ...``)."""
    from bench_distance import tail_scores

    from detector.features.encode import encode
    from detector.features.schema import fit_schema
    from detector.nn.training import TrainingConfig, holdout_indices

    out: dict[str, dict[str, float]] = {}
    for window in tail_windows():
        train, test = windowed(series, window, "lags")
        fit, val, _ = holdout_indices(len(train), TrainingConfig(random_state=0))
        schema = fit_schema(train)
        x, x_test = encode(schema, train).values, encode(schema, test).values
        for name, score in tail_scores(schema, x[fit], x[val], x_test, 0).items():
            out[f"W={window} {name}"] = metrics(series.y_test, score, None, series.minutes_per_row)
    return out


def format_tails(payload: dict[str, Any]) -> str:
    """``--study tails``' report: as ``format_representations``, once per window."""
    parts = []
    windows = sorted({int(k.split()[0][2:]) for r in payload["runs"] for k in r["scores"]})
    for window in windows:
        prefix = f"W={window} "
        runs = [
            {
                **r,
                "scores": {
                    k[len(prefix) :]: v for k, v in r["scores"].items() if k.startswith(prefix)
                },
            }
            for r in payload["runs"]
        ]
        text = format_representations({**payload, "runs": runs})
        what = "the row alone" if window == 1 else f"windows of {window} rows"
        title = "# Window representations under the product's distance"
        parts.append(text.replace(title, f"# The distance's tail term, {what}"))
    return "\n".join(parts)


def rank_table(sets: Sets, names: list[str], ranks: dict[str, float], label: str) -> list[str]:
    """A markdown table of ``names`` in the given order: each one's mean rank and its mean
    AUROC / AUPRC per family; ``label`` heads the first column."""
    families = list(dict.fromkeys(k[0] for k in sets))
    lines = [
        f"| {label} | mean rank | " + " | ".join(f"{f} AUROC / AUPRC" for f in families) + " |",
        "|---|---|" + "---|" * len(families),
    ]
    for name in names:
        cells = [family_cell(sets, [k for k in sets if k[0] == f], name) for f in families]
        lines.append(f"| {name} | {ranks[name]:.2f} | " + " | ".join(cells) + " |")
    return lines


def format_representations(payload: dict[str, Any]) -> str:
    """``--study representations``' report: mean rank over every series, per-family means,
    the leave-one-series-out choice."""
    sets: Sets = {(r["family"], r["set"]): r["scores"] for r in payload["runs"]}
    names = list(next(iter(sets.values())))
    ranks = mean_ranks(sets, list(sets), names)
    lines = [
        "# Window representations under the product's distance",
        "",
        f"Reproduce: `{payload['command']}`; {len(sets)} series, {payload['minutes']} min.",
        "",
        *rank_table(sets, sorted(names, key=lambda n: ranks[n]), ranks, "representation"),
    ]
    lines += ["", "| series | chosen on the others | AUROC / AUPRC |", "|---|---|---|"]
    for key, (name, values) in leave_one_set_out(sets, names).items():
        lines.append(
            f"| {' '.join(key)} | {name} | {fmt(values['auroc'])} / {fmt(values['auprc'])} |"
        )
    return "\n".join(lines) + "\n"


def model_scores(series: Series, epochs: int) -> tuple[dict[str, dict[str, float]], dict]:
    """``--study models`` on one series: each of ``STUDY_MODELS`` trained on the default
    window (``epochs``, seed 0) and scored with its own score, the one ``anomaly train --model
    NAME`` uses (``vae``: its ``elbo``, as ``--score``-less training of any other model would;
    the product's default ``knn`` is the vae's bank beside it), at its threshold calibrated
    on its calibration rows at 1%; the peers on the same windows. Also which score each
    model's bundle chose (``own``)."""
    from sklearn.ensemble import IsolationForest

    from detector.estimator import VAEDetector
    from detector.features.encode import encode
    from detector.nn.training import TrainingConfig, holdout_indices
    from detector.scoring.scores import anomaly_scores, estimate_all
    from detector.scoring.threshold import Calibrator

    y, mpr = series.y_test, series.minutes_per_row
    train, test = windowed(series, STUDY_WINDOW, "lags")
    calibration = holdout_indices(len(train), TrainingConfig(random_state=0))[2]
    results: dict[str, dict[str, float]] = {}
    own: dict[str, dict[str, Any]] = {}
    for model in STUDY_MODELS:
        started = time.perf_counter()
        if model == "conv-vae":
            det = series_detector(series, model, epochs)
        else:
            det = VAEDetector(model=model, epochs=epochs, random_state=0).fit(train)
        bundle = det.bundle_
        kind = bundle.model.default_score_kind
        x_cal = encode(bundle.schema, train.iloc[calibration]).values
        x_test = encode(bundle.schema, test).values
        cal_scores = anomaly_scores(estimate_all(bundle.graph, None, x_cal), kind)
        scores = anomaly_scores(estimate_all(bundle.graph, None, x_test), kind)
        threshold = Calibrator.fit(cal_scores, target_fpr=0.01).threshold
        results[f"{model}: {kind}"] = metrics(y, scores, threshold, mpr)
        if model == "vae":
            results["vae: knn (the product's default)"] = metrics(
                y, det.anomaly_score(test), bundle.calibrator.threshold, mpr
            )
        seconds = time.perf_counter() - started
        own[model] = {"kind": kind, "bundle_score": bundle.score_kind, "seconds": round(seconds)}
        progress(
            f"  {model}: {kind} AUROC {results[f'{model}: {kind}']['auroc']:.3f}, {seconds:.0f} s"
        )
    mean, scale = train.mean(), train.std().replace(0, 1.0)
    x_train, x_peer = (((f - mean) / scale).to_numpy(float) for f in (train, test))
    results[f"kNN (k=5), lags W={STUDY_WINDOW}"] = metrics(y, peer_knn(train, test), None, mpr)
    forest = IsolationForest(n_estimators=100, random_state=0).fit(x_train)
    results[f"IsolationForest, lags W={STUDY_WINDOW}"] = metrics(
        y, -forest.score_samples(x_peer), None, mpr
    )
    return results, own


def series_detector(series: Series, model: str, epochs: int) -> Any:
    """``model`` trained the product's way, on the training rows with their times (a model
    that reads the window's layout, ``conv-vae``, needs the product to window): the same
    windows as ``windowed`` where training has no labels (SMD, ASD); on the Donut KPIs the
    labelled rows are left out before windowing, as ``anomaly train --label-column`` does,
    not after."""
    from detector.estimator import VAEDetector

    train = series.train.assign(t=np.arange(len(series.train)) * 60 * series.minutes_per_row)
    if "label" in train:
        train = train[train["label"] == 0].drop(columns=["label"])
    options = {"time_column": "t", "window": STUDY_WINDOW}
    return VAEDetector(model=model, epochs=epochs, random_state=0, **options).fit(train)


# ---- report -----------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.3f}".removeprefix("0")


COLUMNS = ("auroc", "auprc", "best_f1", "best_f1_pa", "f1_threshold", "events_found")


def format_report(payload: dict[str, Any]) -> str:
    sets = {(r["family"], r["set"]): r["scores"] for r in payload["runs"]}
    names = list(next(iter(sets.values())))
    ranks = mean_ranks(sets, list(sets), names)
    order = sorted(names, key=lambda n: ranks[n])
    families = list(dict.fromkeys(k[0] for k in sets))
    lines = [
        "# Metric streams: windows per series",
        "",
        f"Reproduce: `{payload['command']}`",
        "",
        f"{payload['epochs']} epochs, seed 0; {len(sets)} series; wall time "
        f"{payload['minutes']} min on 2 CPUs (runs side by side: the longest). Point-wise "
        "AUROC / AUPRC per family (mean over its series); PA = point-adjusted best F1, never "
        "alone; at the 1% calibrated threshold: F1, labelled segments with an alarm, false "
        "alarms per day.",
        "",
        "## Mean rank over all series (AUROC and AUPRC; 1 = best)",
        "",
        *rank_table(sets, order, ranks, "candidate"),
    ]
    chosen = leave_one_set_out(sets, names)
    lines += [
        "",
        "## Leave one series out",
        "",
        "| series | chosen on the others | AUROC / AUPRC |",
        "|---|---|---|",
        *(
            f"| {f} {s} | {name} | {fmt(m['auroc'])} / {fmt(m['auprc'])} |"
            for (f, s), (name, m) in chosen.items()
        ),
    ]
    lines += family_tables(sets, order, families)
    return "\n".join(lines) + "\n"


Sets = dict[tuple[str, str], dict[str, dict[str, float]]]


def family_tables(sets: Sets, order: list[str], families: list[str]) -> list[str]:
    """Per family, every metric of every name in ``order``, mean over the family's series."""
    lines = []
    for family in families:
        keys = [k for k in sets if k[0] == family]
        lines += [
            "",
            f"## {family}: mean over {len(keys)} series",
            "",
            "| candidate | " + " | ".join(COLUMNS) + " | false alarms / day |",
            "|---|" + "---|" * (len(COLUMNS) + 1),
        ]
        for name in order:
            values = [
                float(np.nanmean([sets[k][name].get(c, np.nan) for k in keys]))
                if any(c in sets[k][name] for k in keys)
                else np.nan
                for c in (*COLUMNS, "false_alarms_per_day")
            ]
            shown = [fmt(v) for v in values[:-1]]
            alarms = values[-1]
            shown.append("-" if not np.isfinite(alarms) else f"{alarms:.1f}")
            lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return lines


def family_cell(
    sets: Sets, keys: list[tuple[str, str]], name: str, metrics: tuple[str, ...] = RANKED
) -> str:
    """Mean ``metrics`` (AUROC / AUPRC) of ``name`` over ``keys``."""
    means = [float(np.mean([sets[k][name][m] for k in keys])) for m in metrics]
    return " / ".join(fmt(v) for v in means)


def format_scaling(payload: dict[str, Any]) -> str:
    """``--study scaling``'s report: the settings ranked over every series, the peer unranked,
    the leave-one-series-out choice against the current setting."""
    sets: Sets = {(r["family"], r["set"]): r["scores"] for r in payload["runs"]}
    names = list(next(iter(sets.values())))
    variants = [n for n in names if n.startswith("rf=")]
    peers = [n for n in names if n not in variants]
    current = next(n for n in variants if n.endswith("(current)"))
    ranks = mean_ranks(sets, list(sets), variants)
    order = sorted(variants, key=lambda n: ranks[n])
    families = list(dict.fromkeys(k[0] for k in sets))
    by_family = {f: [k for k in sets if k[0] == f] for f in families}
    lines = [
        f"# The distance's scaling on the default window (lags W={STUDY_WINDOW})",
        "",
        f"Reproduce: `{payload['command']}`",
        "",
        f"{len(sets)} series; wall time {payload['minutes']} min on one core. The product's "
        "distance (`NeighbourBank.fit`, no network): the detector's schema and split of each "
        "series' windowed training rows, the fitted rows as the bank under the product's bank "
        "cap (seed 0), the threshold calibrated on the calibration rows at 1%. rf = range floor "
        "(each column's scale at least rf of its training range; 0.05 is the encoding's own, "
        "so rf=0.05 adds nothing to it), margin = clip this many units beyond the training "
        "range (none: only the encoding's ±10 clip, itself off in `no clip`), k = neighbours.",
        "",
        "## Mean rank over all series (AUROC and AUPRC; 1 = best)",
        "",
        *rank_table(sets, order, ranks, "setting"),
    ]
    for name in peers:
        cells = [family_cell(sets, by_family[f], name) for f in families]
        lines.append(f"| *{name}* (peer, unranked) | - | " + " | ".join(cells) + " |")
    chosen = leave_one_set_out(sets, variants)
    lines += [
        "",
        "## Leave one series out",
        "",
        "Each series judged with the setting of best mean rank on the other ten.",
        "",
        "| series | chosen on the others | its AUROC / AUPRC | current's AUROC / AUPRC |",
        "|---|---|---|---|",
    ]
    for (family, name), (pick, measured) in chosen.items():
        now = sets[family, name][current]
        lines.append(
            f"| {family} {name} | {pick} | {fmt(measured['auroc'])} / {fmt(measured['auprc'])} "
            f"| {fmt(now['auroc'])} / {fmt(now['auprc'])} |"
        )
    lines += [
        "",
        f"| family | leave-one-out AUROC / AUPRC | in-sample best ({order[0]}) | current |",
        "|---|---|---|---|",
    ]
    for family in families:
        keys = by_family[family]
        loo = {k: {order[0]: chosen[k][1]} for k in keys}
        lines.append(
            f"| {family} | {family_cell(loo, keys, order[0])} | "
            f"{family_cell(sets, keys, order[0])} | {family_cell(sets, keys, current)} |"
        )
    lines += family_tables(sets, [*order, *peers], families)
    return "\n".join(lines) + "\n"


def format_models(payload: dict[str, Any]) -> str:
    """``--study models``' report: each model's own score ranked among the models per family
    and over every series; the product's default and the peers unranked beside them."""
    sets: Sets = {(r["family"], r["set"]): r["scores"] for r in payload["runs"]}
    names = list(next(iter(sets.values())))
    own = [n for n in names if n.split(":")[0] in STUDY_MODELS and "(" not in n]
    others = [n for n in names if n not in own]
    families = list(dict.fromkeys(k[0] for k in sets))
    by_family = {f: [k for k in sets if k[0] == f] for f in families}
    ranks = {f: mean_ranks(sets, by_family[f], own) for f in families}
    overall = mean_ranks(sets, list(sets), own)
    best = {f: min(ranks[f].values()) for f in families}
    seconds = {m: 0 for m in STUDY_MODELS}
    for run in payload["runs"]:
        for model, about in run["own"].items():
            seconds[model] += about["seconds"]
    lines = [
        f"# Every model on the default window (lags W={STUDY_WINDOW})",
        "",
        f"Reproduce: `{payload['command']}`",
        "",
        f"{payload['epochs']} epochs, seed 0; {len(sets)} series; wall time "
        f"{payload['minutes']} min on 2 CPUs. Each model trained on the windowed training "
        "rows with no other option and scored with its own score (what `anomaly train --model "
        "NAME` scores with; the plain vae's is its `elbo` once `--neighbours 0` or `--score "
        "elbo` drops the distance), at its threshold calibrated on its calibration rows at 1%. "
        "AUROC / AUPRC per family (mean over its series) and, in brackets, the mean rank among "
        "the models' own scores within the family (1 = best, AUROC and AUPRC on every series; "
        "**bold** the family's best). The product's default (`knn`, from the vae's run) and the "
        "peers are shown beside them, outside the ranking.",
        "",
        "| model: own score | mean rank, all series | "
        + " | ".join(families)
        + " | train + score time |",
        "|---|---|" + "---|" * len(families) + "---|",
    ]
    for name in sorted(own, key=lambda n: overall[n]):
        cells = []
        for family in families:
            rank = f"{ranks[family][name]:.2f}"
            rank = f"**{rank}**" if ranks[family][name] == best[family] else rank
            cells.append(f"{family_cell(sets, by_family[family], name)} ({rank})")
        train_time = f"{seconds[name.split(':')[0]] / 60:.1f} min"
        lines.append(
            f"| {name} | {overall[name]:.2f} | " + " | ".join(cells) + f" | {train_time} |"
        )
    for name in others:
        cells = [family_cell(sets, by_family[f], name) for f in families]
        lines.append(f"| *{name}* | - | " + " | ".join(cells) + " | |")
    winners = {f: [n for n in own if ranks[f][n] == best[f]] for f in families}
    lines += [
        "",
        "Best rank per family: "
        + "; ".join(f"{f}: {', '.join(w)}" for f, w in winners.items())
        + f"; over all series: {min(own, key=lambda n: overall[n])}.",
        "",
        "## Leave one series out (among the models' own scores)",
        "",
        "| series | chosen on the others | AUROC / AUPRC |",
        "|---|---|---|",
        *(
            f"| {f} {s} | {name} | {fmt(m['auroc'])} / {fmt(m['auprc'])} |"
            for (f, s), (name, m) in leave_one_set_out(sets, own).items()
        ),
    ]
    lines += family_tables(sets, [*sorted(own, key=lambda n: overall[n]), *others], families)
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument(
        "--families", help="comma-separated: smd, asd, donut (default: all; --study banks: smd)"
    )
    parser.add_argument("--epochs", type=count, default=20)
    parser.add_argument("--quick", action="store_true", help="3,000 rows per half, 5 epochs")
    parser.add_argument("--out", type=Path, default=REPO / "tests/benchmarks/results/series")
    parser.add_argument("--merge", nargs="+", type=Path, help="join these runs' .json")
    parser.add_argument(
        "--only", help="the main run: only the variants whose label holds this text, no peers"
    )
    parser.add_argument(
        "--study",
        choices=[
            "banks",
            "scaling",
            "models",
            "representations",
            "tails",
            "windows",
            "scales",
            "baselines",
            "metrics",
            "weights",
            "local",
            "far",
            "logs",
            "segments",
        ],
        help="banks: the bank-size probe (on SMD unless --families says); scaling: the "
        f"distance's settings on the W={STUDY_WINDOW} windows (no network); models: every "
        "model's own score on them",
    )
    args = parser.parse_args(argv)
    labels = [v[0] for v in VARIANTS] + [v[0] for v in PRODUCT_VARIANTS]
    if args.only is not None and not any(args.only in label for label in labels):
        parser.error(f"--only {args.only!r} is in no variant's label: {', '.join(labels)}")
    if args.families is None:
        args.families = "smd" if args.study == "banks" else "smd,asd,donut"
    unknown = sorted(set(args.families.split(",")) - {"smd", "asd", "donut"})
    if unknown:
        parser.error(f"unknown --families {unknown}; choose from smd, asd, donut")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.study == "banks":
        families = args.families.split(",")
        names = ", ".join(map(family_name, families))
        text = f"# Bank size on {names} windows\n\nReproduce: `{command_line()}`\n\n"
        text += bank_study(resolve_data_dir(args.data_dir), families, args.quick)
        args.out.with_suffix(".md").write_text(text)
        print(text)
        return 0
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        studies = {part.get("study") for part in parts}
        if len(studies) != 1:
            raise SystemExit(
                f"error: the runs are of different studies: {sorted(map(str, studies))}"
            )
        payload = {
            **parts[0],
            "command": " ; ".join(part["command"] for part in parts),
            # Halves run side by side: the longest; one after the other: say so with the sum.
            "minutes": max(part["minutes"] for part in parts),
            "minutes_each": [part["minutes"] for part in parts],
            "runs": [run for part in parts for run in part["runs"]],
        }
        return write(args.out, payload)
    data_dir = resolve_data_dir(args.data_dir)
    epochs = 5 if args.quick else args.epochs
    families = args.families.split(",")
    started = time.perf_counter()
    runs = []
    for family in families:
        for series in family_series(data_dir, family, args.quick):
            progress(f"{family} {series.name}: {len(series.train)} train, {len(series.test)} test")
            run: dict[str, Any] = {"family": family, "set": series.name}
            if args.study == "scaling":
                run["scores"] = scaling_scores(series)
            elif args.study == "models":
                run["scores"], run["own"] = model_scores(series, epochs)
            elif args.study == "representations":
                run["scores"] = representation_scores(series)
            elif args.study == "tails":
                run["scores"] = tail_study_scores(series)
            elif args.study == "windows":
                run["scores"] = window_scores(series)
            elif args.study == "scales":
                run["scores"] = scale_scores(series)
            elif args.study == "baselines":
                run["scores"] = baseline_scores(series)
            elif args.study == "metrics":
                run["scores"] = metric_scores(series)
            elif args.study == "weights":
                run["scores"] = weight_scores(series)
            elif args.study == "local":
                run["scores"] = local_scores(series)
            elif args.study == "far":
                run["scores"] = far_scores(series)
            elif args.study == "logs":
                run["scores"] = log_scores(series)
            elif args.study == "segments":
                run["segments"] = segment_ranks(series, epochs)
            else:
                run["scores"] = run_series(series, epochs, args.only)
            runs.append(run)
    payload = {
        "command": command_line(),
        **({"study": args.study} if args.study else {}),
        "epochs": epochs,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "runs": runs,
    }
    return write(args.out, payload)


FORMATS = {
    None: format_report,
    "scaling": format_scaling,
    "models": format_models,
    "representations": format_representations,
    "tails": format_tails,
    "windows": format_windows,
    "scales": format_scales,
    "baselines": format_baselines,
    "metrics": format_metrics,
    "weights": format_weights,
    "local": format_local,
    "far": format_far,
    "logs": format_logs,
    "segments": format_segments,
}


def write(out: Path, payload: dict[str, Any]) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    report = FORMATS[payload.get("study")](payload)
    out.with_suffix(".md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
