"""Seeded generator for a small synthetic server-metrics dataset.

The dataset imitates 15-minute metric samples scraped from a fleet of eight
hosts (five web servers, two API servers, one database).  It is produced
entirely from a seeded random generator; no real data is involved.

Outputs (written to ``--out-dir``, default: the directory of this script):

* ``train.csv`` - 10 days x 8 hosts x 96 samples/day = 7680 rows, normal only.
* ``eval.csv``  - the following 4 days for the same hosts (3072 rows), the
  same process continued in time, with about 5 % of the rows replaced by
  injected anomalies.  Two extra columns, ``label`` and ``anomaly_kind``,
  mark them.
* ``fleet_train.csv`` and ``fleet_eval.csv`` - the same rows with a first
  column ``ts``, each sample's time (ISO-8601, UTC, 15 minutes apart from
  ``FLEET_START``): the metric streams a series model reads
  (``anomaly train data/fleet_train.csv --time-column ts --series-column host``).

The whole 14-day history is simulated in one pass and then split, so the
normal rows of ``eval.csv`` are a genuine continuation of ``train.csv``
(slow memory drift and noise processes carry over the split).

Rows are ordered by time first and host second, i.e. as a scraper would
emit them.  ``hour`` is the host's local hour of day.  See ``README.md`` in
this directory for the meaning of every column and anomaly kind.

Usage::

    python data/generate.py [--seed 7] [--out-dir data]

The same seed always produces byte-identical files.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_SEED = 7
SAMPLES_PER_HOUR = 4  # 15-minute resolution
SAMPLES_PER_DAY = 24 * SAMPLES_PER_HOUR
TRAIN_DAYS = 10
FLEET_START = pd.Timestamp("2026-11-01T00:00:00Z")
EVAL_DAYS = 4

METRIC_COLUMNS: tuple[str, ...] = (
    "req_rate",
    "cpu_pct",
    "mem_pct",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "error_rate",
    "net_in_mbps",
    "net_out_mbps",
    "disk_iops",
)
COLUMNS: tuple[str, ...] = ("host", "region", "hour", *METRIC_COLUMNS)
EVAL_EXTRA_COLUMNS: tuple[str, ...] = ("label", "anomaly_kind")

# Fixed number of decimals per float column.  Formatting every value with a
# fixed precision (instead of relying on float repr) keeps the CSV bytes
# stable and the file small.
DECIMALS: dict[str, int] = {
    "req_rate": 2,
    "cpu_pct": 2,
    "mem_pct": 2,
    "latency_p50_ms": 2,
    "latency_p95_ms": 2,
    "latency_p99_ms": 2,
    "error_rate": 5,  # a fraction around 1e-3, so it needs more digits
    "net_in_mbps": 3,
    "net_out_mbps": 3,
    "disk_iops": 1,
}

NORMAL_KIND = "none"
ANOMALY_KINDS: tuple[str, ...] = (
    "spike",
    "level_shift",
    "broken_correlation",
    "rare_category",
)

# Anomaly budget for eval.csv: 40 + 40 + 36 + 32 = 148 of 3072 rows (4.8 %).
SPIKE_ROWS = 40
LEVEL_SHIFT_BLOCK = 20  # samples per block (5 hours); two blocks
BROKEN_CORRELATION_ROWS = 36
RARE_CATEGORY_BLOCK = 16  # samples per block (4 hours); two blocks
UNSEEN_HOST = "web-99"


@dataclass(frozen=True)
class HostProfile:
    """Static characteristics of one simulated host."""

    name: str
    region: str
    capacity_rps: float  # request rate that corresponds to load == 1
    cpu_idle_pct: float  # background CPU use with no traffic
    mem_level_pct: float  # long-run memory level the drift reverts to
    latency_base_ms: float  # p50 latency of an idle host
    req_kb: float  # mean request payload (drives net_in)
    resp_kb: float  # mean response payload (drives net_out)
    iops_base: float  # background disk IOPS (logging, checkpoints)
    iops_per_req: float  # disk operations caused per request


HOSTS: tuple[HostProfile, ...] = (
    HostProfile("web-01", "us-east", 420.0, 6.0, 42.0, 18.0, 1.8, 38.0, 15.0, 0.25),
    HostProfile("web-02", "us-east", 400.0, 6.0, 44.0, 18.0, 1.8, 38.0, 15.0, 0.25),
    HostProfile("web-03", "us-west", 360.0, 7.0, 40.0, 20.0, 1.9, 42.0, 15.0, 0.25),
    HostProfile("web-04", "us-west", 340.0, 7.0, 46.0, 20.0, 1.9, 42.0, 15.0, 0.25),
    HostProfile("web-05", "eu-west", 300.0, 8.0, 43.0, 22.0, 2.0, 36.0, 15.0, 0.25),
    HostProfile("api-01", "us-east", 260.0, 10.0, 55.0, 12.0, 1.2, 8.0, 25.0, 0.40),
    HostProfile("api-02", "eu-west", 220.0, 10.0, 58.0, 13.0, 1.2, 8.0, 25.0, 0.40),
    HostProfile("db-01", "us-east", 180.0, 12.0, 72.0, 4.0, 3.5, 22.0, 300.0, 7.00),
)

CPU_LOAD_SPAN_PCT = 64.0  # CPU points added by going from load 0 to load 1
MAX_UTILISATION = 0.95  # keeps the queueing term base / (1 - u) finite
KB_PER_S_TO_MBPS = 8.0 / 1000.0


# --------------------------------------------------------------------------
# Normal process
# --------------------------------------------------------------------------


def daily_profile(hour_of_day: FloatArray) -> FloatArray:
    """Relative traffic level for a fractional local hour (about 0.15-0.90).

    The first harmonic alone would put the trough at 03:00 and the peak at
    15:00; a small second harmonic adds a late-morning shoulder (pulling the
    peak to about 14:00) so the curve is not a plain sinusoid.
    """
    angle = 2.0 * np.pi * hour_of_day / 24.0
    first = 0.36 * np.cos(angle - 2.0 * np.pi * 15.0 / 24.0)
    second = 0.06 * np.cos(2.0 * angle - 2.0 * np.pi * 2.0 * 11.0 / 24.0)
    return 0.55 + first + second


def ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> FloatArray:
    """Zero-mean AR(1) series; the first value is drawn from the stationary law.

    Used for noise that should be correlated in time (metrics do not jump
    independently every 15 minutes) and for the slow memory drift.
    """
    shocks = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    out[0] = shocks[0] / np.sqrt(1.0 - phi * phi)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + shocks[i]
    return out


def lognormal_noise(rng: np.random.Generator, n: int, sigma: float) -> FloatArray:
    """Multiplicative noise with median 1."""
    return np.exp(rng.normal(0.0, sigma, n))


def simulate_latencies(
    rng: np.random.Generator, host: HostProfile, cpu_pct: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """p50/p95/p99 latency from CPU utilisation with a queueing-like blow-up.

    p95 and p99 are built as p50 times factors > 1 (which widen with load:
    tails grow faster than the median under contention), so the ordering
    p50 <= p95 <= p99 holds by construction.
    """
    n = cpu_pct.size
    util = np.clip(cpu_pct / 100.0, 0.0, MAX_UTILISATION)
    p50 = host.latency_base_ms / (1.0 - util) * lognormal_noise(rng, n, 0.05)
    p95 = p50 * np.maximum((1.8 + 1.2 * util) * lognormal_noise(rng, n, 0.05), 1.05)
    p99 = p95 * np.maximum((1.35 + 0.8 * util) * lognormal_noise(rng, n, 0.06), 1.02)
    return p50, p95, p99


def simulate_host(rng: np.random.Generator, host: HostProfile, n_samples: int) -> pd.DataFrame:
    """Simulate the full history of one host as a DataFrame (one row/sample)."""
    t = np.arange(n_samples)
    day = t // SAMPLES_PER_DAY
    hour_frac = (t % SAMPLES_PER_DAY) / SAMPLES_PER_HOUR

    # Traffic: daily curve x per-day level x time-correlated noise.
    n_days = int(day[-1]) + 1
    day_level = lognormal_noise(rng, n_days, 0.05)[day]
    req_noise = np.exp(ar1(rng, n_samples, phi=0.6, sigma=0.06))
    req_rate = host.capacity_rps * daily_profile(hour_frac) * day_level * req_noise
    load = req_rate / host.capacity_rps

    cpu_pct = host.cpu_idle_pct + CPU_LOAD_SPAN_PCT * load
    cpu_pct = np.clip(cpu_pct + rng.normal(0.0, 2.0, n_samples), 0.5, 100.0)

    # Memory: slow mean-reverting drift (phi close to 1 -> hours-long swings)
    # plus a small load-dependent part (caches and buffers grow with traffic).
    drift = ar1(rng, n_samples, phi=0.995, sigma=0.35)
    mem_pct = host.mem_level_pct + drift + 6.0 * load
    mem_pct = np.clip(mem_pct + rng.normal(0.0, 0.6, n_samples), 1.0, 99.5)

    p50, p95, p99 = simulate_latencies(rng, host, cpu_pct)

    # Errors: a floor of background failures plus a term that grows with the
    # square of tail latency relative to the host's idle latency (timeouts).
    tail_ratio = p99 / (10.0 * host.latency_base_ms)
    error_noise = lognormal_noise(rng, n_samples, 0.25)
    error_rate = np.clip((0.0004 + 0.0015 * tail_ratio**2) * error_noise, 0.0, 1.0)

    # Network: request rate times payload size (noise = payload variation).
    net_in = req_rate * host.req_kb * KB_PER_S_TO_MBPS
    net_in = net_in * lognormal_noise(rng, n_samples, 0.05)
    net_out = req_rate * host.resp_kb * KB_PER_S_TO_MBPS
    net_out = net_out * lognormal_noise(rng, n_samples, 0.05)

    iops_noise = lognormal_noise(rng, n_samples, 0.08)
    disk_iops = (host.iops_base + host.iops_per_req * req_rate) * iops_noise

    return pd.DataFrame(
        {
            "host": host.name,
            "region": host.region,
            "hour": (t % SAMPLES_PER_DAY) // SAMPLES_PER_HOUR,
            "req_rate": req_rate,
            "cpu_pct": cpu_pct,
            "mem_pct": mem_pct,
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "latency_p99_ms": p99,
            "error_rate": error_rate,
            "net_in_mbps": net_in,
            "net_out_mbps": net_out,
            "disk_iops": disk_iops,
            "_t": t,  # internal sample index, dropped before writing
        }
    )


def simulate_fleet(rng: np.random.Generator, n_samples: int) -> pd.DataFrame:
    """All hosts, ordered by time then host (the order a scraper emits)."""
    frames = [simulate_host(rng, host, n_samples) for host in HOSTS]
    fleet = pd.concat(frames, ignore_index=True)
    host_order = {host.name: i for i, host in enumerate(HOSTS)}
    fleet["_h"] = fleet["host"].map(host_order)
    fleet = fleet.sort_values(["_t", "_h"], kind="stable").reset_index(drop=True)
    return fleet


# --------------------------------------------------------------------------
# Anomaly injection (eval split only)
# --------------------------------------------------------------------------


def host_rows(frame: pd.DataFrame, host_idx: int) -> IntArray:
    """Row positions of one (original) host, in time order."""
    positions = np.flatnonzero(frame["_h"].to_numpy() == host_idx)
    return positions.astype(np.int64)


def pick_free_block(
    rng: np.random.Generator, frame: pd.DataFrame, host_idx: int, length: int
) -> IntArray:
    """A random run of `length` consecutive samples of one host, all still normal."""
    rows = host_rows(frame, host_idx)
    free = frame["anomaly_kind"].to_numpy()[rows] == NORMAL_KIND
    starts = [s for s in range(rows.size - length + 1) if free[s : s + length].all()]
    start = starts[int(rng.integers(len(starts)))]
    return rows[start : start + length]


def pick_free_rows(
    rng: np.random.Generator,
    frame: pd.DataFrame,
    candidates: npt.NDArray[np.bool_],
    k: int,
) -> IntArray:
    """`k` distinct still-normal rows among `candidates`, in ascending order."""
    eligible = np.flatnonzero(candidates & (frame["anomaly_kind"].to_numpy() == NORMAL_KIND))
    return np.sort(rng.choice(eligible, size=k, replace=False)).astype(np.int64)


def mark(frame: pd.DataFrame, rows: IntArray, kind: str) -> None:
    """Label rows as anomalous of the given kind."""
    frame.loc[rows, "label"] = 1
    frame.loc[rows, "anomaly_kind"] = kind


def inject_level_shifts(rng: np.random.Generator, frame: pd.DataFrame) -> None:
    """Two 5-hour blocks: a memory leak on one host, a CPU hog on another.

    Only the shifted metric moves; the rest of the row keeps following
    traffic, which is what a leak or a runaway background job looks like.
    """
    hosts = rng.choice(len(HOSTS), size=2, replace=False)
    shifts = (("mem_pct", 99.5, (22.0, 30.0)), ("cpu_pct", 100.0, (30.0, 38.0)))
    for host_idx, (column, ceiling, (low, high)) in zip(hosts, shifts, strict=True):
        rows = pick_free_block(rng, frame, int(host_idx), LEVEL_SHIFT_BLOCK)
        shift = rng.uniform(low, high)
        shifted = frame.loc[rows, column].to_numpy() + shift
        frame.loc[rows, column] = np.minimum(shifted, ceiling)
        mark(frame, rows, "level_shift")


def inject_rare_categories(rng: np.random.Generator, frame: pd.DataFrame) -> None:
    """A known host with a region it never had, and a host never seen at all.

    Metrics stay untouched, so only the categorical columns give it away.
    """
    web_hosts = [i for i, h in enumerate(HOSTS) if h.name.startswith("web-")]
    mislabeled, renamed = rng.choice(web_hosts, size=2, replace=False)

    rows = pick_free_block(rng, frame, int(mislabeled), RARE_CATEGORY_BLOCK)
    own_region = HOSTS[int(mislabeled)].region
    other_regions = sorted({h.region for h in HOSTS} - {own_region})
    frame.loc[rows, "region"] = other_regions[int(rng.integers(len(other_regions)))]
    mark(frame, rows, "rare_category")

    rows = pick_free_block(rng, frame, int(renamed), RARE_CATEGORY_BLOCK)
    frame.loc[rows, "host"] = UNSEEN_HOST
    mark(frame, rows, "rare_category")


def host_maxima(train: pd.DataFrame, column: str) -> FloatArray:
    """Training maximum of `column` per host, indexed by host position."""
    maxima: FloatArray = train.groupby("_h")[column].max().to_numpy(dtype=np.float64)
    return maxima


def inject_spikes(rng: np.random.Generator, frame: pd.DataFrame, train: pd.DataFrame) -> None:
    """Single-row jumps of one or two metrics far above anything normal.

    Each spiked value is at least 1.5x the host's training maximum, so the
    anomaly is unambiguous.  Only upper tails are spiked, which keeps
    p50 <= p95 <= p99 intact.
    """
    variants: tuple[tuple[tuple[str, float], ...], ...] = (
        (("latency_p99_ms", 6.0),),
        (("error_rate", 20.0),),
        (("latency_p99_ms", 5.0), ("error_rate", 15.0)),
        (("net_out_mbps", 8.0),),
        (("disk_iops", 10.0),),
    )
    maxima = {col: host_maxima(train, col) for variant in variants for col, _ in variant}
    rows = pick_free_rows(rng, frame, np.ones(len(frame), dtype=bool), SPIKE_ROWS)
    choice = rng.integers(len(variants), size=rows.size)
    host_idx = frame.loc[rows, "_h"].to_numpy()
    for row, variant, h in zip(rows, choice, host_idx, strict=True):
        for column, factor in variants[int(variant)]:
            floor = 1.5 * maxima[column][h]
            value = max(float(frame.at[row, column]) * factor, floor)
            frame.at[row, column] = min(value, 1.0) if column == "error_rate" else value
    mark(frame, rows, "spike")


def inject_broken_correlations(
    rng: np.random.Generator, frame: pd.DataFrame, train: pd.DataFrame
) -> None:
    """Single rows whose values are each normal, but not together.

    A metric is overwritten with a value drawn between the host's own
    training 80th-95th percentile ("busy" values) on a quiet row, or between
    its 5th-20th percentile ("idle" values) on a busy row.  Every value stays
    inside the host's training range; only the relation to req_rate/cpu_pct
    is wrong.
    """
    # (columns to overwrite, busy value on a quiet row? else idle value on a busy row)
    variants: tuple[tuple[tuple[str, ...], bool], ...] = (
        (("cpu_pct",), True),  # CPU busy while traffic is low
        (("cpu_pct",), False),  # CPU idle while traffic is high
        (("net_out_mbps",), True),  # outbound traffic with no requests
        (("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"), True),  # slow, idle
    )
    per_variant = BROKEN_CORRELATION_ROWS // len(variants)
    req = frame["req_rate"].to_numpy()
    host_idx = frame["_h"].to_numpy()
    quiet_cut = train.groupby("_h")["req_rate"].quantile(0.25).to_numpy()[host_idx]
    busy_cut = train.groupby("_h")["req_rate"].quantile(0.75).to_numpy()[host_idx]

    for columns, busy_value in variants:
        target = (req < quiet_cut) if busy_value else (req > busy_cut)
        rows = pick_free_rows(rng, frame, target, per_variant)
        low, high = (0.80, 0.95) if busy_value else (0.05, 0.20)
        for row in rows:
            # One quantile for the whole column group keeps p50 <= p95 <= p99.
            q = rng.uniform(low, high)
            h_rows = train["_h"].to_numpy() == host_idx[row]
            for column in columns:
                frame.at[row, column] = float(np.quantile(train.loc[h_rows, column], q))
        mark(frame, rows, "broken_correlation")


def inject_anomalies(
    rng: np.random.Generator, frame: pd.DataFrame, train: pd.DataFrame
) -> pd.DataFrame:
    """Add label columns and inject every anomaly kind into a copy of `frame`.

    Blocks go first so that they can still find long free stretches; the
    single-row kinds then fill in around them without overlapping.
    """
    out = frame.copy()
    out["label"] = 0
    out["anomaly_kind"] = NORMAL_KIND
    inject_level_shifts(rng, out)
    inject_rare_categories(rng, out)
    inject_spikes(rng, out, train)
    inject_broken_correlations(rng, out, train)
    return out


# --------------------------------------------------------------------------
# Assembly and output
# --------------------------------------------------------------------------


def build_datasets(seed: int = DEFAULT_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (train, eval) frames with their public columns only."""
    rng = np.random.default_rng(seed)
    n_train = TRAIN_DAYS * SAMPLES_PER_DAY
    fleet = simulate_fleet(rng, (TRAIN_DAYS + EVAL_DAYS) * SAMPLES_PER_DAY)
    is_train = fleet["_t"].to_numpy() < n_train
    train = fleet[is_train].reset_index(drop=True)
    evaluation = fleet[~is_train].reset_index(drop=True)
    evaluation = inject_anomalies(rng, evaluation, train)
    return train[list(COLUMNS)], evaluation[[*COLUMNS, *EVAL_EXTRA_COLUMNS]]


