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


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (epochs, rows), refused as a usage
    error rather than a traceback after the data has loaded."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def counts(text: str) -> list[int]:
    """An argparse type: comma-separated whole numbers of at least 1 (file sizes, sample
    counts)."""
    return [count(part.strip()) for part in text.split(",")]


def seconds(text: str) -> float:
    """An argparse type: a duration above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0 seconds")
    return value


def run(main: Any) -> int:
    """``main()``, with what a user can fix told in one line and exit 2, as the CLI tells it:
    a setting training refuses (``--param epochs=0``), a file to merge that is missing or is
    not JSON."""
    import json

    from detector.errors import InputError

    try:
        return int(main())
    except (InputError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


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
    from detector.bundles.format import package_versions as versions

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


#: What ``--models`` means unless a benchmark says otherwise.
MODELS_HELP = (
    "comma-separated model names (default: every registered model that needs no context columns)"
)


def add_run_arguments(
    parser: argparse.ArgumentParser,
    sets: tuple[str, ...],
    default_out: Path,
    models_help: str = MODELS_HELP,
) -> None:
    """The options every detection benchmark takes: data root, sets, seeds, models, detector
    parameters, an epoch cap and the output path. ``finish_run_arguments`` checks them."""
    add_data_dir_argument(parser)
    parser.add_argument("--sets", default=",".join(sets), help="comma-separated set names")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated integer seeds")
    parser.add_argument("--models", help=models_help)
    add_param_arguments(parser)
    parser.add_argument("--out", default=str(default_out), help="output path without suffix")


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help=f"data root (else ${DATA_ENV}, else ../shared/data)")


def add_param_arguments(parser: argparse.ArgumentParser) -> None:
    """``--param KEY=VALUE`` (repeatable) and ``--max-epochs N``."""
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        type=parse_param,
        metavar="KEY=VALUE",
        help="a VAEDetector keyword argument for every model (repeatable)",
    )
    parser.add_argument("--max-epochs", type=count, help="shorthand for --param epochs=N")


def finish_run_arguments(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    sets: tuple[str, ...],
    *,
    model_param: bool = False,
) -> None:
    """Check and normalise ``add_run_arguments``' options in place: ``sets`` in the table's
    order (names matched case-insensitively), ``seeds`` as ints, ``models`` as a list without
    repeats (or ``None``), ``params`` as a dict with ``--max-epochs`` folded in. ``--param
    model=NAME`` is an error unless ``model_param`` allows it."""
    by_lower = {s.lower(): s for s in sets}
    wanted = parse_list(args.sets)
    unknown = [s for s in wanted if s.lower() not in by_lower]
    if unknown or not wanted:
        parser.error(f"unknown set(s) {unknown}; choose from {','.join(sets)}")
    chosen = {by_lower[s.lower()] for s in wanted}
    args.sets = [s for s in sets if s in chosen]
    args.seeds = parse_seeds(parser, args.seeds)
    # dict.fromkeys drops repeats and keeps the order given.
    args.models = None if args.models is None else list(dict.fromkeys(parse_list(args.models)))
    args.params = dict(args.param)
    reserved = ("random_state",) if model_param else ("random_state", "model")
    for key in reserved:
        if key in args.params:
            parser.error(f"{key} comes from --seeds/--models; do not pass it with --param")
    if args.max_epochs is not None:
        if "epochs" in args.params:
            parser.error("give --max-epochs or --param epochs=..., not both")
        args.params["epochs"] = args.max_epochs


def check_params(params: dict[str, Any]) -> None:
    """Reject unknown VAEDetector keyword arguments before any training starts."""
    from detector.estimator import VAEDetector

    unknown = sorted(set(params) - set(VAEDetector().get_params()))
    if unknown:
        raise SystemExit(f"error: unknown --param name(s) {unknown}")


#: Models that need context columns (the conditional VAE); the tabular and server sets have
#: none, so a benchmark over them skips these and says so.
NEEDS_CONTEXT = ("cvae",)
#: Models that read a series window (the temporal encoder): skipped unless the run's
#: parameters name a time column (``--param time_column=...``).
NEEDS_SERIES = ("conv-vae",)


def choose_models(
    requested: list[str] | None, params: dict[str, Any] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The registered models to run and the skipped ones with the reason.

    ``None`` means every registered model that can run on plain columns (and on series
    windows where ``params`` give a ``time_column``). An unregistered name is an error naming
    the registered ones."""
    from detector.nn.models import MODELS

    names = list(MODELS) if requested is None else requested
    unknown = [m for m in names if m not in MODELS and m not in NEEDS_CONTEXT]
    if unknown:
        raise SystemExit(f"error: unknown model(s) {unknown}; registered: {sorted(MODELS)}")
    skipped = {}
    run = []
    for name in names:
        if name in NEEDS_CONTEXT:
            skipped[name] = "needs context columns; these sets have none"
        elif name in NEEDS_SERIES and not (params or {}).get("time_column"):
            skipped[name] = "reads a series window; these rows have no --param time_column"
        elif name not in MODELS:
            skipped[name] = "not registered in detector.nn.models.MODELS"
        else:
            run.append(name)
    if not run:
        raise SystemExit(f"error: no model left to run (skipped: {skipped})")
    return run, skipped


# ---- statistics -------------------------------------------------------------------------------


def as_frame(x: np.ndarray) -> Any:
    """A benchmark's array as the table the detector takes, columns x0, x1, ..."""
    import pandas as pd

    return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])


TRAINING_FACTS = (
    "rows", "fit_rows", "n_features", "hidden_units", "latent_dim", "epochs_run", "best_epoch",
    "stopped_early", "val_neg_elbo", "active_latent_units", "seconds", "warnings",
)  # fmt: skip


def training_facts(summary: Any, *extra: str) -> dict[str, Any]:
    """The TrainingSummary fields worth comparing across runs, and a benchmark's ``extra``
    ones (the epoch history is left out: it is large, and the best epoch's loss says what
    matters)."""
    facts = {k: getattr(summary, k) for k in (*TRAINING_FACTS, *extra)}
    facts["hidden_units"] = list(facts["hidden_units"])
    facts["warnings"] = list(facts["warnings"])
    return facts


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
