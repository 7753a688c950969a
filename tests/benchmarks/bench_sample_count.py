"""How ranking quality depends on the latent sample count L: the evidence for the default.

For each set of the adVAE paper's protocol (BENCHMARKS.md section 1) this trains the default
VAE once (seed 0) and scores the test part with L = 1, 2, 4, 8, 16, 64 samples, reporting
AUROC and AP of the ELBO (the default score), the reconstruction probability and the IWAE
bound. Scoring cost grows about linearly with L (the decoder runs L times per record), so the
default L is the smallest one whose quality matches the large ones.

Usage::

    python tests/benchmarks/bench_sample_count.py [--data-dir DIR] [--sets letter,...]
        [--out tests/benchmarks/results/sample_count]
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

import bench_advae  # type: ignore[import-not-found]
import numpy as np
from common import (  # type: ignore[import-not-found]
    command_line,
    package_versions,
    resolve_data_dir,
)
from sklearn.metrics import average_precision_score, roc_auc_score

REPO = Path(__file__).resolve().parents[2]
SAMPLE_COUNTS = (1, 2, 4, 8, 16, 64)
KINDS = ("elbo", "recon_prob", "iwae")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--sets", default=",".join(bench_advae.SETS))
    parser.add_argument("--out", type=Path, default=REPO / "tests/benchmarks/results/sample_count")
    args = parser.parse_args()
    unknown = sorted(set(args.sets.split(",")) - set(bench_advae.SETS))
    if unknown:
        parser.error(f"unknown --sets {unknown}; choose from {', '.join(bench_advae.SETS)}")

    from detector.features.encode import encode
    from detector.nn.training import TrainingConfig, train
    from detector.scoring.scores import ScoreGraph

    data = resolve_data_dir(args.data_dir)
    bench_advae.check_data(data, args.sets.split(","))
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    started = time.perf_counter()
    for name in args.sets.split(","):
        x, y = bench_advae.load_set(bench_advae.set_path(data, name))
        train_rows, test_rows = bench_advae.split(name, y)
        bundle, _ = train(bench_advae.as_frame(x[train_rows]), TrainingConfig(random_state=0))
        values = encode(bundle.schema, bench_advae.as_frame(x[test_rows])).values
        labels = y[test_rows]
        results[name] = {}
        for count in SAMPLE_COUNTS:
            estimates = ScoreGraph(bundle.model, n_samples=count, seed=0)(values)
            results[name][str(count)] = {
                kind: [
                    round(float(roc_auc_score(labels, -estimates[kind])), 4),
                    round(float(average_precision_score(labels, -estimates[kind])), 4),
                ]
                for kind in KINDS
            }
        print(name, json.dumps(results[name]), flush=True)
    write_results(results, args.out, time.perf_counter() - started)
    return 0


def write_results(results: dict[str, Any], out: Path, seconds: float) -> None:
    lines = [
        "# Ranking quality against the latent sample count L",
        "",
        "`python tests/benchmarks/bench_sample_count.py`: the adVAE paper's protocol, default "
        "VAE trained once per set (seed 0), test part scored at each L. AUROC / AP of the ELBO.",
        "",
        "| set | " + " | ".join(f"L={c}" for c in SAMPLE_COUNTS) + " |",
        "|---|" + "---|" * len(SAMPLE_COUNTS),
    ]
    for name, by_count in results.items():
        cells = [
            f"{by_count[str(c)]['elbo'][0]:.3f} / {by_count[str(c)]['elbo'][1]:.3f}"
            for c in SAMPLE_COUNTS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    averages = [
        np.mean([results[n][str(c)]["elbo"][i] for n in results])
        for c in SAMPLE_COUNTS
        for i in (0, 1)
    ]
    cells = [
        f"{averages[2 * j]:.3f} / {averages[2 * j + 1]:.3f}" for j in range(len(SAMPLE_COUNTS))
    ]
    lines.append("| **average** | " + " | ".join(cells) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    payload = {
        "benchmark": "sample_count",
        "command": command_line(),
        "packages": package_versions(),
        "seconds": round(seconds, 1),
        "sample_counts": list(SAMPLE_COUNTS),
        "results": results,
    }
    Path(f"{out}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    raise SystemExit(run(main))
