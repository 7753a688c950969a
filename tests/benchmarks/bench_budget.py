"""The budget of mini-batch updates (``--max-updates``) and a network score: does cutting a long
table's epochs, KL warm-up and patience cost the VAE's own score (``neighbours=0``: ``elbo``)
detection? One labelled table long enough for the default budget to bind, one seed, one
setting; prints one JSON line (epochs run, best epoch, the budget's cut, validation ELBO,
threshold, held-out FPR, fit seconds, and on the test part AUROC, AUPRC, best F1, F1 and FPR at
the threshold).

- ``cover``: ADBench's cover whole (``adbench_classical/10_cover.npz``), 60% of its normal rows
  (a seeded permutation, 169,980 rows, no ``bench_adbench`` MAX_TRAIN cap) train, the other
  normal rows and every anomaly test; the budget cuts 300 epochs to 102 (973 batches an
  epoch), warm-up 10 to 4, patience 20 to 7.
- ``smd``: the 5 SMD machines' training halves as one table of 118,475 rows with a ``machine``
  column (categorical), their test halves as the test part; 300 epochs to 154 (648 batches),
  warm-up 6, patience 11.

``--max-updates 0`` trains with no budget; ``--patience N`` is cut in proportion as any is
(``--patience 58`` keeps 20 on cover, ``--patience 38`` 20 on SMD).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import add_data_dir_argument, import_repo, resolve_data_dir, run

SMD_MACHINES = ("machine-1-2", "machine-1-3", "machine-2-3", "machine-2-4", "machine-3-2")


def cover(data_dir: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    import bench_adbench as ab

    x, y = ab.load_set(ab.set_path(data_dir, "cover"))
    normals = np.random.default_rng(seed).permutation(np.flatnonzero(y == 0))
    n = int(0.6 * len(normals))
    test = np.concatenate([normals[n:], np.flatnonzero(y == 1)])
    columns = [f"x{i}" for i in range(x.shape[1])]
    return (
        pd.DataFrame(x[normals[:n]], columns=columns),
        pd.DataFrame(x[test], columns=columns),
        y[test],
    )


def smd(data_dir: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    parts: dict[str, list[pd.DataFrame]] = {"train": [], "test": []}
    labels = []
    for machine in SMD_MACHINES:
        with np.load(data_dir / "smd" / f"{machine}.npz", allow_pickle=False) as content:
            for part, frames in parts.items():
                values = content[part]
                frame = pd.DataFrame(values, columns=[f"m{i}" for i in range(values.shape[1])])
                frame.insert(0, "machine", machine)
                frames.append(frame)
            labels.append(content["test_label"].astype(int))
    train, test = (pd.concat(parts[p], ignore_index=True) for p in ("train", "test"))
    return train, test, np.concatenate(labels)


SETS = {"cover": cover, "smd": smd}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=tuple(SETS), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-updates", type=int, help="the product's default if not given")
    parser.add_argument("--patience", type=int, help="the product's default if not given")
    add_data_dir_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_repo()
    from bench_quality import detection_metrics

    from detector.estimator import VAEDetector

    train, test, y = SETS[args.set](resolve_data_dir(args.data_dir), args.seed)
    params: dict[str, object] = {"neighbours": 0, "random_state": args.seed}
    if args.set == "smd":
        params["categorical"] = ("machine",)
    for name in ("max_updates", "patience"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    started = time.perf_counter()
    detector = VAEDetector(**params).fit(train)
    fit_seconds = time.perf_counter() - started
    s = detector.summary_
    threshold = detector.bundle_.calibrator.threshold
    found = detection_metrics(y, detector.anomaly_score(test), threshold, series=False)
    facts = {
        "set": args.set,
        "seed": args.seed,
        "max_updates": args.max_updates,
        "patience": args.patience,
        "rows": s.rows,
        "epochs_run": s.epochs_run,
        "best_epoch": s.best_epoch,
        "budget": s.budget,
        "val_elbo": round(-s.val_neg_elbo, 3),
        "threshold": round(threshold, 3),
        "heldout_fpr": round(s.validation_fpr, 4),
        "fit_s": round(fit_seconds, 1),
        "score": detector.bundle_.score_kind,
        **{k: round(v, 4) for k, v in found.items()},
    }
    print(json.dumps(facts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
