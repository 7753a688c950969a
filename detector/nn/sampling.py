"""Synthetic records from a trained model: z ~ N(0, I), then x ~ p(x|z), in the user's units.

A VAE is a generative model, so sampling it shows what the model believes normal data looks
like: compare the samples' means, spreads, category shares and correlations with the training
data to see what it learned and what it missed.

Each record draws its own latent code from the prior and then samples the decoder's
distribution, not its mean: numeric features from the Gaussian with the decoder's mean and
variance, each categorical column from its softmax. The "unseen" slot of a categorical group
stands for values never seen in training and has no label, so it is left out and the known
categories' probabilities renormalised. A column of more labels than slots has a slot its rare
training labels share: drawn, it gives one of them, each as likely (the bundle keeps the rare
labels, not their counts). ``features.decode`` then inverts the schema's encoding:
numeric values are clipped to the encoding's range and de-standardised (and rounded where
every training value was a whole number); categories become
their labels; the columns come back in the training table's order.

A conditional model (``--model cvae``) samples p(x | c) for the context values given, e.g.
``{"host": "web-01"}``; a context column not given is left out ("no context", which the model
learned through context dropout), so its samples come from p(x) over every context, and that
column comes back empty. Other models refuse a context.

Sampling is deterministic for a seed: the latent codes and the noise come from one
``numpy.random.Generator``, and the decoder is a deterministic function of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from detector.errors import ConfigError
from detector.features.encode import decode
from detector.series.windows import SeriesSpec, is_window_column, lag_name, lag_of

if TYPE_CHECKING:
    from detector.bundles.bundle import Bundle
    from detector.features.schema import Schema

#: Records per decoder call: bounds memory (65k x 64 features x 4 bytes = 16 MB per tensor).
SAMPLE_BATCH = 65_536


def sample_records(
    bundle: Bundle,
    n: int,
    *,
    seed: int,
    context: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """``n`` records drawn from the model, shape ``(n, n_columns)``, in the training columns'
    order and units. ``context`` maps context columns of a conditional model to the value to
    condition on; any other model refuses one (``ConfigError``)."""
    parts = list(sample_batches(bundle, n, seed=seed, context=context))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def sample_batches(
    bundle: Bundle,
    n: int,
    *,
    seed: int,
    context: Mapping[str, str] | None = None,
) -> Iterator[pd.DataFrame]:
    """``sample_records``' records, ``SAMPLE_BATCH`` at a time (the same records for a seed),
    so that a caller writing them holds one batch: a hundred million records would otherwise
    be held at once (2 GB within 25 s)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"the number of records to sample must be at least 1, got {n!r}")
    model = bundle.model
    schema = bundle.schema
    condition = _context_block(bundle, context)
    rng = np.random.default_rng(seed)
    per = 1 if bundle.series is None else _window_rows(schema.column_order)
    draws = -(-n // per)  # a series model draws windows, each ``per`` rows of one series
    batch = max(1, SAMPLE_BATCH // per)
    for start in range(0, draws, batch):
        rows = min(batch, draws - start)
        z = rng.standard_normal((rows, model.latent_dim)).astype(np.float32)
        given = None if condition is None else np.repeat(condition, rows, axis=0)
        mean, log_var, logits = (
            np.asarray(t, dtype=np.float64) for t in model.decode_distribution(z, context=given)
        )
        numeric = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
        groups = _sample_groups(logits, schema.group_sizes, rng)
        blocks = [numeric, *groups]
        if schema.context:
            # The context comes back as given; a column not given decodes as empty.
            blocks.append(np.zeros((rows, sum(schema.context_sizes))) if given is None else given)
        drawn = decode(schema, np.concatenate(blocks, axis=1))
        _rare_labels(schema, groups, drawn, rng)
        drawn = _within_training_range(schema, drawn)
        if bundle.series is not None:
            drawn = _as_series(drawn, bundle.series, start, per)
        first = start * per
        yield drawn.iloc[: n - first].set_axis(pd.RangeIndex(first, min(n, first + len(drawn))))


def _rare_labels(
    schema: Schema, groups: Sequence[np.ndarray], drawn: pd.DataFrame, rng: np.random.Generator
) -> None:
    """Give each row of ``drawn`` whose rare labels' slot was drawn one of those labels, each
    as likely, in place: the slot has no label of its own, and decoded as empty, a value no
    training row held (and one scoring rejects as missing)."""
    for column, block in zip(schema.categorical, groups, strict=True):
        if column.rare:
            rows = np.flatnonzero(block[:, len(column.categories)])
            if len(rows):
                labels = np.array(column.rare, dtype=object)
                drawn.iloc[rows, drawn.columns.get_loc(column.name)] = labels[
                    rng.integers(0, len(labels), len(rows))
                ]


def _within_training_range(schema: Schema, drawn: pd.DataFrame) -> pd.DataFrame:
    """Each numeric column clipped to the range its training values spanned: the decoder's
    Gaussian puts mass beyond it, so a count came out negative, an hour 35, and a column
    constant in training varied (sd 0.8 about 3.0)."""
    for column in schema.numeric:
        if column.name in drawn.columns:
            low, high = column.raw(column.minimum), column.raw(column.maximum)
            values = drawn[column.name].clip(low, high)
            if column.integer:
                # A count or an hour came back as 3.7; within int64's exact range, as integers.
                values = values.round()
                exact = max(abs(low), abs(high)) < 2.0**53
                values = values.astype(np.int64) if exact else values
            drawn[column.name] = values
    return drawn


def _window_rows(columns: Sequence[str]) -> int:
    """The rows a series model's window spans: its deepest lag plus the newest row."""
    return 1 + max((lag_of(c) for c in columns), default=0)


def _as_series(drawn: pd.DataFrame, spec: SeriesSpec, start: int, per: int) -> pd.DataFrame:
    """Sampled windows ``drawn`` (a row each: ``cpu``, ``cpu[-1]``...) as the rows they hold,
    oldest first, each window a series of its own (``sample-1``, ``sample-2``... from the
    ``start``-th window; a model without key columns: one series), a row a minute (or each
    ``max_gap_seconds``, where shorter) from 2000-01-01 UTC: records that score back as
    series. The columns the window derives
    (``cpu[-mean]``, the calendar's) are left out."""
    own = [c for c in drawn.columns if not is_window_column(c)]
    lags = range(per - 1, -1, -1)
    # Each window's rows together, oldest first; a column without a lag holds its value.
    rows = {
        c: np.stack(
            [drawn[lag_name(c, lag) if lag and lag_name(c, lag) in drawn else c] for lag in lags],
            axis=1,
        ).reshape(-1)
        for c in own
    }
    window = np.repeat(np.arange(start + 1, start + len(drawn) + 1), per)
    # Steps run on across windows, so that a model of one series (no key) gets them one
    # after another rather than at the same times. A minute each, or the model's gap limit
    # where that is shorter: a minute's step restarted every window of a model of 15 s rows.
    step = min(60.0, spec.max_gap_seconds or 60.0)
    steps = np.arange(start * per, (start + len(drawn)) * per) * step
    times = pd.Timestamp("2000-01-01", tz="UTC") + pd.to_timedelta(steps, unit="s")
    shape = "%Y-%m-%dT%H:%M:%SZ" if step == int(step) else "%Y-%m-%dT%H:%M:%S.%fZ"
    named = {spec.time_column: times.strftime(shape)}
    named |= {key: [f"sample-{w}" for w in window] for key in spec.key_columns}
    return pd.DataFrame(named | rows)


def _sample_groups(
    logits: np.ndarray, group_sizes: tuple[int, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    """One one-hot block ``(n, size)`` per categorical group, sampled from its softmax over the
    known categories (the last, "unseen", slot never drawn)."""
    blocks = []
    start = 0
    for size in group_sizes:
        known = logits[:, start : start + size - 1]
        probs = np.exp(known - known.max(axis=1, keepdims=True))
        cdf = np.cumsum(probs, axis=1)
        # Inverse-CDF sampling for every row at once; scaling u by the row's total is the
        # renormalisation over the known categories.
        u = rng.random((len(known), 1)) * cdf[:, -1:]
        codes = np.minimum((cdf < u).sum(axis=1), size - 2)
        block = np.zeros((len(known), size))
        block[np.arange(len(known)), codes] = 1.0
        blocks.append(block)
        start += size
    return blocks


def _context_block(bundle: Bundle, context: Mapping[str, str] | None) -> np.ndarray | None:
    """The context one-hot ``(1, context_dim)``, laid out as ``encode`` lays it out, or
    ``None`` without a context. A context column not named stays all zeros: "no context",
    which the conditional model learned (context dropout) as p(x) over all its values."""
    if not context:
        return None
    schema = bundle.schema
    if not bundle.model.conditional:
        raise ConfigError(
            f"model {bundle.model_type!r} does not condition on a context, so --context "
            f"{' '.join(f'{k}={v}' for k, v in context.items())} has no meaning for it: sample "
            "without --context, or train a conditional model (anomaly train DATA --model cvae "
            "--context COL) and sample from that"
        )
    names = [c.name for c in schema.context]
    unknown = [c for c in context if c not in names]
    if unknown:
        raise ConfigError(f"--context names {unknown}; the model's context columns are {names}")
    block = np.zeros((1, sum(schema.context_sizes)), dtype=np.float32)
    start = 0
    for col in schema.context:
        if col.name in context:
            value = str(context[col.name]).strip()
            if value not in col.categories:
                raise ConfigError(
                    f"--context {col.name}={value}: {value!r} was not seen in training; "
                    f"its known values are {list(col.categories)}"
                )
            block[0, start + col.categories.index(value)] = 1.0
        start += col.width
    return block
