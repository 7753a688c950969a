"""A text column of many labels (a merchant of 2,000, Zipf-like) against the same table with it
left out (``--ignore-column``, what a user had to do before such a column trained): the
default model's detection on a generated card-payments table, one seed; prints one JSON line
(fit seconds, held-out FPR, AUROC and AUPRC over all anomalies, AUROC of each kind).

The table: each merchant belongs to one of 20 kinds of business; a row's 9 other numbers are
drawn about its kind's centre (unit spread) and its ``amount`` log-normal about its kind's
median (medians e^2 to e^7). The merchant is drawn with weight 1 / rank^1.1: the 200 most
frequent hold 80% of rows, the other 1,800 the rest. Training: ``--rows`` normal rows;
test: 10,000 normal rows and two kinds of anomaly, 250 each:

- ``wrong_merchant``: a normal row's numbers with a merchant of another kind (drawn by the
  same weights): nothing but the merchant tells it, so without the column it is a normal row;
- ``rare_huge``: a merchant outside the 200 most frequent (the less frequent half, of fewer than
  400), with 30 times its kind's amount.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd
from common import count, import_repo, run

LABELS = 2_000
KINDS = 20
NUMBERS = 9
TEST_NORMAL = 10_000
EACH_ANOMALY = 250
KEPT = 200  # MAX_CATEGORIES: the labels with a slot each


def table(
    rows: int, seed: int, labels: int = LABELS
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Training rows, test rows, their labels (1 = anomaly) and each test row's kind of
    anomaly ('' for a normal row)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, labels + 1) ** 1.1
    weights /= weights.sum()
    kind_of = rng.integers(KINDS, size=labels)
    centres = rng.normal(0.0, 1.5, (KINDS, NUMBERS))
    medians = np.exp(rng.uniform(2.0, 7.0, KINDS))

    def rows_of(merchants: np.ndarray, kinds: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(
            centres[kinds] + rng.normal(size=(len(kinds), NUMBERS)),
            columns=[f"x{j}" for j in range(NUMBERS)],
        )
        frame.insert(0, "amount", medians[kinds] * rng.lognormal(0.0, 0.5, len(kinds)))
        frame["merchant"] = [f"merchant-{m:04d}" for m in merchants]
        return frame

    def normal(n: int) -> pd.DataFrame:
        merchants = rng.choice(labels, size=n, p=weights)
        return rows_of(merchants, kind_of[merchants])

    train, test = normal(rows), normal(TEST_NORMAL)
    # A normal row's numbers, a merchant of another kind.
    wrong = normal(EACH_ANOMALY)
    own = kind_of[[int(m.split("-")[1]) for m in wrong["merchant"]]]
    others = [
        rng.choice(np.flatnonzero(kind_of != k), p=_renormed(weights, kind_of != k)) for k in own
    ]
    wrong["merchant"] = [f"merchant-{m:04d}" for m in others]
    # A rare merchant with 30 times its kind's amount.
    rare = rng.integers(min(KEPT, labels // 2), labels, size=EACH_ANOMALY)
    huge = rows_of(rare, kind_of[rare])
    huge["amount"] *= 30.0
    tested = pd.concat([test, wrong, huge], ignore_index=True)
    y = np.r_[np.zeros(TEST_NORMAL), np.ones(2 * EACH_ANOMALY)].astype(int)
    kinds = np.array(
        [""] * TEST_NORMAL + ["wrong_merchant"] * EACH_ANOMALY + ["rare_huge"] * EACH_ANOMALY
    )
    return train, tested, y, kinds


def _renormed(weights: np.ndarray, keep: np.ndarray) -> np.ndarray:
    kept = weights[keep]
    return kept / kept.sum()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=count, default=50_000, help="normal training rows")
    parser.add_argument(
        "--labels", type=count, default=LABELS, help="merchants (the rare ones: past 200)"
    )
    parser.add_argument(
        "--ignore-merchant", action="store_true", help="leave the merchant column out"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_repo()
    from sklearn.metrics import average_precision_score, roc_auc_score

    from detector.estimator import VAEDetector

    train, test, y, kinds = table(args.rows, args.seed, args.labels)
    if args.ignore_merchant:
        train, test = train.drop(columns="merchant"), test.drop(columns="merchant")
    started = time.perf_counter()
    detector = VAEDetector(random_state=args.seed).fit(train)
    fit_seconds = time.perf_counter() - started
    scores = detector.anomaly_score(test)
    normal = kinds == ""
    facts = {
        "seed": args.seed,
        "rows": args.rows,
        "labels": args.labels,
        "merchant": not args.ignore_merchant,
        "features": detector.bundle_.schema.n_features,
        "rare_labels": list(detector.summary_.rare_labels),
        "epochs_run": detector.summary_.epochs_run,
        "heldout_fpr": round(detector.summary_.validation_fpr, 4),
        "fit_s": round(fit_seconds, 1),
        "auroc": round(float(roc_auc_score(y, scores)), 4),
        "auprc": round(float(average_precision_score(y, scores)), 4),
        **{
            f"auroc_{kind}": round(
                float(roc_auc_score(y[normal | (kinds == kind)], scores[normal | (kinds == kind)])),
                4,
            )
            for kind in ("wrong_merchant", "rare_huge")
        },
    }
    print(json.dumps(facts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
