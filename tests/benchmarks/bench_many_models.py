"""Memory, start-up and /metrics of one ``anomaly serve`` holding many models.

Run: ``python tests/benchmarks/bench_many_models.py [--counts 1,5,10,20,100] [--workers 2]``.

Trains two tiny bundles (``--epochs 1``): a table model on ``data/train.csv`` (1,000 rows)
and a series model on ``data/fleet_train.csv`` (``--time-column ts --series-column host``,
2,000 rows), copies them into as many folders as the largest count (half each), then for each
count starts the real server on a free port with that many models, each its own folder, and
prints: seconds from start to the first 200 on ``/readyz``, the RSS and PSS (MB) of the master
and each worker 3 s later (Linux ``/proc``), and the size, lines and time of one ``/metrics``
scrape. The server is stopped (SIGTERM) before the next count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANOMALY = str(Path(sys.executable).with_name("anomaly"))


def _train(out: Path) -> tuple[Path, Path]:
    table, series = out / "table", out / "series"
    for data, out_dir, options in (
        ("train.csv", table, ["--max-rows", "1000"]),
        ("fleet_train.csv", series, ["--max-rows", "2000", "--time-column", "ts"]),
    ):
        if out_dir == series:
            options += ["--series-column", "host"]
        argv = [ANOMALY, "train", str(REPO / "data" / data), "--epochs", "1", *options]
        subprocess.run([*argv, "--out", str(out_dir)], check=True, capture_output=True)
    return table, series


def _memory_mb(pid: int, field: str) -> int:
    path = f"/proc/{pid}/smaps_rollup" if field == "Pss:" else f"/proc/{pid}/status"
    for line in Path(path).read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    return -1


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.read()


def measure(folders: list[Path], workers: int, log: Path) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [ANOMALY, "serve", "--port", str(port), "--workers", str(workers)]
    for i, folder in enumerate(folders):
        argv += ["--model", f"m{i}={folder}"]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["ANOMALY_ALERT_LOG"] = "false"
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("w") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            try:
                if _get(base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() - started > 300:
                return f"{len(folders)} models: did not start; see {log}"
            time.sleep(0.1)
        ready = time.monotonic() - started
        time.sleep(3)
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        rss = [_memory_mb(int(pid), "VmRSS:") for pid in children]
        pss = [_memory_mb(int(pid), "Pss:") for pid in children]
        clock = time.monotonic()
        _, metrics = _get(base + "/metrics")
        scrape = time.monotonic() - clock
        return (
            f"{len(folders)} models: ready {ready:.1f} s; master RSS "
            f"{_memory_mb(server.pid, 'VmRSS:')} MB (PSS {_memory_mb(server.pid, 'Pss:')}); "
            f"workers RSS {rss} MB (PSS {pss}); /metrics {len(metrics):,} bytes, "
            f"{len(metrics.splitlines()):,} lines, {scrape * 1000:.0f} ms"
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--counts", default="1,5,10,20", help="numbers of models to serve, comma-separated"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-many-models-") as scratch:
        root = Path(scratch)
        table, series = _train(root)
        folders = []
        for i in range(max(counts)):
            folder = root / f"model{i}"
            shutil.copytree(table if i % 2 == 0 else series, folder)
            folders.append(folder)
        for count in counts:
            print(measure(folders[:count], args.workers, root / "server.log"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
