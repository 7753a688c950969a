"""Benchmark the detector models on server metrics: SMD and ASD (BENCHMARKS.md section 3).

One model per machine and seed (``VAEDetector(model=name, random_state=seed, **params)``)
trains on the machine's ``train`` rows, one row a record, columns ``m1..mD`` (the 1-based
metric numbers the interpretation labels use), and scores every ``test`` row through
``score_records``. Point-wise, with ``test_label`` as the ground truth, per machine:

- AUROC and AUPRC of ``anomaly_score`` (higher = more anomalous);
- best F1 point-wise over all thresholds (``precision_recall_curve``);
- best F1 point-adjusted: a labelled anomaly segment (a run of 1s in ``test_label``) counts as
  wholly detected when any point in it is flagged. This is exact over all thresholds, not a
  grid: a segment is detected at threshold t when its largest score is >= t, and the best F1
  is reached at one of those segment maxima (between two of them the detected segments stay
  the same and the false positives only fall), so every segment maximum is evaluated;
- F1 at the model's own calibrated threshold (``is_anomaly``), point-wise and point-adjusted;
- HitRate@100% and @150% from the per-column contributions (``ScoreResult.contributions``,
  columns in the schema's order, checked against ``m1..mD``): for every labelled anomalous
  point whose interpretation label lists the culprit metrics G, the top floor(P |G|) columns
  by contribution (ties broken by column order) are compared with G; hit rate = |top ∩ G| / |G|,
  averaged over those points. SMD's ``interpretation_label`` ranges end exclusive, ASD's end
  inclusive (shared/data/README.md); overlapping ranges join their metrics.

The same run fits ``IsolationForest(n_estimators=100, random_state=seed)`` on train standardised
by a ``StandardScaler`` fit on train, as the reference row (its own threshold is scikit-learn's
``predict``, contamination "auto"; it has no attribution). Averages are over machines within a
set (SMD and ASD separately); the SMD averages print beside the peers' rows from BENCHMARKS.md
when all five developer machines are in the run. Models that need context columns (``cvae``)
are skipped: these sets have none; ``conv-vae`` runs only with ``--param time_column=t``.

Usage::

    python tests/benchmarks/bench_servers.py [--data-dir DIR] [--sets smd,asd]
        [--machines machine-1-2,omi-1,...] [--seeds 0,1,2] [--models vae,vae-svdd,advae]
        [--param key=value ...] [--max-epochs N] [--out tests/benchmarks/results/servers]

Writes ``<out>.json`` (every per-machine, per-seed number, fit seconds, training facts, what is
needed to reproduce it), ``<out>.md`` (the tables) and ``<out>.png`` (AUROC per machine and
model). The data directory is ``--data-dir``, else ``$ANOMALY_BENCH_DATA``, else
``../shared/data`` beside the repository; files are ``<data-dir>/{smd,asd}/<machine>.npz`` and
``<data-dir>/{smd,asd}/interpretation_label/<machine>.txt``.
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
import pandas as pd
from common import (
    RESULTS,
    add_run_arguments,
    check_params,
    choose_models,
    command_line,
    file_sha256,
    finish_run_arguments,
    import_repo,
    mean_std,
    missing_data,
    package_versions,
    parse_list,
    plot_grouped_bars,
    progress,
    resolve_data_dir,
    training_facts,
    with_suffix,
)

DEFAULT_OUT = RESULTS / "servers"
SETS = ("smd", "asd")
#: Whether an interpretation label's ``start-end`` range includes ``end``.
END_INCLUSIVE = {"smd": False, "asd": True}
#: The SMD machines BENCHMARKS.md's peers were measured on.
SMD_DEVELOPER = ("machine-1-2", "machine-1-3", "machine-2-3", "machine-2-4", "machine-3-2")
REFERENCE = "IsolationForest"
METRICS = (
    "auroc", "auprc", "best_f1", "best_f1_pa", "f1_threshold", "f1_threshold_pa",
    "hitrate_100", "hitrate_150",
)  # fmt: skip
HEADERS = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "best_f1": "best F1",
    "best_f1_pa": "best F1 PA",
    "f1_threshold": "F1 @thr",
    "f1_threshold_pa": "F1 @thr PA",
    "hitrate_100": "HitRate@100%",
    "hitrate_150": "HitRate@150%",
}
#: Peers on the 5 developer SMD machines (BENCHMARKS.md section 3): AUROC, AUPRC, best F1,
#: best F1 point-adjusted, each averaged over the machines.
PEERS: dict[str, tuple[float, float, float, float]] = {
    "IsolationForest": (0.786, 0.278, 0.327, 0.940),
    "ECOD": (0.762, 0.231, 0.276, 0.848),
    "PyOD AutoEncoder": (0.749, 0.248, 0.326, 0.908),
    "PyOD VAE": (0.747, 0.250, 0.302, 0.915),
    "alibi-detect OutlierVAE": (0.743, 0.238, 0.298, 0.904),
    "PyOD DeepSVDD": (0.740, 0.188, 0.277, 0.769),
    "reference Gaussian VAE, learned variance": (0.687, 0.142, 0.184, 0.673),
}


# ---- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    set: str
    name: str
    path: Path
    labels_path: Path


def find_machines(data_dir: Path, sets: list[str], names: list[str] | None) -> list[Machine]:
    """The machines to run, by set then name; ``names`` None means every file of the sets.
    Exits with a readable message for a name no chosen set holds or a missing file."""
    found: list[Machine] = []
    for set_name in sets:
        folder = data_dir / set_name
        available = sorted(p.stem for p in folder.glob("*.npz"))
        chosen = available if names is None else [n for n in names if n in available]
        found += [
            Machine(set_name, n, folder / f"{n}.npz", folder / "interpretation_label" / f"{n}.txt")
            for n in chosen
        ]
    if names is not None:
        unknown = sorted(set(names) - {m.name for m in found})
        if unknown:
            raise SystemExit(f"error: no machine(s) {unknown} in {sets} under {data_dir}")
    if not found:
        missing_data([data_dir / s / "<machine>.npz" for s in sets], "smd/*.npz and asd/*.npz")
    missing_data(
        [p for m in found for p in (m.path, m.labels_path)],
        "{smd,asd}/<machine>.npz and {smd,asd}/interpretation_label/<machine>.txt",
    )
    return found


def load_machine(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``train`` ``(T_train, D)``, ``test`` ``(T_test, D)`` as float64, ``test_label``
    ``(T_test,)`` as int (1 = anomaly)."""
    with np.load(path, allow_pickle=False) as content:
        return (
            np.asarray(content["train"], dtype=np.float64),
            np.asarray(content["test"], dtype=np.float64),
            content["test_label"].astype(int),
        )


