"""``ThrottledLog``: an error logged at most once a minute a process, with a count.

A broken state file fails every request: logged each time, it flooded the log under load and
buried the first line that said why."""

from __future__ import annotations

import logging
import math
import time


class ThrottledLog:
    """Logs through ``logger`` at most once every ``every`` seconds; each line says how many
    ``unit`` were noted since the last one (itself included)."""

    def __init__(self, logger: logging.Logger, unit: str, every: float = 60.0) -> None:
        self.logger, self.unit, self.every = logger, unit, every
        self.logged_at = -math.inf
        self.count = 0

    def error(self, message: str, *args: object, count: int = 1) -> None:
        self.count += count
        now = time.monotonic()
        if now - self.logged_at < self.every:
            return
        self.logger.error(f"{message} ({self.unit}: {self.count} since the last such line)", *args)
        self.logged_at, self.count = now, 0
