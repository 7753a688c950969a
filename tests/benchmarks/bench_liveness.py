"""How long ``/healthz`` on a new connection waits while large batches are scored.

Run: ``python tests/benchmarks/bench_liveness.py --model DIR [--format json|csv|ndjson]
[--batches 20] [--records 10000] [--workers 1]``.

Starts ``anomaly serve`` (gunicorn, gevent) on 127.0.0.1 with the bundle at ``DIR``, posts
``--batches`` batches of ``--records`` records at once, and meanwhile opens a new connection
to ``/healthz`` every 50 ms; prints the probes' latency (median, p99, max), the batches' wall
time and their statuses. A series model's (``--time-column ts --series-column host``) records
are ``data/fleet_eval.csv``'s rows, each batch under hosts of its own (``web-01-b3-c7``), so
no row arrives late; any other model's are ``data/eval.csv``'s rows. The load generator shares
the machine with the server: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import free_port, start_server  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[2]
TYPES = {"json": "application/json", "csv": "text/csv", "ndjson": "application/x-ndjson"}


def bodies(model: Path, n_batches: int, n_records: int, form: str) -> list[bytes]:
    series = json.loads((model / "manifest.json").read_text()).get("series") is not None
    rows = pd.read_csv(REPO / "data" / ("fleet_eval.csv" if series else "eval.csv"))
    rows = rows.drop(columns=["label", "anomaly_kind"], errors="ignore")
    out = []
    for b in range(n_batches):
        parts, copy = [], 0
        while sum(map(len, parts)) < n_records:
            part = rows.copy()
            if series:
                part["host"] = part["host"] + f"-b{b}-c{copy}"
            parts.append(part)
            copy += 1
        frame = pd.concat(parts, ignore_index=True)
        if series:  # each host's first rows, so each batch holds many series' rows
            frame = frame.sort_values(["ts", "host"], kind="stable")
        frame = frame.head(n_records)
        if form == "csv":
            out.append(frame.to_csv(index=False).encode())
        elif form == "ndjson":
            buffer = io.StringIO()
            frame.to_json(buffer, orient="records", lines=True)
            out.append(buffer.getvalue().encode())
        else:
            records = frame.to_dict("records")
            out.append(json.dumps({"records": records}).encode())
    return out


def post(port: int, body: bytes, content_type: str) -> int:
    """A batch's status; 0 where no answer came (the worker killed for its silence)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    try:
        connection.request(
            "POST", "/v1/models/bench/score", body=body, headers={"Content-Type": content_type}
        )
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def probe(port: int, until: threading.Event, latencies: list[float]) -> None:
    while not until.is_set():
        start = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.request("GET", "/healthz")
            connection.getresponse().read()
        except OSError:  # the worker killed for its silence: counted as that long
            pass
        finally:
            connection.close()
        latencies.append(time.perf_counter() - start)
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--format", choices=sorted(TYPES), default="json")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    payloads = bodies(args.model, args.batches, args.records, args.format)
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        server = start_server(args.model, port, args.workers, Path(scratch) / "server.log")
        try:
            statuses: list[int] = []
            latencies: list[float] = []
            done = threading.Event()
            prober = threading.Thread(target=probe, args=(port, done, latencies))

            def send(body: bytes) -> None:
                statuses.append(post(port, body, TYPES[args.format]))

            senders = [threading.Thread(target=send, args=(b,)) for b in payloads]
            start = time.perf_counter()
            for thread in senders:
                thread.start()
            prober.start()
            for thread in senders:
                thread.join()
            wall = time.perf_counter() - start
            done.set()
            prober.join()
            restarts = (Path(scratch) / "server.log").read_text().count("WORKER TIMEOUT")
        finally:
            server.terminate()
            server.wait(30)
    ms = np.asarray(latencies) * 1000
    print(
        f"{args.format}: {args.batches} batches of {args.records} records, "
        f"{args.workers} worker(s): wall {wall:.1f} s, statuses "
        f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }; /healthz {len(ms)} "
        f"probes, p50 {np.median(ms):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms, "
        f"max {ms.max():.0f} ms; workers killed for their silence: {restarts}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
