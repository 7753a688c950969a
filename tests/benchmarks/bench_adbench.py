"""Benchmark the detector models on ADBench's classical sets, "train on normal" (BENCHMARKS.md
section 2).

For each set and seed s: ``rng = numpy.random.default_rng(s)``; the normal rows' indices are
permuted with ``rng.permutation``; train = the first floor(0.6 n_normal) of them; test = the
other normals + all anomalies. A train part over 20,000 rows is cut to 20,000 with
``rng.choice(..., replace=False)``; a test part over 50,000 rows keeps the same fraction
(rounded down) of its normals and of its anomalies, each drawn with ``rng.choice`` (in that
order: train cut, test normals, test anomalies), so the anomaly ratio is kept.

Each model (``VAEDetector(model=name, random_state=s, **params)``) trains on a DataFrame of the
train rows, so its own schema fits the standardising on train only, and is scored with
``anomaly_score`` (higher = more anomalous) on the test rows. The same run fits
``IsolationForest(n_estimators=100, random_state=s)`` on train rows standardised by a
``StandardScaler`` fit on train, as the reference row. The tables give per-set and mean
AUROC and AUPRC (mean over seeds; the mean column's spread is the std over seeds of each
seed's mean over sets) beside the peers' rows measured on this protocol (constants from
BENCHMARKS.md). Models that need context columns (``cvae``) or a series window (``conv-vae``)
are skipped: these sets have neither.

Usage::

    python tests/benchmarks/bench_adbench.py [--data-dir DIR] [--sets cover,cardio,...]
        [--seeds 0,1,2] [--models vae,vae-svdd,advae] [--param key=value ...]
        [--max-epochs N] [--out tests/benchmarks/results/adbench]

Writes ``<out>.json`` (every per-seed number, fit seconds, training facts, what is needed to
reproduce it), ``<out>.md`` (the tables) and ``<out>.png`` (AUROC per set and model). The data
directory is ``--data-dir``, else ``$ANOMALY_BENCH_DATA``, else ``../shared/data`` beside the
repository; files are read from ``<data-dir>/adbench_classical/<n>_<set>.npz``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    RESULTS,
    add_run_arguments,
    as_frame,
    check_params,
    choose_models,
    command_line,
    file_sha256,
    finish_run_arguments,
    import_repo,
    mean_std,
    missing_data,
    package_versions,
    plot_grouped_bars,
    progress,
    resolve_data_dir,
    training_facts,
    with_suffix,
)

DEFAULT_OUT = RESULTS / "adbench"
#: Set name -> file, in the column order of BENCHMARKS.md's table.
FILES = {
    "cover": "10_cover.npz",
    "Ionosphere": "18_Ionosphere.npz",
    "mammography": "23_mammography.npz",
    "satellite": "30_satellite.npz",
    "shuttle": "32_shuttle.npz",
    "thyroid": "38_thyroid.npz",
    "breastw": "4_breastw.npz",
    "cardio": "6_cardio.npz",
}
SETS = tuple(FILES)
TRAIN_FRACTION = 0.6
MAX_TRAIN = 20_000
MAX_TEST = 50_000
METRICS = ("auroc", "auprc")
REFERENCE = "IsolationForest"
#: Peers measured on this protocol (BENCHMARKS.md section 2): AUROC per set (order of SETS),
#: then the mean AUROC and mean AUPRC as printed there.
PEERS: dict[str, tuple[tuple[float, ...], float, float]] = {
    "PyOD AutoEncoder": ((0.988, 0.960, 0.903, 0.792, 0.997, 0.984, 0.988, 0.914), 0.941, 0.822),
    "PyOD VAE": ((0.949, 0.924, 0.892, 0.773, 0.998, 0.974, 0.986, 0.949), 0.931, 0.779),
    "IsolationForest": ((0.867, 0.911, 0.875, 0.795, 0.997, 0.988, 0.994, 0.947), 0.922, 0.743),
    "alibi-detect OutlierVAE": (
        (0.923, 0.981, 0.764, 0.823, 0.999, 0.958, 0.981, 0.825),
        0.907,
        0.739,
    ),
    "PyOD DeepSVDD": ((0.711, 0.960, 0.868, 0.847, 0.997, 0.929, 0.979, 0.931), 0.903, 0.727),
    "reference Gaussian VAE, learned variance, RP L=16": (
        (0.788, 0.924, 0.823, 0.843, 1.000, 0.972, 0.987, 0.772),
        0.889,
        0.706,
    ),
    "ECOD": ((0.905, 0.737, 0.906, 0.581, 0.992, 0.976, 0.992, 0.930), 0.877, 0.702),
}


# ---- data and splits ------------------------------------------------------------------------


def set_path(data_dir: Path, name: str) -> Path:
    return data_dir / "adbench_classical" / FILES[name]


def load_set(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as float64 ``(n, d)`` and ``y`` as int ``(n,)`` (1 = anomaly)."""
    with np.load(path, allow_pickle=False) as content:
        # The files mix uint8, int16 and float64; the detector is documented for float frames.
        return np.asarray(content["X"], dtype=np.float64), content["y"].astype(int)


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    test: np.ndarray
    test_shrunk: bool


