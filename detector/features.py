"""Records -> model features: the schema learned at training and the encoding it implies.

The schema is fit on training data only and saved as plain JSON (no pickle). Numeric columns
are standardised with the training mean and standard deviation and clipped; categorical
columns become one-hot groups with one extra "unseen" slot, so a category never seen in
training gets a defined place (and, since the model never saw it, a low likelihood) instead of
a crash.

Context columns (``train --model cvae --context host``) are categorical inputs the model is
conditioned on but does not model: one-hot over the training values with no "unseen" slot. A
value never seen in training encodes as all zeros, "no context", which the conditional model
was trained to read (context dropout), and the row is flagged in ``context_unseen``.

Encoded layout, shape ``(n_rows, n_features)``: the numeric columns first, in schema order,
then each categorical column's one-hot group of ``len(categories) + 1`` slots, then each
context column's one-hot group of ``len(categories)`` slots: ``[features | context]``.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd

from detector.errors import DataError, SchemaError
from detector.wording import offered, option

#: Standardised values beyond this many standard deviations are clipped, so that one exploded
#: column cannot push the network into a numeric range it never saw.
DEFAULT_CLIP = 10.0
#: A numeric column's scale is at least this fraction of its training range, unless told
#: otherwise (``fit_schema``'s ``range_floor``).
DEFAULT_RANGE_FLOOR = 0.05
#: Fewer training rows cannot calibrate a threshold (``threshold.MIN_REFERENCE``).
MIN_TRAINING_ROWS = 30
#: A categorical column with more distinct values than this is almost surely an identifier.
MAX_CATEGORIES = 200

Imputation = Literal["median"] | None
#: Row position -> (code, sentence) for each problem found in that row.
Reasons = defaultdict[int, list[tuple[str, str]]]


@dataclass(frozen=True)
class NumericColumn:
    """A numeric column: standardised as ``(value - mean) / scale``."""

    name: str
    mean: float
    scale: float
    median: float
    minimum: float
    maximum: float


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical column: one-hot over ``categories`` plus one slot for unseen values."""

    name: str
    categories: tuple[str, ...]
    mode: str

    @property
    def width(self) -> int:
        return len(self.categories) + 1


@dataclass(frozen=True)
class ContextColumn:
    """A context column: one-hot over ``categories``; any other value encodes as all zeros."""

    name: str
    categories: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.categories)


