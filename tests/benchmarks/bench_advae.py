"""Benchmark the detector models on the adVAE paper's five tables (BENCHMARKS.md section 1).

Wang et al., "adVAE", Knowledge-Based Systems 2020 (arXiv:1903.00904), Table 3. Each set is
split deterministically in file row order; each model trains on the (all-normal) training part
and scores the test part. For every model, set and seed this reports AUROC and AP for the
detector's default score and for each of the four log-likelihood estimates of the same model,
prints mean ± std over seeds beside the paper's VAE and adVAE rows, and writes ``<out>.json``
(every per-seed number plus what is needed to reproduce it), ``<out>.md`` (a summary table of
each model's default score, then each model's per-score tables) and ``<out>.png`` (AUROC per
set, each model beside the paper's).

Usage::

    python tests/benchmarks/bench_advae.py [--data-dir DIR] [--sets letter,cardio,...]
        [--seeds 0,1,2] [--models vae,vae-svdd,advae] [--param key=value ...]
        [--paper-hyperparameters] [--paper-training] [--max-epochs N]
        [--out tests/benchmarks/results/advae]
    python tests/benchmarks/bench_advae.py --merge A.json B.json [...] --out OUT
    python tests/benchmarks/bench_advae.py --select A.json B.json [...] [--criterion KIND]
        --out OUT

``--models`` names models of ``detector.nn.models.MODELS`` (default ``vae``); the older
``--param model=NAME`` still picks a single model, but not together with ``--models``.
``--paper-hyperparameters`` trains each set's ``advae`` runs with the paper's own lambda and
m_z (its Table 2, ``PAPER_ADVAE``); the other models' runs are unchanged. A ``--param`` given
too takes precedence, and applies to every model.

The paper min-max scales each column on the training part; the detector standardises, with a
column's scale at least 5% of its training range. ``--param range_floor=0.25`` raises that
floor so nearly every column is scaled by a quarter of its range: the paper's scaling up to a
constant factor (``results/advae_range_floor.md`` is that run).

``--paper-training`` trains every model as the paper's Algorithm 1 does rather than as the
library does by default: a fixed number of mini-batch updates (20,000 of batch 128, however many
epochs that takes on each set) with no early stopping, on columns scaled by a quarter of their
range, under the paper's squared error, i.e. a Gaussian decoder of fixed unit variance
(``PAPER_TRAINING``). The weights kept are still those of the best validation loss, which needs
no labels. ``--param`` values override it too; ``--max-epochs N`` caps its epochs at N (a
shorter run than the paper's, which the report says).

``--merge`` joins the JSON files of runs made side by side (say, one process per group of sets,
each with one thread, to use both cores) into one report at ``--out``, as if one run had made
them. They must share their parameters and must not repeat a (model, set, seed).

Every run also records how well its default score separates the training rows the model never
saw (its calibration hold-out) from synthetic anomalies made of them (``SYNTHETIC``), with no
labels. ``--select`` takes candidates' JSON files (one setting each, covering the same runs)
and keeps, per (model, set, seed), the candidate that separates them best by ``--criterion``.

The data directory is ``--data-dir``, else ``$ANOMALY_BENCH_DATA``, else ``../shared/data``
beside the repository; files are read from ``<data-dir>/advae/<set>.mat``.
"""

from __future__ import annotations

import argparse
import json
import math
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
    DATA_ENV,
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
    package_versions,
    plot_grouped_bars,
    progress,
    resolve_data_dir,
    training_facts,
    with_suffix,
)