def with_times(frame: pd.DataFrame, first_sample: int) -> pd.DataFrame:
    """``frame`` with a first column ``ts``: its rows come 8 to a time step (see the module),
    the first step being sample ``first_sample`` after ``FLEET_START``."""
    step = first_sample + np.arange(len(frame)) // len(HOSTS)
    times = FLEET_START + pd.to_timedelta(step * (60 // SAMPLES_PER_HOUR), unit="min")
    return frame.assign(ts=times.strftime("%Y-%m-%dT%H:%M:%SZ"))[["ts", *frame.columns]]


def format_for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """Render float columns with a fixed number of decimals, as strings."""
    out = frame.copy()
    for column, decimals in DECIMALS.items():
        out[column] = [f"{value:.{decimals}f}" for value in frame[column].to_numpy()]
    return out


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write deterministically: fixed decimals, no index, Unix line endings."""
    format_for_csv(frame).to_csv(path, index=False, lineterminator="\n")


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:  # what numpy's generator takes
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 2**32 - 1]")
    return value


def _folder(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError("is empty; name a folder ('.' for this one)")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=_seed, default=DEFAULT_SEED, help="RNG seed (default: 7)")
    parser.add_argument(
        "--out-dir",
        type=_folder,
        default=Path(__file__).resolve().parent,
        help="directory for the CSV files (default: this script's directory)",
    )
    args = parser.parse_args(argv)
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"argument --out-dir: cannot create {args.out_dir}: {exc.strerror}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out_dir: Path = args.out_dir
    train, evaluation = build_datasets(args.seed)
    write_csv(train, out_dir / "train.csv")
    write_csv(evaluation, out_dir / "eval.csv")
    write_csv(with_times(train, 0), out_dir / "fleet_train.csv")
    write_csv(with_times(evaluation, TRAIN_DAYS * SAMPLES_PER_DAY), out_dir / "fleet_eval.csv")
    n_anomalies = int(evaluation["label"].sum())
    print(
        f"seed={args.seed}: wrote {len(train)} train rows and {len(evaluation)} eval rows "
        f"({n_anomalies} anomalous, {n_anomalies / len(evaluation):.1%}) to {out_dir}"
    )


if __name__ == "__main__":
    main()
