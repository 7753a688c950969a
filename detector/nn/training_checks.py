"""The checks ``training.train`` makes of a trained network: a finite loss, scores that tell
records apart, and how many latent units carry information."""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.errors import TrainingError
from detector.nn import losses
from detector.wording import option

#: A latent unit whose mean KL on validation data is below this carries no information.
ACTIVE_UNIT_KL = 0.01


def check_finite(history: dict[str, list[float]], config: Any) -> None:
    # The validation loss too: it is what the saved model is chosen by.
    losses = np.asarray(history.get("loss", []), dtype=np.float64)
    validation = np.asarray(history.get("val_loss", []), dtype=np.float64)
    if len(validation) == len(losses):
        losses = np.where(np.isfinite(validation), losses, np.nan)
    if len(losses) == 0 or not np.isfinite(losses).all():
        epoch = int(np.flatnonzero(~np.isfinite(losses))[0]) + 1 if len(losses) else 0
        raise TrainingError(
            f"training diverged: the loss became NaN/inf at epoch {epoch}; lower "
            f"{option('learning_rate')} (now {config.learning_rate}) or look for extreme values "
            "in the data"
        )


def constant(scores: np.ndarray) -> bool:
    spread = float(np.std(scores))
    return not np.isfinite(scores).all() or spread <= 1e-6 * (1.0 + abs(float(np.mean(scores))))


def check_spread(scores: np.ndarray) -> None:
    if constant(scores):
        raise TrainingError(
            "held-out anomaly scores are (nearly) constant, so the model cannot tell records "
            f"apart; check that the training columns vary, or train longer ({option('epochs')})"
        )


def active_units(model: Any, x: np.ndarray) -> int:
    mean, log_var = model.encode(x)
    kl = np.asarray(losses.kl_to_standard_normal(mean, log_var)).mean(axis=0)
    return int((kl > ACTIVE_UNIT_KL).sum())
