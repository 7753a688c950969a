"""Batch scoring end to end: rows/s and peak memory for large generated CSV files.

Run: ``python tests/benchmarks/bench_batch.py [--rows 1000000,5000000] [--spark]``.

For each size it generates a seeded CSV of N rows x 38 numeric columns into ``--work-dir``
(never the repository), then runs, each in its own process, one at a time:

- ``anomaly score MODEL FILE --output OUT.csv``: the streaming scorer (wall time of the whole
  command, imports and model load included, and its own rows/s from the ledger);
- a naive baseline in the same run, on the smallest size: ``pd.read_csv`` of the whole file,
  ``score_frame`` on all of it, ``to_csv``, the way one would write it without a batch scorer;
- with ``--spark``, on the smallest size: ``anomaly score --engine spark`` in local mode.

Peak RSS is each command's largest process (``ru_maxrss`` of a wrapper's waited children;
for Spark that is the largest of driver JVM and Python workers, not their sum). A breakdown of
where the streaming scorer's time goes is measured in-process on the first 262,144 rows.
The model is trained once with ``anomaly train`` on 20,000 rows (3 epochs: weights do not
change speed; the default architecture for 38 columns). Results go to
``tests/benchmarks/results/batch.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count, counts  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent

#: Runs a command and prints its wall time and peak RSS (KiB) as JSON on the last line.
MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "wall = time.perf_counter() - start\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "sys.stderr.write(done.stderr[-4000:])\n"
    "print(done.stdout)\n"
    "print(json.dumps({'rc': done.returncode, 'wall_s': wall, 'peak_rss_kib': peak}))\n"
)

NAIVE = """
import sys, time
import pandas as pd
from detector.bundles.bundle import load_bundle
from detector.scoring.scores import score_frame
bundle = load_bundle(sys.argv[1])
start = time.perf_counter()
frame = pd.read_csv(sys.argv[2])
result = score_frame(bundle, frame)
scored = pd.concat([frame.loc[result.rows], result.to_frame()], axis=1)
scored.to_csv(sys.argv[3], index=False)
print(time.perf_counter() - start)
"""


def write_csv(path: Path, rows: int, columns: int, seed: int) -> None:
    """Correlated metric-like columns (4 latent factors + noise), 5 decimals, 100k rows at a
    time so the generator's own memory stays small."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(12345).normal(size=(4, columns))
    names = [f"m{i:02d}" for i in range(columns)]
    with pa_csv.CSVWriter(str(path), pa.schema([(n, pa.float64()) for n in names])) as out:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            values = rng.normal(size=(n, 4)) @ mixing + 0.3 * rng.normal(size=(n, columns))
            values = np.round(values, 5)
            out.write_table(pa.table({name: values[:, j] for j, name in enumerate(names)}))