DEFAULT_OUT = RESULTS / "advae"
#: The paper's column order; tables and averages follow it.
SETS = ("letter", "cardio", "satellite", "optdigits", "pendigits")
ESTIMATES = ("recon_prob", "mean_log_lik", "elbo", "iwae")
#: "default" is the detector's own score through the public API (-score_samples).
SCORES = ("default", *ESTIMATES)
METRICS = ("auroc", "ap")
#: Published numbers, Table 3 of the paper (set order as SETS).
PAPER: dict[str, dict[str, tuple[float, ...]]] = {
    "paper VAE": {
        "auroc": (0.911, 0.840, 0.962, 0.992, 0.959),
        "ap": (0.724, 0.803, 0.766, 0.875, 0.625),
    },
    "paper adVAE": {
        "auroc": (0.921, 0.966, 0.970, 0.996, 0.993),
        "ap": (0.779, 0.951, 0.792, 0.957, 0.880),
    },
}
#: The paper's printed averages, kept verbatim rather than recomputed from rounded cells.
PAPER_AVG = {
    "paper VAE": {"auroc": 0.933, "ap": 0.759},
    "paper adVAE": {"auroc": 0.969, "ap": 0.872},
}
#: The paper's per-set adVAE hyperparameters (its Table 2): lambda and m_z. m_x = 2 and
#: gamma = .001 are the same for every set, and the library's defaults.
PAPER_ADVAE = {
    "letter": {"advae_lambda": 0.003, "advae_margin_z": 40.0},
    "cardio": {"advae_lambda": 0.1, "advae_margin_z": 20.0},
    "satellite": {"advae_lambda": 0.01, "advae_margin_z": 40.0},
    "optdigits": {"advae_lambda": 0.03, "advae_margin_z": 40.0},
    "pendigits": {"advae_lambda": 0.01, "advae_margin_z": 20.0},
}

#: The paper's training recipe besides its per-set hyperparameters: squared error (a decoder of
#: fixed unit variance; max_scale only a hair above min_scale, since the bounds must differ) on
#: min-max-like scaling, for a fixed number of iterations.
PAPER_TRAINING: dict[str, Any] = {"range_floor": 0.25, "min_scale": 1.0, "max_scale": 1.01}
PAPER_ITERATIONS = 20_000


def paper_training(
    n_train: int, params: dict[str, Any], max_epochs: int | None = None
) -> dict[str, Any]:
    """``PAPER_TRAINING`` plus the epochs that make ``PAPER_ITERATIONS`` mini-batch updates on
    ``n_train`` training rows, at most ``max_epochs`` (``--max-epochs``: a short run, fewer
    updates than the paper's, which the report then says), with early stopping off (patience =
    epochs). The rows the detector fits on are those left after its validation and calibration
    hold-outs; ``params`` (the run's ``--param`` values) may change those and the batch size."""
    from detector.nn.training import TrainingConfig, fit_row_count

    shaping = ("validation_fraction", "calibration_fraction", "batch_size")
    config = TrainingConfig(**{k: params[k] for k in shaping if k in params})
    fit_rows = fit_row_count(n_train, config)
    epochs = math.ceil(PAPER_ITERATIONS / math.ceil(fit_rows / config.batch_size))
    if max_epochs is not None:
        epochs = min(epochs, max_epochs)
    return {**PAPER_TRAINING, "epochs": epochs, "patience": epochs}


def run_params(args: argparse.Namespace, name: str, n_train: int, model: str) -> dict[str, Any]:
    """The VAEDetector keyword arguments of ``model``'s runs on set ``name`` (``n_train``
    training rows): the paper's per-set and training settings asked for, then ``--param``."""
    paper = args.paper_hyperparameters and model == "advae"
    per_set = PAPER_ADVAE[name] if paper else {}
    if args.paper_training:
        per_set = {**per_set, **paper_training(n_train, args.params, args.max_epochs)}
    return {**per_set, **args.params}


# ---- data and splits ------------------------------------------------------------------------


def set_path(data_dir: Path, name: str) -> Path:
    return data_dir / "advae" / f"{name}.mat"


def check_data(data_dir: Path, names: list[str]) -> None:
    """Fail with one readable message naming every missing file (no traceback)."""
    missing = [str(set_path(data_dir, n)) for n in names if not set_path(data_dir, n).is_file()]
    if missing:
        raise SystemExit(
            "error: benchmark data not found:\n  "
            + "\n  ".join(missing)
            + f"\ngive the data root with --data-dir DIR or ${DATA_ENV} (it must hold "
            "advae/<set>.mat; see shared/data/README.md section 6)"
        )


