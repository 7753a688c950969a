"""``bench_advae.py --paper-training``: the paper's 20,000 updates as epochs on each set, and
``--max-epochs`` as a cap on them that the report names."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# The benchmark scripts import their shared helpers as the top-level module ``common``.
sys.path.insert(0, str(BENCH))

import bench_advae  # noqa: E402


def test_max_epochs_caps_the_papers_epochs_and_its_patience_and_the_report_says_so(
    tmp_path: Path,
) -> None:
    paper = bench_advae.paper_training(1000, {})["epochs"]
    assert paper > 10  # 20,000 updates of batch 128 on about 700 fit rows

    capped = bench_advae.parse_args(["--paper-training", "--max-epochs", "3"])
    params = bench_advae.run_params(capped, "cardio", 1000, "vae")
    assert (params["epochs"], params["patience"]) == (3, 3)
    # A cap, not a count: above the paper's epochs it leaves them (as --param epochs=N, it ran
    # N epochs, past the paper's 20,000 updates, with the paper's patience).
    above = bench_advae.parse_args(["--paper-training", "--max-epochs", str(paper * 2)])
    params = bench_advae.run_params(above, "cardio", 1000, "vae")
    assert (params["epochs"], params["patience"]) == (paper, paper)
    assert above.params == {}

    payload = {
        "params": capped.params,
        "paper_hyperparameters": None,
        "paper_training": {"iterations": 20000, "max_epochs": 3},
        "skipped_models": {},
        "date_utc": "now",
        "models": ["vae"],
        "seeds": [0],
        "total_seconds": 1.0,
        "command": "bench_advae.py --paper-training --max-epochs 3",
    }
    bench_advae.write_outputs(tmp_path / "run", payload, "")
    assert "cut to at most 3 epochs by --max-epochs" in (tmp_path / "run.md").read_text()
    assert bench_advae.candidate_label(payload) == "paper training, at most 3 epochs"


def test_without_paper_training_max_epochs_is_the_epochs_to_run() -> None:
    args = bench_advae.parse_args(["--max-epochs", "3"])
    assert bench_advae.run_params(args, "cardio", 1000, "vae") == {"epochs": 3}
