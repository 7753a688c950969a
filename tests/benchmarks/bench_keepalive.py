"""Keep-alive connections left idle between requests, as a load balancer's are.

Run: ``python tests/benchmarks/bench_keepalive.py --model DIR [--clients 10] [--requests 12]
[--max-gap 8] [--hold 900]``.

Starts ``anomaly serve`` (2 workers) on 127.0.0.1 with the bundle at ``DIR``; ``--clients``
clients each post ``--requests`` records on one ``http.client`` connection, idle a random
0-``--max-gap`` s between requests, and the answers are counted (statuses and exception
names: a connection the server closed as the client sent on it is ``BrokenPipeError`` or a
reset). Then, on a one-worker server, ``--hold`` connections each make a request and stay
idle 7 s (past gunicorn's 5 s ``keepalive``): the worker's resident memory and open files
before and after, and how long a SIGTERM takes to stop the server with them open.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import free_port, start_server  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]


def idle_gaps(port: int, clients: int, requests: int, max_gap: float) -> Counter[str]:
    rows = pd.read_csv(REPO / "data" / "eval.csv")
    rows = rows.drop(columns=["label", "anomaly_kind"], errors="ignore")
    body = json.dumps({"records": rows.head(3).to_dict(orient="records")})
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(requests):
            try:
                connection.request(
                    "POST", "/v1/models/bench/score", body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                response.read()
                outcome = str(response.status)
            except OSError as exc:  # as a client without retries sees it; the next reconnects
                outcome = type(exc).__name__
                connection.close()
            with lock:
                counts[outcome] += 1
            time.sleep(rng.uniform(0, max_gap))
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def held_idle(model: Path, hold: int, log: Path) -> str:
    port = free_port()
    server = start_server(model, port, 1, log)
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    worker = int(children[0])
    rss, files = _rss_mib(worker), len(os.listdir(f"/proc/{worker}/fd"))
    socks = []
    try:
        for _ in range(hold):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(sock)
            sock.recv(65536)
        time.sleep(7)
        rss_after, files_after = _rss_mib(worker), len(os.listdir(f"/proc/{worker}/fd"))
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        stopped = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
        if server.poll() is None:
            server.kill()
    return (
        f"{hold} connections idle 7 s on one worker: RSS {rss:.1f} -> {rss_after:.1f} MiB, "
        f"open files {files} -> {files_after}; SIGTERM to exit {stopped:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--max-gap", type=float, default=8.0)
    parser.add_argument("--hold", type=int, default=900)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start_server(args.model, port, 2, Path(tmp) / "gaps.log")
        try:
            counts = idle_gaps(port, args.clients, args.requests, args.max_gap)
        finally:
            server.terminate()
            server.wait(timeout=60)
        print(
            f"{args.clients} clients x {args.requests} requests, 0-{args.max_gap:g} s idle "
            f"between: {dict(sorted(counts.items()))}"
        )
        if args.hold:
            print(held_idle(args.model, args.hold, Path(tmp) / "held.log"))


if __name__ == "__main__":
    main()
