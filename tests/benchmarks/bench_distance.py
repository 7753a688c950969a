"""The default distance's own settings, chosen on every labelled family at once.

The default score is a k-nearest-neighbour distance (``detector.scoring.neighbours``), which
needs no network: its settings can be measured without training the VAE, on every set and seed of
``bench_quality.py``'s protocols in minutes. For each (set, seed) the detector's own schema
is fitted on the training rows and its own split (``detector.nn.training.holdout_indices``) gives
the bank (the fit rows); every variant is then scored on the test rows:

- ``rf``: each numeric column's scale is at least this fraction of its training range;
- ``margin``: each column is clipped to its training range widened by this many scale units
  on each side, so a column that was near-constant in training and moves later (the SMD trap,
  BENCHMARKS.md section 3) adds at most ``margin`` to the distance; ``inf`` clips only at the
  encoding's ±10;
- ``k``: neighbours averaged over;
- ``cap``: where the encoding clips each column, in standard deviations (``default``: the
  encoding's ±10 before the range floor is applied, so a widened column is capped at less
  than ±10 of its own units; a number: no clip in the encoding, ±cap in the widened units).

``--study columns`` adds each numeric column judged alone (a part of the distance per
column, its mean standardised beside the whole row's, at a weight, each column searching at
most 250 or 1,000 bank rows), as the series' metrics are (``bench_series.py --study metrics``).

``--study local`` judges the row also against the normal rows' spread around its neighbours
(as series banks do, ``bench_series.py --study local``) at several weights and floors.

``--study far`` measures the table's default distance with a column beyond its bounds counting
past them, log-compressed, at several weights (``NeighbourBank.far``; 0 as before, when a value
2x and one 10^6x a column's range beyond the bounds scored the same).

``--study logs`` measures the table's default distance with each heavy-tailed column (none
negative, skewed past 5, its largest value 50x its median: training's warning) as its logarithm.

``--study banks`` measures the default distance itself
(``detector.scoring.neighbours.NeighbourBank`` as training builds it) at several bank sizes
(rows x features) instead: a bigger bank costs scoring time in proportion
(``bench_scoring.py``), so the size is the largest that keeps scoring within its speed budget,
and this says what a smaller one costs in detection.

The report ranks the variants on every set (AUROC and AUPRC, mean over seeds) and gives the
leave-one-data-set-out choice beside the in-sample one, as ``bench_quality.py`` does.

Usage::

    python tests/benchmarks/bench_distance.py [--data-dir DIR] [--families ...]
        [--out tests/benchmarks/results/quality_distance]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_quality import (
    FAMILIES,
    FAMILY_SEEDS,
    LOADERS,
    PEER_NAMES,
    detection_metrics,
    knn_distance,
    leave_one_set_out,
    mean_ranks,
    numeric_views,
    per_family,
    per_set,
)
from common import (
    RESULTS,
    add_data_dir_argument,
    command_line,
    import_repo,
    parse_list,
    progress,
    resolve_data_dir,
    with_suffix,
)

DEFAULT_OUT = RESULTS / "quality_distance"
RANGE_FLOORS = (0.05, 0.25, 0.5, 1.0)
MARGINS = (float("inf"), 3.0, 1.0, 0.5)
KS = (1, 5, 10)
CAPS = (None, 10.0, 3.0)
Variant = tuple[float, float, int, float | None]


def variant_name(rf: float, margin: float, k: int, cap: float | None) -> str:
    return f"rf={rf:g} margin={margin:g} k={k} cap={'default' if cap is None else f'{cap:g}'}"


def variants() -> list[Variant]:
    grid: list[Variant] = [(rf, m, 5, None) for rf, m in itertools.product(RANGE_FLOORS, MARGINS)]
    grid += [(0.25, float("inf"), k, None) for k in KS if k != 5]
    grid += [(rf, m, 5, c) for rf in (0.25, 1.0) for m in (float("inf"), 1.0) for c in CAPS if c]
    return grid


def weighted_views(
    schema: Any, x: np.ndarray, rf: float, margin: float, cap: float | None = None
) -> np.ndarray:
    """Encoded rows in the distance space of ``rf``, clipped ``margin`` beyond the range;
    ``cap``: ``x`` was encoded without a clip, and is clipped at ±cap widened units."""
    from detector.scoring.neighbours import column_weights

    weights = column_weights(schema, rf)
    out = x * weights
    if cap is not None and schema.n_numeric:
        n = schema.n_numeric
        out[:, :n] = np.clip(out[:, :n], -cap, cap)
    if np.isfinite(margin) and schema.n_numeric:
        means = np.array([c.mean for c in schema.numeric])
        scales = np.array([c.scale for c in schema.numeric])
        low = (np.array([c.minimum for c in schema.numeric]) - means) / scales
        high = (np.array([c.maximum for c in schema.numeric]) - means) / scales
        w = weights[: schema.n_numeric]
        n = schema.n_numeric
        out[:, :n] = np.clip(out[:, :n], low * w - margin, high * w + margin)
    return out


#: Bank cells (rows x encoded features) to compare; the last keeps every fitted row.
BANK_CELLS = (40_000, 80_000, 160_000, 320_000, 10**9)


def detector_split(
    task: Any, *, log_tails: bool = True
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The detector's own schema for ``task``'s training rows, the encoded training and test
    rows, and its fit and validation row positions, as ``anomaly train`` makes them
    (``log_tails``: as ``fit_schema``'s)."""
    from detector.features.encode import encode
    from detector.features.schema import fit_schema
    from detector.nn.training import TrainingConfig, holdout_indices

    schema = fit_schema(task.train, log_tails=log_tails)
    x = encode(schema, task.train).values
    fit, val, _ = holdout_indices(len(x), TrainingConfig(random_state=task.seed))
    return schema, x, encode(schema, task.test).values, fit, val