def split(y: np.ndarray, seed: int) -> Split:
    """Train and test row indices for one seed, exactly as the module docstring says."""
    rng = np.random.default_rng(seed)
    normals = rng.permutation(np.flatnonzero(y == 0))
    anomalies = np.flatnonzero(y == 1)
    n_train = int(np.floor(TRAIN_FRACTION * len(normals)))
    train, test_normals = normals[:n_train], normals[n_train:]
    if len(train) > MAX_TRAIN:
        train = rng.choice(train, MAX_TRAIN, replace=False)
    n_test = len(test_normals) + len(anomalies)
    shrunk = n_test > MAX_TEST
    if shrunk:
        keep = MAX_TEST / n_test
        test_normals = rng.choice(test_normals, int(len(test_normals) * keep), replace=False)
        anomalies = rng.choice(anomalies, int(len(anomalies) * keep), replace=False)
    return Split(train, np.concatenate([test_normals, anomalies]), shrunk)


# ---- one fit ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    """Metrics and timings for one (set, seed, model)."""

    set: str
    seed: int
    model: str
    auroc: float
    auprc: float
    fit_seconds: float
    score_seconds: float
    training: dict[str, Any] = field(default_factory=dict)


def metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "auroc": float(roc_auc_score(y, scores)),
        "auprc": float(average_precision_score(y, scores)),
    }


def run_detector(
    model: str, x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int,
    params: dict[str, Any], name: str,
) -> RunResult:  # fmt: skip
    from detector.estimator import VAEDetector

    started = time.perf_counter()
    det = VAEDetector(model=model, random_state=seed, **params).fit(as_frame(x_train))
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = det.anomaly_score(as_frame(x_test))
    score_seconds = time.perf_counter() - started
    return RunResult(
        set=name,
        seed=seed,
        model=model,
        **metrics(y_test, scores),
        fit_seconds=round(fit_seconds, 2),
        score_seconds=round(score_seconds, 3),
        training=training_facts(det.summary_),
    )


def run_reference(
    x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int, name: str
) -> RunResult:
    """IsolationForest on data standardised with a scaler fit on train."""
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    scaler = StandardScaler().fit(x_train)
    forest = IsolationForest(n_estimators=100, random_state=seed).fit(scaler.transform(x_train))
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = -forest.score_samples(scaler.transform(x_test))
    score_seconds = time.perf_counter() - started
    return RunResult(
        set=name,
        seed=seed,
        model=REFERENCE,
        **metrics(y_test, scores),
        fit_seconds=round(fit_seconds, 2),
        score_seconds=round(score_seconds, 3),
    )


# ---- aggregation and tables -------------------------------------------------------------------


