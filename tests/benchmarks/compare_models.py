"""Which model wins where: every ``--model``'s scores side by side, from the quality runs of
``bench_quality.py`` (one per model, the same splits and seeds), ranked within each family.

A row is a model and one of its scores; ``own`` marks the score the model uses with no
``--score``. Per family: mean AUROC / AUPRC, and for the ``own`` rows the mean rank among them
(1 = best; AUROC and AUPRC on every set, mean over seeds first). A model *wins* a family where
its own score has the best mean rank there; the product's default (``knn``) and the peers are
shown beside the models, outside the ranking, since the question is which network to keep.

Usage::

    python tests/benchmarks/compare_models.py [--out tests/benchmarks/results/models]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality import FAMILIES, fmt, mean_ranks, per_set  # type: ignore[import-not-found]

RESULTS = Path(__file__).resolve().parent / "results"
#: (model, its quality run, the rows to take: (label, candidate in that run)).
ROWS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("vae", "quality", (("elbo (own)", "elbo"), ("iwae", "iwae"))),
    ("iwae", "quality_iwae", (("iwae (own)", "default"), ("elbo", "elbo"))),
    ("lsvae", "quality_lsvae", (("elbo (own)", "default"),)),
    ("fae", "quality_fae", (("elbo (own)", "default"),)),
    (
        "vae-svdd",
        "quality_vae-svdd",
        (("elbo (own)", "default"), ("svdd_distance", "svdd_distance")),
    ),
    ("advae", "quality_advae", (("elbo (own)", "default"), ("recon_error", "recon_error"))),
    (
        "vae-gan",
        "quality_vae-gan",
        (
            ("elbo (own)", "default"),
            ("feature_error", "feature_error"),
            ("discriminator", "discriminator"),
            ("elbo+feature_error", "elbo+feature_error"),
            ("elbo+discriminator", "elbo+discriminator"),
        ),
    ),
)
#: Measured, then removed from the registry (tests/benchmarks/README.md says why): shown,
#: not ranked.
RETIRED = ("vae-gan",)
#: Shown beside the ranking, from the default model's run.
REFERENCES = (
    ("default (knn)", "default"),
    ("kNN (k=5)", "kNN (k=5)"),
    ("IsolationForest", "IsolationForest"),
)


def load_rows(results: Path) -> dict[str, dict[tuple[str, str], dict[str, dict[str, float]]]]:
    """row label -> (family, set) -> metrics, for every model row whose run exists."""
    rows: dict[str, Any] = {}
    for model, run, taken in ROWS:
        path = results / f"{run}.json"
        if not path.exists():
            continue
        sets = per_set(json.loads(path.read_text())["runs"])
        for label, candidate in taken:
            rows[f"{model}: {label}"] = {key: names[candidate] for key, names in sets.items()}
    return rows


def report(results: Path) -> str:
    rows = load_rows(results)
    names = list(rows)
    # Every set that every model ran (a model whose run is missing is left out above).
    keys = sorted(set.intersection(*(set(r) for r in rows.values())))
    table = {key: {name: rows[name][key] for name in names} for key in keys}
    families = [f for f in FAMILIES if any(k[0] == f for k in keys)]
    reference = per_set(json.loads((results / "quality.json").read_text())["runs"])
    lines = [
        "# Which model wins where",
        "",
        "Reproduce: `python tests/benchmarks/compare_models.py` (reads the committed "
        "`quality*.json` runs; each run's reproduce command is in its `.md`).",
        "",
        "Mean AUROC / AUPRC per family and, in brackets for each model's own score (what "
        "`anomaly train --model NAME` scores with), its mean rank among the models within the "
        "family (1 = best; AUROC and AUPRC on every set, seeds averaged first). **Bold**: the "
        "best rank of the family. The models' other scores are shown unranked.",
        "",
        "| model: score | " + " | ".join(families) + " |",
        "|---|" + "---|" * len(families),
    ]
    # Ranked: each model with its own score, the way `anomaly train --model NAME` scores.
    ranked = [n for n in names if n.endswith("(own)") and n.split(":")[0] not in RETIRED]
    ranks = {f: mean_ranks(table, [k for k in keys if k[0] == f], ranked) for f in families}
    best = {f: min(ranks[f].values()) for f in families}
    for name in names:
        cells = []
        for family in families:
            fam_keys = [k for k in keys if k[0] == family]
            auroc = np.mean([table[k][name]["auroc"] for k in fam_keys])
            auprc = np.mean([table[k][name]["auprc"] for k in fam_keys])
            cell = f"{fmt(auroc)} / {fmt(auprc)}"
            if name in ranked:
                rank = f"{ranks[family][name]:.1f}"
                rank = f"**{rank}**" if ranks[family][name] == best[family] else rank
                cell += f" ({rank})"
            cells.append(cell)
        retired = " (retired)" if name.split(":")[0] in RETIRED else ""
        lines.append(f"| {name}{retired} | " + " | ".join(cells) + " |")
    for label, candidate in REFERENCES:
        cells = []
        for family in families:
            fam_keys = [k for k in keys if k[0] == family]
            auroc = np.mean([reference[k][candidate]["auroc"] for k in fam_keys])
            auprc = np.mean([reference[k][candidate]["auprc"] for k in fam_keys])
            cells.append(f"{fmt(auroc)} / {fmt(auprc)}")
        lines.append(f"| *{label}* | " + " | ".join(cells) + " |")
    winners = {f: [n for n in ranked if ranks[f][n] == best[f]] for f in families}
    lines += [
        "",
        "Best rank per family: "
        + "; ".join(f"{f}: {', '.join(w)}" for f, w in winners.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "models")
    args = parser.parse_args(argv)
    text = report(RESULTS)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
