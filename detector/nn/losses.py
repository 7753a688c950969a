"""Pure likelihood and divergence math in ``keras.ops``, shared by training and scoring.

Every function works elementwise or reduces only the axis its docstring names, so the same
code serves a training batch ``(batch, dims)`` and a scoring tensor ``(batch, samples, dims)``.
Log-likelihoods here are "higher = more normal"; the sign flips to ``anomaly_score`` only at
the boundary a user sees (``detector.scoring.scores``).
"""

from __future__ import annotations

import math

from keras import ops

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(x, mean, log_var):  # type: ignore[no-untyped-def]
    """Elementwise log N(x; mean, exp(log_var)); all arguments broadcast, result in nats."""
    return -0.5 * (LOG_2PI + log_var + ops.square(x - mean) * ops.exp(-log_var))


def standard_normal_log_density(z):  # type: ignore[no-untyped-def]
    """Elementwise log N(z; 0, 1)."""
    return -0.5 * (LOG_2PI + ops.square(z))


def kl_to_standard_normal(mean, log_var):  # type: ignore[no-untyped-def]
    """Elementwise KL(N(mean, exp(log_var)) || N(0, 1)) per latent unit, >= 0; sum the last axis
    for the KL of a diagonal Gaussian."""
    return 0.5 * (ops.exp(log_var) + ops.square(mean) - 1.0 - log_var)


def categorical_log_prob(one_hot, logits, group_sizes):  # type: ignore[no-untyped-def]
    """Log-probability of each one-hot group under softmax(logits), shape ``(..., n_groups)``.

    ``one_hot`` and ``logits`` have shape ``(..., sum(group_sizes))``; each consecutive block of
    ``group_sizes[g]`` columns is one categorical variable.
    """
    parts = []
    start = 0
    for size in group_sizes:
        block_logits = logits[..., start : start + size]
        block_x = one_hot[..., start : start + size]
        log_p = block_logits - ops.logsumexp(block_logits, axis=-1, keepdims=True)
        parts.append(ops.sum(block_x * log_p, axis=-1))
        start += size
    return ops.stack(parts, axis=-1)


def log_mean_exp(values, axis):  # type: ignore[no-untyped-def]
    """log(mean(exp(values))) along ``axis``, stable for values far below or above zero."""
    count = ops.cast(ops.shape(values)[axis], values.dtype)
    return ops.logsumexp(values, axis=axis) - ops.log(count)


def squared_distance(points, centre):  # type: ignore[no-untyped-def]
    """||points - centre||^2 over the last axis: ``(..., d)`` and ``(d,)`` -> ``(...)``.
    Deep SVDD's distance (Ruff et al. 2018); higher = farther from the normal data's centre."""
    return ops.sum(ops.square(points - centre), axis=-1)


def svdd_objective(distance, radius_sq, nu=None):  # type: ignore[no-untyped-def]
    """Deep SVDD's loss over a batch of squared distances ``(batch,)``, a scalar.

    One-class (``nu`` None): mean(distance). Soft-boundary (0 < nu <= 1):
    R^2 + (1/nu) * mean(max(0, distance - R^2)), where at most a fraction ``nu`` of the
    records should lie outside the sphere of squared radius ``radius_sq``.
    """
    if nu is None:
        return ops.mean(distance)
    return radius_sq + ops.mean(ops.relu(distance - radius_sq)) / nu


def kl_between_gaussians(mean_p, log_var_p, mean_q, log_var_q):  # type: ignore[no-untyped-def]
    """Elementwise KL(N(mean_p, exp(log_var_p)) || N(mean_q, exp(log_var_q))) per unit, >= 0;
    sum the last axis for diagonal Gaussians. With ``mean_q = log_var_q = 0`` it is
    ``kl_to_standard_normal``."""
    ratio = ops.exp(log_var_p - log_var_q)
    return 0.5 * (
        ratio + ops.square(mean_p - mean_q) * ops.exp(-log_var_q) - 1.0 - log_var_p + log_var_q
    )


def group_softmax(logits, group_sizes):  # type: ignore[no-untyped-def]
    """Softmax within each consecutive block of ``group_sizes[g]`` logits: the probabilities of
    each categorical group, shape ``(..., sum(group_sizes))`` like ``logits``."""
    parts = []
    start = 0
    for size in group_sizes:
        parts.append(ops.softmax(logits[..., start : start + size], axis=-1))
        start += size
    return ops.concatenate(parts, axis=-1)