def aggregate(
    runs: list[RunResult], sets: list[str], seeds: list[int], models: list[str]
) -> dict[str, Any]:
    """model -> metric -> {set: (mean, std), "mean": (mean, std)} over seeds; also each
    model's mean fit seconds per set."""
    table: dict[str, Any] = {}
    for model in models:
        table[model] = {}
        for metric in METRICS:
            # values[i, j]: seed i, set j
            values = np.array(
                [[getattr(find(runs, s, seed, model), metric) for s in sets] for seed in seeds]
            )
            cells = {s: mean_std(values[:, j]) for j, s in enumerate(sets)}
            cells["mean"] = mean_std(values.mean(axis=1))
            table[model][metric] = cells
        table[model]["fit_seconds"] = {
            s: float(np.mean([find(runs, s, seed, model).fit_seconds for seed in seeds]))
            for s in sets
        }
    return table


def find(runs: list[RunResult], name: str, seed: int, model: str) -> RunResult:
    return next(r for r in runs if r.set == name and r.seed == seed and r.model == model)


def format_tables(
    table: dict[str, Any], sets: list[str], seeds: list[int], models: list[str]
) -> str:
    """Markdown: AUROC per set with mean and mean AUPRC (ours, the reference, the peers), then
    AUPRC per set (ours and the reference; the peers published only their mean)."""
    full = list(sets) == list(SETS)
    seed_text = ",".join(map(str, seeds))

    def row(label: str, cells: list[str]) -> str:
        return "| " + " | ".join([label, *cells]) + " |"

    def ours(model: str, metric: str, columns: list[str]) -> list[str]:
        return [f"{m:.3f} ± {s:.3f}" for m, s in (table[model][metric][c] for c in columns)]

    header = ["method", *sets, "mean", "mean AUPRC"]
    lines = [
        f"AUROC, mean ± std over seeds {seed_text} (this run), and the peers' published means",
        "",
        row(header[0], header[1:]),
        "|" + "---|" * len(header),
    ]
    for model in [*models, REFERENCE]:
        label = f"{model} (this run)" if model == REFERENCE else f"ours, {model}"
        cells = ours(model, "auroc", [*sets, "mean"]) + ours(model, "auprc", ["mean"])
        lines.append(row(label, cells))
    for label, (per_set, mean_auroc, mean_auprc) in PEERS.items():
        cells = [f"{per_set[SETS.index(s)]:.3f}" for s in sets]
        # The printed means only apply when all eight sets are in the run.
        cells += [f"{mean_auroc:.3f}", f"{mean_auprc:.3f}"] if full else ["-", "-"]
        lines.append(row(f"peer: {label}", cells))

    header = ["method", *sets, "mean"]
    lines += [
        "",
        f"AUPRC, mean ± std over seeds {seed_text}",
        "",
        row(header[0], header[1:]),
        "|" + "---|" * len(header),
    ]
    for model in [*models, REFERENCE]:
        label = f"{model} (this run)" if model == REFERENCE else f"ours, {model}"
        lines.append(row(label, ours(model, "auprc", [*sets, "mean"])))

    header = ["method", *sets]
    lines += [
        "",
        "Fit seconds, mean over seeds",
        "",
        row(header[0], header[1:]),
        "|" + "---|" * len(header),
    ]
    for model in [*models, REFERENCE]:
        lines.append(row(model, [f"{table[model]['fit_seconds'][s]:.1f}" for s in sets]))
    return "\n".join(lines)


# ---- output -----------------------------------------------------------------------------------