def load_interpretation(path: Path, n_rows: int, n_dims: int, *, end_inclusive: bool) -> np.ndarray:
    """Culprit metrics per test row, ``(n_rows, n_dims)`` bool (column j = metric j + 1),
    from ``start-end:dim,dim,...`` lines (0-based rows, 1-based dims)."""
    culprits = np.zeros((n_rows, n_dims), dtype=bool)
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        span, _, dims = line.partition(":")
        start, _, end = span.partition("-")
        stop = int(end) + 1 if end_inclusive else int(end)
        columns = [int(d) - 1 for d in dims.split(",") if d.strip()]
        if not columns or min(columns) < 0 or max(columns) >= n_dims:
            raise ValueError(f"{path}:{number}: metric numbers must be in 1..{n_dims}: {line!r}")
        culprits[int(start) : stop, columns] = True
    return culprits


def as_frame(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(x, columns=metric_names(x.shape[1]))


def metric_names(n_dims: int) -> list[str]:
    return [f"m{j + 1}" for j in range(n_dims)]


# ---- metrics ----------------------------------------------------------------------------------


def segments(labels: np.ndarray) -> np.ndarray:
    """``(n_segments, 2)`` start/stop (stop exclusive) of the runs of 1s in ``labels``."""
    padded = np.concatenate([[0], labels.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return edges.reshape(-1, 2)


def best_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best point-wise F1 over every threshold (flagged = score >= threshold)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return float(f1.max())


def best_f1_point_adjusted(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best point-adjusted F1 over every threshold, exactly (see the module docstring)."""
    spans = segments(labels)
    if not len(spans):
        return 0.0
    seg_max = np.array([scores[a:b].max() for a, b in spans])
    seg_len = spans[:, 1] - spans[:, 0]
    order = np.argsort(seg_max)
    seg_max, seg_len = seg_max[order], seg_len[order]
    # tp[i]: anomalous points in the segments whose maximum is >= seg_max[i]
    tp = np.cumsum(seg_len[::-1])[::-1]
    first = np.searchsorted(seg_max, seg_max, side="left")
    tp = tp[first]
    normals = np.sort(scores[labels == 0])
    fp = len(normals) - np.searchsorted(normals, seg_max, side="left")
    fn = seg_len.sum() - tp
    return float(np.max(2 * tp / (2 * tp + fp + fn)))


def f1_at(labels: np.ndarray, flagged: np.ndarray, *, adjust: bool) -> float:
    """F1 of fixed decisions; ``adjust`` marks a whole segment when any point in it is flagged."""
    from sklearn.metrics import f1_score

    if adjust:
        flagged = flagged.copy()
        for a, b in segments(labels):
            if flagged[a:b].any():
                flagged[a:b] = True
    return float(f1_score(labels, flagged, zero_division=0.0))


def hit_rates(contributions: np.ndarray, culprits: np.ndarray) -> dict[str, float]:
    """HitRate@100% and @150% over the rows of ``culprits`` ``(n, D)`` (bool, at least one per
    row), from ``contributions`` ``(n, D)`` (higher = more to blame), same column order."""
    n, n_dims = contributions.shape
    order = np.argsort(-contributions, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(n_dims)[None, :]
    size = culprits.sum(axis=1)
    rates = {}
    for label, share in (("hitrate_100", 1.0), ("hitrate_150", 1.5)):
        top = np.minimum(np.floor(share * size), n_dims)
        hits = ((rank < top[:, None]) & culprits).sum(axis=1)
        rates[label] = float(np.mean(hits / size))
    return rates


def detection_metrics(
    labels: np.ndarray, scores: np.ndarray, flagged: np.ndarray
) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "auprc": float(average_precision_score(labels, scores)),
        "best_f1": best_f1(labels, scores),
        "best_f1_pa": best_f1_point_adjusted(labels, scores),
        "f1_threshold": f1_at(labels, flagged, adjust=False),
        "f1_threshold_pa": f1_at(labels, flagged, adjust=True),
    }


# ---- one fit ----------------------------------------------------------------------------------


@dataclass
class RunResult:
    """Metrics and timings for one (machine, seed, model); no HitRates without attribution."""

    set: str
    machine: str
    seed: int
    model: str
    metrics: dict[str, float]
    flagged_fraction: float
    fit_seconds: float
    score_seconds: float
    training: dict[str, Any] = field(default_factory=dict)


def run_detector(
    machine: Machine, model: str, data: dict[str, np.ndarray], seed: int, params: dict[str, Any]
) -> RunResult:
    from detector.estimator import VAEDetector

    labels, culprits = data["test_label"], data["culprits"]
    started = time.perf_counter()
    train, test = as_frame(data["train"]), as_frame(data["test"])
    time_column = params.get("time_column")
    if time_column:  # a series model (--param time_column=t): a row a minute, test after train
        train.insert(0, time_column, np.arange(len(train)) * 60.0)
        test.insert(0, time_column, (len(train) + np.arange(len(test))) * 60.0)
    det = VAEDetector(model=model, random_state=seed, **params).fit(train)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # A series model's first test rows have no history here: they warm up on themselves.
    result = det.score_records(test)
    score_seconds = time.perf_counter() - started
    if result.rejections or result.n_scored != len(labels):
        raise RuntimeError(
            f"{machine.name}: {len(result.rejections)} test rows rejected, e.g. "
            f"{result.rejections[0] if result.rejections else '?'}"
        )
    names = metric_names(data["test"].shape[1])
    if list(result.columns) != names:
        raise RuntimeError(
            f"{machine.name}: contribution columns {result.columns[:4]}... are not in the "
            f"metric order {names[:4]}...; HitRate would compare the wrong metrics"
        )
    metrics = detection_metrics(labels, result.anomaly_score, result.is_anomaly)
    explained = (labels == 1) & culprits.any(axis=1)
    metrics.update(hit_rates(result.contributions[explained], culprits[explained]))
    return RunResult(
        set=machine.set,
        machine=machine.name,
        seed=seed,
        model=model,
        metrics=metrics,
        flagged_fraction=float(np.mean(result.is_anomaly)),
        fit_seconds=round(fit_seconds, 2),
        score_seconds=round(score_seconds, 3),
        training=training_facts(det.summary_, "threshold", "validation_fpr"),
    )


def run_reference(machine: Machine, data: dict[str, np.ndarray], seed: int) -> RunResult:
    """IsolationForest on data standardised with a scaler fit on train."""
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    scaler = StandardScaler().fit(data["train"])
    forest = IsolationForest(n_estimators=100, random_state=seed)
    forest.fit(scaler.transform(data["train"]))
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    test = scaler.transform(data["test"])
    scores = -forest.score_samples(test)
    flagged = forest.predict(test) == -1
    score_seconds = time.perf_counter() - started
    return RunResult(
        set=machine.set,
        machine=machine.name,
        seed=seed,
        model=REFERENCE,
        metrics=detection_metrics(data["test_label"], scores, flagged),
        flagged_fraction=float(np.mean(flagged)),
        fit_seconds=round(fit_seconds, 2),
        score_seconds=round(score_seconds, 3),
    )


# ---- aggregation and tables -------------------------------------------------------------------


def aggregate(
    runs: list[RunResult], machines: list[Machine], seeds: list[int], models: list[str]
) -> dict[str, Any]:
    """``per_machine``: machine -> model -> metric -> (mean, std) over seeds, plus mean fit
    seconds; ``per_set``: set -> model -> metric -> (mean, std), the mean over the set's
    machines and the std over seeds of each seed's machine mean."""
    per_machine: dict[str, Any] = {}
    for m in machines:
        per_machine[m.name] = {}
        for model in models:
            chosen = [find(runs, m.name, seed, model) for seed in seeds]
            cells: dict[str, Any] = {
                k: mean_std([r.metrics[k] for r in chosen]) if k in chosen[0].metrics else None
                for k in METRICS
            }
            cells["fit_seconds"] = float(np.mean([r.fit_seconds for r in chosen]))
            per_machine[m.name][model] = cells
    per_set: dict[str, Any] = {}
    for set_name in dict.fromkeys(m.set for m in machines):
        names = [m.name for m in machines if m.set == set_name]
        per_set[set_name] = {}
        for model in models:
            per_set[set_name][model] = {}
            for k in METRICS:
                if k not in find(runs, names[0], seeds[0], model).metrics:
                    per_set[set_name][model][k] = None  # no attribution
                    continue
                # values[i, j]: seed i, machine j
                values = np.array(
                    [[find(runs, n, seed, model).metrics[k] for n in names] for seed in seeds]
                )
                per_set[set_name][model][k] = mean_std(values.mean(axis=1))
    return {"per_machine": per_machine, "per_set": per_set}


def find(runs: list[RunResult], machine: str, seed: int, model: str) -> RunResult:
    return next(r for r in runs if r.machine == machine and r.seed == seed and r.model == model)


def cell(value: tuple[float, float] | None, *, spread: bool = True) -> str:
    if value is None:
        return "-"
    mean, std = value
    return f"{mean:.3f} ± {std:.3f}" if spread else f"{mean:.3f}"


def row(label: str, cells: list[str]) -> str:
    return "| " + " | ".join([label, *cells]) + " |"


def label_of(model: str) -> str:
    return f"{model} (this run)" if model == REFERENCE else f"ours, {model}"


def format_tables(
    summary: dict[str, Any], machines: list[Machine], seeds: list[int], models: list[str]
) -> str:
    """Markdown: per set, the average over machines (with the peers for the developer SMD
    machines); then every machine's numbers (means over seeds) and fit seconds."""
    seed_text = ",".join(map(str, seeds))
    labels = [*models, REFERENCE]
    header = ["method", *(HEADERS[k] for k in METRICS)]
    rule = "|" + "---|" * len(header)
    lines: list[str] = []
    for set_name, by_model in summary["per_set"].items():
        names = [m.name for m in machines if m.set == set_name]
        lines += [
            f"{set_name.upper()}, mean over {len(names)} machine(s) ({', '.join(names)}); "
            f"± is the std over seeds {seed_text}",
            "",
            row(header[0], header[1:]),
            rule,
        ]
        for model in labels:
            lines.append(row(label_of(model), [cell(by_model[model][k]) for k in METRICS]))
        if set_name == "smd" and sorted(names) == sorted(SMD_DEVELOPER):
            for peer, values in PEERS.items():
                cells = [f"{v:.3f}" for v in values] + ["-"] * (len(METRICS) - len(values))
                lines.append(row(f"peer: {peer}", cells))
        lines.append("")

    header = ["machine", "method", *(HEADERS[k] for k in METRICS), "fit s"]
    lines += [
        f"Per machine, mean over seeds {seed_text}",
        "",
        row(header[0], header[1:]),
        "|" + "---|" * len(header),
    ]
    for m in machines:
        for model in labels:
            cells = summary["per_machine"][m.name][model]
            values = [cell(cells[k], spread=False) for k in METRICS]
            lines.append(row(m.name, [model, *values, f"{cells['fit_seconds']:.1f}"]))
    return "\n".join(lines)


# ---- output -----------------------------------------------------------------------------------


def write_outputs(out: Path, payload: dict[str, Any], tables: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with_suffix(out, ".json").write_text(json.dumps(payload, indent=2) + "\n")
    params = payload["params"] or "library defaults"
    skipped = "".join(f" {m} skipped: {why}." for m, why in payload["skipped_models"].items())
    text = (
        "# Detector models on server metrics, SMD and ASD (BENCHMARKS.md section 3)\n\n"
        f"Run {payload['date_utc']}, seeds {payload['seeds']}, params {params}, "
        f"{payload['total_seconds']:.0f} s in all; every per-machine, per-seed number is in "
        f"`{with_suffix(out, '.json').name}`, the AUROC chart in "
        f"`{with_suffix(out, '.png').name}`.{skipped}\n\n"
        f"{tables}\n\n"
        "One model per machine, trained on `train`, scored on every `test` row; point-wise "
        "against `test_label`, one row a record (no windows). PA = point-adjusted (a labelled "
        "segment counts as detected when any point in it is flagged); best F1 is over all "
        "thresholds, exactly for both. F1 @thr uses the model's own calibrated threshold "
        "(`is_anomaly`; IsolationForest: `predict`, contamination 'auto'). HitRate@P%: the "
        "top floor(P|G|) columns by contribution against the culprit metrics G of each "
        "labelled anomalous point with an interpretation label. The peers' rows are "
        "BENCHMARKS.md's (same protocol, developer SMD machines), not re-measured here.\n\n"
        "Reproduce with:\n\n"
        f"```\n{payload['command']}\n```\n"
    )
    with_suffix(out, ".md").write_text(text)


def plot(out: Path, summary: dict[str, Any], machines: list[Machine], models: list[str]) -> None:
    labels = [*models, REFERENCE]
    per_machine = summary["per_machine"]
    plot_grouped_bars(
        with_suffix(out, ".png"),
        [m.name for m in machines],
        {k: [per_machine[m.name][k]["auroc"][0] for m in machines] for k in labels},
        errors={k: [per_machine[m.name][k]["auroc"][1] for m in machines] for k in labels},
        title="Server metrics, SMD and ASD (BENCHMARKS.md section 3): AUROC",
    )


# ---- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, SETS, DEFAULT_OUT)
    parser.add_argument(
        "--machines", help="comma-separated machine names (default: every file of the sets)"
    )
    args = parser.parse_args(argv)
    finish_run_arguments(parser, args, SETS)
    args.machines = None if args.machines is None else parse_list(args.machines)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    machines = find_machines(data_dir, args.sets, args.machines)
    import_repo()
    check_params(args.params)
    models, skipped = choose_models(args.models, args.params)
    for model, why in skipped.items():
        progress(f"{model} skipped: {why}")

    started = time.perf_counter()
    runs: list[RunResult] = []
    facts: dict[str, dict[str, Any]] = {}
    for machine in machines:
        train, test, labels = load_machine(machine.path)
        culprits = load_interpretation(
            machine.labels_path,
            len(test),
            test.shape[1],
            end_inclusive=END_INCLUSIVE[machine.set],
        )
        data = {"train": train, "test": test, "test_label": labels, "culprits": culprits}
        explained = (labels == 1) & culprits.any(axis=1)
        facts[machine.name] = {
            "set": machine.set,
            "train_rows": len(train),
            "test_rows": len(test),
            "dims": test.shape[1],
            "test_anomalies": int(labels.sum()),
            "anomaly_segments": len(segments(labels)),
            "hitrate_points": int(explained.sum()),
            "label_disagreements": int(np.sum(culprits.any(axis=1) != (labels == 1))),
        }
        for seed in args.seeds:
            for model in models:
                result = run_detector(machine, model, data, seed, args.params)
                runs.append(result)
                progress(
                    f"{machine.name} seed {seed} {model}: AUROC {result.metrics['auroc']:.3f} "
                    f"AUPRC {result.metrics['auprc']:.3f} best F1 {result.metrics['best_f1']:.3f} "
                    f"HitRate@100% {result.metrics['hitrate_100']:.3f} "
                    f"({result.fit_seconds:.0f} s, {result.training['epochs_run']} epochs)"
                )
            result = run_reference(machine, data, seed)
            runs.append(result)
            progress(
                f"{machine.name} seed {seed} {REFERENCE}: AUROC {result.metrics['auroc']:.3f} "
                f"AUPRC {result.metrics['auprc']:.3f} ({result.fit_seconds:.1f} s)"
            )
    total = time.perf_counter() - started

    summary = aggregate(runs, machines, args.seeds, [*models, REFERENCE])
    tables = format_tables(summary, machines, args.seeds, models)
    print(tables)
    payload = {
        "benchmark": "server metrics, SMD and ASD, BENCHMARKS.md section 3",
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "sets": args.sets,
        "machines": facts,
        "seeds": args.seeds,
        "models": models,
        "skipped_models": skipped,
        "params": args.params,
        "reference": f"{REFERENCE}(n_estimators=100, random_state=seed) on StandardScaler "
        "fit on train",
        "packages": {"python": platform.python_version(), **package_versions()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "data": {
            m.name: {"npz": file_sha256(m.path), "interpretation": file_sha256(m.labels_path)}
            for m in machines
        },
        "total_seconds": round(total, 1),
        "summary": summary,
        "runs": [vars(r) for r in runs],
        "peers_smd_developer": {
            k: dict(zip(("auroc", "auprc", "best_f1", "best_f1_pa"), v, strict=True))
            for k, v in PEERS.items()
        },
    }
    write_outputs(Path(args.out), payload, tables)
    plot(Path(args.out), summary, machines, models)
    return 0


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
