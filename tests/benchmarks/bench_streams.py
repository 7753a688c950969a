"""Metric streams at speed: what a series model costs online and in batch.

Run: ``python tests/benchmarks/bench_streams.py [--requests 2000] [--rows 1000000]
[--keys 1000] [--state-keys 100000]``. Measures, in one run:

- **HTTP streaming latency**: ``anomaly serve`` (gunicorn, 2 workers, the shared SQLite state)
  with a series model trained on ``data/fleet_train.csv``; the records of
  ``data/fleet_eval.csv`` posted one per request, one at a time, in time order: median and p99;
- **state with many keys**: ``SeriesStore`` filled with ``--state-keys`` series (1,000 records a
  call) and a full level each (a score in each of the last 25 hours), then one-record calls at
  that size (the rows and the level, two transactions): the file's size, the process's peak
  RSS, and the time of one call;
- **batch**: ``anomaly score`` on a generated ``--rows``-row file of ``--keys`` hosts (a row a
  minute per host, in time order), whole command wall time, rows/s and peak RSS of the
  process, and whether every row is accounted for;
- **a wide stream**: the HTTP latency and the batch again with ``--wide`` metrics a row (38, as
  SMD's machines have), where a record's score makes one search per metric (``--column-window``).

Results go to ``tests/benchmarks/results/streams.{json,md}``. The load generator and the server
share the machine's cores.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import free_port, post  # type: ignore[import-not-found]
from common import count, counts  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
METRICS = ["cpu", "mem", "net", "disk"]
#: The wide stream's hosts, and the minutes of each that train its model.
WIDE_HOSTS, WIDE_TRAIN_MINUTES = 4, 2500


def train(data: Path, out: Path, epochs: int) -> None:
    subprocess.run(
        [str(BIN / "anomaly"), "train", str(data), "--out", str(out), "--time-column", "ts",
         "--series-column", "host", "--epochs", str(epochs)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def serve(model: Path, port: int, work: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {"ANOMALY_ALERT_LOG": "false", "ANOMALY_SERIES_STATE": str(work / "series.sqlite")}
    log = (work / "server.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "anomaly"), "serve", "--model", f"fleet={model}", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{(work / 'server.log').read_text()}")
        try:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server not ready")


def streaming_latency(port: int, records: list[dict[str, Any]], n: int) -> dict[str, Any]:
    samples, warming = [], 0
    for record in records[:n]:
        body = json.dumps({"records": [record]}).encode()
        start = time.perf_counter()
        status, answer = post(port, "/v1/models/fleet/score", body)
        samples.append((time.perf_counter() - start) * 1e3)
        assert status == 200, answer
        warming += json.loads(answer)["results"][0]["warming_up"]
    return {
        "requests": len(samples),
        "median_ms": float(np.median(samples)),
        "p99_ms": float(np.percentile(samples, 99)),
        "warming_up": warming,
    }


def many_keys(n_keys: int, work: Path) -> dict[str, Any]:
    from detector.nn.training_options import TrainingOptions
    from detector.series.levels import DEFAULT_LEVEL_HOURS
    from detector.series.windows import SeriesSpec
    from service.series_store import SeriesStore

    window = TrainingOptions().window  # the default's
    spec = SeriesSpec("ts", ("host",), window=window, level_hours=DEFAULT_LEVEL_HOURS)
    store = SeriesStore(str(work / "keys.sqlite"), max_keys=n_keys)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for minute in range(window):  # every key gets a full window of history
        for first in range(0, n_keys, 1000):
            records = [
                {
                    "ts": 60 * minute,
                    "host": f"h{k}",
                    **dict(zip(METRICS, rng.random(4), strict=True)),
                }
                for k in range(first, min(first + 1000, n_keys))
            ]
            store.window("m", spec, METRICS, records)
    # and a full level: a score in each of the last level_hours + 1 hours, as a day running does
    hours = DEFAULT_LEVEL_HOURS + 1
    for first in range(0, n_keys, 1000):
        keys = np.repeat([f"h{k}" for k in range(first, min(first + 1000, n_keys))], hours)
        seconds = np.tile(3600.0 * np.arange(-hours + 1, 1), len(keys) // hours)
        store.judge(
            "m",
            spec,
            METRICS,
            keys.astype(object),
            seconds,
            rng.gamma(2.0, size=len(keys)),
            normal=1.0,
        )
    fill = time.perf_counter() - started
    times = []
    for k in range(min(500, n_keys)):  # each key once: a key's second record is its duplicate
        # after each key's rows, so that every record is placed and judged
        record = {"ts": 60 * window, "host": f"h{k * 37 % n_keys}", "cpu": 1.0, "mem": 1.0,
                  "net": 1.0, "disk": 1.0}  # fmt: skip
        start = time.perf_counter()
        windows = store.window("m", spec, METRICS, [record])
        assert len(windows.keys) == 1, windows.rejections
        store.judge("m", spec, METRICS, windows.keys, windows.seconds, np.ones(1), normal=1.0)
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "keys": store.keys("m"),
        "file_mb": sum(p.stat().st_size for p in work.glob("keys.sqlite*")) / 2**20,
        "fill_s": fill,
        "rss_growth_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before,
        "one_record_call_median_ms": float(np.median(times)),
    }


def fleet_file(path: Path, rows: int, keys: int, metrics: list[str] = METRICS) -> None:
    """``rows`` rows of ``keys`` hosts, a row a minute each, in time order, written in parts."""
    rng = np.random.default_rng(0)
    minutes = rows // keys
    with path.open("w") as out:
        out.write("ts,host," + ",".join(metrics) + "\n")
        for start in range(0, minutes, 50):
            span = np.arange(start, min(start + 50, minutes))
            frame = pd.DataFrame(
                {
                    "ts": np.repeat(span * 60 + 1_780_000_000, keys),
                    "host": np.tile([f"host-{k:04d}" for k in range(keys)], len(span)),
                    **{m: rng.normal(50, 5, len(span) * keys).round(2) for m in metrics},
                }
            )
            frame.to_csv(out, header=False, index=False)


def batch(model: Path, data: Path, work: Path) -> dict[str, Any]:
    output = work / "scored.csv"
    command = [str(BIN / "anomaly"), "score", str(model), str(data), "--output", str(output)]
    # A fresh parent whose only child is the command: its children's peak RSS is the command's.
    measure = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    answer = subprocess.run(
        [sys.executable, "-c", measure, *command], check=True, capture_output=True, text=True
    )
    wall, peak_kb = (float(v) for v in answer.stdout.split())
    peak = peak_kb / 1024
    rows = sum(1 for _ in data.open()) - 1
    scored = pd.read_csv(output, usecols=["anomaly_score"])
    return {
        "rows": rows,
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "peak_rss_mb": peak,
        "output_rows": len(scored),
    }


def wide_stream(work: Path, width: int, requests: int, rows: int, keys: int) -> dict[str, Any]:
    """The HTTP latency and the batch of a model over ``width`` metrics a row: trained on the
    first ``WIDE_TRAIN_MINUTES`` of ``WIDE_HOSTS`` generated hosts, then the next minutes posted
    one record a request; and ``anomaly score`` on a generated ``rows``-row, ``keys``-host file."""
    work.mkdir()
    metrics = [f"m{i:02d}" for i in range(width)]
    hosts = work / "hosts.csv"
    fleet_file(hosts, WIDE_HOSTS * (WIDE_TRAIN_MINUTES + requests), WIDE_HOSTS, metrics)
    frame = pd.read_csv(hosts)
    cut = frame["ts"].min() + 60 * WIDE_TRAIN_MINUTES
    frame[frame["ts"] < cut].to_csv(work / "train.csv", index=False)
    model = work / "wide"
    train(work / "train.csv", model, epochs=5)
    port = free_port()
    server = serve(model, port, work)
    try:
        http = streaming_latency(port, frame[frame["ts"] >= cut].to_dict("records"), requests)
    finally:
        server.terminate()
        server.wait(30)
    data = work / "wide_batch.csv"
    fleet_file(data, rows, keys, metrics)
    return {"metrics": width, "http": http, "batch": batch(model, data, work) | {"keys": keys}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=count, default=2000)
    parser.add_argument("--rows", type=count, default=1_000_000)
    parser.add_argument("--keys", type=count, default=1000)
    parser.add_argument("--state-keys", type=count, default=100_000)
    parser.add_argument("--wide", type=count, default=38, help="the wide stream's metrics a row")
    parser.add_argument("--wide-rows", type=count, default=200_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--batch-only",
        type=counts,
        metavar="ROWS,ROWS",
        help="only the batch, once per file size (e.g. 1000000,5000000), to show that peak "
        "memory does not grow with the file (results: streams_batch.{json,md})",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # a 1M-row file and models
    if args.batch_only:
        sizes = args.batch_only
        return batch_sizes(sizes, args.keys, work, args.out or RESULTS / "streams_batch")
    args.out = args.out or RESULTS / "streams"
    model = work / "fleet"
    train(REPO / "data/fleet_train.csv", model, epochs=10)
    port = free_port()
    server = serve(model, port, work)
    try:
        records = pd.read_csv(REPO / "data/fleet_eval.csv").drop(columns=["label", "anomaly_kind"])
        http = streaming_latency(port, records.to_dict("records"), args.requests)
    finally:
        server.terminate()
        server.wait(30)
    keys = many_keys(args.state_keys, work)
    data = work / "fleet_1m.csv"
    fleet_file(data, args.rows, args.keys)
    small = work / "fleet_train_small.csv"
    pd.read_csv(data, nrows=20 * args.keys).to_csv(small, index=False)
    big_model = work / "fleet_big"
    train(small, big_model, epochs=5)
    scored = batch(big_model, data, work) | {"keys": args.keys}
    wide = wide_stream(work / "wide", args.wide, args.requests, args.wide_rows, args.keys // 10)
    payload = {
        "command": "python " + " ".join(sys.argv),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "http": http,
        "state": keys,
        "batch": scored,
        "wide": wide,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(report(payload))
    print(report(payload))
    return 0


def batch_sizes(sizes: list[int], keys: int, work: Path, out: Path) -> int:
    """``anomaly score`` on generated files of each size in ``sizes`` with one model, trained
    as the main run's batch model is (the first 20 minutes of every host, 5 epochs)."""
    largest = work / "fleet_largest.csv"
    fleet_file(largest, max(sizes), keys)
    small = work / "fleet_train_small.csv"
    pd.read_csv(largest, nrows=20 * keys).to_csv(small, index=False)
    model = work / "fleet_big"
    train(small, model, epochs=5)
    runs = []
    for rows in sizes:
        data = work / f"fleet_{rows}.csv"
        fleet_file(data, rows, keys)
        runs.append(batch(model, data, work) | {"keys": keys})
        data.unlink()
        print(f"{rows:,} rows: {runs[-1]['rows_per_s']:,.0f} rows/s", file=sys.stderr)
    payload = {
        "command": "python " + " ".join(sys.argv),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "runs": runs,
    }
    lines = [
        "# Metric streams: batch memory by file size\n",
        f"`{payload['command']}` on {payload['when']}, {payload['cpus']} CPUs.\n",
        "| rows (series) | wall time | rows/s, whole command | peak RSS | output rows |",
        "|---|---|---|---|---|",
        *(
            f"| {r['rows']:,} ({r['keys']:,}) | {r['wall_s']:.1f} s | {r['rows_per_s']:,.0f} | "
            f"{r['peak_rss_mb']:.0f} MB | {r['output_rows']:,} |"
            for r in runs
        ),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def report(p: dict[str, Any]) -> str:
    h, s, b, w = p["http"], p["state"], p["batch"], p.get("wide")
    return (
        "# Metric streams: speed and memory\n\n"
        f"`{p['command']}` on {p['when']}, {p['cpus']} CPUs shared by server and client.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| HTTP, one record a request, 2 workers, median | {h['median_ms']:.2f} ms |\n"
        f"| HTTP, same: p99 | {h['p99_ms']:.2f} ms |\n"
        f"| requests (of which warming up) | {h['requests']:,} ({h['warming_up']}) |\n"
        f"| series kept in the state file | {s['keys']:,} |\n"
        f"| state file size | {s['file_mb']:.1f} MB |\n"
        f"| process RSS growth while filling it | {s['rss_growth_mb']:.1f} MB |\n"
        "| one-record state calls (rows, then level) at that size, median | "
        f"{s['one_record_call_median_ms']:.3f} ms |\n"
        f"| batch `anomaly score`, rows (series) | {b['rows']:,} ({b['keys']:,}) |\n"
        f"| batch wall time, whole command | {b['wall_s']:.1f} s |\n"
        f"| batch rows/s, whole command | {b['rows_per_s']:,.0f} |\n"
        f"| batch peak RSS | {b['peak_rss_mb']:.0f} MB |\n"
        f"| output rows (every row accounted for) | {b['output_rows']:,} |\n"
    ) + ("" if w is None else wide_report(w))


def wide_report(w: dict[str, Any]) -> str:
    h, b = w["http"], w["batch"]
    return (
        f"| **{w['metrics']} metrics a row**: HTTP, one record a request, median | "
        f"{h['median_ms']:.2f} ms |\n"
        f"| same: p99 | {h['p99_ms']:.2f} ms |\n"
        f"| same: batch rows/s, whole command, {b['rows']:,} rows ({b['keys']:,} series) | "
        f"{b['rows_per_s']:,.0f} |\n"
        f"| same: batch peak RSS | {b['peak_rss_mb']:.0f} MB |\n"
        f"| same: output rows | {b['output_rows']:,} |\n"
    )


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