@dataclass(frozen=True)
class Schema:
    """What the model expects: column names, kinds and the fitted encoding state."""

    numeric: tuple[NumericColumn, ...]
    categorical: tuple[CategoricalColumn, ...]
    column_order: tuple[str, ...]
    clip: float = DEFAULT_CLIP
    #: Columns the model is conditioned on, encoded after the modelled ones; not modelled.
    context: tuple[ContextColumn, ...] = ()

    @property
    def n_numeric(self) -> int:
        return len(self.numeric)

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """Width of each categorical column's one-hot group, in schema order."""
        return tuple(c.width for c in self.categorical)

    @property
    def context_sizes(self) -> tuple[int, ...]:
        """Width of each context column's one-hot group, in schema order."""
        return tuple(c.width for c in self.context)

    @property
    def n_features(self) -> int:
        """The encoded width: modelled features plus the context one-hots."""
        return self.n_numeric + sum(self.group_sizes) + sum(self.context_sizes)

    @cached_property
    def feature_columns(self) -> tuple[str, ...]:
        """The source column of each model output term: numerics, then one per group. Context
        columns are inputs, not terms, and are not listed."""
        return tuple(c.name for c in self.numeric) + tuple(c.name for c in self.categorical)

    @cached_property
    def scored_columns(self) -> tuple[str, ...]:
        """The modelled columns in the user's order: the columns contributions are given for
        (``column_order`` without the context columns)."""
        context = {c.name for c in self.context}
        return tuple(c for c in self.column_order if c not in context)

    @cached_property
    def term_starts(self) -> np.ndarray:
        """Where each model term's encoded features start: one per numeric column, then one
        per categorical one-hot group (the context groups are not terms)."""
        starts, position = list(range(self.n_numeric)), self.n_numeric
        for size in self.group_sizes:
            starts.append(position)
            position += size
        return np.array(starts, dtype=np.intp)

    @cached_property
    def scored_order(self) -> np.ndarray:
        """For each of ``scored_columns``, the position of its term in ``feature_columns``
        (cached, like the names: a record's scoring reads them)."""
        return np.array([self.feature_columns.index(c) for c in self.scored_columns], dtype=np.intp)

    @property
    def text_columns(self) -> tuple[str, ...]:
        """Columns whose values are labels, to be read as text: categorical and context."""
        return tuple(c.name for c in self.categorical) + tuple(c.name for c in self.context)

    def describe(self) -> str:
        """One line per column, as an error message shows what the model expects."""
        kinds = {c.name: "number" for c in self.numeric}
        kinds.update({c.name: f"category ({len(c.categories)} known)" for c in self.categorical})
        kinds.update({c.name: f"context ({len(c.categories)} known)" for c in self.context})
        return ", ".join(f"{name} ({kinds[name]})" for name in self.column_order)

    def to_dict(self) -> dict[str, Any]:
        return {
            "column_order": list(self.column_order),
            "clip": self.clip,
            "numeric": [vars(c) for c in self.numeric],
            "categorical": [
                {"name": c.name, "categories": list(c.categories), "mode": c.mode}
                for c in self.categorical
            ],
            "context": [{"name": c.name, "categories": list(c.categories)} for c in self.context],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Schema:
        numeric = tuple(NumericColumn(**{k: v for k, v in c.items()}) for c in state["numeric"])
        categorical = tuple(
            CategoricalColumn(name=c["name"], categories=tuple(c["categories"]), mode=c["mode"])
            for c in state["categorical"]
        )
        # Bundles written before context columns existed have no "context" key: no context.
        context = tuple(
            ContextColumn(name=c["name"], categories=tuple(c["categories"]))
            for c in state.get("context", [])
        )
        schema = cls(
            numeric=numeric,
            categorical=categorical,
            column_order=tuple(state["column_order"]),
            clip=float(state["clip"]),
            context=context,
        )
        names = {c.name for c in numeric} | {c.name for c in categorical}
        names |= {c.name for c in context}
        if names != set(schema.column_order) or len(names) != len(schema.column_order):
            raise ValueError("schema column_order does not match its columns")
        if any(not np.isfinite(c.scale) or c.scale <= 0 for c in numeric):
            raise ValueError("schema holds a non-positive or non-finite scale")
        return schema


#: Why a row can be rejected, as a short fixed code (a metrics label); the reason text says more.
REJECTION_CODES = ("missing_value", "not_a_number", "infinite")


@dataclass(frozen=True)
class Rejection:
    """A record that was not scored, and why. ``row`` is its 0-based position in the input;
    ``reasons`` holds one sentence per problem; ``code`` is the first problem's code from
    ``REJECTION_CODES``."""

    row: int
    reasons: tuple[str, ...]
    code: str = "missing_value"

    @property
    def reason(self) -> str:
        """All reasons in one line."""
        return "; ".join(self.reasons)


@dataclass(frozen=True, eq=False)
class EncodedBatch:
    """Encoded features for the accepted rows, plus the rejected rows with their reasons.

    ``values`` has shape ``(n_accepted, n_features)``; ``accepted`` is a boolean mask over the
    input rows, ``rows`` the input positions of the accepted rows. ``context_unseen``
    ``(n_accepted,)`` is true where a context column held a value not seen in training (encoded
    as no context); ``None`` when the schema has no context columns.
    """

    values: np.ndarray
    accepted: np.ndarray
    rejections: tuple[Rejection, ...] = field(default_factory=tuple)
    context_unseen: np.ndarray | None = None
    #: For each numeric column, in schema order: how many of its values read as numbers.
    numbers: tuple[NumberCount, ...] = ()

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.accepted)


