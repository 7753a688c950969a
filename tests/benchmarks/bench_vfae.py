"""VFAE on real data: several SMD machines (or ASD entities) pooled into one table, the machine
as the nuisance.

A fleet's hosts differ in their normal levels; a model over the pooled table can judge a row
against its own host (``--model cvae --context machine``), against every host while its codes
forget the host (``--model vfae --nuisance-column machine``), or with the host as one more
column (the plain VAE, ``machine`` categorical). For each, this reports:

- how well the latent codes tell the machine apart: the 3-fold accuracy of a logistic
  regression predicting the machine from the posterior means of 3,000 training rows (chance is
  the largest machine's share), the invariance VFAE is for;
- detection on each machine's labelled test period, point-wise AUROC and AUPRC of the model's
  own score (``elbo``), averaged over the machines.

Usage::

    python tests/benchmarks/bench_vfae.py [--data-dir DIR] [--set smd|asd] [--machines a,b,c]
        [--epochs 30] [--out tests/benchmarks/results/vfae]
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

import numpy as np
import pandas as pd
from bench_servers import as_frame, find_machines, load_machine  # type: ignore[import-not-found]
from common import command_line, resolve_data_dir  # type: ignore[import-not-found]
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import cross_val_score

REPO = Path(__file__).resolve().parents[2]
#: The machines pooled by default, per set.
MACHINES = {
    "smd": ("machine-1-2", "machine-2-3", "machine-3-2"),
    "asd": ("omi-1", "omi-2", "omi-3"),
}
#: (label, VAEDetector parameters): the ways to model the pooled table.
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("vae, machine a column", {"categorical": ("machine",), "neighbours": 0}),
    ("cvae, context machine", {"model": "cvae", "context": ("machine",)}),
    ("vfae, mmd_weight 10", {"model": "vfae", "nuisance_column": "machine"}),
    ("vfae, mmd_weight 50", {"model": "vfae", "nuisance_column": "machine", "mmd_weight": 50.0}),
    ("vfae, mmd_weight 200", {"model": "vfae", "nuisance_column": "machine", "mmd_weight": 200.0}),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--set", choices=sorted(MACHINES), default="smd")
    parser.add_argument("--machines", help="comma-separated (default: the set's three)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "tests/benchmarks/results/vfae")
    args = parser.parse_args()

    from detector.estimator import VAEDetector
    from detector.features.encode import encode

    names = args.machines.split(",") if args.machines else list(MACHINES[args.set])
    machines = find_machines(resolve_data_dir(args.data_dir), [args.set], names)
    train_parts, tests = [], {}
    for machine in machines:
        train, test, labels = load_machine(machine.path)
        train_parts.append(as_frame(train).assign(machine=machine.name))
        tests[machine.name] = (as_frame(test).assign(machine=machine.name), labels)
    pooled = pd.concat(train_parts, ignore_index=True)
    sample = pooled.sample(3000, random_state=0)
    chance = float(sample["machine"].value_counts(normalize=True).max())

    rows = []
    started = time.perf_counter()
    for label, params in VARIANTS:
        detector = VAEDetector(epochs=args.epochs, random_state=0, **params).fit(pooled)
        bundle = detector.bundle_
        codes = np.asarray(bundle.model.encode(encode(bundle.schema, sample).values)[0])
        accuracy = cross_val_score(
            LogisticRegression(max_iter=1000), codes, sample["machine"], cv=3
        ).mean()
        auroc, auprc = [], []
        for frame, labels in tests.values():
            scores = detector.anomaly_score(frame)
            auroc.append(roc_auc_score(labels, scores))
            auprc.append(average_precision_score(labels, scores))
        rows.append(
            {
                "variant": label,
                "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
                "machine_accuracy": float(accuracy),
                "auroc": float(np.mean(auroc)),
                "auprc": float(np.mean(auprc)),
            }
        )
        print(f"{label:24s} accuracy {accuracy:.3f}  AUROC {rows[-1]['auroc']:.3f}", flush=True)

    payload = {
        "command": command_line(),
        "machines": [m.name for m in machines],
        "epochs": args.epochs,
        "chance": chance,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        f"# VFAE: codes invariant to the machine, {args.set.upper()} machines pooled",
        "",
        f"`{payload['command']}`; machines {', '.join(payload['machines'])}; "
        f"{args.epochs} epochs, seed 0; {payload['minutes']} min on 2 CPUs.",
        "",
        f"Machine accuracy from the codes: 3-fold logistic regression on 3,000 training rows "
        f"(chance {chance:.3f}). AUROC / AUPRC: point-wise on each machine's test period, "
        "mean over the machines, the model's own score.",
        "",
        "| model | machine accuracy from the codes | AUROC / AUPRC |",
        "|---|---|---|",
        *(
            f"| {r['variant']} | {r['machine_accuracy']:.3f} | {r['auroc']:.3f} / "
            f"{r['auprc']:.3f} |"
            for r in rows
        ),
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
