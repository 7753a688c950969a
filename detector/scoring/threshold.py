"""Calibration: turn anomaly scores into p-values and decisions at a target false-positive rate.

Fitted on anomaly scores of held-out normal rows that the network never trained on. The body of
the distribution is the empirical one; beyond the tail start ``t0`` a generalized Pareto
distribution is fitted to the excesses (peaks over threshold, as SPOT does: Siffer et al., KDD
2017), so targets far below ``1 / n_heldout`` still get a principled threshold. The threshold is
exactly the inverse of the p-value function: ``is_anomaly == (p_value <= target_fpr)`` up to
ties, and ``anomaly_score > threshold`` is the decision. ``calibration_warnings`` says when a
threshold should not be trusted: too few calibration rows for the target, or a held-out FPR far
above it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from scipy import stats

from detector.errors import ConfigError, DataError
from detector.wording import option, retarget_command

#: At least this many held-out rows are needed for a calibration worth the name.
MIN_REFERENCE = 30
#: Calibration beyond this many rows adds little and bloats the manifest.
MAX_CALIBRATION_ROWS = 20_000
#: Fewer expected false alarms than this among the calibration rows: the threshold is an
#: extrapolation from the fitted tail, and ``calibration_warnings`` says so.
MIN_EXPECTED_FALSE_ALARMS = 10
#: A held-out FPR warns only when a one-sided binomial test puts it above the target at this
#: significance level *and* it is more than ``HELDOUT_FPR_RATIO`` times the target.
HELDOUT_FPR_P_VALUE = 1e-3
HELDOUT_FPR_RATIO = 2.0
#: Target false-positive rates outside [MIN_TARGET_FPR, MAX_TARGET_FPR) are refused, at training
#: and when a bundle is loaded: below one alarm per million the threshold is pure extrapolation
#: from at most ``MAX_CALIBRATION_ROWS`` rows (a manifest edited to 1e-300 flagged nothing), and
#: from one in two a detector flags as much as it passes.
MIN_TARGET_FPR = 1e-6
MAX_TARGET_FPR = 0.5


@dataclass(frozen=True, eq=False)
class Calibrator:
    """Held-out normal scores (sorted, higher = more anomalous) and the tail fitted on them."""

    reference: np.ndarray
    target_fpr: float
    tail_start: float
    tail_fraction: float
    tail_shape: float
    tail_scale: float

    @classmethod
    def fit(cls, scores: np.ndarray, *, target_fpr: float) -> Calibrator:
        """Fit on held-out normal anomaly scores, shape ``(n,)``."""
        _check_fpr(target_fpr)
        reference = np.sort(np.asarray(scores, dtype=np.float64))
        if len(reference) < MIN_REFERENCE or not np.isfinite(reference).all():
            raise DataError(
                f"calibration needs at least {MIN_REFERENCE} finite held-out scores, got "
                f"{int(np.isfinite(reference).sum())}; train on more normal rows"
            )
        n = len(reference)
        # The tail holds ~5% of the held-out rows, at least 10 and at most 500 (SPOT uses 2%,
        # for far larger samples): enough excesses for a stable two-parameter fit.
        n_tail = int(min(max(round(0.05 * n), 10), 500, n // 3))
        start = _untied_start(reference, n - n_tail - 1)
        if reference[min(start + 1, n - 1)] == reference[-1]:
            start = n - 1  # the tail one tied value: no tail to fit above the body
        tail_start = float(reference[start])
        if start == n - 1:
            # The highest scores all tied (a few categories): nothing lies above them to fit,
            # and a score beyond every one seen falls off at the gap below them.
            below = reference[reference < tail_start]
            gap = tail_start - float(below[-1]) if len(below) else 1.0
            shape, scale, fraction = 0.0, gap, 1.0 / (n + 1)
        else:
            shape, scale = _fit_tail(reference[start + 1 :] - tail_start)
            fraction = (n - start - 1) / n
        return cls(
            reference=reference,
            target_fpr=float(target_fpr),
            tail_start=tail_start,
            tail_fraction=fraction,
            tail_shape=shape,
            tail_scale=scale,
        )

    def with_target(self, target_fpr: float) -> Calibrator:
        """The same calibration at another false-positive rate; no retraining needed."""
        _check_fpr(target_fpr)
        return Calibrator(
            reference=self.reference,
            target_fpr=float(target_fpr),
            tail_start=self.tail_start,
            tail_fraction=self.tail_fraction,
            tail_shape=self.tail_shape,
            tail_scale=self.tail_scale,
        )

    @cached_property
    def threshold(self) -> float:
        """The anomaly score above which a record is anomalous at ``target_fpr`` (cached:
        scipy's tail quantile costs more than scoring one record)."""
        return self.threshold_for(self.target_fpr)

    def threshold_for(self, fpr: float) -> float:
        if fpr >= self.tail_fraction:
            # Smallest empirical threshold t with (1 + #{ref > t}) / (n + 1) <= fpr; past the
            # tail's start every p-value is at most tail_fraction, so no higher than there (a
            # 5% target left scores with p-values of 4.7% unflagged).
            return min(self._empirical(fpr), self.tail_start)
        excess = stats.genpareto.isf(
            fpr / self.tail_fraction, self.tail_shape, scale=self.tail_scale
        )
        return self.tail_start + float(excess)

    def _empirical(self, fpr: float) -> float:
        n = len(self.reference)
        allowed = math.floor(fpr * (n + 1) - 1)
        return float(self.reference[max(n - allowed - 1, 0)])

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """P(score >= s) under held-out normal data, for each s in ``scores`` ``(n,)``.

        Small p-value = unlikely under normal behaviour. Empirical with a +1 correction in the
        body, generalized Pareto beyond the tail start.
        """
        s = np.asarray(scores, dtype=np.float64)
        if s.shape == (1,):
            return np.array([self._p_value(float(s[0]))])
        n = len(self.reference)
        above = n - np.searchsorted(self.reference, s, side="left")
        empirical = (1.0 + above) / (n + 1.0)
        excess = np.maximum(s - self.tail_start, 0.0)
        tail = self.tail_fraction * _pareto_sf(excess, self.tail_shape, self.tail_scale)
        p = np.where(s > self.tail_start, tail, empirical)
        return np.clip(p, 0.0, 1.0)

    def _p_value(self, s: float) -> float:
        """``p_values`` for one score in plain floats: numpy's per-call overhead on a
        one-element array is most of a single record's p-value time."""
        if s > self.tail_start:
            # numpy's power and exp on a one-element array, as on a batch: Python's math.pow
            # differs from numpy's SIMD loop in the last bit for ~5% of values, and a record
            # must get the same p-value alone (one HTTP record) as in a file.
            excess = np.array([s - self.tail_start])
            survival = float(_pareto_sf(excess, self.tail_shape, self.tail_scale)[0])
            return min(max(self.tail_fraction * survival, 0.0), 1.0)
        n = len(self.reference)
        above = n - int(np.searchsorted(self.reference, s, side="left"))
        return min((1.0 + above) / (n + 1.0), 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_fpr": self.target_fpr,
            "threshold": self.threshold,
            "tail_start": self.tail_start,
            "tail_fraction": self.tail_fraction,
            "tail_shape": self.tail_shape,
            "tail_scale": self.tail_scale,
            "reference": [float(v) for v in self.reference],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Calibrator:
        """The calibrator ``to_dict`` wrote; ``ValueError`` naming the field when a value is
        one ``fit`` could not have produced (the manifest was edited or damaged)."""
        reference = np.asarray(state["reference"], dtype=np.float64)
        if reference.ndim != 1 or len(reference) < MIN_REFERENCE:
            raise ValueError("calibration reference is not a list of scores")
        if not np.isfinite(reference).all():
            raise ValueError("calibration reference holds a value that is not a finite number")
        if not np.all(np.diff(reference) >= 0):
            raise ValueError("calibration reference is not sorted")
        calibrator = cls(
            reference=reference,
            target_fpr=float(state["target_fpr"]),
            tail_start=float(state["tail_start"]),
            tail_fraction=float(state["tail_fraction"]),
            tail_shape=float(state["tail_shape"]),
            tail_scale=float(state["tail_scale"]),
        )
        calibrator._check_fitted_values(float(state["threshold"]))
        return calibrator

    def _check_fitted_values(self, saved_threshold: float) -> None:
        if not MIN_TARGET_FPR <= self.target_fpr < MAX_TARGET_FPR:
            raise ValueError(
                f"calibration target_fpr {self.target_fpr!r} is outside "
                f"[{MIN_TARGET_FPR:g}, {MAX_TARGET_FPR:g})"
            )
        tail = {
            "tail_start": self.tail_start,
            "tail_shape": self.tail_shape,
            "tail_scale": self.tail_scale,
        }
        for name, value in tail.items():
            if not math.isfinite(value):
                raise ValueError(f"calibration {name} {value!r} is not a finite number")
        # fit() keeps the tail within the reference, its shape in [-0.5, 0.5], a positive scale.
        if not 0.0 < self.tail_fraction <= 1.0:
            raise ValueError(f"calibration tail_fraction {self.tail_fraction!r} is outside (0, 1]")
        if not -0.5 <= self.tail_shape <= 0.5 or self.tail_scale <= 0.0:
            raise ValueError("calibration tail_shape/tail_scale are outside what a fit gives")
        threshold = self.threshold
        # The saved threshold is derived, kept for people reading the manifest; it must still
        # say what the calibrator decides, or the manifest misleads whoever reads it. A bundle
        # written before the empirical threshold stopped at the tail's start may say what it
        # decided then.
        earlier = (
            self._empirical(self.target_fpr) if self.target_fpr >= self.tail_fraction else None
        )
        if not math.isfinite(threshold) or not any(
            math.isclose(saved_threshold, t, rel_tol=1e-9, abs_tol=1e-12)
            for t in (threshold, earlier)
            if t is not None
        ):
            raise ValueError(
                f"calibration threshold {saved_threshold!r} is not the threshold its target and "
                f"tail give ({threshold!r})"
            )


def calibration_warnings(
    n_calibration: int,
    target_fpr: float,
    heldout_fpr: float | None = None,
    n_heldout: int = 0,
    *,
    max_calibration_rows: int | None = None,
) -> tuple[str, ...]:
    """What a user should know before trusting a threshold, as sentences that name the fix.

    Two rules, each tuned so that a sound calibration never warns:

    1. **Too few calibration rows.** With ``n_calibration * target_fpr`` under
       ``MIN_EXPECTED_FALSE_ALARMS`` (10) the calibration rows hold fewer than ten expected
       false alarms, so the threshold rests on the generalized Pareto tail fitted to the highest
       scores (``Calibrator.threshold_for``; below one expected alarm it lies beyond every
       observed score) with few exceedances to pin it, and its true FPR can be off by a large
       factor. Ten is where an empirical quantile's relative
       error (about ``1 / sqrt(n * fpr)``) drops to a third. ``max_calibration_rows`` (training
       keeps no more) stops the advice asking for rows that would not be used.
    2. **Held-out FPR far above the target.** ``heldout_fpr`` is the share of ``n_heldout``
       normal rows the calibration never saw that score above the threshold. It warns only when
       both a one-sided binomial test rejects "the true FPR is ``target_fpr``" at
       ``HELDOUT_FPR_P_VALUE`` (0.001) and the rate is over ``HELDOUT_FPR_RATIO`` (2x) the
       target: the test alone flags harmless excesses on large samples (1.3% against 1% on
       10,000 rows), the ratio alone flags sampling noise on small ones (2 of 50 rows at 1%),
       and the factor 2 also absorbs the threshold's own sampling error. Skipped when
       ``heldout_fpr`` is ``None`` or ``n_heldout`` is 0 (``anomaly threshold`` has no held-out
       rows to measure on).

    An empty tuple means nothing to report.
    """
    found = []
    expected = n_calibration * target_fpr
    if expected < MIN_EXPECTED_FALSE_ALARMS:
        needed = math.ceil(MIN_EXPECTED_FALSE_ALARMS / target_fpr)
        lowest = MIN_EXPECTED_FALSE_ALARMS / n_calibration
        if max_calibration_rows is None or needed <= max_calibration_rows:
            more = f"train on more normal rows ({needed:,} calibration rows or more) or "
        else:
            more = (
                f"more rows cannot help (calibration keeps {max_calibration_rows:,} at most), so "
            )
        found.append(
            f"calibration: {n_calibration:,} calibration rows at a target FPR of "
            f"{_percent(target_fpr)} expect {expected:.2g} false alarms among them, so the "
            "threshold rests on the tail fitted to the highest scores with few or no observed "
            f"false alarms to check it, and its real rate may be far off; {more}raise the "
            f"target to {_percent(lowest)} or more ({option('target_fpr')}, or "
            f"{retarget_command()} on a trained model)"
        )
    if heldout_fpr is not None and n_heldout > 0 and math.isfinite(heldout_fpr):
        alarms = round(heldout_fpr * n_heldout)
        p_value = float(stats.binom.sf(alarms - 1, n_heldout, target_fpr))
        if p_value < HELDOUT_FPR_P_VALUE and heldout_fpr > HELDOUT_FPR_RATIO * target_fpr:
            found.append(
                f"calibration: the held-out false-positive rate is {_percent(heldout_fpr)} "
                f"against a target of {_percent(target_fpr)} ({alarms:,} of {n_heldout:,} normal "
                f"rows flagged; binomial p = {p_value:.1g}), so the threshold is likely too low "
                "for new data: check that the training rows are all normal and alike, train "
                f"longer ({option('epochs')}), or set a lower target with {retarget_command()}"
            )
    return tuple(found)


def _percent(rate: float) -> str:
    """``rate`` as a percentage with two significant digits or two decimals: 1.00%, 0.010%."""
    decimals = max(2, 1 - math.floor(math.log10(100 * rate))) if rate > 0 else 2
    return f"{100 * rate:.{decimals}f}%"


#: A generalized Pareto shape this close to 0 is the exponential distribution.
_ZERO_SHAPE = 1e-12


def _pareto_sf(excess: np.ndarray, shape: float, scale: float) -> np.ndarray:
    """Survival function of the generalized Pareto distribution, in closed form: the same as
    ``scipy.stats.genpareto.sf`` (a test checks it) without its per-call overhead, which is
    most of a single record's p-value time."""
    z = excess / scale
    if abs(shape) < _ZERO_SHAPE:
        return np.exp(-z)
    base = np.maximum(1.0 + shape * z, 0.0)  # shape < 0: zero beyond the upper endpoint
    with np.errstate(divide="ignore"):
        return np.power(base, -1.0 / shape)


def _check_fpr(fpr: float) -> None:
    if not (MIN_TARGET_FPR <= fpr < MAX_TARGET_FPR):
        raise ConfigError(
            f"target false-positive rate {fpr} is out of range; give a value in "
            f"[{MIN_TARGET_FPR:g}, {MAX_TARGET_FPR:g}), e.g. 0.01 for one false alarm per 100 "
            "normal records"
        )


def _untied_start(reference: np.ndarray, start: int) -> int:
    """The tail's start at or near position ``start`` of the sorted ``reference`` such that no
    score of the tail equals it: tied scores across it gave excesses of 0, a fitted scale of
    1.8e-30, and an ordinary score held by 6% of the rows a p-value of 1.9e-58. The tail takes
    the whole tied block where that keeps it within half the rows and something lies above
    the block, else starts above it."""
    value = reference[start]
    if start + 1 >= len(reference) or reference[start + 1] != value:
        return start
    low = int(np.searchsorted(reference, value, side="left"))
    high = int(np.searchsorted(reference, value, side="right"))
    if low >= 1 and len(reference) - low <= len(reference) // 2 and high < len(reference):
        return low - 1
    return high - 1


def _fit_tail(excesses: np.ndarray) -> tuple[float, float]:
    """Generalized Pareto (shape, scale) for non-negative excesses; maximum likelihood with a
    method-of-moments fallback, the shape held in [-0.5, 0.5] where the fit is stable."""
    mean = float(excesses.mean())
    var = float(excesses.var())
    if mean <= 0.0 or var <= 0.0:
        # All excesses tied: any positive excess is beyond everything seen.
        return 0.0, max(mean, 1e-9)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            shape, _, scale = stats.genpareto.fit(excesses, floc=0.0)
    except (ValueError, RuntimeError, FloatingPointError):
        shape, scale = math.nan, math.nan
    # A scale far below the excesses' own mean is a degenerate fit, not a tail.
    if not (math.isfinite(shape) and math.isfinite(scale) and scale > 1e-6 * mean):
        ratio = mean * mean / var
        shape, scale = 0.5 * (1.0 - ratio), 0.5 * mean * (ratio + 1.0)
    shape = float(np.clip(shape, -0.5, 0.5))
    return shape, float(scale)
