"""A webhook receiver for trying the stack out: logs every notification it gets, one line each.

Alertmanager's webhook_configs POST a JSON document per notification group; this prints the
path (which receiver sent it), the status and each alert's name and labels, so
`docker compose logs alert-receiver` shows what would have paged whom. Standard library only;
replace it with your real receiver (PagerDuty, Slack, a ticketing webhook) in alertmanager.yml.

    python alert_receiver.py --port 9099
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Requests are served on threads; one lock keeps their lines whole.
_OUTPUT = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            notification = json.loads(body)
        except json.JSONDecodeError:
            self.send_error(400, "expected a JSON body")
            return
        alerts = notification.get("alerts", []) if isinstance(notification, dict) else []
        line = {
            "receiver_path": self.path,
            "status": notification.get("status") if isinstance(notification, dict) else None,
            "alerts": [
                {"status": a.get("status"), "labels": a.get("labels", {})}
                for a in alerts
                if isinstance(a, dict)
            ],
        }
        with _OUTPUT:
            sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
            sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        # A health check for compose and for anyone curious.
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"alert receiver: POST Alertmanager webhook notifications here\n")

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per notification, printed above, is the whole log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=9099, help="default 9099")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"alert receiver listening on {args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
