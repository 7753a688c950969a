"""Detection quality over every labelled family at once, and a choice of default that cannot
overfit one of them.

Families and protocols (each the one its own benchmark uses; ``shared/data/README.md`` for the
files):

- ``adbench``: the 8 ADBench classical sets, BENCHMARKS.md section 2, seeds 0-2
  (``bench_adbench.split``);
- ``advae``: the adVAE paper's 5 sets, its deterministic split, seeds 0-2 for the model's
  initialisation (``bench_advae.split``);
- ``smd``, ``asd``: one model per machine on ``train``, every ``test`` row scored, seed 0;
- ``nsl_kdd``: train on the normal rows of ``KDDTrain+_20Percent.txt``, score every row of
  ``KDDTest+.txt`` (anomaly = label not ``normal``), seed 0; ``protocol_type``, ``service``
  and ``flag`` are categorical columns.

Held out, run only when named (``--families sklearn``) and never part of a choice: the labelled
tables bundled with scikit-learn, which are not in ``shared/data`` and were never looked at
while choosing a default. Each under BENCHMARKS.md section 2's split, one class as the anomaly:
``breast_cancer`` (Wisconsin diagnostic; ADBench's ``breastw`` is the other Wisconsin set),
``wine`` and ``iris`` with each class in turn. scikit-learn's digits are left out: they are a
part of UCI optdigits, which the ``advae`` family holds.

For each (set, seed) the default detector (``VAEDetector(random_state=seed)`` with nothing else
but ``--param``) is trained once, and every *candidate score* is computed from that one model
and its training split, without labels: the VAE's own estimates, a k-nearest-neighbour
distance to a bank of the rows the network fitted on (in the detector's encoded feature space
or in its latent space), and combinations of the two, each standardised by its median and
interquartile range on the validation rows (rows that are in no bank). Each candidate gets
its own threshold from the calibration rows at the detector's target false-positive rate,
exactly as ``detector.scoring.threshold.Calibrator`` does for a bundle, so "F1 at threshold" and the
false-positive rate there are the ones a user would see.

In the same run, on the same splits: IsolationForest (100 trees) and kNN (k=5, mean distance)
on the training rows standardised by a ``StandardScaler`` fit on them (categorical columns
one-hot), the peers' reference rows; the published peer rows of BENCHMARKS.md are printed
beside them.

The choice: candidates are ranked on every set of every family (AUROC and AUPRC each, mean
over seeds), and the report gives each candidate's mean rank over all sets, then a
leave-one-data-set-out estimate: for each set, the candidate with the best mean rank on all
*other* sets is picked and its number on the left-out set is what counts. A candidate chosen
that way cannot have been tuned to the set it is judged on.

Usage::

    python tests/benchmarks/bench_quality.py [--data-dir DIR] [--families adbench,smd,...]
        [--quick] [--seeds 0,1,2] [--param key=value ...] [--max-epochs N]
        [--out tests/benchmarks/results/quality]
    python tests/benchmarks/bench_quality.py --merge A.json B.json --out OUT

``--quick``: seed 0 only, at most 20 epochs and 3,000 training rows per set: a smoke run of
the whole pipeline in minutes, not a measurement. ``--merge`` joins runs made side by side
(one process per group of families) into one report.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import (
    RESULTS,
    add_data_dir_argument,
    add_param_arguments,
    command_line,
    import_repo,
    missing_data,
    package_versions,
    parse_list,
    parse_seeds,
    plot_grouped_bars,
    progress,
    resolve_data_dir,
    with_suffix,
)

DEFAULT_OUT = RESULTS / "quality"
FAMILIES = ("adbench", "advae", "smd", "asd", "nsl_kdd")
#: Families no default was chosen on: measured only when named, a check of what the choice
#: on ``FAMILIES`` carries to data it never saw.
HELD_OUT = ("sklearn",)
#: Seeds each family runs by default: model initialisation for the fixed splits, the split
#: itself for ADBench.
FAMILY_SEEDS = {
    "adbench": (0, 1, 2),
    "advae": (0, 1, 2),
    "smd": (0,),
    "asd": (0,),
    "nsl_kdd": (0,),
    "sklearn": (0, 1, 2),
}
METRICS = ("auroc", "auprc", "best_f1", "f1_threshold", "fpr_threshold")
#: Metrics the choice ranks on (both, each counted once per set).
RANKED = ("auroc", "auprc")
K = 5
#: The bank size a serving detector could afford per record (see the report).
SMALL_BANK = 2048
PEER_NAMES = ("kNN (k=5)", "IsolationForest")
#: Published rows (BENCHMARKS.md): family -> name -> (AUROC, AUPRC) means over its sets.
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "adbench": {
        "PyOD AutoEncoder": (0.941, 0.822),
        "PyOD VAE": (0.931, 0.779),
        "alibi-detect OutlierVAE": (0.907, 0.739),
        "PyOD DeepSVDD": (0.903, 0.727),
    },
    "advae": {"paper adVAE": (0.969, 0.872), "paper VAE": (0.933, 0.759)},
    "smd": {
        "PyOD AutoEncoder": (0.749, 0.248),
        "PyOD VAE": (0.747, 0.250),
        "alibi-detect OutlierVAE": (0.743, 0.238),
        "ECOD": (0.762, 0.231),
    },
    "asd": {
        "alibi-detect OutlierVAE": (0.734, 0.276),
        "PyOD DeepSVDD": (0.696, 0.243),
        "reference Gaussian VAE": (0.686, 0.280),
        "PyOD AutoEncoder": (0.604, 0.236),
    },
    "nsl_kdd": {},
}


# ---- data -------------------------------------------------------------------------------------


@dataclass
class Task:
    """One labelled set under its protocol: frames for the detector, numbers for the peers."""

    family: str
    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    y_test: np.ndarray
    seed: int = 0


def adbench_tasks(data_dir: Path, seeds: list[int], quick: bool) -> Iterator[Task]:
    import bench_adbench as ab

    missing_data([ab.set_path(data_dir, s) for s in ab.SETS], "adbench_classical/*.npz")
    for name in ab.SETS:
        yield from section2_tasks("adbench", name, *ab.load_set(ab.set_path(data_dir, name)), seeds)


def section2_tasks(
    family: str, name: str, x: np.ndarray, y: np.ndarray, seeds: list[int]
) -> Iterator[Task]:
    """A labelled set under BENCHMARKS.md section 2's split, one task per seed."""
    import bench_adbench as ab

    for seed in seeds:
        part = ab.split(y, seed)
        train, test = ab.as_frame(x[part.train]), ab.as_frame(x[part.test])
        yield Task(family, name, train, test, y[part.test], seed)