def load_set(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as float64 ``(n, d)`` and ``y`` as int ``(n,)`` (1 = anomaly) from a .mat file."""
    from scipy.io import loadmat

    content = loadmat(path)
    # The files mix uint8 and float64; the detector is documented for float frames.
    return np.asarray(content["X"], dtype=np.float64), content["y"].ravel().astype(int)


def split(name: str, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices, exactly as BENCHMARKS.md section 1 (file order, no
    shuffling); raises if the training part holds an anomaly."""
    n = len(y)
    rows = np.arange(n)
    tail_test = {"letter": n - 1200, "cardio": 507, "optdigits": 1163}
    held_normals = {"pendigits": 1343, "satellite": 1080}
    if name in tail_test:
        cut = n - tail_test[name]
        train, test = rows[:cut], rows[cut:]
    elif name in held_normals:
        normals = rows[y == 0]
        test_normals = normals[: held_normals[name]]
        train = normals[held_normals[name] :]
        # Keep the test part in file order: the scores do not depend on it, but a reader
        # comparing row numbers with the paper's code would expect it.
        test = np.sort(np.concatenate([test_normals, rows[y == 1]]))
    else:
        raise ValueError(f"no split defined for set {name!r}")
    if y[train].any():
        raise RuntimeError(f"{name}: the training part holds {int(y[train].sum())} anomalies")
    return train, test


# ---- one fit ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    """Metrics and training facts for one (model, set, seed)."""

    model: str
    set: str
    seed: int
    params: dict[str, Any]  # VAEDetector keyword arguments besides model and random_state
    metrics: dict[str, dict[str, float]]  # score -> metric -> value
    fit_seconds: float
    score_seconds: float
    training: dict[str, Any] = field(default_factory=dict)
    # kind of synthetic anomaly -> AUROC against held-out training normals (no labels used)
    selection: dict[str, float] = field(default_factory=dict)


#: The kinds of synthetic anomaly every run is measured against (``synthetic_anomalies``).
SYNTHETIC = ("shuffle", "swap", "box")


def synthetic_anomalies(kind: str, held: np.ndarray, train: np.ndarray, seed: int) -> np.ndarray:
    """Rows made from normal ones, with no labels: ``shuffle`` permutes every column on its own
    (each column's values stay, the ties between columns go), ``swap`` replaces a quarter of
    each row's columns with another row's values, ``box`` draws uniformly within the training
    rows' per-column range."""
    rng = np.random.default_rng(seed)
    if kind == "shuffle":
        return rng.permuted(held, axis=0)
    if kind == "swap":
        n, d = held.shape
        out = held.copy()
        k = max(1, round(d / 4))
        for i in range(n):
            cols = rng.choice(d, size=k, replace=False)
            out[i, cols] = held[rng.integers(n), cols]
        return out
    if kind == "box":
        return rng.uniform(train.min(axis=0), train.max(axis=0), size=held.shape)
    raise ValueError(f"unknown synthetic anomaly kind {kind!r}")


def synthetic_separation(det: Any, train: np.ndarray, seed: int) -> dict[str, float]:
    """AUROC of the detector's default score between the training rows it never saw (its
    calibration hold-out) and synthetic anomalies made from them: a label-free yardstick for
    choosing between models trained on the same data."""
    from sklearn.metrics import roc_auc_score

    from detector.nn.training import TrainingConfig, holdout_indices

    config = TrainingConfig(
        **{k: det.bundle_.params[k] for k in ("validation_fraction", "calibration_fraction")},
        random_state=det.bundle_.params["random_state"],
    )
    held = train[holdout_indices(len(train), config)[2]]
    normal = -det.score_samples(as_frame(held))
    out = {}
    for kind in SYNTHETIC:
        fake = -det.score_samples(as_frame(synthetic_anomalies(kind, held, train, seed)))
        labels = np.r_[np.zeros(len(normal)), np.ones(len(fake))]
        out[kind] = float(roc_auc_score(labels, np.r_[normal, fake]))
    return out


def run_one(
    model: str, name: str, x: np.ndarray, y: np.ndarray, seed: int, params: dict[str, Any]
) -> RunResult:
    """Fit ``model`` on the set's training part with ``random_state=seed`` and score its test
    part."""
    # Imported here so --help and a missing-data error answer before TensorFlow loads.
    from sklearn.metrics import average_precision_score, roc_auc_score

    from detector.estimator import VAEDetector
    from detector.features.encode import encode

    train, test = split(name, y)
    test_frame, y_test = as_frame(x[test]), y[test]
    started = time.perf_counter()
    det = VAEDetector(model=model, random_state=seed, **params).fit(as_frame(x[train]))
    fit_seconds = time.perf_counter() - started

    started = time.perf_counter()
    scores = {"default": -det.score_samples(test_frame)}
    est = det.bundle_.graph(encode(det.bundle_.schema, test_frame).values)
    # The four estimates, then the model's own score kinds (vae-svdd: svdd_distance, ...).
    kinds = (*ESTIMATES, *det.bundle_.model.extra_score_kinds)
    scores.update({k: -np.asarray(est[k], dtype=np.float64) for k in kinds})
    score_seconds = time.perf_counter() - started
    selection = synthetic_separation(det, x[train], seed)

    metrics = {
        kind: {
            "auroc": float(roc_auc_score(y_test, s)),
            "ap": float(average_precision_score(y_test, s)),
        }
        for kind, s in scores.items()
    }
    return RunResult(
        model=model,
        set=name,
        seed=seed,
        params=params,
        metrics=metrics,
        fit_seconds=round(fit_seconds, 2),
        score_seconds=round(score_seconds, 3),
        training=training_facts(det.summary_, "val_nll", "val_kl"),
        selection=selection,
    )


# ---- aggregation and tables -------------------------------------------------------------------


def aggregate(runs: list[RunResult], sets: list[str], seeds: list[int]) -> dict[str, Any]:
    """One model's runs -> score -> metric -> {set: (mean, std), "avg": (mean, std)} over seeds.

    The average's spread is the std over seeds of each seed's mean over sets, so it measures
    seed-to-seed variation of the headline number rather than set-to-set differences."""
    table: dict[str, Any] = {}
    for kind in runs[0].metrics:  # SCORES, then any kinds the model adds
        table[kind] = {}
        for metric in METRICS:
            # values[i, j]: seed i, set j
            values = np.array(
                [[lookup(runs, s, seed).metrics[kind][metric] for s in sets] for seed in seeds]
            )
            cells = {s: mean_std(values[:, j]) for j, s in enumerate(sets)}
            cells["avg"] = mean_std(values.mean(axis=1))
            table[kind][metric] = cells
    return table


def lookup(runs: list[RunResult], name: str, seed: int) -> RunResult:
    return next(r for r in runs if r.set == name and r.seed == seed)


def paper_row(label: str, metric: str, sets: list[str]) -> list[str]:
    cells = [f"{PAPER[label][metric][SETS.index(s)]:.3f}" for s in sets]
    # The printed average only applies when all five sets are in the run.
    avg = f"{PAPER_AVG[label][metric]:.3f}" if list(sets) == list(SETS) else "-"
    return [label, *cells, avg]


def format_tables(
    table: dict[str, Any], sets: list[str], seeds: list[int], first: str = "score"
) -> str:
    """Two Markdown tables (AUROC, AP): one row per entry of ``table`` (label -> metric ->
    cells, e.g. one model's scores from ``aggregate``) plus the paper's rows; ``first`` heads
    the label column."""
    blocks = []
    for metric, title in (("auroc", "AUROC"), ("ap", "AP (average precision)")):
        header = [first, *sets, "avg"]
        lines = [
            f"{title}, mean ± std over seeds {','.join(map(str, seeds))}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for kind in table:
            cells = table[kind][metric]
            row = [kind, *(f"{m:.3f} ± {s:.3f}" for m, s in (cells[c] for c in [*sets, "avg"]))]
            lines.append("| " + " | ".join(row) + " |")
        for label in PAPER:
            lines.append("| " + " | ".join(paper_row(label, metric, sets)) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_report(
    table: dict[str, Any], models: list[str], sets: list[str], seeds: list[int]
) -> str:
    """The summary (each model's default score beside the paper's), then each model's tables
    for every score; ``table`` is model -> ``aggregate``."""
    summary = {model: table[model]["default"] for model in models}
    blocks = [
        "## Summary: each model's default score",
        format_tables(summary, sets, seeds, "model"),
    ]
    for model in models:
        blocks += [f"## {model}: every score", format_tables(table[model], sets, seeds)]
    return "\n\n".join(blocks)


# ---- provenance and output --------------------------------------------------------------------


def write_outputs(out: Path, payload: dict[str, Any], tables: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with_suffix(out, ".json").write_text(json.dumps(payload, indent=2) + "\n")
    params = payload["params"] or "library defaults"
    paper_hp = (
        ", advae with the paper's per-set lambda and m_z (its Table 2)"
        if payload["paper_hyperparameters"]
        else ""
    )
    if training := payload.get("paper_training"):
        cap = (
            f", cut to at most {training['max_epochs']} epochs by --max-epochs (fewer updates "
            "than the paper's where that is fewer epochs; each run's epochs are in the JSON)"
            if training.get("max_epochs") is not None
            else ""
        )
        paper_hp += (
            ", every model trained as the paper does (--paper-training: "
            f"{training['iterations']} iterations without early stopping{cap}, "
            "fixed unit decoder variance, range_floor 0.25; the params above take precedence)"
        )
    if payload.get("merged_from"):
        paper_hp += f", merged from {len(payload['merged_from'])} runs made side by side"
    skipped = "".join(f" {m} skipped: {why}." for m, why in payload["skipped_models"].items())
    text = (
        "# Detector models on the adVAE paper's sets (BENCHMARKS.md section 1)\n\n"
        f"Run {payload['date_utc']}, models {', '.join(payload['models'])}, seeds "
        f"{payload['seeds']}, params {params}{paper_hp}, {payload['total_seconds']:.0f} s in "
        f"all; every per-seed number is in `{with_suffix(out, '.json').name}`.{skipped}\n\n"
        f"{tables}\n\n"
        "`default` is the detector's own score (`-score_samples`); the others are the four "
        "estimates of the same trained model, then any score the model adds. The paper's "
        "averages are as printed. "
        f"`{with_suffix(out, '.png').name}` draws the summary's AUROC cells.\n\n"
        "Reproduce with:\n\n"
        f"```\n{payload['command']}\n```\n"
    )
    with_suffix(out, ".md").write_text(text)


def plot(out: Path, table: dict[str, Any], sets: list[str], models: list[str]) -> None:
    """``<out>.png``: AUROC per set, each model's default score (±1 std over seeds) beside the
    paper's VAE and adVAE."""
    ours = {f"ours, {m}": table[m]["default"]["auroc"] for m in models}
    series = {label: [cells[s][0] for s in sets] for label, cells in ours.items()}
    series.update({k: [v["auroc"][SETS.index(s)] for s in sets] for k, v in PAPER.items()})
    plot_grouped_bars(
        with_suffix(out, ".png"),
        sets,
        series,
        errors={label: [cells[s][1] for s in sets] for label, cells in ours.items()},
        title="adVAE paper protocol (BENCHMARKS.md section 1): AUROC",
    )


def merge_runs(paths: list[Path]) -> dict[str, Any]:
    """One payload from several runs' JSON files; ``ValueError`` names what does not fit."""
    payloads = [json.loads(path.read_text()) for path in paths]
    for key in ("params", "paper_hyperparameters", "paper_training"):
        if len({json.dumps(p.get(key), sort_keys=True) for p in payloads}) > 1:
            raise ValueError(f"the runs differ in {key}; merge only runs made with the same ones")
    runs = [RunResult(**r) for p in payloads for r in p["runs"]]
    keys = [(r.model, r.set, r.seed) for r in runs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"(model, set, seed) {repeated} appear in more than one run")
    sets = [s for s in SETS if any(r.set == s for r in runs)]
    seeds = sorted({r.seed for r in runs})
    models = list(dict.fromkeys(m for p in payloads for m in p["models"]))
    missing = [
        (m, s, seed)
        for m in models
        for s in sets
        for seed in seeds
        if (m, s, seed) not in set(keys)
    ]
    if missing:
        raise ValueError(f"the runs leave out (model, set, seed) {missing}")
    table = {m: aggregate([r for r in runs if r.model == m], sets, seeds) for m in models}
    return {
        **payloads[0],
        "date_utc": max(p["date_utc"] for p in payloads),
        # The runs' own commands, then the merge that joined them (one file is only redrawn).
        "command": "\n".join(
            [*(p["command"] for p in payloads), *([command_line()] if len(paths) > 1 else [])]
        ),
        "sets": sets,
        "seeds": seeds,
        "models": models,
        "skipped_models": {k: v for p in payloads for k, v in p["skipped_models"].items()},
        "data": {k: v for p in payloads for k, v in p["data"].items()},
        # Summed: the runs went side by side, so this is compute time, not wall time.
        "total_seconds": round(sum(p["total_seconds"] for p in payloads), 1),
        "merged_from": [path.name for path in paths] if len(paths) > 1 else None,
        "summary": table,
        "runs": [vars(r) for r in runs],
    }


def write_merged(paths: list[Path], out: Path) -> None:
    payload = merge_runs(paths)
    sets, seeds, models = payload["sets"], payload["seeds"], payload["models"]
    tables = format_report(payload["summary"], models, sets, seeds)
    print(tables)
    write_outputs(out, payload, tables)
    plot(out, payload["summary"], sets, models)


def candidate_label(payload: dict[str, Any]) -> str:
    """A run's parameters as a short row label (``paper training`` when it has none)."""
    params = ", ".join(f"{k} {v}" for k, v in payload["params"].items())
    training = payload.get("paper_training")
    if params or not training:
        return params or "library defaults"
    cap = training.get("max_epochs")
    return "paper training" + (f", at most {cap} epochs" if cap is not None else "")


def select_runs(paths: list[Path], criterion: str) -> dict[str, Any]:
    """For every (model, set, seed), the run among the candidates' files (one setting each,
    e.g. one variance floor) whose default score best separates its held-out training normals
    from ``criterion``'s synthetic anomalies; test labels play no part. Earlier files win ties.
    ``ValueError`` names what does not fit."""
    if criterion not in SYNTHETIC:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {', '.join(SYNTHETIC)}")
    payloads = [json.loads(path.read_text()) for path in paths]
    if len(payloads) < 2:
        raise ValueError("give at least two candidates' files to choose between")
    labels = [candidate_label(p) for p in payloads]
    if len(set(labels)) < len(labels):
        raise ValueError(f"two candidates share their parameters ({labels})")
    runs = [
        {(r["model"], r["set"], r["seed"]): RunResult(**r) for r in p["runs"]} for p in payloads
    ]
    keys = list(runs[0])
    if any(set(other) != set(keys) for other in runs[1:]):
        raise ValueError("the candidates cover different (model, set, seed) runs")
    unscored = [k for k in keys for cand in runs if criterion not in cand[k].selection]
    if unscored:
        raise ValueError(f"runs {sorted(set(unscored))[:3]} carry no {criterion!r} measurement")
    chosen, picks = [], []
    for key in keys:
        values = [cand[key].selection[criterion] for cand in runs]
        best = int(np.argmax(values))  # argmax takes the first of equal values
        chosen.append(runs[best][key])
        picks.append({"model": key[0], "set": key[1], "seed": key[2], "chosen": labels[best],
                      criterion: dict(zip(labels, values, strict=True))})  # fmt: skip
    sets = [s for s in SETS if any(k[1] == s for k in keys)]
    seeds = sorted({k[2] for k in keys})
    models = list(dict.fromkeys(k[0] for k in keys))
    summary = {m: aggregate([r for r in chosen if r.model == m], sets, seeds) for m in models}
    candidates = {
        label: {m: aggregate([r for r in cand.values() if r.model == m], sets, seeds)
                for m in models}
        for label, cand in zip(labels, runs, strict=True)
    }  # fmt: skip
    return {
        **{k: payloads[0][k] for k in ("benchmark", "paper_hyperparameters", "paper_training")},
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "\n".join([*(p["command"] for p in payloads), command_line()]),
        "criterion": criterion,
        "candidates": dict(zip(labels, [path.name for path in paths], strict=True)),
        "sets": sets,
        "seeds": seeds,
        "models": models,
        "picks": picks,
        "summary": summary,
        "candidate_summaries": candidates,
        "runs": [vars(r) for r in chosen],
    }


def format_selection(payload: dict[str, Any]) -> str:
    """The chosen runs' default score beside each candidate's, then which candidate each set
    and seed took."""
    sets, seeds, criterion = payload["sets"], payload["seeds"], payload["criterion"]
    blocks = []
    for model in payload["models"]:
        rows = {f"{model}, chosen by {criterion}": payload["summary"][model]["default"]}
        for label, table in payload["candidate_summaries"].items():
            rows[f"{model}, {label}"] = table[model]["default"]
        blocks += [f"## {model}: default score", format_tables(rows, sets, seeds, "run")]
        lines = [
            f"Which candidate each run took, and its separation (AUROC) of held-out training "
            f"normals from `{criterion}` synthetic anomalies:",
            "",
            "| set | seed | chosen | " + " | ".join(payload["candidates"]) + " |",
            "|" + "---|" * (3 + len(payload["candidates"])),
        ]
        for pick in (p for p in payload["picks"] if p["model"] == model):
            values = " | ".join(f"{pick[criterion][c]:.3f}" for c in payload["candidates"])
            lines.append(f"| {pick['set']} | {pick['seed']} | {pick['chosen']} | {values} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def write_selected(paths: list[Path], criterion: str, out: Path) -> None:
    payload = select_runs(paths, criterion)
    text = format_selection(payload)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    with_suffix(out, ".json").write_text(json.dumps(payload, indent=2) + "\n")
    files = ", ".join(f"`{name}`" for name in payload["candidates"].values())
    with_suffix(out, ".md").write_text(
        "# Choosing a model per set and seed without labels (BENCHMARKS.md section 1)\n\n"
        f"Each (set, seed) keeps the candidate ({files}) whose default score best separates "
        "the training rows it never saw (its calibration hold-out) from synthetic anomalies "
        f"made from them (`{criterion}`); no test row or label plays a part. Every number is "
        f"in `{with_suffix(out, '.json').name}`; `{with_suffix(out, '.png').name}` draws the "
        f"AUROC cells.\n\n{text}\n\nReproduce with:\n\n```\n{payload['command']}\n```\n"
    )
    # The chosen runs beside every candidate's, per model.
    tables = [("chosen", payload["summary"]), *payload["candidate_summaries"].items()]
    drawn = {f"{m}, {label}": table[m] for m in payload["models"] for label, table in tables}
    plot(out, drawn, payload["sets"], list(drawn))


# ---- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(
        parser,
        SETS,
        DEFAULT_OUT,
        "comma-separated names from detector.nn.models.MODELS (default: vae, or the one "
        "--param model=NAME gives)",
    )
    parser.add_argument(
        "--paper-hyperparameters",
        action="store_true",
        help="the advae runs take each set's lambda and m_z from the paper's Table 2",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="join these runs' JSON files into one report at --out instead of running",
    )
    parser.add_argument(
        "--select",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="candidates' JSON files (one setting each, same runs): keep, per set and seed, "
        "the one that best separates held-out normals from synthetic anomalies (--criterion); "
        "write the report at --out instead of running",
    )
    parser.add_argument(
        "--criterion",
        default="shuffle",
        choices=SYNTHETIC,
        help="the synthetic anomalies --select judges by (default: shuffle)",
    )
    parser.add_argument(
        "--paper-training",
        action="store_true",
        help="train every model as the paper does: squared error (fixed unit variance), "
        "min-max-like scaling, 20,000 iterations without early stopping",
    )
    args = parser.parse_args(argv)
    finish_run_arguments(parser, args, SETS, model_param=True)
    if "model" in args.params:
        if args.models is not None:
            parser.error("give --models or --param model=NAME, not both")
        args.models = [str(args.params.pop("model"))]
    elif args.models is None:
        args.models = ["vae"]
    if args.paper_hyperparameters and "advae" not in args.models:
        parser.error("--paper-hyperparameters sets advae's lambda and m_z; put advae in --models")
    if args.paper_training and args.max_epochs is not None:
        # A cap on the paper's epochs (and its patience with them), not epochs to run: as
        # --param epochs=N it ran N epochs, more than the paper's 20,000 updates where N was
        # above its count, with patience still the paper's.
        del args.params["epochs"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        try:
            write_merged(args.merge, Path(args.out))
        except (OSError, ValueError, KeyError) as exc:
            sys.exit(f"cannot merge: {exc}")
        return 0
    if args.select:
        try:
            write_selected(args.select, args.criterion, Path(args.out))
        except (OSError, ValueError, KeyError) as exc:
            sys.exit(f"cannot select: {exc}")
        return 0
    data_dir = resolve_data_dir(args.data_dir)
    check_data(data_dir, args.sets)
    import_repo()
    check_params(args.params)
    models, skipped = choose_models(args.models, args.params)
    for model, why in skipped.items():
        progress(f"{model} skipped: {why}")

    started = time.perf_counter()
    runs: list[RunResult] = []
    for name in args.sets:
        x, y = load_set(set_path(data_dir, name))
        for seed in args.seeds:
            for model in models:
                params = run_params(args, name, len(split(name, y)[0]), model)
                result = run_one(model, name, x, y, seed, params)
                runs.append(result)
                default = result.metrics["default"]
                synthetic = " ".join(f"{k} {v:.3f}" for k, v in result.selection.items())
                progress(
                    f"{name} seed {seed} {model}: AUROC {default['auroc']:.3f} "
                    f"AP {default['ap']:.3f} ({result.fit_seconds:.0f} s, "
                    f"{result.training['epochs_run']} epochs; synthetic {synthetic})"
                )
    total = time.perf_counter() - started

    table = {m: aggregate([r for r in runs if r.model == m], args.sets, args.seeds) for m in models}
    tables = format_report(table, models, args.sets, args.seeds)
    print(tables)
    payload = {
        "benchmark": "adVAE paper protocol, BENCHMARKS.md section 1",
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "sets": args.sets,
        "seeds": args.seeds,
        "models": models,
        "skipped_models": skipped,
        "params": args.params,
        # model -> set -> the hyperparameters its runs took from the paper
        "paper_hyperparameters": {"advae": PAPER_ADVAE} if args.paper_hyperparameters else None,
        "paper_training": (
            {
                **PAPER_TRAINING,
                "iterations": PAPER_ITERATIONS,
                **({"max_epochs": args.max_epochs} if args.max_epochs is not None else {}),
            }
            if args.paper_training
            else None
        ),
        "packages": {"python": platform.python_version(), **package_versions()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "data": {s: file_sha256(set_path(data_dir, s)) for s in args.sets},
        "total_seconds": round(total, 1),
        "summary": table,  # model -> score -> metric -> cells
        "runs": [vars(r) for r in runs],
        "paper": {k: {**v, "avg": PAPER_AVG[k]} for k, v in PAPER.items()},
    }
    write_outputs(Path(args.out), payload, tables)
    plot(Path(args.out), table, args.sets, models)
    return 0


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
