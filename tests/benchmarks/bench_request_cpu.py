"""CPU time of one batched scoring request: the gunicorn worker's, and in process.

Run: ``python tests/benchmarks/bench_request_cpu.py --model DIR [--batch 1000] [--requests 60]``.

- server: ``anomaly serve`` with one worker on 127.0.0.1; ``--requests`` POSTs of ``--batch``
  records of data/eval.csv, one at a time, after 10 to warm up; the worker process's CPU time
  (all its threads, from /proc) over them, per request;
- in process: the same requests to the app through Flask's test client (``create_app`` as
  tests build it, the server's shared alert state in a file), the process's CPU time per
  request.

CPU time, not wall time: on a machine shared with other work, a request's wall time moves with
the load while its CPU time mostly does not. Linux only (/proc). Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WARM_UP = 10


def body_of(batch: int) -> bytes:
    records = pd.read_csv(REPO / "data/eval.csv").drop(columns=["label", "anomaly_kind"])
    rows = records.to_dict("records")
    return json.dumps({"records": (rows * (batch // len(rows) + 1))[:batch]}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(port: int, body: bytes) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request(
            "POST",
            "/v1/models/bench/score",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise SystemExit(f"error: the server answered {response.status}: {answer[:300]!r}")


def wait_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit("error: the server exited at start; run anomaly serve to see why")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("error: the server was not ready within 2 minutes")


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system, every thread) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(model: Path, body: bytes, requests: int) -> float:
    """The one worker's CPU seconds per request."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["ANOMALY_ALERT_LOG"] = "false"
    command = [str(BIN / "anomaly"), "serve", "--model", f"bench={model}", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(port, server)
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        worker = int(children[0])
        for _ in range(WARM_UP):
            post(port, body)
        before = process_cpu(worker)
        for _ in range(requests):
            post(port, body)
        return (process_cpu(worker) - before) / requests
    finally:
        server.terminate()
        server.wait(timeout=60)


def in_process_cpu(model: Path, body: bytes, requests: int) -> float:
    """This process's CPU seconds per request through Flask's test client."""
    from prometheus_client import CollectorRegistry

    from service.app import create_app
    from service.config import ServiceConfig

    with tempfile.TemporaryDirectory(prefix="bench-request-cpu-") as work:
        config = ServiceConfig(
            models={"bench": str(model)}, alert_log=False, series_state=f"{work}/state.sqlite"
        )
        app = create_app(config, metrics_registry=CollectorRegistry(), sinks=[])
        client = app.test_client()

        def one() -> None:
            answer: Any = client.post(
                "/v1/models/bench/score", data=body, content_type="application/json"
            )
            if answer.status_code != 200:
                raise SystemExit(f"error: the app answered {answer.status_code}: {answer.json}")

        try:
            for _ in range(WARM_UP):
                one()
            before = time.process_time()
            for _ in range(requests):
                one()
            return (time.process_time() - before) / requests
        finally:
            app.extensions["anomaly"].dispatcher.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the bundle to serve")
    parser.add_argument("--batch", type=count, default=1_000, help="records a request")
    parser.add_argument("--requests", type=count, default=60, help="requests measured")
    args = parser.parse_args()
    if not (args.model / "manifest.json").is_file():
        raise SystemExit(
            f"error: --model {args.model}: no model bundle there; train one first "
            f"(anomaly train data/train.csv --out {args.model})"
        )
    body = body_of(args.batch)
    served = server_cpu(args.model, body, args.requests)
    inside = in_process_cpu(args.model, body, args.requests)
    print(
        f"{args.batch:,}-record request, CPU: server worker {served * 1000:.1f} ms, "
        f"in process {inside * 1000:.1f} ms (load average {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    from common import run  # type: ignore[import-not-found]

    sys.exit(run(main))