def run_banks(task: Any) -> dict[str, dict[str, float]]:
    """The default distance, exactly as a bundle computes it, at each of ``BANK_CELLS``."""
    from detector.scoring.neighbours import NeighbourBank

    schema, x, x_test, fit, val = detector_split(task)
    series = task.family in ("smd", "asd")
    scores = {}
    for cells in BANK_CELLS:
        bank = NeighbourBank.fit(
            schema, x[fit], x[val], np.zeros(len(val)), max_cells=cells, seed=task.seed
        )
        name = "bank of every fitted row" if cells == BANK_CELLS[-1] else f"bank {cells:,} cells"
        scores[name] = detection_metrics(task.y_test, bank.distances(x_test), None, series=series)
    return scores


#: Quantile levels of each column's tail bounds, and weights of the tail term, for ``tails``.
TAIL_LEVELS = (0.0, 0.001, 0.005, 0.01, 0.05)
TAIL_WEIGHTS = (0.5, 1.0, 2.0)


def tail_scores(
    schema: Any, x_fit: np.ndarray, x_val: np.ndarray, x_test: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """``--study tails``' candidates for encoded rows, each ``(n_test,)``, higher = more
    anomalous: the mean distance to the neighbours plus ``weight`` times how far a record's
    columns lie beyond the fitted rows' ``level`` and ``1 - level`` quantiles (summed over
    columns, or its Euclidean norm: ``L2``; ``wide``: a column may lie 3 units beyond its
    range, not 0.5; ``standardised``: the box in the encoding's own units), against the
    neighbours alone: a marginal term the neighbour average dilutes. ``default`` is the
    product's distance (0.005, weight 0.5, chosen here)."""
    from detector.scoring.neighbours import NeighbourBank

    product = NeighbourBank.fit(schema, x_fit, x_val, np.zeros(len(x_val)), seed=seed)
    # the neighbours alone: the default distance before this study
    bank = NeighbourBank.fit(schema, x_fit, x_val, np.zeros(len(x_val)), seed=seed, box_weight=0)
    distance = bank.distances(x_test)
    fitted = bank._project(x_fit)
    query = bank._project(x_test)
    out = {"neighbours alone": distance, "default": product.distances(x_test)}
    wide = np.clip(x_test * bank.weights, bank.lower - 2.5, bank.upper + 2.5)
    for level in TAIL_LEVELS:
        low, high = np.quantile(fitted, [level, 1 - level], axis=0)
        beyond = (np.maximum(query - high, 0) + np.maximum(low - query, 0)).sum(axis=1)
        out[f"tail {level:g}"] = beyond
        for weight in TAIL_WEIGHTS:
            out[f"distance + {weight:g} x tail {level:g}"] = distance + weight * beyond
        if level in (0.005, 0.01):
            square = np.sqrt(
                (
                    np.square(np.maximum(query - high, 0)) + np.square(np.maximum(low - query, 0))
                ).sum(axis=1)
            )
            far = (np.maximum(wide - high, 0) + np.maximum(low - wide, 0)).sum(axis=1)
            for weight in (0.5, 1.0):
                out[f"distance + {weight:g} x L2 tail {level:g}"] = distance + weight * square
                out[f"distance + {weight:g} x wide tail {level:g}"] = distance + weight * far
    # The box in the encoding's own units (standard deviations, clipped at +-10), the
    # neighbours in the distance's: a column near-constant in training counts in full.
    low, high = np.quantile(x_fit, [0.005, 0.995], axis=0)
    own = (np.maximum(x_test - high, 0) + np.maximum(low - x_test, 0)).sum(axis=1)
    for weight in (0.05, 0.1, 0.25, 0.5):
        out[f"distance + {weight:g} x standardised tail 0.005"] = distance + weight * own
    return out


def run_tails(task: Any) -> dict[str, dict[str, float]]:
    """``tail_scores`` on one set and seed, with the detector's own schema and split."""
    schema, x, x_test, fit, val = detector_split(task)
    series = task.family in ("smd", "asd")
    return {
        name: detection_metrics(task.y_test, score, None, series=series)
        for name, score in tail_scores(schema, x[fit], x[val], x_test, task.seed).items()
    }


#: ``--study columns``: the weight of the columns' mean beside the whole row's part, and the
#: bank rows each column's part searches at most.
COLUMN_WEIGHTS = (0.25, 0.5, 0.75, 1.0)
COLUMN_ROWS = (250, 1000)


def run_columns(task: Any) -> dict[str, dict[str, float]]:
    """The default distance, and with each numeric column judged alone beside it: a part per
    column, standardised on the validation rows as a bank of parts standardises them, their
    mean at ``COLUMN_WEIGHTS`` (a table of one numeric column: the default for every one)."""
    from detector.scoring.neighbours import NeighbourBank

    schema, x, x_test, fit, val = detector_split(task)
    series = task.family in ("smd", "asd")
    product = NeighbourBank.fit(schema, x[fit], x[val], np.zeros(len(val)), seed=task.seed)
    default = detection_metrics(task.y_test, product.distances(x_test), None, series=series)
    scores = {"default": default}
    d = len(schema.numeric)  # the numeric columns come first in the encoding
    parts = np.zeros((1 + d, schema.n_features), dtype=bool)
    parts[0] = True
    parts[np.arange(1, d + 1), np.arange(d)] = True
    for rows in COLUMN_ROWS:
        bank = None
        if d >= 2:
            bank = NeighbourBank.fit(
                schema,
                x[fit],
                x[val],
                np.zeros(len(val)),
                seed=task.seed,
                parts=parts,
                part_rows=np.array([0] + [rows] * d),
            )
            raw = bank.part_distances(x_test)
            standard = [(r - bank.part_location[p]) / bank.part_scale[p] for p, r in enumerate(raw)]
            whole, columns = standard[0], np.mean(standard[1:], axis=0)
        for weight in COLUMN_WEIGHTS:
            name = f"row + {weight:g} x columns alone, {rows:,} bank rows"
            scores[name] = (
                default
                if bank is None
                else detection_metrics(task.y_test, whole + weight * columns, None, series=series)
            )
    return scores


#: ``--study local``: the weights of the distance relative to the local spread, and its floors
#: (``bench_series.py --study local``'s), each spread as large as it is; then ceilings on it
#: (a sparse place discounts a record at most so many times) at the floor of the median.
LOCAL_WEIGHTS = (0.25, 0.5)
LOCAL_FLOORS = (0.5, 1.0, 2.0)
LOCAL_CEILINGS = ((0.5, 1.5), (0.5, 2.0), (0.5, 3.0), (0.5, 4.0), (0.25, 4.0))
LOCAL_CEILINGS += ((0.75, 2.0), (0.75, 3.0), (1.0, 2.0))


def run_local(task: Any) -> dict[str, dict[str, float]]:
    """The default distance, exactly as a bundle computes it, plain and judged also against
    the local spread at each of ``LOCAL_WEIGHTS`` and ``LOCAL_FLOORS``, and at the floor of
    the median with each of ``LOCAL_CEILINGS``."""
    from detector.scoring.neighbours import NeighbourBank

    schema, x, x_test, fit, val = detector_split(task)
    series = task.family in ("smd", "asd")
    settings = [(0.0, 1.0, np.inf)] + [(w, f, np.inf) for w in LOCAL_WEIGHTS for f in LOCAL_FLOORS]
    settings += [(w, 1.0, c) for w, c in LOCAL_CEILINGS]
    scores = {}
    for weight, floor, ceiling in settings:
        bank = NeighbourBank.fit(
            schema,
            x[fit],
            x[val],
            np.zeros(len(val)),
            seed=task.seed,
            local_weight=weight,
            local_floor=floor,
            local_ceiling=ceiling,
        )
        name = "plain" if not weight else f"local {weight:g}, floor {floor:g}"
        if np.isfinite(ceiling):
            name += f", ceiling {ceiling:g}"
        scores[name] = detection_metrics(task.y_test, bank.distances(x_test), None, series=series)
    return scores


def table_bank(task: Any, *, log_tails: bool = True, **fit: Any) -> tuple[Any, Any, float]:
    """The table's default distance as a bundle builds it (judged also against the local
    spread; ``fit``: other ``NeighbourBank.fit`` settings), ``task``'s test rows encoded as
    scoring encodes them, and the validation rows' 99th percentile, which stands in for the
    calibrated threshold (1% target)."""
    from detector.features.encode import encode
    from detector.scoring.neighbours import (
        TABLE_LOCAL_CEILING,
        TABLE_LOCAL_FLOOR,
        TABLE_LOCAL_WEIGHT,
        NeighbourBank,
    )

    schema, x, _, fit_rows, val = detector_split(task, log_tails=log_tails)
    bank = NeighbourBank.fit(
        schema,
        x[fit_rows],
        x[val],
        np.zeros(len(val)),
        seed=task.seed,
        local_weight=TABLE_LOCAL_WEIGHT,
        local_floor=TABLE_LOCAL_FLOOR,
        local_ceiling=TABLE_LOCAL_CEILING,
        **fit,
    )
    return bank, encode(schema, task.test), float(np.quantile(bank.distances(x[val]), 0.99))


#: ``--study far``: how much a column beyond its bounds counts past them (0: as before).
FAR_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def run_far(task: Any) -> dict[str, dict[str, float]]:
    """``table_bank`` with a column beyond its bounds counting past them at each of
    ``FAR_WEIGHTS`` (``NeighbourBank.far``), each value clipped in the encoding counted as far
    as it was. Training rows lie within the bounds: one threshold serves every weight."""
    import dataclasses

    bank, test, threshold = table_bank(task, far_weight=0.0)
    series = task.family in ("smd", "asd")
    scores = {}
    for weight in FAR_WEIGHTS:
        judged = dataclasses.replace(bank, far_weight=weight)
        distance = judged.distances(test.values, overflow=test.overflow)
        name = "clipped (before)" if not weight else f"far {weight:g}"
        y = task.y_test[test.rows]
        scores[name] = detection_metrics(y, distance, threshold, series=series)
    return scores


def run_logs(task: Any) -> dict[str, dict[str, float]]:
    """``table_bank`` on the columns as they are and with each heavy-tailed column as its
    logarithm (``fit_schema``'s ``log_tails``), with the F1 at its threshold."""
    series = task.family in ("smd", "asd")
    scores = {}
    for name, logged in (("as they are", False), ("heavy tails logged", True)):
        bank, test, threshold = table_bank(task, log_tails=logged)
        distance = bank.distances(test.values, overflow=test.overflow)
        y = task.y_test[test.rows]
        scores[name] = detection_metrics(y, distance, threshold, series=series)
    return scores


def run_task(task: Any, study: str = "settings") -> dict[str, Any]:
    from detector.features.encode import encode
    from detector.features.schema import fit_schema
    from detector.nn.training import TrainingConfig, holdout_indices

    if study in ("banks", "tails", "columns", "local", "far", "logs"):
        runs = {
            "banks": run_banks,
            "tails": run_tails,
            "columns": run_columns,
            "local": run_local,
            "far": run_far,
            "logs": run_logs,
        }
        scores = runs[study](task)
        x_train, x_peer = numeric_views(task.train, task.test)
        series = task.family in ("smd", "asd")
        scores[PEER_NAMES[0]] = detection_metrics(
            task.y_test, knn_distance(x_train, x_peer), None, series=series
        )
        return {"family": task.family, "set": task.name, "seed": task.seed, "scores": scores}

    schema = fit_schema(task.train)
    x = encode(schema, task.train).values
    x_test = encode(schema, task.test).values
    unclipped = fit_schema(task.train, clip=np.inf)
    raw = {
        "train": encode(unclipped, task.train).values,
        "test": encode(unclipped, task.test).values,
    }
    fit, _, _ = holdout_indices(len(x), TrainingConfig(random_state=task.seed))
    series = task.family in ("smd", "asd")
    scores: dict[str, dict[str, float]] = {}
    for rf, margin, k, cap in variants():
        train, test = (x, x_test) if cap is None else (raw["train"], raw["test"])
        bank = weighted_views(schema, train[fit], rf, margin, cap)
        query = weighted_views(schema, test, rf, margin, cap)
        distance = knn_distance(bank, query, k=k)
        name = variant_name(rf, margin, k, cap)
        scores[name] = detection_metrics(task.y_test, distance, None, series=series)
    x_train, x_peer = numeric_views(task.train, task.test)
    scores[PEER_NAMES[0]] = detection_metrics(
        task.y_test, knn_distance(x_train, x_peer), None, series=series
    )
    return {"family": task.family, "set": task.name, "seed": task.seed, "scores": scores}


def format_report(payload: dict[str, Any]) -> str:
    sets = per_set(payload["runs"])
    families = per_family(sets)
    names = list(next(iter(sets.values())).keys())
    candidates = [n for n in names if n not in PEER_NAMES]
    ranks = mean_ranks(sets, list(sets), names)
    lines = [
        "# The default distance's settings, every family at once\n",
        f"Reproduce: `{payload['command']}` ({payload['wall_seconds'] / 60:.1f} min).\n",
        "## Mean rank over all sets (AUROC and AUPRC; 1 = best), family means\n",
        "| variant | mean rank | " + " | ".join(f"{f} AUROC / AUPRC" for f in families) + " |",
        "|" + "---|" * (2 + len(families)),
    ]
    for n in sorted(names, key=lambda n: ranks[n]):
        cells = [f"{families[f][n]['auroc']:.3f} / {families[f][n]['auprc']:.3f}" for f in families]
        lines.append(f"| {n} | {ranks[n]:.2f} | " + " | ".join(cells) + " |")

    def cell(f: str, n: str) -> str:
        return f"{families[f][n]['auroc']:.3f} / {families[f][n]['auprc']:.3f}"

    lines += leave_one_out_section(sets, candidates, ranks, list(families), cell)
    return "\n".join(lines) + "\n"


def leave_one_out_section(
    sets: Any,
    names: list[str],
    ranks: dict[str, float],
    groups: list[str],
    cell: Any,
    beside: tuple[str, ...] = (),
) -> list[str]:
    """A report's "Leave one data set out" table: per group the left-out numbers, the
    in-sample ones of the best-ranked of ``names`` and of each of ``beside`` (``cell(group,
    name)`` formats them), and what was chosen."""
    loo = leave_one_set_out(sets, names)
    best = min(names, key=lambda n: ranks[n])
    lines = [
        "",
        "## Leave one data set out\n",
        f"| family | left-out AUROC / AUPRC | in-sample ({best}) | "
        + "".join(f"{n} | " for n in beside)
        + "chosen |",
        "|---|---|---|" + "---|" * len(beside) + "---|",
    ]
    for g, left_out, chosen in left_out_by_family(sets, loo, groups):
        others = "".join(f"{cell(g, n)} | " for n in beside)
        lines.append(f"| {g} | {left_out} | {cell(g, best)} | {others}{chosen} |")
    return lines


def left_out_by_family(
    sets: dict[tuple[str, str], Any], loo: dict[tuple[str, str], Any], families: list[str]
) -> list[tuple[str, str, str]]:
    """Per family: its left-out AUROC / AUPRC (mean over its sets) and the choices made."""
    rows = []
    for f in families:
        keys = [k for k in sets if k[0] == f]
        auroc = np.mean([loo[k][1]["auroc"] for k in keys])
        auprc = np.mean([loo[k][1]["auprc"] for k in keys])
        rows.append((f, f"{auroc:.3f} / {auprc:.3f}", ", ".join(sorted({loo[k][0] for k in keys}))))
    return rows


def join_tails(tables: dict[str, Any], series: dict[str, Any]) -> str:
    """``--join``: one ranking of the tail candidates over the tables (this script's
    ``--study tails``) and the series (``bench_series.py --study tails``: the Donut KPIs' rows,
    which the tables lack, and every series' default window), with leave-one-set-out."""
    sets = per_set(tables["runs"])
    names_seen = {k for r in series["runs"] for k in r["scores"]}
    if not all(k.startswith("W=") for k in names_seen):
        # Another study's series (``--study far``): the default window's scores as they are.
        for run in series["runs"]:
            sets[(f"{run['family']} windows", run["set"])] = run["scores"]
        return _joined_report(tables, series, sets, "A study")
    # the series' windows: the longest ``W=N`` their run holds (the product's default)
    window = max(int(k.split()[0][2:]) for r in series["runs"] for k in r["scores"])
    for run in series["runs"]:
        views = [(f"{run['family']} windows", f"W={window} ")]
        if run["family"] not in {k[0] for k in sets}:
            views.append((f"{run['family']} rows", "W=1 "))
        for family, prefix in views:
            sets[(family, run["set"])] = {
                k[len(prefix) :]: v for k, v in run["scores"].items() if k.startswith(prefix)
            }
    return _joined_report(tables, series, sets, "The distance's tail term")


def _joined_report(
    tables: dict[str, Any], series: dict[str, Any], sets: dict[Any, Any], title: str
) -> str:
    """``join_tails``' report of ``sets``, tables' and series' together."""
    names = [n for n in next(iter(sets.values())) if all(n in s for s in sets.values())]
    ranks = mean_ranks(sets, list(sets), names)
    groups = list(dict.fromkeys(k[0] for k in sets))

    def cell(family: str, name: str) -> str:
        keys = [k for k in sets if k[0] == family]
        auroc = np.mean([sets[k][name]["auroc"] for k in keys])
        auprc = np.mean([sets[k][name]["auprc"] for k in keys])
        return f"{auroc:.3f} / {auprc:.3f}"

    lines = [
        f"# {title} on every labelled set: tables, rows and windows\n",
        f"Reproduce: `{tables['command']}` ; `{series['command']}` ; `{command_line()}`\n",
        f"{len(sets)} sets; mean rank over all of them (AUROC and AUPRC; 1 = best).\n",
        "| variant | mean rank | " + " | ".join(groups) + " |",
        "|" + "---|" * (2 + len(groups)),
    ]
    for n in sorted(names, key=lambda n: ranks[n]):
        lines.append(f"| {n} | {ranks[n]:.2f} | " + " | ".join(cell(g, n) for g in groups) + " |")
    baseline = ("neighbours alone",) if "neighbours alone" in names else ()
    lines += leave_one_out_section(sets, names, ranks, groups, cell, baseline)
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_dir_argument(parser)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
    parser.add_argument(
        "--study",
        choices=("settings", "banks", "tails", "columns", "local", "far", "logs"),
        default="settings",
        help="settings: the grid of range floor, margin, k and cap; banks: "
        "the default distance at several bank sizes; tails: the distance plus a "
        "term for columns beyond their normal range; columns: each column judged alone "
        "beside the row; local: the row also judged against the local spread; far: a "
        "column beyond its bounds counting past them, at several weights; logs: each "
        "heavy-tailed column as its logarithm",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output path without suffix")
    parser.add_argument(
        "--join",
        nargs=2,
        metavar=("TABLES_JSON", "SERIES_JSON"),
        help="rank the tail candidates of this script's --study tails run and "
        "bench_series.py --study tails' together; writes --out's .md",
    )
    parser.add_argument(
        "--merge", nargs="+", help="join these runs' .json (halves run side by side) into one"
    )
    args = parser.parse_args(argv)
    args.families = parse_list(args.families)
    if not args.families or set(args.families) - set(FAMILIES):
        parser.error(f"choose families from {','.join(FAMILIES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        halves = [json.loads(Path(p).read_text()) for p in args.merge]
        payload = {
            "command": " ; ".join(h["command"] for h in halves),
            "wall_seconds": max(h["wall_seconds"] for h in halves),  # side by side: the longest
            "runs": [run for h in halves for run in h["runs"]],
        }
        out = Path(args.out)
        with_suffix(out, ".json").write_text(json.dumps(payload, indent=1) + "\n")
        report = format_report(payload)
        with_suffix(out, ".md").write_text(report)
        print(report)
        return 0
    if args.join:
        tables, series = (json.loads(Path(p).read_text()) for p in args.join)
        report = join_tails(tables, series)
        with_suffix(Path(args.out), ".md").write_text(report)
        print(report)
        return 0
    import_repo()
    data_dir = resolve_data_dir(args.data_dir)
    started = time.perf_counter()
    runs = []
    for family in args.families:
        for task in LOADERS[family](data_dir, list(FAMILY_SEEDS[family]), False):
            progress(f"{family} {task.name} seed {task.seed}")
            runs.append(run_task(task, args.study))
    payload = {
        "command": command_line(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with_suffix(out, ".json").write_text(json.dumps(payload, indent=1) + "\n")
    report = format_report(payload)
    with_suffix(out, ".md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
