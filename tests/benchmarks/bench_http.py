"""HTTP scoring speed against the production server (gunicorn, 2 workers) on loopback.

Run: ``python tests/benchmarks/bench_http.py [--model DIR] [--requests 2000] [--seconds 10]``.
Starts ``anomaly serve`` on 127.0.0.1, then measures:

- single-record request latency, median and p99, one request at a time;
- batched throughput, records/s, with ``--clients`` concurrent clients posting batches of
  ``--batch`` records (request bodies are encoded once, so the client costs little CPU);
- the statuses returned for a set of malformed requests (the target: no 5xx at all).

Without ``--model`` it trains a model on ``data/train.csv`` first. Results go to
``tests/benchmarks/results/http.{json,md}``. The load generator and the server share the
machine's cores, so these are conservative numbers for the server alone.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count, seconds  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(
    port: int, path: str, body: bytes, content_type: str = "application/json"
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def start_server(model: Path, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["ANOMALY_ALERT_LOG"] = "false"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                str(BIN / "anomaly"),
                "serve",
                "--model",
                f"bench={model}",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                connection.close()
                return process
            connection.close()
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server not ready:\n{log.read_text()}")


def single_record_latency(port: int, records: list[dict[str, Any]], n: int) -> dict[str, float]:
    bodies = [json.dumps({"records": [r]}).encode() for r in records]
    for body in bodies[:50]:
        post(port, "/v1/models/bench/score", body)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        status, _ = post(port, "/v1/models/bench/score", bodies[i % len(bodies)])
        samples.append((time.perf_counter() - start) * 1e3)
        assert status == 200, status
    return {
        "median_ms": float(np.median(samples)),
        "p99_ms": float(np.percentile(samples, 99)),
        "requests": n,
    }


def batched_throughput(
    port: int, records: list[dict[str, Any]], batch: int, clients: int, seconds: float
) -> dict[str, float]:
    rows = (records * (batch // len(records) + 1))[:batch]
    body = json.dumps({"records": rows}).encode()
    post(port, "/v1/models/bench/score", body)  # warm-up
    done = [0] * clients
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        while time.monotonic() < stop:
            status, _ = post(port, "/v1/models/bench/score", body)
            if status == 200:
                done[k] += batch
            else:
                errors[k] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {
        "records_per_s": sum(done) / elapsed,
        "batch": batch,
        "clients": clients,
        "seconds": elapsed,
        "failed_requests": sum(errors),
    }


def malformed_statuses(port: int, record: dict[str, Any]) -> dict[str, int]:
    cases: list[tuple[str, bytes, str]] = [
        ("/v1/models/bench/score", b"{not json", "application/json"),
        ("/v1/models/bench/score", b"[]", "application/json"),
        ("/v1/models/bench/score", b'{"records": 5}', "application/json"),
        ("/v1/models/bench/score", b'{"records": [null, 1, "x"]}', "application/json"),
        (
            "/v1/models/bench/score",
            json.dumps({"records": [{**record, "x": 1}]}).encode(),
            "application/json",
        ),
        ("/v1/models/bench/score", b"a,b\n1", "text/csv"),
        ("/v1/models/bench/score", b"\xff\xfe\x00", "text/csv"),
        ("/v1/models/bench/score", b"x=1", "application/x-www-form-urlencoded"),
        ("/v1/models/nope/score", b'{"records": []}', "application/json"),
        ("/v1/models/bench/reload", b"{}", "application/json"),
        ("/v2/models/bench/infer", b'{"inputs": [{"name": 1}]}', "application/json"),
        ("/v2/models/bench/infer", b'{"inputs": "x"}', "application/json"),
    ]
    statuses: dict[str, int] = {}
    for path, body, content_type in cases:
        status, _ = post(port, path, body, content_type)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="bundle to serve (default: train one)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=count, default=2_000)
    parser.add_argument("--batch", type=count, default=1_000)
    parser.add_argument("--clients", type=count, default=2)
    parser.add_argument("--seconds", type=seconds, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "http")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    model = args.model
    if model is not None and not (model / "manifest.json").is_file():
        raise SystemExit(
            f"error: --model {model}: no model bundle there; train one first "
            f"(anomaly train data/train.csv --out {model}), or leave --model out to train one"
        )
    if model is None:
        model = work / "model"
        subprocess.run(
            [
                str(BIN / "anomaly"),
                "train",
                str(REPO / "data/train.csv"),
                "--out",
                str(model),
                "--epochs",
                "40",
                "--quiet",
            ],
            check=True,
        )
    records = pd.read_csv(REPO / "data/eval.csv").drop(columns=["label", "anomaly_kind"])
    records_list = records.head(500).to_dict("records")
    port = free_port()
    server = start_server(model, port, args.workers, work / "server.log")
    try:
        latency = single_record_latency(port, records_list, args.requests)
        print(
            f"single record: median {latency['median_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms"
        )
        throughput = batched_throughput(port, records_list, args.batch, args.clients, args.seconds)
        print(
            f"batched: {throughput['records_per_s']:,.0f} records/s "
            f"(batch {args.batch}, {args.clients} clients, {throughput['failed_requests']} failed)"
        )
        malformed = malformed_statuses(port, records_list[0])
        print(f"malformed requests by status: {malformed}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    payload = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "workers": args.workers,
        "single_record": latency,
        "batched": throughput,
        "malformed_statuses": malformed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(
        "# HTTP scoring speed (gunicorn, loopback)\n\n"
        f"`{payload['command']}` on {payload['date']}, {payload['machine']['cpus']} CPUs shared "
        f"by the server ({args.workers} workers) and the load generator.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| single-record latency, median | {latency['median_ms']:.2f} ms |\n"
        f"| single-record latency, p99 | {latency['p99_ms']:.2f} ms |\n"
        f"| batched throughput (batch {args.batch}, {args.clients} clients) | "
        f"{throughput['records_per_s']:,.0f} records/s |\n"
        f"| failed requests under load | {throughput['failed_requests']} |\n"
        f"| malformed requests by status | {malformed} |\n"
    )
    return 0


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
