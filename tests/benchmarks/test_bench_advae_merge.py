"""``bench_advae.py --merge``: runs made side by side join into the report one run would give,
and runs that do not fit together are refused with the reason."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
# The benchmark scripts import their shared helpers as the top-level module ``common``.
sys.path.insert(0, str(BENCH))

import bench_advae  # noqa: E402

HALVES = [RESULTS / f"advae_paper_training_min_scale0.6_{part}.json" for part in "ab"]


def _write(path: Path, payload: dict) -> Path:
    path.write_text(json.dumps(payload))
    return path


def test_merging_the_committed_halves_gives_the_committed_report() -> None:
    merged = bench_advae.merge_runs(HALVES)
    committed = json.loads((RESULTS / "advae_paper_training_min_scale0.6.json").read_text())
    assert merged["sets"] == list(bench_advae.SETS)
    assert merged["seeds"] == [0, 1, 2]
    assert json.loads(json.dumps(merged["summary"])) == committed["summary"]


def test_a_run_repeated_is_refused() -> None:
    with pytest.raises(ValueError, match="more than one run"):
        bench_advae.merge_runs([HALVES[0], HALVES[0], HALVES[1]])


def test_runs_with_different_params_are_refused(tmp_path: Path) -> None:
    other = json.loads(HALVES[1].read_text())
    other["params"] = {**other["params"], "min_scale": 0.8}
    with pytest.raises(ValueError, match="differ in params"):
        bench_advae.merge_runs([HALVES[0], _write(tmp_path / "b.json", other)])


def test_a_missing_seed_is_refused(tmp_path: Path) -> None:
    other = json.loads(HALVES[1].read_text())
    other["runs"] = [r for r in other["runs"] if not (r["set"] == "cardio" and r["seed"] == 2)]
    with pytest.raises(ValueError, match=r"leave out .*'cardio', 2"):
        bench_advae.merge_runs([HALVES[0], _write(tmp_path / "b.json", other)])