@dataclass(frozen=True)
class NumberCount:
    """How a numeric column's values in one batch read: ``numbers`` parsed as numbers,
    ``not_numbers`` held text that is not one (empty values are neither), the first of which
    is ``example``."""

    name: str
    numbers: int
    not_numbers: int
    example: str | None = None


class NumberTally:
    """Whether a numeric column holds any number at all, decided over a whole input.

    A value that is not a number costs its row (a rejection with the reason). A numeric column
    in which no value of the whole input is a number, in more than one row, is a schema
    problem instead (the columns are in another order than their names say, every value
    carries a unit): ``check`` raises ``SchemaError``. The decision is the whole input's, so it
    cannot depend on how the input was cut into batches; a single request or batch is never
    judged by it (``encode`` only counts).
    """

    def __init__(self) -> None:
        self._counts: dict[str, NumberCount] = {}

    def add(self, batch: EncodedBatch) -> None:
        for count in batch.numbers:
            seen = self._counts.get(count.name)
            if seen is not None:
                count = NumberCount(
                    count.name,
                    seen.numbers + count.numbers,
                    seen.not_numbers + count.not_numbers,
                    seen.example if seen.example is not None else count.example,
                )
            self._counts[count.name] = count

    def check(self, source: str) -> None:
        """Raise ``SchemaError`` naming each numeric column of ``source`` with no number."""
        empty = [c for c in self._counts.values() if c.numbers == 0 and c.not_numbers > 1]
        if empty:
            described = "; ".join(
                f"column '{c.name}' holds no numbers (e.g. {c.example!r}; {c.not_numbers:,} "
                "values, none a number)"
                for c in empty
            )
            raise SchemaError(
                f"{source}: {described}; the model expects a number there: check the column "
                "order and the file's delimiter, decimal mark and units"
            )