def write_outputs(out: Path, payload: dict[str, Any], tables: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with_suffix(out, ".json").write_text(json.dumps(payload, indent=2) + "\n")
    params = payload["params"] or "library defaults"
    skipped = "".join(f" {m} skipped: {why}." for m, why in payload["skipped_models"].items())
    text = (
        '# Detector models on ADBench classical sets, "train on normal" (BENCHMARKS.md '
        "section 2)\n\n"
        f"Run {payload['date_utc']}, seeds {payload['seeds']}, params {params}, "
        f"{payload['total_seconds']:.0f} s in all; every per-seed number is in "
        f"`{with_suffix(out, '.json').name}`, the AUROC chart in "
        f"`{with_suffix(out, '.png').name}`.{skipped}\n\n"
        f"{tables}\n\n"
        "Scores are `anomaly_score` (higher = more anomalous). Train = 60% of the normal rows "
        "(at most 20,000), test = the other normals + all anomalies (at most 50,000, "
        "stratified); preprocessing is fit on train only. The peers' rows are BENCHMARKS.md's "
        "(same protocol, seeds 0-2), not re-measured here.\n\n"
        "Reproduce with:\n\n"
        f"```\n{payload['command']}\n```\n"
    )
    with_suffix(out, ".md").write_text(text)


def plot(out: Path, table: dict[str, Any], sets: list[str], models: list[str]) -> None:
    labels = [*models, REFERENCE]
    plot_grouped_bars(
        with_suffix(out, ".png"),
        sets,
        {m: [table[m]["auroc"][s][0] for s in sets] for m in labels},
        errors={m: [table[m]["auroc"][s][1] for s in sets] for m in labels},
        title='ADBench classical, "train on normal" (BENCHMARKS.md section 2): AUROC',
    )


# ---- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, SETS, DEFAULT_OUT)
    args = parser.parse_args(argv)
    finish_run_arguments(parser, args, SETS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    paths = {s: set_path(data_dir, s) for s in args.sets}
    missing_data(list(paths.values()), "adbench_classical/<n>_<set>.npz")
    import_repo()
    check_params(args.params)
    models, skipped = choose_models(args.models, args.params)
    for model, why in skipped.items():
        progress(f"{model} skipped: {why}")

    started = time.perf_counter()
    runs: list[RunResult] = []
    splits: dict[str, dict[int, dict[str, int | bool]]] = {}
    for name in args.sets:
        x, y = load_set(paths[name])
        splits[name] = {}
        for seed in args.seeds:
            part = split(y, seed)
            y_test = y[part.test]
            splits[name][seed] = {
                "train_rows": len(part.train),
                "test_rows": len(part.test),
                "test_anomalies": int(y_test.sum()),
                "test_shrunk": part.test_shrunk,
            }
            x_train, x_test = x[part.train], x[part.test]
            for model in models:
                result = run_detector(model, x_train, x_test, y_test, seed, args.params, name)
                runs.append(result)
                progress(
                    f"{name} seed {seed} {model}: AUROC {result.auroc:.3f} "
                    f"AUPRC {result.auprc:.3f} ({result.fit_seconds:.0f} s, "
                    f"{result.training['epochs_run']} epochs)"
                )
            result = run_reference(x_train, x_test, y_test, seed, name)
            runs.append(result)
            progress(
                f"{name} seed {seed} {REFERENCE}: AUROC {result.auroc:.3f} "
                f"AUPRC {result.auprc:.3f} ({result.fit_seconds:.1f} s)"
            )
    total = time.perf_counter() - started

    table = aggregate(runs, args.sets, args.seeds, [*models, REFERENCE])
    tables = format_tables(table, args.sets, args.seeds, models)
    print(tables)
    payload = {
        "benchmark": 'ADBench classical, "train on normal", BENCHMARKS.md section 2',
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "sets": args.sets,
        "seeds": args.seeds,
        "models": models,
        "skipped_models": skipped,
        "params": args.params,
        "reference": f"{REFERENCE}(n_estimators=100, random_state=seed) on StandardScaler "
        "fit on train",
        "packages": {"python": platform.python_version(), **package_versions()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "data": {s: file_sha256(p) for s, p in paths.items()},
        "splits": splits,
        "total_seconds": round(total, 1),
        "summary": table,
        "runs": [vars(r) for r in runs],
        "peers": {
            k: {"auroc": dict(zip(SETS, v[0], strict=True)), "mean_auroc": v[1], "mean_auprc": v[2]}
            for k, v in PEERS.items()
        },
    }
    write_outputs(Path(args.out), payload, tables)
    plot(Path(args.out), table, args.sets, models)
    return 0


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