def advae_tasks(data_dir: Path, seeds: list[int], quick: bool) -> Iterator[Task]:
    import bench_advae as av

    av.check_data(data_dir, list(av.SETS))
    for name in av.SETS:
        x, y = av.load_set(av.set_path(data_dir, name))
        train, test = av.split(name, y)
        for seed in seeds:
            yield Task("advae", name, av.as_frame(x[train]), av.as_frame(x[test]), y[test], seed)


def server_tasks(family: str) -> Callable[[Path, list[int], bool], Iterator[Task]]:
    def tasks(data_dir: Path, seeds: list[int], quick: bool) -> Iterator[Task]:
        import bench_servers as bs

        for machine in bs.find_machines(data_dir, [family], None):
            train, test, labels = bs.load_machine(machine.path)
            for seed in seeds:
                yield Task(
                    family, machine.name, bs.as_frame(train), bs.as_frame(test), labels, seed
                )

    return tasks


NSL_CATEGORICAL = ("protocol_type", "service", "flag")


def nsl_kdd_tasks(data_dir: Path, seeds: list[int], quick: bool) -> Iterator[Task]:
    folder = data_dir / "nsl_kdd"
    paths = [folder / n for n in ("KDDTrain+_20Percent.txt", "KDDTest+.txt", "field_names.csv")]
    missing_data(paths, "nsl_kdd/KDDTrain+_20Percent.txt, KDDTest+.txt and field_names.csv")
    names = list(pd.read_csv(paths[2], header=None)[0].str.strip())
    columns = [*names, "label", "difficulty"]
    train = pd.read_csv(paths[0], header=None, names=columns)
    test = pd.read_csv(paths[1], header=None, names=columns)
    normal = train[train["label"] == "normal"][names].reset_index(drop=True)
    y = (test["label"] != "normal").to_numpy(dtype=int)
    for seed in seeds:
        yield Task("nsl_kdd", "NSL-KDD", normal, test[names].reset_index(drop=True), y, seed)