def fit_schema(
    frame: pd.DataFrame,
    *,
    categorical: Iterable[str] = (),
    context: Iterable[str] = (),
    clip: float = DEFAULT_CLIP,
    range_floor: float = DEFAULT_RANGE_FLOOR,
) -> Schema:
    """Learn the schema from normal training data, shape ``(n_rows, n_columns)``.

    Each numeric column is standardised by ``max(std, range_floor * (max - min))`` of its
    training values; ``range_floor`` is a fraction in [0, 1].

    Numeric pandas dtypes become numeric columns; strings, booleans and the names in
    ``categorical`` become categorical; the names in ``context`` become context columns (read
    as labels whatever their dtype). Raises ``DataError`` or ``SchemaError`` with the fix when
    the table cannot train a model (empty, NaN, identifier-like columns).
    """
    if not 0.0 <= range_floor <= 1.0:
        raise ValueError(f"range_floor {range_floor} must be a fraction in [0, 1]")
    if frame.shape[1] == 0:
        raise DataError("the training data has no columns; give a CSV/Parquet with a header row")
    if len(frame) < MIN_TRAINING_ROWS:
        raise DataError(
            f"the training data has {len(frame)} rows; a model needs at least "
            f"{MIN_TRAINING_ROWS} normal rows (its threshold is calibrated on {MIN_TRAINING_ROWS} "
            "scores at least)"
        )
    dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if dupes:
        raise SchemaError(f"duplicate column names {dupes}; give every column a unique name")
    forced = set(categorical)
    unknown_forced = sorted(forced - set(map(str, frame.columns)))
    if unknown_forced:
        raise SchemaError(
            f"{option('categorical')} names columns not in the data: {unknown_forced}"
        )
    context_names = list(dict.fromkeys(context))
    unknown_context = sorted(set(context_names) - set(map(str, frame.columns)))
    if unknown_context:
        raise SchemaError(
            f"{option('context')} names columns not in the data: {unknown_context}; its "
            f"columns are {list(map(str, frame.columns))}"
        )
    if len(context_names) == frame.shape[1]:
        raise SchemaError(
            f"every column is a {option('context')} column; a conditional model needs at least one "
            "column to model"
        )

    numeric: list[NumericColumn] = []
    cats: list[CategoricalColumn] = []
    contexts: dict[str, ContextColumn] = {}
    problems: list[str] = []
    for name in frame.columns:
        series = frame[name]
        key = str(name)
        if key in context_names:
            labels = _fit_labels(key, series, problems)
            if labels is not None:
                contexts[key] = ContextColumn(name=key, categories=tuple(sorted(labels.index)))
            continue
        is_number = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        if is_number and key not in forced:
            values = series.to_numpy(dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                problems.append(
                    f"column '{key}' has {int(bad.sum())} empty/NaN/inf values (first at row "
                    f"{int(np.flatnonzero(bad)[0])}); training data must be complete: fill or "
                    "drop those rows"
                )
                continue
            numeric.append(_fit_numeric(key, values, range_floor))
        else:
            counts = _fit_labels(key, series, problems)
            if counts is None:
                continue
            cats.append(
                CategoricalColumn(
                    name=key,
                    categories=tuple(sorted(counts.index)),
                    mode=str(counts.index[0]),
                )
            )
    if problems:
        raise DataError("cannot train on this data:\n  " + "\n  ".join(problems))
    return Schema(
        numeric=tuple(numeric),
        categorical=tuple(cats),
        column_order=tuple(map(str, frame.columns)),
        clip=clip,
        context=tuple(contexts[name] for name in context_names),
    )


def _fit_labels(key: str, series: pd.Series, problems: list[str]) -> pd.Series | None:
    """A label column's value counts, most frequent first, indexed by the labels as text; or
    ``None`` with the reason added to ``problems``."""
    texts = _as_text(series)
    missing = texts.isna()
    if missing.any():
        problems.append(f"column '{key}' has {int(missing.sum())} empty values; fill or drop them")
        return None
    counts = texts.value_counts()
    if len(counts) > MAX_CATEGORIES:
        problems.append(
            f"column '{key}' has {len(counts)} distinct text values, which looks like an "
            f"identifier; {_leave_out(key)} (or make it numeric)"
        )
        return None
    counts.index = counts.index.map(str)
    return counts


def _fit_numeric(name: str, values: np.ndarray, range_floor: float) -> NumericColumn:
    mean = float(values.mean())
    std = float(values.std())
    spread = float(values.max() - values.min())
    # A column that is almost always one value (a pixel that is nearly always 0, an error count
    # that is nearly always 0) has a tiny standard deviation, and dividing by it would turn the
    # rare ordinary non-zero value into tens of sigma and let that column decide every score.
    # Its scale is therefore at least a fraction of its observed range. A floor of 0.25 scales
    # nearly every column by a quarter of its range, min-max scaling in units comparable to
    # standard deviations (uniform data has std = range / 3.5).
    scale = max(std, range_floor * spread)
    # A column constant in training keeps its raw units (scale 1, as scikit-learn's
    # StandardScaler does) instead of dividing by ~0 and turning any later change into 1e9 sigma.
    if scale <= 1e-8 * (1.0 + abs(mean)):
        scale = 1.0
    return NumericColumn(
        name=name,
        mean=mean,
        scale=scale,
        median=float(np.median(values)),
        minimum=float(values.min()),
        maximum=float(values.max()),
    )


def _as_text(series: pd.Series) -> pd.Series:
    """Category labels as strings, with missing values (None, NaN, '') as NA."""
    texts = series.astype("string").str.strip()
    return texts.mask(texts == "")


#: An error message names at most this many of the caller's names (columns, keys, inputs),
#: each cut to ``NAME_CHARS`` characters: a record with 40,000 unknown keys gets a sentence back,
#: not a megabyte of its own keys.
LISTED_NAMES = 10
NAME_CHARS = 64


def shortened(text: object, limit: int = NAME_CHARS) -> str:
    """``text`` as ``str``, cut to ``limit`` characters with the count of the rest."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more characters)"


def listed(names: Sequence[object], limit: int = LISTED_NAMES) -> str:
    """Names as an error message lists them: ``['a', 'b'] and 38 more``, at most ``limit``
    names, each ``shortened``. Every message that echoes names the caller sent uses this."""
    shown = repr([shortened(n) for n in names[:limit]])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def check_columns(
    schema: Schema,
    columns: Sequence[object],
    *,
    passthrough: Iterable[str] = (),
) -> None:
    """Raise ``SchemaError`` naming missing or unknown columns and what the model expects.
    Linear in the number of columns; the message lists a few of each kind (``listed``)."""
    present = [str(c) for c in columns]
    counts = Counter(present)
    dupes = sorted(c for c, n in counts.items() if n > 1)
    if dupes:
        raise SchemaError(
            f"duplicate column names {listed(dupes)}; give every column a unique name"
        )
    expected = set(schema.column_order)
    kept = set(passthrough)
    missing = [c for c in schema.column_order if c not in counts]
    unknown = [c for c in present if c not in expected and c not in kept]
    problems = []
    if missing:
        problems.append(f"missing column(s) {listed(missing)}")
    if unknown:
        keep = option("passthrough", *(shortened(c) for c in unknown[:LISTED_NAMES]))
        more = " ..." if len(unknown) > LISTED_NAMES else ""
        problems.append(
            f"unknown column(s) {listed(unknown)} (drop them, or keep them in the output unscored "
            f"with {keep}{more})"
        )
    if problems:
        raise SchemaError("; ".join(problems) + f". The model expects: {schema.describe()}")


def encode(
    schema: Schema,
    frame: pd.DataFrame,
    *,
    impute: Imputation = None,
    passthrough: Iterable[str] = (),
) -> EncodedBatch:
    """Encode records into model features, rejecting (not dropping) rows that cannot be scored.

    A row is rejected with its reason when a value is missing (unless ``impute="median"``),
    infinite, or not a number where a number is expected, however many rows of the batch share
    the problem: whether a whole input's column holds no numbers is ``NumberTally``'s to
    decide, from the counts in ``EncodedBatch.numbers``. A context value not seen in training
    (or, with ``impute="median"``, an empty one) encodes as no context and sets the row's
    ``context_unseen``.
    """
    check_columns(schema, frame.columns, passthrough=passthrough)
    n = len(frame)
    # Reasons only for rows that have any: a list per row of a 65k-row chunk would keep the
    # garbage collector busy (measured 5x slower encoding).
    reasons: Reasons = defaultdict(list)
    bad = np.zeros(n, dtype=bool)
    blocks: list[np.ndarray] = []

    numeric, numeric_bad, numbers = _numeric_block(schema, frame, impute, reasons)
    bad |= numeric_bad
    if schema.n_numeric:
        means = np.array([c.mean for c in schema.numeric])
        scales = np.array([c.scale for c in schema.numeric])
        scaled = (numeric - means) / scales
        blocks.append(np.clip(scaled, -schema.clip, schema.clip, out=scaled))

    for cat in schema.categorical:
        codes, col_bad = _parse_categorical(frame[cat.name], cat, impute, reasons)
        group = np.zeros((n, cat.width), dtype=np.float64)
        group[np.arange(n), codes] = 1.0
        blocks.append(group)
        bad |= col_bad

    unseen = np.zeros(n, dtype=bool)
    for ctx in schema.context:
        group, ctx_unseen, col_bad = _encode_context(frame[ctx.name], ctx, impute, reasons)
        blocks.append(group)
        unseen |= ctx_unseen
        bad |= col_bad

    values = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
    accepted = ~bad
    rejections = tuple(
        Rejection(i, tuple(text for _, text in reasons[i]), reasons[i][0][0])
        for i in np.flatnonzero(bad).tolist()
    )
    return EncodedBatch(
        values=np.ascontiguousarray(values[accepted], dtype=np.float32),
        accepted=accepted,
        rejections=rejections,
        context_unseen=unseen[accepted] if schema.context else None,
        numbers=numbers,
    )


def decode(schema: Schema, values: np.ndarray) -> pd.DataFrame:
    """The inverse of ``encode``: encoded features ``(n_rows, n_features)`` -> records in the
    training columns, order and units.

    Numeric features are clipped to the encoding's ``±clip`` range (the only values ``encode``
    produces) and de-standardised; each categorical group becomes the label of its largest slot,
    and the "unseen" slot, which has no label, becomes ``None``; so does an all-zero ("no
    context") context group. Labels are ``str`` in object columns.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != schema.n_features:
        raise ValueError(f"expected encoded values (n, {schema.n_features}), got {values.shape}")
    columns: dict[str, Any] = {}
    if schema.n_numeric:
        means = np.array([c.mean for c in schema.numeric])
        scales = np.array([c.scale for c in schema.numeric])
        numeric = np.clip(values[:, : schema.n_numeric], -schema.clip, schema.clip)
        for j, col in enumerate(schema.numeric):
            columns[col.name] = means[j] + scales[j] * numeric[:, j]
    start = schema.n_numeric
    for cat in schema.categorical:
        codes = values[:, start : start + cat.width].argmax(axis=1)
        labels = np.array([*cat.categories, None], dtype=object)[codes]
        columns[cat.name] = labels
        start += cat.width
    for ctx in schema.context:
        block = values[:, start : start + ctx.width]
        codes = np.where(block.max(axis=1) > 0, block.argmax(axis=1), ctx.width)
        labels = np.array([*ctx.categories, None], dtype=object)[codes]
        columns[ctx.name] = labels
        start += ctx.width
    return pd.DataFrame({name: columns[name] for name in schema.column_order})


def _numeric_block(
    schema: Schema, frame: pd.DataFrame, impute: Imputation, reasons: Reasons
) -> tuple[np.ndarray, np.ndarray, tuple[NumberCount, ...]]:
    """The numeric columns as floats ``(n, n_numeric)``, a mask of rows with a bad value, and
    how many values of each column read as numbers."""
    n = len(frame)
    bad = np.zeros(n, dtype=bool)
    if not schema.n_numeric:
        return np.empty((n, 0)), bad, ()
    numeric = np.empty((n, schema.n_numeric), dtype=np.float64)
    counts = []
    for j, col in enumerate(schema.numeric):
        # Column by column: selecting all numeric columns at once costs pandas a copy of the
        # frame, most of a single record's encoding time.
        series = frame[col.name]
        values, unparsed = _to_float(series)
        example = None
        if unparsed.any():
            example = str(series.iloc[int(np.argmax(unparsed))]).strip()
        # An infinite value is a number (rejected for what it is, not for not being one).
        present = n - int(np.isnan(values).sum())
        counts.append(NumberCount(col.name, present, int(unparsed.sum()), example))
        if unparsed.any() or not np.isfinite(values).all():
            values, col_bad = _flag_numeric(values, unparsed, series, col, impute, reasons)
            bad |= col_bad
        numeric[:, j] = values
    return numeric, bad, tuple(counts)


def _is_number(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _to_float(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 (NaN where missing or unparseable) and the mask of unparseable ones."""
    if _is_number(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(series), bool)
    texts = _as_text(series)
    values = pd.to_numeric(texts, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    unparsed = (texts.notna() & np.isnan(values)).to_numpy(dtype=bool)
    return values, unparsed


def _flag_numeric(
    values: np.ndarray,
    unparsed: np.ndarray,
    raw: pd.Series,
    col: NumericColumn,
    impute: Imputation,
    reasons: Reasons,
) -> tuple[np.ndarray, np.ndarray]:
    """Record why each bad value is bad; impute missing ones if asked. Returns the column with
    bad entries zeroed (they are never scored) and the mask of bad rows."""
    missing = np.isnan(values) & ~unparsed
    infinite = np.isinf(values)
    for i in np.flatnonzero(unparsed):
        reasons[int(i)].append(
            ("not_a_number", f"column '{col.name}': {raw.iloc[i]!r} is not a number")
        )
    for i in np.flatnonzero(infinite):
        reasons[int(i)].append(("infinite", f"column '{col.name}': value is infinite"))
    if impute == "median":
        values = np.where(missing, col.median, values)
        missing = np.zeros_like(missing)
    elif missing.any():
        reason = ("missing_value", f"column '{col.name}' is empty {_fill_it()}")
        for i in np.flatnonzero(missing):
            reasons[int(i)].append(reason)
    bad = unparsed | infinite | missing
    return np.where(bad, 0.0, values), bad


def _lookup_labels(series: pd.Series, categories: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each value's index in ``categories`` (-1 where it is not one of them) and the mask of
    empty values."""
    values = series.to_numpy(dtype=object, na_value=None)
    missing = np.asarray(pd.isna(values), dtype=bool)
    lookup = _category_codes(categories)
    codes = np.fromiter((lookup.get(v, -1) for v in values), dtype=np.int64, count=len(values))
    # Values that did not match as given (ints from JSON, padding) pay for normalising to
    # stripped text; everything else took one dictionary lookup.
    retry = np.flatnonzero((codes < 0) & ~missing)
    if len(retry):
        cleaned = [str(v).strip() for v in values[retry]]
        codes[retry] = [lookup.get(v, -1) for v in cleaned]
        missing[retry[np.asarray([v == "" for v in cleaned], dtype=bool)]] = True
    return codes, missing


def _encode_context(
    series: pd.Series, col: ContextColumn, impute: Imputation, reasons: Reasons
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A context column's one-hot group ``(n, width)``, the mask of rows encoded as no context
    (a value not seen in training; an empty one when imputing) and the mask of rejected rows."""
    codes, missing = _lookup_labels(series, col.categories)
    if impute != "median" and missing.any():
        fix = _fill_it(" to score the record without its context")
        reason = ("missing_value", f"context column '{col.name}' is empty {fix}")
        for i in np.flatnonzero(missing):
            reasons[int(i)].append(reason)
    known = np.flatnonzero(codes >= 0)
    group = np.zeros((len(codes), col.width), dtype=np.float64)
    group[known, codes[known]] = 1.0
    unseen = codes < 0
    return group, unseen, missing if impute != "median" else np.zeros_like(missing)


def _parse_categorical(
    series: pd.Series,
    col: CategoricalColumn,
    impute: Imputation,
    reasons: Reasons,
) -> tuple[np.ndarray, np.ndarray]:
    codes, missing = _lookup_labels(series, col.categories)
    if impute == "median" and missing.any():
        # For a category the median's counterpart is the most frequent training value.
        codes[missing] = col.categories.index(col.mode)
        missing[:] = False
    # -1 (not among the training categories) goes to the group's last, "unseen", slot.
    codes = np.where(codes < 0, len(col.categories), codes)
    if missing.any():
        reason = ("missing_value", f"column '{col.name}' is empty {_fill_it()}")
        for i in np.flatnonzero(missing):
            reasons[int(i)].append(reason)
    return np.where(missing, 0, codes), missing


def _fill_it(imputing: str = "") -> str:
    """The fix for an empty value, as the reader can apply it: the service cannot impute."""
    if not offered("impute"):
        return "(fill it)"
    return f"(fill it, or score with {option('impute', 'median')}{imputing})"


def _leave_out(column: str) -> str:
    """How to keep a column out of training, as the reader can: Python has no parameter."""
    if offered("ignore_column"):
        return f"leave it out with {option('ignore_column', column)}"
    return "drop it from the data"


@lru_cache(maxsize=256)
def _category_codes(categories: tuple[str, ...]) -> dict[object, int]:
    return {c: i for i, c in enumerate(categories)}


def fingerprint(frame: pd.DataFrame) -> str:
    """A stable SHA-256 of a table's columns and values, to tell which data trained a model."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
