"""Does the hour of day and day of week help (``anomaly train --calendar``)?

Measured on the Donut KPIs, the only labelled series in shared/data with real times (SMD and
ASD give minutes from an unknown start, where a calendar means nothing). Each KPI as
``bench_series.py`` splits it (first half trains, its labelled anomalies left out after
windowing; second half tests, with the training rows as history), the default window (5 rows),
and four candidates from the same split: the product's default ``knn`` without and with
``--calendar`` (the hour and weekday as categorical features), and the model's own ``elbo``
for the plain VAE and for ``cvae`` conditioned on the two calendar columns (Bagel's idea). Point
-wise AUROC, AUPRC, best F1, and the mean rank over the KPIs (AUROC and AUPRC).

Usage::

    python tests/benchmarks/bench_calendar.py [--epochs 20]
        [--out tests/benchmarks/results/calendar]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
from bench_quality import mean_ranks  # type: ignore[import-not-found]
from bench_series import metrics  # type: ignore[import-not-found]
from common import command_line, count, missing_data, progress, resolve_data_dir  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
WINDOW = 5
CALENDAR = ("timestamp[hour]", "timestamp[weekday]")


def windows(frame: pd.DataFrame, calendar: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first half's windows less its labelled rows, and the second half's."""
    from detector.series.windows import SeriesSpec, make_windows

    spec = SeriesSpec("timestamp", window=WINDOW, calendar=calendar)
    made = make_windows(frame.drop(columns=["label"]), spec)
    assert len(made.rows) == len(frame), "a clean series loses no row"
    half = len(frame) // 2
    train = made.frame.iloc[:half][frame["label"].to_numpy()[:half] == 0]
    return train, made.frame.iloc[half:]


def own_elbo(detector: Any, train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float]:
    """The model's ``elbo`` anomaly scores on ``test`` and its threshold at 1% on the
    detector's own calibration rows (as ``bench_series.py`` does)."""
    from detector.features.encode import encode
    from detector.nn.training import TrainingConfig, holdout_indices
    from detector.scoring.scores import anomaly_scores, estimate_all
    from detector.scoring.threshold import Calibrator

    bundle = detector.bundle_
    calibration = holdout_indices(len(train), TrainingConfig(random_state=0))[2]
    x_cal = encode(bundle.schema, train.iloc[calibration]).values
    cal = anomaly_scores(estimate_all(bundle.graph, None, x_cal), "elbo")
    scores = anomaly_scores(
        estimate_all(bundle.graph, None, encode(bundle.schema, test).values), "elbo"
    )
    return scores, Calibrator.fit(cal, target_fpr=0.01).threshold


def run_kpi(frame: pd.DataFrame, epochs: int) -> dict[str, dict[str, float]]:
    from detector.estimator import VAEDetector

    y = frame["label"].to_numpy(int)[len(frame) // 2 :]
    mpr = float(np.median(np.diff(frame["timestamp"]))) / 60
    results = {}
    for calendar in (False, True):
        train, test = windows(frame, calendar)
        name = "+ calendar" if calendar else "no calendar"
        det = VAEDetector(epochs=epochs, random_state=0).fit(train)
        results[f"knn, {name}"] = metrics(
            y, det.anomaly_score(test), det.bundle_.calibrator.threshold, mpr
        )
        if calendar:
            cvae = VAEDetector(model="cvae", context=CALENDAR, epochs=epochs, random_state=0)
            scores, threshold = own_elbo(cvae.fit(train), train, test)
            results["cvae elbo, conditioned on the calendar"] = metrics(y, scores, threshold, mpr)
        else:
            scores, threshold = own_elbo(det, train, test)
            results["vae elbo, no calendar"] = metrics(y, scores, threshold, mpr)
    return results


def report(payload: dict[str, Any]) -> str:
    runs = payload["runs"]
    names = list(runs[0]["scores"])
    sets = {("donut", r["set"]): r["scores"] for r in runs}
    ranks = mean_ranks(sets, list(sets), names)
    lines = [
        "# The calendar on the Donut KPIs",
        "",
        f"Reproduce: `{payload['command']}`; {payload['epochs']} epochs, seed 0, window {WINDOW}; "
        f"{payload['minutes']} min on 2 CPUs.",
        "",
        "| candidate | mean rank | "
        + " | ".join(r["set"] for r in runs)
        + " | mean AUROC / AUPRC / best F1 |",
        "|---|---|" + "---|" * len(runs) + "---|",
    ]
    for n in names:
        cells = [f"{r['scores'][n]['auroc']:.3f} / {r['scores'][n]['auprc']:.3f}" for r in runs]
        mean = [np.mean([r["scores"][n][m] for r in runs]) for m in ("auroc", "auprc", "best_f1")]
        rank = ranks[n]
        lines.append(
            f"| {n} | {rank:.2f} | "
            + " | ".join(cells)
            + f" | {mean[0]:.3f} / {mean[1]:.3f} / {mean[2]:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=count, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "tests/benchmarks/results/calendar")
    args = parser.parse_args(argv)
    data = resolve_data_dir(args.data_dir) / "donut_kpi"
    paths = sorted(data.glob("*.csv"))
    if not paths:
        missing_data([data / "<kpi>.csv"], "donut_kpi/*.csv")
    started = time.perf_counter()
    runs = []
    for path in paths:
        progress(f"donut {path.stem}")
        runs.append({"set": path.stem, "scores": run_kpi(pd.read_csv(path), args.epochs)})
    payload = {
        "command": command_line(),
        "epochs": args.epochs,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    text = report(payload)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