def sklearn_tasks(data_dir: Path, seeds: list[int], quick: bool) -> Iterator[Task]:
    from sklearn.datasets import load_breast_cancer, load_iris, load_wine

    sets = [("breast_cancer", load_breast_cancer(), (0,))]  # 0: malignant
    sets += [
        (name, loader(), (0, 1, 2)) for name, loader in (("wine", load_wine), ("iris", load_iris))
    ]
    for name, bunch, classes in sets:
        for rare in classes:
            y = (bunch.target == rare).astype(int)
            label = name if len(classes) == 1 else f"{name} (class {rare} rare)"
            yield from section2_tasks("sklearn", label, bunch.data, y, seeds)


LOADERS: dict[str, Callable[[Path, list[int], bool], Iterator[Task]]] = {
    "adbench": adbench_tasks,
    "advae": advae_tasks,
    "smd": server_tasks("smd"),
    "asd": server_tasks("asd"),
    "nsl_kdd": nsl_kdd_tasks,
    "sklearn": sklearn_tasks,
}


def numeric_views(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Both frames as standardised numbers for the peers: text columns one-hot over the
    training values (an unseen value is all zeros), then a ``StandardScaler`` fit on train."""
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    text = [c for c in train.columns if not pd.api.types.is_numeric_dtype(train[c])]
    numbers = [c for c in train.columns if c not in text]
    parts_train, parts_test = [train[numbers].to_numpy(float)], [test[numbers].to_numpy(float)]
    if text:
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(train[text])
        parts_train.append(onehot.transform(train[text]))
        parts_test.append(onehot.transform(test[text]))
    x_train, x_test = np.hstack(parts_train), np.hstack(parts_test)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test)


# ---- metrics ----------------------------------------------------------------------------------


def detection_metrics(
    y: np.ndarray, scores: np.ndarray, threshold: float | None, *, series: bool
) -> dict[str, float]:
    """AUROC, AUPRC, best F1; F1 and the false-positive rate at ``threshold`` (NaN without
    one); for server metrics also the point-adjusted best F1 (never alone: see BENCHMARKS.md)."""
    from bench_servers import best_f1, best_f1_point_adjusted
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    out = {
        "auroc": float(roc_auc_score(y, scores)),
        "auprc": float(average_precision_score(y, scores)),
        "best_f1": best_f1(y, scores),
        "f1_threshold": float("nan"),
        "fpr_threshold": float("nan"),
    }
    if threshold is not None:
        flagged = scores > threshold
        out["f1_threshold"] = float(f1_score(y, flagged, zero_division=0.0))
        out["fpr_threshold"] = float(np.mean(flagged[y == 0]))
    if series:
        out["best_f1_pa"] = best_f1_point_adjusted(y, scores)
    return out


# ---- candidate scores -------------------------------------------------------------------------


def knn_distance(bank: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    """Mean Euclidean distance of each query row to its ``k`` nearest bank rows ``(n,)``."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=min(k, len(bank))).fit(bank)
    distances, _ = index.kneighbors(query)
    return distances.mean(axis=1)  # type: ignore[no-any-return]


def robust_standardise(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each part (``val``, ``cal``, ``test``) as (s - median) / IQR of the validation part."""
    val = parts["val"]
    location = float(np.median(val))
    spread = float(np.subtract(*np.percentile(val, [75, 25])))
    if not spread > 0:
        spread = float(np.std(val)) or 1.0
    return {k: (v - location) / spread for k, v in parts.items()}


Parts = dict[str, np.ndarray]


def split_views(det: Any, task: Task) -> tuple[np.ndarray, tuple[np.ndarray, ...], Parts]:
    """The encoded training rows, their (fit, validation, calibration) positions as the
    detector split them, and the encoded validation, calibration and test rows."""
    from detector.features.encode import encode
    from detector.nn.training import TrainingConfig, holdout_indices

    config = TrainingConfig(
        random_state=det.random_state,
        validation_fraction=det.validation_fraction,
        calibration_fraction=det.calibration_fraction,
    )
    x = encode(det.bundle_.schema, task.train).values
    x_test_batch = encode(det.bundle_.schema, task.test)
    if x_test_batch.rejections or len(x) != len(task.train):
        raise RuntimeError(f"{task.name}: rows rejected; the benchmark expects clean data")
    fit, val, cal = holdout_indices(len(x), config)
    return x, (fit, val, cal), {"val": x[val], "cal": x[cal], "test": x_test_batch.values}


def candidate_scores(det: Any, task: Task) -> dict[str, Parts]:
    """Every candidate's anomaly scores (higher = more anomalous) on the validation,
    calibration and test rows, from one trained detector and its own training split."""
    from detector.features.encode import encode
    from detector.features.schema import fit_schema

    bundle = det.bundle_
    x, (fit, val, cal), views = split_views(det, task)

    from detector.scoring.scores import anomaly_scores, estimate_all

    estimates = {k: estimate_all(bundle.graph, bundle.neighbours, v) for k, v in views.items()}
    # What `anomaly train` with no options scores with: the bundle's own score.
    out: dict[str, Parts] = {
        "default": {k: anomaly_scores(e, bundle.score_kind) for k, e in estimates.items()}
    }
    # elbo_knn only where the bundle keeps a bank (the plain VAE's default; not --model iwae)
    # ... and the model's own scores (advae's recon_error, vae-svdd's svdd_distance).
    extras = tuple(bundle.model.extra_score_kinds)
    for kind in ("elbo", "iwae", "recon_prob", "elbo_knn", *extras):
        if kind in estimates["val"]:
            out[kind] = {k: -e[kind].astype(np.float64) for k, e in estimates.items()}

    rng = np.random.default_rng(det.random_state)
    small = fit if len(fit) <= SMALL_BANK else rng.choice(fit, SMALL_BANK, replace=False)
    out["knn_x"] = {k: knn_distance(x[fit], v) for k, v in views.items()}
    out["knn_x_small"] = {k: knn_distance(x[small], v) for k, v in views.items()}
    out["knn_x_k1"] = {k: knn_distance(x[fit], v, k=1) for k, v in views.items()}

    means = {k: np.asarray(bundle.model.encode(v.astype(np.float32))[0]) for k, v in views.items()}
    bank_z = np.asarray(bundle.model.encode(x[fit].astype(np.float32))[0])
    out["knn_z"] = {k: knn_distance(bank_z, v) for k, v in means.items()}

    # The same kNN on min-max-like scaling (each column's scale a quarter of its range).
    wide = fit_schema(task.train, range_floor=0.25)
    xw = encode(wide, task.train).values
    xw_test = encode(wide, task.test).values
    wide_views = {"val": xw[val], "cal": xw[cal], "test": xw_test}
    out["knn_x_rf25"] = {k: knn_distance(xw[fit], v) for k, v in wide_views.items()}

    z = {name: robust_standardise(parts) for name, parts in out.items()}
    for distance in ("knn_x", "knn_x_small", "knn_z", "knn_x_rf25"):
        out[f"elbo+{distance}"] = {k: z["elbo"][k] + z[distance][k] for k in views}
        out[f"max(elbo,{distance})"] = {k: np.maximum(z["elbo"][k], z[distance][k]) for k in views}
    for kind in extras:
        out[f"elbo+{kind}"] = {k: z["elbo"][k] + z[kind][k] for k in views}
    out["knn_x_k10"] = {k: knn_distance(x[fit], v, k=10) for k, v in views.items()}
    out["elbo+knn_x+knn_z"] = {k: z["elbo"][k] + z["knn_x"][k] + z["knn_z"][k] for k in views}
    return out


# ---- one set, one seed ------------------------------------------------------------------------


@dataclass
class Run:
    family: str
    set: str
    seed: int
    #: candidate or peer -> metric -> value
    scores: dict[str, dict[str, float]]
    fit_seconds: float
    training: dict[str, Any] = field(default_factory=dict)


#: ``--ensemble``: the extra members' hidden widths. The same seed gives every member the same
#: split (so the same validation and calibration rows) and a different network.
ENSEMBLE_WIDTHS = ((32, 16), (128, 64))


def ensemble_scores(
    det: Any, task: Task, params: dict[str, Any], scores: dict[str, Parts]
) -> dict[str, Parts]:
    """An ensemble of the detector's VAE and one more per ``ENSEMBLE_WIDTHS``: each member's
    negative ELBO standardised on the validation rows, averaged; alone and plus the default
    distance (each standardised the same way)."""
    from detector.estimator import VAEDetector

    _, _, views = split_views(det, task)
    members = [robust_standardise(scores["elbo"])]
    for width in ENSEMBLE_WIDTHS:
        other = VAEDetector(random_state=task.seed, **{**params, "hidden_units": width})
        other.fit(task.train)
        elbo = {k: -other.bundle_.graph(v)["elbo"].astype(np.float64) for k, v in views.items()}
        members.append(robust_standardise(elbo))
    n = len(members)
    mean = {k: np.mean([m[k] for m in members], axis=0) for k in views}
    distance = robust_standardise(scores["default"])
    return {
        f"elbo ensemble of {n}": mean,
        f"elbo ensemble of {n} + default": {
            k: robust_standardise(mean)[k] + distance[k] for k in views
        },
    }


def run_task(
    task: Task, params: dict[str, Any], cache: Path | None = None, ensemble: bool = False
) -> Run:
    from detector.estimator import VAEDetector
    from detector.scoring.threshold import Calibrator

    series = task.family in ("smd", "asd")
    started = time.perf_counter()
    det = VAEDetector(random_state=task.seed, **params).fit(task.train)
    fit_seconds = time.perf_counter() - started
    results: dict[str, dict[str, float]] = {}
    scores = candidate_scores(det, task)
    if ensemble:
        scores.update(ensemble_scores(det, task, params, scores))
    if cache is not None:
        # The raw scores, so a new combination can be measured without training again.
        cache.mkdir(parents=True, exist_ok=True)
        arrays = {f"{n}|{k}": v for n, parts in scores.items() for k, v in parts.items()}
        np.savez_compressed(
            cache / f"{task.family}_{task.name}_{task.seed}.npz", y_test=task.y_test, **arrays
        )
    for name, parts in scores.items():
        # The default is judged at the bundle's own threshold (a table under 200 rows
        # calibrates leave-one-out on rows this benchmark's split calls calibration rows).
        threshold = (
            det.bundle_.calibrator.threshold
            if name == "default"
            else Calibrator.fit(parts["cal"], target_fpr=det.target_fpr).threshold
        )
        results[name] = detection_metrics(task.y_test, parts["test"], threshold, series=series)

    from sklearn.ensemble import IsolationForest

    x_train, x_test = numeric_views(task.train, task.test)
    forest = IsolationForest(n_estimators=100, random_state=task.seed).fit(x_train)
    peers = {
        "kNN (k=5)": knn_distance(x_train, x_test),
        "IsolationForest": -forest.score_samples(x_test),
    }
    for name, scores in peers.items():
        results[name] = detection_metrics(task.y_test, scores, None, series=series)
    summary = det.summary_
    return Run(
        family=task.family,
        set=task.name,
        seed=task.seed,
        scores=results,
        fit_seconds=round(fit_seconds, 2),
        training={
            "rows": summary.rows,
            "epochs_run": summary.epochs_run,
            "best_epoch": summary.best_epoch,
            "hidden_units": list(summary.hidden_units),
            "latent_dim": summary.latent_dim,
            "validation_fpr": summary.validation_fpr,
        },
    )


# ---- aggregation and the choice ---------------------------------------------------------------


def per_set(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
    """(family, set) -> candidate -> metric -> mean over seeds."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["family"], run["set"]), []).append(run)
    table = {}
    for key, group in grouped.items():
        names = group[0]["scores"].keys()
        table[key] = {
            name: {
                m: float(np.nanmean([r["scores"][name].get(m, np.nan) for r in group]))
                if any(np.isfinite(r["scores"][name].get(m, np.nan)) for r in group)
                else float("nan")
                for m in group[0]["scores"][name]
            }
            for name in names
        }
    return table


def per_family(
    sets: dict[tuple[str, str], dict[str, dict[str, float]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """family -> candidate -> metric -> mean over the family's sets."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for family in FAMILIES + HELD_OUT:
        keys = [k for k in sets if k[0] == family]
        if not keys:
            continue
        names = sets[keys[0]].keys()
        out[family] = {}
        for name in names:
            metrics = sets[keys[0]][name].keys()
            out[family][name] = {
                m: float(np.mean([sets[k][name][m] for k in keys])) for m in metrics
            }
    return out


def mean_ranks(
    sets: dict[tuple[str, str], dict[str, dict[str, float]]],
    keys: list[tuple[str, str]],
    names: list[str],
) -> dict[str, float]:
    """Each name's rank (1 = best) averaged over ``keys`` and the ranked metrics; ties share."""
    from scipy.stats import rankdata

    total = {n: 0.0 for n in names}
    count = 0
    for key in keys:
        for metric in RANKED:
            values = np.array([sets[key][n][metric] for n in names])
            ranks = rankdata(-values, method="average")
            for n, r in zip(names, ranks, strict=True):
                total[n] += float(r)
            count += 1
    return {n: total[n] / max(count, 1) for n in names}


def leave_one_set_out(
    sets: dict[tuple[str, str], dict[str, dict[str, float]]], candidates: list[str]
) -> dict[tuple[str, str], tuple[str, dict[str, float]]]:
    """For each set: the candidate with the best mean rank on every other set, and its metrics
    on the left-out set."""
    keys = list(sets)
    out = {}
    for held in keys:
        others = [k for k in keys if k != held]
        ranks = mean_ranks(sets, others, candidates)
        chosen = min(candidates, key=lambda n: (ranks[n], candidates.index(n)))
        out[held] = (chosen, sets[held][chosen])
    return out


# ---- report -----------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.3f}".removeprefix("0")


def format_report(payload: dict[str, Any]) -> str:
    runs = payload["runs"]
    sets = per_set(runs)
    families = per_family(sets)
    names = list(next(iter(sets.values())).keys())
    candidates = [n for n in names if n not in PEER_NAMES]
    lines = [f"# Detection quality, every family at once\n\nReproduce: `{payload['command']}`\n"]
    lines.append(
        f"Seeds per family: {payload['seeds']}; detector parameters: "
        f"{payload['params'] or 'defaults'}; "
        f"wall time {payload['wall_seconds'] / 60:.1f} min on {payload['machine']['cpus']} CPUs.\n"
    )
    held = [f for f in families if f in HELD_OUT]
    if held:
        lines.append(
            f"Held out: {', '.join(held)} (no default was chosen on these sets; their ranks "
            "and leave-one-out rows are measured, not acted on).\n"
        )
    all_keys = list(sets)
    ranks = mean_ranks(sets, all_keys, names)
    order = sorted(names, key=lambda n: ranks[n])
    lines.append("## Mean rank over all sets (AUROC and AUPRC; 1 = best)\n")
    header = (
        "| candidate | mean rank | " + " | ".join(f"{f} AUROC / AUPRC" for f in families) + " |"
    )
    lines += [header, "|" + "---|" * (2 + len(families))]
    for n in order:
        cells = [
            f"{fmt(families[f][n]['auroc'])} / {fmt(families[f][n]['auprc'])}" for f in families
        ]
        lines.append(f"| {n} | {ranks[n]:.2f} | " + " | ".join(cells) + " |")
    lines.append("")

    loo = leave_one_set_out(sets, candidates)
    lines.append("## Leave one data set out\n")
    lines.append(
        "For each set, the candidate with the best mean rank on all other sets is chosen and "
        "judged on the left-out set. In-sample: the candidate with the best mean rank on all "
        "sets, judged on the same sets.\n"
    )
    best = min(candidates, key=lambda n: (ranks[n], candidates.index(n)))
    lines += [
        "| family | left-out AUROC / AUPRC | in-sample (" + best + ") AUROC / AUPRC | chosen |",
        "|---|---|---|---|",
    ]
    for f in families:
        keys = [k for k in all_keys if k[0] == f]
        auroc = np.mean([loo[k][1]["auroc"] for k in keys])
        auprc = np.mean([loo[k][1]["auprc"] for k in keys])
        chosen = sorted({loo[k][0] for k in keys})
        lines.append(
            f"| {f} | {fmt(auroc)} / {fmt(auprc)} | {fmt(families[f][best]['auroc'])} / "
            f"{fmt(families[f][best]['auprc'])} | {', '.join(chosen)} |"
        )
    lines.append("")

    for f, table in families.items():
        lines.append(f"## {f}: mean over {len([k for k in all_keys if k[0] == f])} set(s)\n")
        metrics = list(next(iter(table.values())).keys())
        lines.append("| | " + " | ".join(metrics) + " |")
        lines.append("|" + "---|" * (1 + len(metrics)))
        for n in order:
            lines.append(f"| {n} | " + " | ".join(fmt(table[n][m]) for m in metrics) + " |")
        for label, (auroc, auprc) in PUBLISHED.get(f, {}).items():
            cells = [fmt(auroc), fmt(auprc)] + ["-"] * (len(metrics) - 2)
            lines.append(f"| {label} (published) | " + " | ".join(cells) + " |")
        lines.append("")
        keys = [k for k in all_keys if k[0] == f]
        shown = ["default", best, "elbo", *PEER_NAMES]
        shown = list(dict.fromkeys(shown))
        lines.append("| AUROC / AUPRC per set | " + " | ".join(shown) + " |")
        lines.append("|" + "---|" * (1 + len(shown)))
        for k in keys:
            cells = [f"{fmt(sets[k][n]['auroc'])} / {fmt(sets[k][n]['auprc'])}" for n in shown]
            lines.append(f"| {k[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    fits = [r["fit_seconds"] for r in runs]
    lines.append(f"{len(runs)} fits, {sum(fits) / 60:.1f} min of training in all.")
    return "\n".join(lines) + "\n"


def plot(out: Path, payload: dict[str, Any]) -> None:
    sets = per_set(payload["runs"])
    families = per_family(sets)
    names = list(next(iter(sets.values())).keys())
    ranks = mean_ranks(sets, list(sets), names)
    candidates = [n for n in names if n not in PEER_NAMES]
    best = min(candidates, key=lambda n: ranks[n])
    shown = list(dict.fromkeys(["default", best, "elbo", *PEER_NAMES]))
    groups = list(families)
    series = {n: [families[f][n]["auroc"] for f in groups] for n in shown}
    plot_grouped_bars(
        with_suffix(out, ".png"),
        groups,
        series,
        title="Mean AUROC per family: the default, the best mean-rank candidate, the ELBO, peers",
    )


def write_outputs(out: Path, payload: dict[str, Any]) -> str:
    report = format_report(payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    with_suffix(out, ".json").write_text(json.dumps(payload, indent=1) + "\n")
    with_suffix(out, ".md").write_text(report)
    plot(out, payload)
    return report


def merge(paths: list[Path]) -> dict[str, Any]:
    payloads = [json.loads(p.read_text()) for p in paths]
    params = {json.dumps(p["params"], sort_keys=True) for p in payloads}
    if len(params) != 1:
        raise SystemExit(f"error: the runs used different --param values: {sorted(params)}")
    seen: set[tuple[str, str, int]] = set()
    runs = []
    for payload in payloads:
        for run in payload["runs"]:
            key = (run["family"], run["set"], run["seed"])
            if key in seen:
                raise SystemExit(f"error: {key} is in more than one of the merged runs")
            seen.add(key)
            runs.append(run)
    merged = dict(payloads[0])
    merged.update(
        runs=runs,
        command=" ; ".join(p["command"] for p in payloads),
        wall_seconds=sum(p["wall_seconds"] for p in payloads),
        seeds={k: v for p in payloads for k, v in p["seeds"].items()},
    )
    return merged


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds for every family (default: "
        "0-2 for adbench and advae, 0 for the rest)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: seed 0, 20 epochs, at most 3,000 training rows per set",
    )
    add_param_arguments(parser)
    parser.add_argument(
        "--merge", nargs="+", type=Path, help="join these runs' .json into one report"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output path without suffix")
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="also train VAEs of hidden widths "
        + " and ".join("-".join(map(str, w)) for w in ENSEMBLE_WIDTHS)
        + " per set and seed and measure their averaged ELBO (three times the training)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="also save every candidate's raw scores here (one .npz per set and seed)",
    )
    args = parser.parse_args(argv)
    args.families = parse_list(args.families)
    unknown = sorted(set(args.families) - set(FAMILIES + HELD_OUT))
    if unknown or not args.families:
        parser.error(f"unknown famil(ies) {unknown}; choose from {','.join(FAMILIES + HELD_OUT)}")
    args.seeds = None if args.seeds is None else parse_seeds(parser, args.seeds)
    args.params = dict(args.param)
    if args.max_epochs is not None:
        args.params["epochs"] = args.max_epochs
    if args.quick:
        args.params.setdefault("epochs", 20)
        args.seeds = args.seeds or [0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.merge:
        print(write_outputs(out, merge(args.merge)))
        return 0
    import_repo()
    from common import check_params

    check_params(args.params)
    data_dir = resolve_data_dir(args.data_dir)
    started = time.perf_counter()
    runs = []
    seeds_used = {}
    loaders = {}
    for family in args.families:
        seeds = args.seeds or list(FAMILY_SEEDS[family])
        seeds_used[family] = seeds
        loader = LOADERS[family](data_dir, seeds, args.quick)
        # Each family's first set read now: missing data is named before any training, not
        # after the families before it ran (20 minutes of work lost).
        first = next(loader, None)
        loaders[family] = itertools.chain([] if first is None else [first], loader)
    for family in args.families:
        for task in loaders[family]:
            if args.quick and len(task.train) > 3000:
                task.train = task.train.sample(3000, random_state=0).reset_index(drop=True)
            progress(
                f"{family} {task.name} seed {task.seed}: {len(task.train)} train rows, "
                f"{len(task.test)} test rows"
            )
            run = run_task(task, args.params, args.cache, args.ensemble)
            progress(
                f"  fit {run.fit_seconds:.0f} s; elbo AUROC {run.scores['elbo']['auroc']:.3f}, "
                f"kNN {run.scores['kNN (k=5)']['auroc']:.3f}"
            )
            runs.append(asdict(run))
    payload = {
        "command": command_line(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": args.params,
        "quick": args.quick,
        "seeds": seeds_used,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "versions": package_versions(),
        "runs": runs,
    }
    print(write_outputs(out, payload))
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
