"""The production server: the Flask app under gunicorn, with Prometheus multiprocess metrics.

Each worker process builds its own app (no preloading: TensorFlow must not be initialised in
the master and then forked). The master wipes the metrics directory at start (stale files from
an earlier run would add up) and marks each exited worker dead so its live gauges drop out.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from gunicorn.app.base import BaseApplication

from service.config import ServiceConfig


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's documented embedding API, configured in code rather than a file."""

    def __init__(self, config: ServiceConfig, options: dict[str, Any]) -> None:
        self.service_config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("on_starting", _on_starting)
        self.cfg.set("child_exit", _child_exit)

    def load(self) -> Any:
        from detector.cli import import_tensorflow_quietly

        # Each worker imports TensorFlow itself (service.app pulls it in through the model
        # code); import it first, quietly, to keep its start-up chatter out of the log.
        import_tensorflow_quietly()
        from service.app import create_app

        return create_app(self.service_config)


def _on_starting(server: Any) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