def measure(argv: list[str]) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    stats = json.loads(lines[-1])
    stats["stdout"] = "\n".join(lines[:-1])
    if stats["rc"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
    return stats


def breakdown(model: Path, path: Path, limit: int = 262_144) -> dict[str, float]:
    """Seconds per stage of the streaming scorer on the first ``limit`` rows of ``path``, each
    stage run one after the other in this thread (the scorer overlaps them in three)."""
    import gc

    from detector.batch.scored_tables import model_frame, scored_rows
    from detector.bundles.bundle import load_bundle
    from detector.features.encode import encode
    from detector.io.sources import open_source
    from detector.io.writers import csv_buffer
    from detector.scoring.scores import score_batch

    bundle = load_bundle(model)
    bundle.graph(np.zeros((8, bundle.schema.n_features), np.float32))
    gc.freeze()
    stages = dict.fromkeys(
        ("read_parse", "to_frame", "encode", "model_and_p_values", "rows_and_top_features",
         "write_csv"),
        0.0,
    )  # fmt: skip
    rows = 0

    def timed(stage: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        stages[stage] += time.perf_counter() - start
        return value

    with open_source(str(path)) as source:
        chunks = source.chunks(65_536)
        while rows < limit:
            chunk = timed("read_parse", next, chunks, None)
            if chunk is None:
                break
            frame = timed("to_frame", model_frame, bundle.schema, chunk.table)
            batch = timed("encode", encode, bundle.schema, frame)
            n = chunk.table.num_rows
            result = timed("model_and_p_values", score_batch, bundle, batch, n_input=n)
            part = timed(
                "rows_and_top_features", scored_rows, bundle, chunk.table, result, top_k=3,
                typed_numbers=False, frame=frame, records=chunk.records,
            )  # fmt: skip
            timed(
                "write_csv", csv_buffer, part.table, leading_text=part.leading_text,
                leading_columns=part.leading_columns,
            )  # fmt: skip
            rows += n
    total = sum(stages.values())
    return {"rows": rows, **{k: v for k, v in stages.items()}, "total": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=counts, default="1000000,5000000", help="file sizes in rows")
    parser.add_argument("--columns", type=count, default=38)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/anomaly-bench-batch"))
    parser.add_argument("--spark", action="store_true", help="also run --engine spark")
    parser.add_argument("--out", type=Path, default=RESULTS / "batch")
    args = parser.parse_args()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    sizes = args.rows
    anomaly = str(BIN / "anomaly")
    load_start = os.getloadavg()

    # Kept between runs, by the columns too: a model of another width would score other files.
    model = work / f"model_{args.columns}"
    if not (model / "manifest.json").exists():
        write_csv(work / "train.csv", 20_000, args.columns, seed=1)
        subprocess.run(
            [anomaly, "train", str(work / "train.csv"), "--out", str(model), "--epochs", "3",
             "--quiet"],
            check=True,
        )  # fmt: skip
    runs = []
    for n in sizes:
        path = work / f"rows_{n}_{args.columns}.csv"
        if not path.exists():
            start = time.perf_counter()
            write_csv(path, n, args.columns, seed=n)
            print(f"generated {path} ({path.stat().st_size / 1e6:,.0f} MB) in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        out = work / f"scored_{n}.csv"
        stats = measure([anomaly, "score", str(model), str(path), "--output", str(out), "--json"])
        ledger = json.loads(stats["stdout"])
        runs.append(
            {
                "engine": "stream",
                "rows": n,
                "input_mb": path.stat().st_size / 1e6,
                "wall_s": stats["wall_s"],
                "rows_per_s_end_to_end": n / stats["wall_s"],
                "rows_per_s_scoring": ledger["rows_per_second"],
                "peak_rss_mb": stats["peak_rss_kib"] / 1024,
                "ledger_ok": ledger["rows_read"] == n == ledger["rows_scored"],
            }
        )
        print(json.dumps(runs[-1]), flush=True)
        out.unlink()
    smallest = min(sizes)
    path = work / f"rows_{smallest}_{args.columns}.csv"
    stats = measure([sys.executable, "-c", NAIVE, str(model), str(path), str(work / "naive.csv")])
    runs.append(
        {
            "engine": "naive pandas (read_csv all, score_frame, to_csv)",
            "rows": smallest,
            "input_mb": path.stat().st_size / 1e6,
            "wall_s": stats["wall_s"],
            "rows_per_s_end_to_end": smallest / stats["wall_s"],
            "rows_per_s_scoring": smallest / float(stats["stdout"].strip().splitlines()[-1]),
            "peak_rss_mb": stats["peak_rss_kib"] / 1024,
            "ledger_ok": None,
        }
    )
    print(json.dumps(runs[-1]), flush=True)
    (work / "naive.csv").unlink()
    if args.spark:
        out = work / "spark_out.csv"
        env_argv = ["env", f"PYSPARK_PYTHON={sys.executable}", "SPARK_LOCAL_IP=127.0.0.1"]
        stats = measure(
            [*env_argv, anomaly, "score", str(model), str(path), "--output", str(out),
             "--engine", "spark", "--json"]
        )  # fmt: skip
        ledger = json.loads(stats["stdout"][stats["stdout"].index("{") :])
        runs.append(
            {
                "engine": "spark local[*]",
                "rows": smallest,
                "input_mb": path.stat().st_size / 1e6,
                "wall_s": stats["wall_s"],
                "rows_per_s_end_to_end": smallest / stats["wall_s"],
                "rows_per_s_scoring": ledger["rows_per_second"],
                "peak_rss_mb": stats["peak_rss_kib"] / 1024,
                "ledger_ok": ledger["rows_read"] == smallest == ledger["rows_scored"],
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    stages = breakdown(model, path)
    print(json.dumps(stages), flush=True)

    from detector.bundles.bundle import load_bundle
    from detector.bundles.format import package_versions

    bundle = load_bundle(model)
    payload = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "packages": package_versions(),
        "columns": args.columns,
        "network": {
            "hidden_units": list(bundle.model.hidden_units),
            "latent_dim": bundle.model.latent_dim,
            "samples": bundle.n_samples,
        },
        "runs": runs,
        "breakdown": stages,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(payload))
    return 0


def _markdown(payload: dict) -> str:  # type: ignore[type-arg]
    m = payload["machine"]
    net = payload["network"]
    lines = [
        "# Batch scoring end to end",
        "",
        f"`{payload['command']}` on {payload['date']}, {m['cpus']} CPUs (load average "
        f"{m['load_average_start'][0]:.1f} at start, {m['load_average_end'][0]:.1f} at end: "
        "the machine is shared), scored with the bundle's LiteRT graph (ai-edge-litert "
        f"{payload['packages'].get('ai-edge-litert', '?')}). {payload['columns']} numeric "
        "columns; network "
        f"{net['hidden_units']}, latent {net['latent_dim']}, L = {net['samples']}.",
        "",
        "End to end = the whole command's wall time (imports and model load included); "
        "scoring = the run's own rows/s. Peak RSS is the largest single process. Spark reads "
        "a CSV file as one task (quoted "
        "fields may hold newlines), so one file keeps one core busy; it pays off on "
        "directories of many files and on clusters.",
        "",
        "| engine | rows | input MB | wall s | rows/s end to end | rows/s scoring | peak RSS MB "
        "| every row accounted for |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["runs"]:
        ok = "-" if r["ledger_ok"] is None else ("yes" if r["ledger_ok"] else "NO")
        lines.append(
            f"| {r['engine']} | {r['rows']:,} | {r['input_mb']:,.0f} | {r['wall_s']:.1f} "
            f"| {r['rows_per_s_end_to_end']:,.0f} | {r['rows_per_s_scoring']:,.0f} "
            f"| {r['peak_rss_mb']:,.0f} | {ok} |"
        )
    b = payload["breakdown"]
    lines += [
        "",
        f"Where the streaming scorer's time goes ({b['rows']:,} rows, in-process, seconds "
        "and share):",
        "",
        "| stage | s | share |",
        "|---|---|---|",
    ]
    for stage, seconds in b.items():
        if stage in ("rows", "total"):
            continue
        lines.append(f"| {stage} | {seconds:.2f} | {seconds / b['total']:.0%} |")
    lines.append(f"| total | {b['total']:.2f} | {b['rows'] / b['total']:,.0f} rows/s |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
