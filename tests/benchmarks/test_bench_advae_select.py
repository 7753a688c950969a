"""``bench_advae.py --select``: per set and seed, the candidate whose score best separates
held-out normals from synthetic anomalies is kept, and candidates that cannot be compared are
refused with the reason."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent
# The benchmark scripts import their shared helpers as the top-level module ``common``.
sys.path.insert(0, str(BENCH))

import bench_advae  # noqa: E402


def _candidate(
    tmp_path: Path, name: str, params: dict[str, Any], cells: dict[tuple[str, int], tuple]
) -> Path:
    """A candidate's JSON file: ``cells`` maps (set, seed) to (test AUROC, shuffle AUROC)."""
    runs = [
        {
            "model": "advae",
            "set": set_name,
            "seed": seed,
            "params": params,
            "metrics": {"default": {"auroc": auroc, "ap": auroc / 2}},
            "fit_seconds": 1.0,
            "score_seconds": 0.1,
            "selection": {"shuffle": shuffle, "swap": 0.5, "box": 1.0},
        }
        for (set_name, seed), (auroc, shuffle) in cells.items()
    ]
    payload = {
        "benchmark": "test",
        "paper_hyperparameters": None,
        "paper_training": {"iterations": 1},
        "command": f"run {name}",
        "params": params,
        "runs": runs,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(payload))
    return path


def test_each_set_and_seed_keeps_the_candidate_that_separates_synthetic_anomalies_best(
    tmp_path: Path,
) -> None:
    low = _candidate(
        tmp_path, "low", {"min_scale": 0.6},
        {("letter", 0): (0.94, 0.70), ("letter", 1): (0.92, 0.71),
         ("cardio", 0): (0.92, 0.60), ("cardio", 1): (0.90, 0.55)},
    )  # fmt: skip
    high = _candidate(
        tmp_path, "high", {},
        {("letter", 0): (0.87, 0.65), ("letter", 1): (0.88, 0.69),
         ("cardio", 0): (0.98, 0.80), ("cardio", 1): (0.97, 0.55)},
    )  # fmt: skip
    payload = bench_advae.select_runs([low, high], "shuffle")
    chosen = {(p["set"], p["seed"]): p["chosen"] for p in payload["picks"]}
    # cardio seed 1 is a tie: the first file given wins.
    assert chosen == {
        ("letter", 0): "min_scale 0.6",
        ("letter", 1): "min_scale 0.6",
        ("cardio", 0): "paper training",
        ("cardio", 1): "min_scale 0.6",
    }
    auroc = {(r["set"], r["seed"]): r["metrics"]["default"]["auroc"] for r in payload["runs"]}
    assert auroc == {
        ("letter", 0): 0.94,
        ("letter", 1): 0.92,
        ("cardio", 0): 0.98,
        ("cardio", 1): 0.90,
    }
    assert payload["summary"]["advae"]["default"]["auroc"]["letter"][0] == pytest.approx(0.93)
    assert payload["summary"]["advae"]["default"]["auroc"]["cardio"][0] == pytest.approx(0.94)
    text = bench_advae.format_selection(payload)
    assert "| cardio | 0 | paper training | 0.600 | 0.800 |" in text


def test_selecting_from_the_committed_candidates_gives_the_committed_report() -> None:
    results = BENCH / "results"
    candidates = [
        results / f"advae_selection_seed0_{name}.json" for name in ("min_scale0.6", "fixed")
    ]
    committed = json.loads((results / "advae_synthetic_selection.json").read_text())
    payload = bench_advae.select_runs(candidates, committed["criterion"])
    assert payload["picks"] == committed["picks"]
    assert json.loads(json.dumps(payload["summary"])) == committed["summary"]


def test_candidates_covering_different_runs_are_refused(tmp_path: Path) -> None:
    a = _candidate(tmp_path, "a", {"min_scale": 0.6}, {("letter", 0): (0.9, 0.7)})
    b = _candidate(tmp_path, "b", {}, {("letter", 1): (0.9, 0.7)})
    with pytest.raises(ValueError, match="different"):
        bench_advae.select_runs([a, b], "shuffle")


def test_candidates_with_the_same_params_are_refused(tmp_path: Path) -> None:
    a = _candidate(tmp_path, "a", {"min_scale": 0.6}, {("letter", 0): (0.9, 0.7)})
    b = _candidate(tmp_path, "b", {"min_scale": 0.6}, {("letter", 0): (0.8, 0.6)})
    with pytest.raises(ValueError, match="share their parameters"):
        bench_advae.select_runs([a, b], "shuffle")


def test_runs_without_the_measurement_are_refused(tmp_path: Path) -> None:
    a = _candidate(tmp_path, "a", {"min_scale": 0.6}, {("letter", 0): (0.9, 0.7)})
    old = json.loads(a.read_text())
    for run in old["runs"]:
        del run["selection"]
    b = tmp_path / "old.json"
    b.write_text(json.dumps({**old, "params": {}}))
    with pytest.raises(ValueError, match="no 'shuffle' measurement"):
        bench_advae.select_runs([a, b], "shuffle")


def test_synthetic_anomalies_keep_the_shape_and_the_columns_values() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    held = rng.normal(size=(40, 8))
    train = rng.normal(size=(100, 8))
    shuffled = bench_advae.synthetic_anomalies("shuffle", held, train, seed=1)
    swapped = bench_advae.synthetic_anomalies("swap", held, train, seed=1)
    box = bench_advae.synthetic_anomalies("box", held, train, seed=1)
    assert shuffled.shape == swapped.shape == box.shape == held.shape
    # A shuffle keeps every column's values and breaks the rows apart.
    assert np.array_equal(np.sort(shuffled, axis=0), np.sort(held, axis=0))
    assert not np.array_equal(shuffled, held)
    # A swap changes two of eight columns per row, at most, and only to values of that column.
    assert ((swapped != held).sum(axis=1) <= 2).all()
    assert all(set(swapped[:, j]) <= set(held[:, j]) for j in range(8))
    assert (box >= train.min(axis=0)).all() and (box <= train.max(axis=0)).all()
