"""What the detection benchmarks share: the data root, command-line parsing, provenance,
summary statistics and the AUROC bar chart.

The benchmark scripts run as ``python tests/benchmarks/<script>.py``, so this folder is
``sys.path[0]`` and they import this module as ``common``. Nothing here imports TensorFlow at
module level: ``--help`` and a missing-data error answer before it loads.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tests" / "benchmarks" / "results"
DATA_ENV = "ANOMALY_BENCH_DATA"


# ---- data and paths ---------------------------------------------------------------------------


def resolve_data_dir(option: str | None) -> Path:
    """The data root: the option, else the environment variable, else ../shared/data."""
    if option:
        return Path(option).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return REPO.parent / "shared" / "data"


def missing_data(paths: list[Path], layout: str) -> None:
    """Exit with one readable message naming every missing file (no traceback); ``layout``
    says what the data root must hold."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(
            "error: benchmark data not found:\n  "
            + "\n  ".join(missing)
            + f"\ngive the data root with --data-dir DIR or ${DATA_ENV} (it must hold "
            f"{layout}; see shared/data/README.md)"
        )


def import_repo() -> None:
    """Make the ``detector`` package importable: run as a script, ``sys.path[0]`` is this
    folder and the package lives at the repository root."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def with_suffix(out: Path, suffix: str) -> Path:
    # Appended, not Path.with_suffix, which would turn "advae_ms0.1" into "advae_ms0.json".
    return out.with_name(out.name + suffix)


# ---- provenance -------------------------------------------------------------------------------


def package_versions() -> dict[str, str]:
    from detector.bundle import package_versions as versions

    return versions()


def command_line() -> str:
    return shlex.join(["python", *sys.argv])


def progress(message: str) -> None:
    # Progress goes to stderr so stdout carries only the tables.
    print(message, file=sys.stderr, flush=True)


# ---- command line -----------------------------------------------------------------------------


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, Python literal if it parses as one, else the string):
    ``min_scale=0.1`` -> 0.1, ``hidden_units=(64,32)`` -> (64, 32), ``activation=elu`` -> 'elu'."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param expects key=value, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_seeds(parser: argparse.ArgumentParser, text: str) -> list[int]:
    try:
        return [int(s) for s in parse_list(text)]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {text!r}")


def check_params(params: dict[str, Any]) -> None:
    """Reject unknown VAEDetector keyword arguments before any training starts."""
    from detector.estimator import VAEDetector

    unknown = sorted(set(params) - set(VAEDetector().get_params()))
    if unknown:
        raise SystemExit(f"error: unknown --param name(s) {unknown}")


#: Models that need context columns (the conditional VAE); the tabular and server sets have
#: none, so a benchmark over them skips these and says so.
NEEDS_CONTEXT = ("cvae",)


def choose_models(requested: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The registered models to run and the skipped ones with the reason.

    ``None`` means every registered model that can run on plain columns. An unregistered
    name is an error naming the registered ones."""
    from detector.models import MODELS

    names = list(MODELS) if requested is None else requested
    unknown = [m for m in names if m not in MODELS and m not in NEEDS_CONTEXT]
    if unknown:
        raise SystemExit(f"error: unknown model(s) {unknown}; registered: {sorted(MODELS)}")
    skipped = {}
    run = []
    for name in names:
        if name in NEEDS_CONTEXT:
            skipped[name] = "needs context columns; these sets have none"
        elif name not in MODELS:
            skipped[name] = "not registered in detector.models.MODELS"
        else:
            run.append(name)
    if not run:
        raise SystemExit(f"error: no model left to run (skipped: {skipped})")
    return run, skipped


# ---- statistics -------------------------------------------------------------------------------


def mean_std(values: Any) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single seed)."""
    values = np.asarray(values, dtype=np.float64)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


# ---- plot -------------------------------------------------------------------------------------


def plot_grouped_bars(
    path: Path,
    groups: list[str],
    series: dict[str, list[float]],
    *,
    errors: dict[str, list[float]] | None = None,
    title: str,
    ylabel: str = "AUROC",
) -> None:
    """A PNG of grouped bars: one group per set (or machine), one bar per series; a series
    value of NaN draws no bar. ``errors`` (same shape) draws ±1 std whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    width = 0.8 / max(n, 1)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.3 * len(groups) * max(n, 2) + 3.5), 4.2))
    finite = []
    for i, (label, values) in enumerate(series.items()):
        heights = np.asarray(values, dtype=np.float64)
        yerr = None if errors is None or label not in errors else errors[label]
        ax.bar(x + (i - (n - 1) / 2) * width, heights, width, label=label, yerr=yerr, capsize=2)
        finite.extend(heights[np.isfinite(heights)])
    low = min(finite, default=0.5)
    ax.set_ylim(max(0.0, np.floor((low - 0.05) * 10) / 10), 1.0)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 5 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    # Outside the axes, so no bar hides behind it.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
