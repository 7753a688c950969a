"""``bench_quality.py``'s choice procedure: mean ranks, leave one data set out, merging runs,
and the committed report reproduced from its committed runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

import bench_quality  # noqa: E402


def _run(family: str, name: str, seed: int, scores: dict[str, tuple[float, float]]) -> dict:
    return {
        "family": family,
        "set": name,
        "seed": seed,
        "scores": {c: {"auroc": a, "auprc": p} for c, (a, p) in scores.items()},
        "fit_seconds": 1.0,
    }


#: A wins two sets, B wins the third by far, C is never best.
RUNS = [
    _run("adbench", "s1", 0, {"A": (0.9, 0.8), "B": (0.8, 0.7), "C": (0.7, 0.6)}),
    _run("adbench", "s2", 0, {"A": (0.9, 0.8), "B": (0.8, 0.7), "C": (0.7, 0.6)}),
    _run("smd", "s3", 0, {"A": (0.6, 0.2), "B": (0.99, 0.9), "C": (0.7, 0.3)}),
]


def test_mean_ranks_average_both_metrics_over_the_sets() -> None:
    sets = bench_quality.per_set(RUNS)
    ranks = bench_quality.mean_ranks(sets, list(sets), ["A", "B", "C"])
    assert ranks == pytest.approx({"A": (1 + 1 + 3) / 3, "B": (2 + 2 + 1) / 3, "C": 3 - 1 / 3})


def test_seeds_are_averaged_before_ranking() -> None:
    runs = [
        _run("adbench", "s1", 0, {"A": (0.9, 0.5), "B": (0.8, 0.6)}),
        _run("adbench", "s1", 1, {"A": (0.7, 0.5), "B": (0.82, 0.6)}),
    ]
    sets = bench_quality.per_set(runs)
    assert sets[("adbench", "s1")]["A"]["auroc"] == pytest.approx(0.8)
    assert bench_quality.mean_ranks(sets, list(sets), ["A", "B"])["B"] == 1.0


def test_leave_one_out_judges_each_set_with_a_choice_made_without_it() -> None:
    sets = bench_quality.per_set(RUNS)
    loo = bench_quality.leave_one_set_out(sets, ["A", "B", "C"])
    # Without s3, A is best, so s3 is judged with A's poor numbers, not B's.
    assert loo[("smd", "s3")] == ("A", {"auroc": 0.6, "auprc": 0.2})
    # Without s1, B's mean rank is 1.5 (2nd on s2, 1st on s3) and A's 2 (C beats it on s3).
    assert loo[("adbench", "s1")] == ("B", {"auroc": 0.8, "auprc": 0.7})


def test_merge_joins_runs_and_refuses_repeats_and_mismatches(tmp_path: Path) -> None:
    def payload(runs: list[dict], params: dict) -> dict:
        return {"runs": runs, "params": params, "command": "x", "wall_seconds": 1.0,
                "seeds": {r["family"]: [r["seed"]] for r in runs}}  # fmt: skip

    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(payload(RUNS[:2], {"epochs": 100})))
    b.write_text(json.dumps(payload(RUNS[2:], {"epochs": 100})))
    merged = bench_quality.merge([a, b])
    assert len(merged["runs"]) == 3 and merged["wall_seconds"] == 2.0
    with pytest.raises(SystemExit, match="more than one"):
        bench_quality.merge([a, a])
    b.write_text(json.dumps(payload(RUNS[2:], {"epochs": 50})))
    with pytest.raises(SystemExit, match="different --param"):
        bench_quality.merge([a, b])


@pytest.mark.parametrize("name", ["quality", "quality_heldout"])
def test_the_committed_report_reproduces_from_its_runs(name: str) -> None:
    payload = json.loads((RESULTS / f"{name}.json").read_text())
    assert bench_quality.format_report(payload) == (RESULTS / f"{name}.md").read_text()


def test_the_held_out_sets_are_split_as_adbench_and_never_run_by_default() -> None:
    from sklearn.datasets import load_wine

    assert bench_quality.parse_args([]).families == list(bench_quality.FAMILIES)
    assert "sklearn" not in bench_quality.FAMILIES
    tasks = list(bench_quality.sklearn_tasks(Path("unused"), [0, 1], quick=False))
    assert len(tasks) == (1 + 3 + 3) * 2
    target = load_wine().target
    for task in (t for t in tasks if t.name.startswith("wine (class 1")):
        normal, rare = int((target != 1).sum()), int((target == 1).sum())
        # BENCHMARKS.md section 2: 60% of the normal rows train; the rest and every anomaly test.
        assert len(task.train) == int(0.6 * normal)
        assert len(task.test) == normal - len(task.train) + rare == len(task.y_test)
        assert task.y_test.sum() == rare
    first, second = (t.train for t in tasks if t.name == "breast_cancer")
    assert not first.equals(second)  # each seed draws its own split
