"""The Keras callbacks ``training.train`` adds to every model's fit: the KL warm-up and the
progress report."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import keras
from tqdm.auto import tqdm


class KLWarmup(keras.callbacks.Callback):  # type: ignore[misc]
    """Raise the KL weight linearly from 1/warmup to 1 over the first ``epochs`` epochs."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        weight = 1.0 if self.epochs <= 0 else min(1.0, (epoch + 1) / self.epochs)
        self.model.kl_weight.assign(weight)


#: Off a terminal, a line at least this often while epochs end: a tenth of 300 epochs of a
#: 1,000,000-row table (20-45 s each on 2 cores) was 10-20 minutes without a word.
LINE_EVERY_SECONDS = 60.0


class ProgressBar(keras.callbacks.Callback):  # type: ignore[misc]
    """Training progress on stderr, showing the training and validation negative ELBO: one
    tqdm bar on a terminal; elsewhere (a log file, a CI job, a container) a plain line at the
    first epoch, every tenth of the epochs, the last, and any epoch ending
    ``LINE_EVERY_SECONDS`` or more after the last line, since a bar's carriage returns make an
    unreadable log and no output at all looked like a hang. ``clock``: seconds, monotonic."""

    def __init__(
        self, epochs: int, *, enabled: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.epochs = epochs
        self.lines = enabled and not sys.stderr.isatty()
        self.bar = tqdm(
            total=epochs, unit="epoch", desc="training", disable=not enabled or self.lines
        )
        self.clock = clock
        self.started = clock()
        self.said = self.started
        self.last_epoch = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        loss = logs.get("neg_elbo", float("nan"))
        val = logs.get("val_neg_elbo", float("nan"))
        self.bar.set_postfix(neg_elbo=f"{loss:.3f}", val=f"{val:.3f}")
        self.bar.update(1)
        self.last_epoch = epoch + 1
        every = max(1, self.epochs // 10)
        due = self.clock() - self.said >= LINE_EVERY_SECONDS
        if self.lines and (epoch == 0 or self.last_epoch % every == 0 or due):
            self._line(f"epoch {self.last_epoch}/{self.epochs}: neg_elbo {loss:.3f}, val {val:.3f}")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.bar.close()
        if self.lines and self.last_epoch % max(1, self.epochs // 10):
            self._line(f"stopped after epoch {self.last_epoch}/{self.epochs}")

    def _line(self, text: str) -> None:
        self.said = self.clock()
        print(f"training: {text} ({self.said - self.started:.0f} s)", file=sys.stderr, flush=True)
