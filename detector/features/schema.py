"""The schema: what a model expects of its records (column names, kinds, and the encoding
state fitted on the training rows), learned by ``fit_schema`` and saved as plain JSON (no
pickle). ``detector.features.encode`` encodes records with it; its docstring gives the layout.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import pandas as pd

from detector.errors import DataError, SchemaError
from detector.wording import offered, option, printable

#: Standardised values beyond this many standard deviations are clipped, so that one exploded
#: column cannot push the network into a numeric range it never saw.
DEFAULT_CLIP = 10.0
#: A numeric column's scale is at least this fraction of its training range, unless told
#: otherwise (``fit_schema``'s ``range_floor``).
DEFAULT_RANGE_FLOOR = 0.05
#: Fewer training rows cannot calibrate a threshold (``threshold.MIN_REFERENCE``).
MIN_TRAINING_ROWS = 30
#: A text column keeps a slot for each of at most this many labels, its most frequent; the
#: rest of its training labels share one "rare" slot (``CategoricalColumn.rare``).
MAX_CATEGORIES = 200
#: A text column of more than ``MAX_CATEGORIES`` labels whose distinct labels are more than
#: this share of its training rows is an identifier, refused: most of its labels are held by
#: one row or two (a row or request id: one each), so nearly every row would go to the rare
#: slot and the column would tell the model nothing, while every label swells the bundle. A
#: country (~250 labels), a merchant category (~1,000), a city or a user agent family repeat
#: their labels in any table of more than twice their count, and are learned.
IDENTIFIER_SHARE = 0.5
#: The most features (numbers, plus a slot per label and an unseen one per text column) a
#: model is trained on: 300 text columns of 150 labels (45,300) took 15 GB to train, made a
#: 532 MB bundle and scored 19 rows a second; 2,000 numbers took 1.3 GB and made 26 MB.
MAX_FEATURES = 10_000


@dataclass(frozen=True)
class NumericColumn:
    """A numeric column: standardised as ``(value - mean) / scale``; with ``log``, its values
    are first taken as ``signed_log(value)`` (a heavy-tailed column: amounts, durations, byte
    counts), and every statistic here is of those."""

    name: str
    mean: float
    scale: float
    median: float
    minimum: float
    maximum: float
    log: bool = False
    #: Every training value a whole number (counts, hours, ports): samples come back as such.
    integer: bool = False

    def raw(self, values: Any) -> Any:
        """Values in this column's fitted units back in the data's (the inverse of ``log``)."""
        return signed_exp(values) if self.log else values


#: ``NumericColumn``'s flags, written to a bundle only where true.
_FLAGS = ("log", "integer")


def signed_log(values: Any) -> Any:
    """sign(x) log(1 + |x|): the logarithm of a heavy-tailed column, defined for every number
    (a refund's negative amount too), 0 at 0."""
    return np.sign(values) * np.log1p(np.abs(values))


def signed_exp(values: Any) -> Any:
    """The inverse of ``signed_log``."""
    return np.sign(values) * np.expm1(np.abs(values))


#: A numeric column none of whose training values is negative, at least ``HEAVY_TAIL_ROWS`` of
#: them, skewed past ``HEAVY_TAIL_SKEW`` and whose largest value is ``HEAVY_TAIL_RATIO`` times
#: its median is heavy-tailed, and modelled as its logarithm (a log-normal of sigma 1 is
#: skewed 6.2). Chosen on every labelled family at once (``bench_distance.py --study logs``).
HEAVY_TAIL_SKEW = 5.0
HEAVY_TAIL_RATIO = 50.0
HEAVY_TAIL_ROWS = 50


def heavy_tail_ratio(values: np.ndarray) -> float | None:
    """The largest value over the median, where ``values`` (finite numbers) are heavy-tailed
    (``HEAVY_TAIL_SKEW``); ``None`` where they are not."""
    numbers = np.asarray(values, dtype=np.float64)
    numbers = numbers[np.isfinite(numbers)]
    if len(numbers) < HEAVY_TAIL_ROWS or numbers.min() < 0:
        return None
    median = float(np.median(numbers))
    if median <= 0:
        return None
    ratio = float(numbers.max()) / median
    if ratio < HEAVY_TAIL_RATIO or float(pd.Series(numbers).skew()) <= HEAVY_TAIL_SKEW:
        return None
    return ratio


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical column: one-hot over ``categories`` plus one slot for unseen values; a
    column of more than ``MAX_CATEGORIES`` training labels keeps ``categories`` for its most
    frequent ones, and its other training labels, ``rare`` (held by ``rare_share`` of the
    training rows), share one slot between the two."""

    name: str
    categories: tuple[str, ...]
    mode: str
    rare: tuple[str, ...] = ()
    rare_share: float = 0.0

    @property
    def width(self) -> int:
        return len(self.categories) + 1 + bool(self.rare)

    @property
    def labels(self) -> tuple[str, ...]:
        """Every training label: those with a slot, then the rare ones."""
        return self.categories + self.rare if self.rare else self.categories

    def describe_rare(self) -> str | None:
        """The rare labels in words, or ``None`` where the column has none."""
        if not self.rare:
            return None
        return (
            f"column '{printable(self.name)}': {len(self.labels):,} labels; the "
            f"{len(self.categories):,} most frequent have a slot each, the other "
            f"{len(self.rare):,} ({self.rare_share:.1%} of rows) share one"
        )


@dataclass(frozen=True)
class ContextColumn:
    """A context column: one-hot over ``categories``; any other value encodes as all zeros."""

    name: str
    categories: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.categories)

    @property
    def labels(self) -> tuple[str, ...]:
        """Every training label."""
        return self.categories


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
    def logged(self) -> tuple[int, ...]:
        """The positions of the numeric columns taken as their logarithm (``NumericColumn.log``)."""
        return tuple(j for j, c in enumerate(self.numeric) if c.log)

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

    def subset(self, names: Iterable[str]) -> Schema:
        """This schema for the columns ``names`` alone, encoded as here (a series model's own
        columns, without the window's)."""
        keep = set(names)
        return Schema(
            numeric=tuple(c for c in self.numeric if c.name in keep),
            categorical=tuple(c for c in self.categorical if c.name in keep),
            column_order=tuple(c for c in self.column_order if c in keep),
            clip=self.clip,
            context=tuple(c for c in self.context if c.name in keep),
        )

    @property
    def text_columns(self) -> tuple[str, ...]:
        """Columns whose values are labels, to be read as text: categorical and context."""
        return tuple(c.name for c in self.categorical) + tuple(c.name for c in self.context)

    def describe(self, columns: Sequence[str] | None = None) -> str:
        """Each column and its kind, as an error message shows what the model expects
        (``columns``: the input's, where they are not the schema's, as for a series model)."""
        kinds = {c.name: "number" for c in self.numeric}
        kinds.update({c.name: f"category ({len(c.labels)} known)" for c in self.categorical})
        kinds.update({c.name: f"context ({len(c.categories)} known)" for c in self.context})
        shown = self.column_order if columns is None else columns
        return ", ".join(
            f"{printable(name)} ({kinds[name]})" if name in kinds else printable(name)
            for name in shown
        )

    def describe_rare(self) -> tuple[str, ...]:
        """A sentence for each text column whose rare labels share a slot."""
        return tuple(filter(None, (c.describe_rare() for c in self.categorical)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "column_order": list(self.column_order),
            "clip": self.clip,
            # Copies, not the columns' own; the flags only where set, as bundles before them read.
            "numeric": [
                {k: v for k, v in vars(c).items() if k not in _FLAGS or v} for c in self.numeric
            ],
            # The rare labels only where a column has them: other bundles read as before.
            "categorical": [
                {"name": c.name, "categories": list(c.categories), "mode": c.mode}
                | ({"rare": list(c.rare), "rare_share": c.rare_share} if c.rare else {})
                for c in self.categorical
            ],
            "context": [{"name": c.name, "categories": list(c.categories)} for c in self.context],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Schema:
        numeric = tuple(NumericColumn(**{k: v for k, v in c.items()}) for c in state["numeric"])
        categorical = tuple(
            CategoricalColumn(
                name=c["name"],
                categories=tuple(c["categories"]),
                mode=c["mode"],
                rare=tuple(c.get("rare", ())),
                rare_share=float(c.get("rare_share", 0.0)),
            )
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
        if not 0 < schema.clip < np.inf:  # at -1 every value clipped past: every row flagged
            raise ValueError(f"schema clip {schema.clip} is not a positive number")
        return schema


def check_unique_names(columns: Iterable[object]) -> None:
    """A ``SchemaError`` naming the columns whose names repeat, as text (``1`` and ``'1'`` are
    one name: every column is addressed by its name as text)."""
    counts = Counter(map(str, columns))
    dupes = sorted(name for name, n in counts.items() if n > 1)
    if dupes:
        shown = dupes[:10] + ([f"... {len(dupes) - 10} more"] if len(dupes) > 10 else [])
        raise SchemaError(f"duplicate column names {shown}; give every column a unique name")


def fit_schema(
    frame: pd.DataFrame,
    *,
    categorical: Iterable[str] = (),
    context: Iterable[str] = (),
    clip: float = DEFAULT_CLIP,
    range_floor: float = DEFAULT_RANGE_FLOOR,
    log_tails: bool = True,
) -> Schema:
    """Learn the schema from normal training data, shape ``(n_rows, n_columns)``.

    Each numeric column is standardised by ``max(std, range_floor * (max - min))`` of its
    training values; ``range_floor`` is a fraction in [0, 1]. With ``log_tails``, a
    heavy-tailed column (``heavy_tail_ratio``) is taken as its logarithm first.

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
    check_unique_names(frame.columns)
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
            if _is_measure(series) and series.nunique() > MAX_CATEGORIES:
                # "distinct text values, which looks like an identifier ... make it numeric"
                # was said of a column that was numeric already.
                problems.append(
                    f"context column '{key}' is a measurement ({series.nunique()} distinct "
                    f"numbers); a context is a category such as a host or a service: give "
                    f"{option('context')} a column of labels, and leave '{key}' to be modelled"
                )
                continue
            labels = _fit_labels(key, series, problems)
            if labels is not None:
                contexts[key] = ContextColumn(name=key, categories=tuple(sorted(labels.index)))
            continue
        if key not in forced and (problem := _not_a_value_kind(key, series)):
            problems.append(problem)
            continue
        is_number = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        if is_number and key not in forced:
            values = series.to_numpy(dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                # Mostly empty (a metric most hosts lack): dropping its rows drops the table.
                fix = (
                    f"{_leave_out(key)}, or fill it"
                    if bad.mean() > 0.5
                    else "fill or drop those rows"
                )
                problems.append(
                    f"column '{key}' has {int(bad.sum())} empty/NaN/inf values (first at row "
                    f"{int(np.flatnonzero(bad)[0]) + 1}); training data must be complete: {fix}"
                )
                continue
            if unit := _epoch_unit(key, values):
                # Learnt as a measurement, every later time lies beyond the training range:
                # a helper's next day of rows was 100% flagged.
                problems.append(_times_problem(key, f"{values[0]:.0f}", unit))
                continue
            integer = bool(np.array_equal(values, np.round(values)))
            logged = log_tails and heavy_tail_ratio(values) is not None
            if logged:
                # Amounts crowd near 0 and their largest values lie tens of scales out: a
                # distance saw little else (a fraud helper's AUROC .73, .89 given logs).
                values = signed_log(values)
            column = _fit_numeric(key, values, range_floor, log=logged, integer=integer)
            if not np.isfinite([column.mean, column.scale]).all():
                problems.append(
                    f"column '{key}' reaches {np.abs(values).max():.3g}, too large to "
                    "standardise; rescale it (divide it, or take its logarithm) before training"
                )
                continue
            numeric.append(column)
        else:
            head = as_text(series.head(_TIMES_CHECKED))  # not the whole column: training's hot path
            if key not in forced and _holds_times(head):
                # A day or an instant as a label: every later one is a label never seen, so
                # each new day would score as anomalous.
                problems.append(_times_problem(key, head.dropna().iloc[0]))
                continue
            if key not in forced and (
                problem := _numbers_as_text(key, series) or _stray_words(key, series)
            ):
                problems.append(problem)
                continue
            counts = _fit_labels(key, series, problems, many=True, forced=key in forced)
            if counts is None:
                continue
            cats.append(_categorical(key, counts))
    if (
        not problems
        and all(c.minimum == c.maximum for c in numeric)
        and all(len(c.categories) == 1 for c in cats)
    ):
        # Training would run, then find every held-out score alike and blame the epochs.
        held = [f"{c.name} = {c.minimum:g}" for c in numeric] + [
            f"{c.name} = {c.mode!r}" for c in cats
        ]
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        problems.append(
            f"every column holds one value in all {len(frame)} rows ({shown}): nothing tells "
            "one record from another; train on a period in which the columns vary"
        )
    features = len(numeric) + sum(c.width for c in cats)
    if not problems and features > MAX_FEATURES:
        problems.append(_too_wide(features, numeric, cats))
    if problems:
        raise DataError("cannot train on this data:\n  " + "\n  ".join(problems))
    return Schema(
        numeric=tuple(numeric),
        categorical=tuple(cats),
        column_order=tuple(map(str, frame.columns)),
        clip=clip,
        context=tuple(contexts[name] for name in context_names),
    )


def numbers_from_decimals(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each column of ``decimal.Decimal`` values as floats. Parquet's and
    databases' exact decimals (Spark's and dbt's NUMERIC, ``pandas.read_sql``) reach pandas as
    Python objects, which would be taken for text labels; scoring's reader casts them to
    numbers, so training must too."""
    exact = [name for name in frame.columns if _holds_decimals(frame[name])]
    if not exact:
        return frame
    return frame.assign(**{str(name): frame[name].astype(np.float64) for name in exact})


def _holds_decimals(series: pd.Series) -> bool:
    if series.dtype != object:
        return False
    present = series.dropna()
    return len(present) > 0 and all(isinstance(v, Decimal) for v in present.to_numpy())


def _not_a_value_kind(key: str, series: pd.Series) -> str | None:
    """Why a column of a dtype neither a number nor a label cannot be trained on, or ``None``:
    a duration or a complex number would otherwise be read as text, each value a label."""
    if pd.api.types.is_timedelta64_dtype(series):
        return (
            f"column '{key}' holds durations ({series.iloc[0]}, ...), not numbers; give them "
            f"in one unit, e.g. seconds (frame['{key}'].dt.total_seconds()), or {_leave_out(key)}"
        )
    if pd.api.types.is_complex_dtype(series):
        return (
            f"column '{key}' holds complex numbers ({series.iloc[0]}, ...); give their real and "
            f"imaginary parts (or their magnitude) as columns of their own, or {_leave_out(key)}"
        )
    return None


#: A text column whose values are all numbers but for at most this share is taken for a
#: numeric column with stray text in it (where it has too many values to be labels).
STRAY_TEXT_SHARE = 0.05
#: Distinct numbers past which such a column is a measure with stray text in it, not labels
#: that happen to be numbers (status codes, with a 'TIMEOUT').
STRAY_NUMBERS = 20
#: The longest label a categorical column may hold: every label is kept in the manifest.
MAX_LABEL_CHARS = 10_000


def _stray_words(key: str, column: pd.Series, *, labels_fix: bool = True) -> str | None:
    """What to say of a text column of numbers but for a few words ('oops', a broken cell):
    trained as it is, a measure became labels (60 rows: 59 of them) without a word."""
    head = as_text(column.head(1_000))
    if pd.to_numeric(head, errors="coerce").isna().mean() > 0.5:
        return None  # labels, as most text columns hold: not read whole (training's hot path)
    texts = as_text(column)
    numbers = pd.to_numeric(texts, errors="coerce")
    words = (numbers.isna() & texts.notna()).to_numpy()
    if not 0 < words.mean() <= STRAY_TEXT_SHARE:
        return None
    if labels_fix and numbers.nunique() <= STRAY_NUMBERS:
        return None
    first = int(np.flatnonzero(words)[0])
    shown = texts.iloc[first]
    shown = shown if len(shown) <= 40 else f"{shown[:40]}... ({len(shown):,} characters)"
    labels = f", or give {option('categorical', key)} if it holds labels" if labels_fix else ""
    return (
        f"column '{key}' holds numbers but for {int(words.sum())} value(s) that are not "
        f"(first {shown!r}, at row {first + 1}); training data must be complete: fix or drop "
        f"those rows{labels}"
    )


def _too_wide(
    features: int, numeric: Sequence[NumericColumn], cats: Sequence[CategoricalColumn]
) -> str:
    """What to say of a table encoding to over ``MAX_FEATURES`` features, naming its widest
    text columns (where a table gets that wide)."""
    widest = sorted(cats, key=lambda c: -c.width)[:3]
    named = ", ".join(f"'{printable(c.name)}' ({len(c.categories)} labels)" for c in widest)
    texts = f", {len(cats)} text columns a slot per label (widest: {named})" if cats else ""
    return (
        f"the columns encode to {features:,} features ({len(numeric):,} numbers{texts}), "
        f"{_over_the_limit()}, or group rare labels into one"
    )


def check_width(columns: int, source: str) -> None:
    """Refuse ``columns`` columns to model (a header's, less those named for other roles)
    where they are more than ``MAX_FEATURES``: each is one feature at least, so reading the
    rows could only end in ``_too_wide``'s refusal, or before it in memory running out (a
    header of 1,000,000 columns: 50 s and 3 GB read, then a ``MemoryError``)."""
    if columns > MAX_FEATURES:
        raise DataError(
            f"cannot train on {source}: its header names {columns:,} columns to model, each "
            f"one feature at least, {_over_the_limit()}, or write the columns to model to a "
            "file of their own"
        )


def _over_the_limit() -> str:
    """The limit on features, why it is there, and the first way under it."""
    leave = (
        f"leave columns out ({option('ignore_column', 'COL')})"
        if offered("ignore_column")
        else "drop columns from the data"
    )
    return (
        f"over the {MAX_FEATURES:,} a model is trained on (memory, the bundle and scoring time "
        f"grow with them: 45,300 took 15 GB); {leave}"
    )


def _is_measure(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _categorical(key: str, counts: pd.Series) -> CategoricalColumn:
    """A text column from its labels' training counts (most frequent first): a slot for each
    label, or past ``MAX_CATEGORIES`` labels for the most frequent ``MAX_CATEGORIES`` (ties by
    the label's text) and one shared by the rest."""
    if len(counts) <= MAX_CATEGORIES:
        return CategoricalColumn(
            name=key, categories=tuple(sorted(counts.index)), mode=str(counts.index[0])
        )
    ranked = sorted(zip(counts.index, counts.to_numpy().tolist(), strict=True), key=_by_count)
    kept, rest = ranked[:MAX_CATEGORIES], ranked[MAX_CATEGORIES:]
    return CategoricalColumn(
        name=key,
        categories=tuple(sorted(label for label, _ in kept)),
        mode=kept[0][0],
        rare=tuple(sorted(label for label, _ in rest)),
        rare_share=sum(n for _, n in rest) / int(counts.sum()),
    )


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _fit_labels(
    key: str, series: pd.Series, problems: list[str], *, many: bool = False, forced: bool = False
) -> pd.Series | None:
    """A label column's value counts, most frequent first, indexed by the labels as text; or
    ``None`` with the reason added to ``problems``. Past ``MAX_CATEGORIES`` labels, refused as
    an identifier; with ``many`` (a modelled column, whose rare labels share a slot) only where
    they are more than ``IDENTIFIER_SHARE`` of the rows, or the most frequent
    ``MAX_CATEGORIES`` hold less than that share of them. ``forced``: given to ``--categorical``;
    a column of numbers so given is told to be taken out of it first."""
    if series.dtype == object:
        nested = np.flatnonzero(list(map(is_nested, series.to_numpy())))
        if len(nested):
            problems.append(
                f"column '{key}' holds lists or objects ({series.iloc[nested[0]]!r} at row "
                f"{nested[0] + 1}, {len(nested)} in all), not one number or label a cell; "
                f"flatten it into columns, or {_leave_out(key)}"
            )
            return None
    texts = as_text(series)
    missing = texts.isna()
    if missing.any():
        problems.append(
            f"column '{key}' has {int(missing.sum())} empty values (empty cells, or text read "
            "as missing: NA, N/A, None, null, NaN); fill or drop them, and spell a real value "
            "written so (NA for North America) otherwise"
        )
        return None
    long = np.flatnonzero(texts.str.len().to_numpy() > MAX_LABEL_CHARS)
    if len(long):
        # A label held whole in the manifest: a 100 MB cell made a bundle its loader refused.
        problems.append(
            f"column '{key}' holds a value of {len(texts.iloc[long[0]]):,} characters (at row "
            f"{long[0] + 1}; {len(long)} over {MAX_LABEL_CHARS:,} in all), not a label; fix or "
            f"drop those rows, or {_leave_out(key)}"
        )
        return None
    counts = texts.value_counts()
    if len(counts) > MAX_CATEGORIES:
        # A numeric column with a stray word in it reads as text: name the word, not an id.
        if problem := _stray_words(key, texts, labels_fix=False):
            problems.append(problem)
            return None
        if _holds_times(texts):
            problems.append(_times_problem(key, texts.dropna().iloc[0]))
            return None
        if not many:
            problems.append(
                f"column '{key}' has {len(counts)} distinct text values, which looks like an "
                f"identifier; {_leave_out(key)}"
            )
            return None
        # Forced --categorical, a quantity ("looks like an identifier; leave it out" was all a
        # price of 2,062 values in 3,000 rows was told) is modelled as a number without it.
        kind, like, fix = "text values", "which looks like an identifier", _leave_out(key)
        # The command line reads a column given to --categorical as text: its labels tell.
        if forced and pd.to_numeric(counts.index.to_series(), errors="coerce").notna().all():
            kind = f"numbers (given to {option('categorical')}: each value a label)"
            like = "too many to be labels"
            fix = f"drop {option('categorical', key)} to model it as a number, or {fix}"
        if len(counts) > IDENTIFIER_SHARE * len(texts):
            problems.append(
                f"column '{key}' has {len(counts):,} distinct {kind} in {len(texts):,} "
                f"rows (over {MAX_CATEGORIES}, and over {IDENTIFIER_SHARE:.0%} of the rows: most "
                f"labels held by a row or two), {like}; {fix}"
            )
            return None
        rows, slotted = int(counts.sum()), int(counts.iloc[:MAX_CATEGORIES].sum())
        if slotted < IDENTIFIER_SHARE * rows:
            # 123,515 labels in 300,000 rows (a user id of 2-3 rows each) passed the rule above
            # and put 99.4% of the rows in the rare slot, with a 3 MB manifest of its labels.
            problems.append(
                f"column '{key}' has {len(counts):,} distinct {kind} whose "
                f"{MAX_CATEGORIES} most frequent hold {slotted / rows:.1%} of its {rows:,} rows "
                f"(under {IDENTIFIER_SHARE:.0%}: most rows would share the rare labels' one "
                f"slot), {like}; {fix}"
            )
            return None
    counts.index = counts.index.map(str)
    return counts


def _fit_numeric(
    name: str, values: np.ndarray, range_floor: float, *, log: bool = False, integer: bool = False
) -> NumericColumn:
    # Values past ~1e154 overflow the variance's squares (and the spread of +-1e308 is inf):
    # the moments are taken in units of a power of two near the largest value, which divides
    # exactly, so ordinary columns get the same numbers to the bit.
    largest = float(np.abs(values).max()) if len(values) else 0.0
    unit = 2.0 ** np.floor(np.log2(largest)) if largest > 2.0**500 else 1.0
    scaled = values / unit
    mean = float(scaled.mean()) * unit
    std = float(scaled.std()) * unit
    floor = float(scaled.max() - scaled.min()) * range_floor * unit
    # A column that is almost always one value (a pixel that is nearly always 0, an error count
    # that is nearly always 0) has a tiny standard deviation, and dividing by it would turn the
    # rare ordinary non-zero value into tens of sigma and let that column decide every score.
    # Its scale is therefore at least a fraction of its observed range. A floor of 0.25 scales
    # nearly every column by a quarter of its range, min-max scaling in units comparable to
    # standard deviations (uniform data has std = range / 3.5).
    scale = max(std, floor)
    # A column constant in training keeps its raw units (scale 1, as scikit-learn's
    # StandardScaler does) instead of dividing by ~0 and turning any later change into 1e9 sigma.
    if scale <= 1e-8 * (1.0 + abs(mean)):
        scale = 1.0
    return NumericColumn(
        name=name,
        mean=mean,
        scale=scale,
        median=float(np.median(scaled)) * unit,
        minimum=float(values.min()),
        maximum=float(values.max()),
        log=log,
        integer=integer,
    )


_TRUE = ("true", "t", "yes", "y", "on", "1", "1.0")
_FALSE = ("false", "f", "no", "n", "off", "0", "0.0")
#: Each way to write true or false, and its others (a label that is one stays its own).
_BOOLEAN_SPELLINGS = {word: words for words in (_TRUE, _FALSE) for word in words}


def label_lookup(categories: Sequence[str]) -> dict[str, int]:
    """Each training label's slot; a boolean word also under its other spellings (true, yes,
    1, on ... in any case). pandas reads a training CSV's ``true`` as the boolean True,
    labelled 'True', while a file or request scored later gives the text as written: every
    row was an unseen category. A label with
    accents is also found in either Unicode form (``same_letters``)."""
    lookup = {label: i for i, label in enumerate(categories)}
    # A flag (every label a way to write true or false) exported as 1/0 or yes/no by another
    # system: a fraud helper's is_3ds as 'yes' scored 35.8 against 0.39 for 'true'.
    flag = all(label.lower() in _BOOLEAN_SPELLINGS for label in categories)
    for label, i in list(lookup.items()):
        for word in _BOOLEAN_SPELLINGS.get(label.lower(), ()) if flag else ():
            for spelling in (word, word.upper(), word.capitalize()):
                lookup.setdefault(spelling, i)
        if not label.isascii():
            for form in ("NFC", "NFD"):
                lookup.setdefault(unicodedata.normalize(form, label), i)
    return lookup


def training_spellings(categories: tuple[str, ...], values: Iterable[object]) -> list[str | None]:
    """For each of ``values``, the label of ``categories`` it is in another case (and spaces
    around it), where it is text and no label as given or stripped: 'tcp' for 'TCP'. Such a
    value is encoded as unseen, as it should be (a changed label may be the anomaly), and the
    user is told (``encoded.Respelling``); ``None`` for any other value."""
    lookup, folded = _spellings(categories)

    def spelling(value: object) -> str | None:
        if not isinstance(value, str) or value in lookup:
            return None
        text = same_letters(value.strip())
        return None if text in lookup else folded.get(text.casefold())

    return [spelling(v) for v in values]


def respelled_values(categories: tuple[str, ...], values: Iterable[object]) -> dict[str, str]:
    """Each distinct one of ``values`` that ``training_spellings`` gives a label for, with that
    label: ``{}`` where none is. Decided on the distinct values, and at once where every value
    is a label as trained (a batch of 1,000 records holds a few hosts, none respelled): asked
    of each value in turn, it cost ~1% of what scoring a 1,000-record request costs."""
    lookup = _spellings(categories)[0]
    try:
        distinct = set(values)
    except TypeError:  # a list or an object is no text, and no label in another case
        distinct = {v for v in values if isinstance(v, str)}
    # Each distinct value looked up, not the labels removed: a column may have 10,000 labels.
    unknown = [v for v in distinct if isinstance(v, str) and v not in lookup]
    if not unknown:
        return {}
    return {
        value: trained
        for value, trained in zip(unknown, training_spellings(categories, unknown), strict=True)
        if trained is not None
    }


def label_spelling_warning(schema: Schema) -> str | None:
    """What to say where a text column's training labels differ from another only in case or
    spaces ('TCP' and 'tcp'): each was learned as a category of its own, and the rows of one
    score as unusual to the other's; most likely one value exported two ways."""
    found = []
    columns: list[CategoricalColumn | ContextColumn] = [*schema.categorical, *schema.context]
    for column in columns:
        by_form: dict[str, list[str]] = {}
        for label in column.labels:
            by_form.setdefault(same_letters(label.strip()).casefold(), []).append(label)
        alike = [labels for labels in by_form.values() if len(labels) > 1]
        if alike:
            shown = ", ".join(" and ".join(map(repr, labels)) for labels in alike[:3])
            found.append(f"'{column.name}' ({shown})")
    if not found:
        return None
    return (
        f"text values in training differ from another only in case or spaces, column "
        f"{'; '.join(found)}: each was learned as a category of its own, so rows written one "
        "way score as unusual against the rows written the other; if they mean one value, "
        "write them alike (in training and in what is scored) and train again"
    )


@lru_cache(maxsize=256)
def _spellings(categories: tuple[str, ...]) -> tuple[dict[str, int], dict[str, str]]:
    """``label_lookup(categories)``, and each label by its casefolded form."""
    folded: dict[str, str] = {}
    for label in categories:
        folded.setdefault(same_letters(label).casefold(), label)
    return label_lookup(categories), folded


def same_letters(text: str) -> str:
    """``text`` in one Unicode form (NFC): 'é' is one character or two ('e' and an accent, as
    macOS writes some files), which look alike and compared unequal (an unseen category)."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def as_text(series: pd.Series) -> pd.Series:
    """Category labels as strings, with missing values (None, NaN, '') as NA."""
    texts = series.astype("string").str.strip()
    return texts.mask(texts == "")


def _times_problem(key: str, first: object, unit: str = "") -> str:
    held = f" as {unit}" if unit else ""
    return (
        f"column '{key}' holds times{held} ({first!r}, ...); to judge each row with "
        f"the rows before it, train with {option('time_column', key)} (and "
        f"{option('series_columns', 'KEY')} for each host's or service's own series); else "
        f"{_leave_out(key)}"
    )


#: Names a column of times goes by: ts, time, timestamp, datetime, date, epoch, and names
#: ending _ts, _timestamp, _at, _epoch, _date (not _time: response_time is a duration).
_TIME_NAME = re.compile(
    r"^(ts|time|timestamp|datetime|date|epoch)$|_(ts|timestamp|at|epoch|date)$|^timestamp_",
    re.IGNORECASE,
)
#: Epoch times of the years 2001-2099, in each unit a clock writes them in.
_EPOCH_UNITS = {
    "epoch seconds": 1.0,
    "epoch milliseconds": 1e3,
    "epoch microseconds": 1e6,
    "epoch nanoseconds": 1e9,
}


def _epoch_unit(key: str, values: np.ndarray) -> str | None:
    """The unit of a numeric column of epoch times (named as times are, every value in one
    unit's range for 2001-2099, spanning a small part of it, as a period of days or months
    does), or ``None``: a number learnt as a measurement, which no later time resembles."""
    if not _TIME_NAME.search(key) or not len(values):
        return None
    low, high = float(values.min()), float(values.max())
    for unit, per_second in _EPOCH_UNITS.items():
        start, end = 978_307_200 * per_second, 4_102_444_800 * per_second
        if start <= low and high < end and high - low < 0.1 * low:
            return unit
    return None


#: A number written with a unit ('45%', '12 ms', '3.5GB'), or in hexadecimal ('0x1F').
_WITH_UNIT = re.compile(r"^[-+]?(\d[\d,]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*([^\d\s.,+-][^\d]*)$")
_HEX = re.compile(r"^0[xX][0-9a-fA-F]+$")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")
#: An amount written with its currency's sign, as spreadsheets export money ('$1,234.50').
_CURRENCY = re.compile(r"^\(?[-+]?[$€£¥₹]\s?[-+]?\d[\d,.]*\)?$")
#: A decimal comma, as European spreadsheets write numbers ('50,63'; '1.234,5').
DECIMAL_COMMA = re.compile(r"^[-+]?(\d{1,3}(\.\d{3})+|\d+),\d+$")
#: Thousands separated by spaces (plain, no-break or narrow no-break), as French and ISO 31
#: write them ('12 500', '1 234,5').
_SPACED = re.compile(r"^[-+]?\d{1,3}([ \u00a0\u202f]\d{3})+([.,]\d+)?$")
#: The share of a text column's values that must be numbers so written for it to be told so.
_WRITTEN_SHARE = 0.95


def number_hint(text: str) -> str:
    """How to write ``text`` (a value that is not a number) as one, where it is a number
    written as a spreadsheet or a bank exports it; '' where it is not. '12,500' reads either
    way: told as a decimal comma alone, the fix made a $12,500 payment $12.50."""
    text = text.strip()
    if _CURRENCY.fullmatch(text):
        digits = re.sub(r"[^\d,.]", "", text)
        negative = text.startswith("(") or "-" in text  # (12.00): an accountant's minus
        if _THOUSANDS.fullmatch(digits) or re.fullmatch(r"\d+(\.\d+)?", digits):
            plain = ("-" if negative else "") + digits.replace(",", "")
            return f" (an amount with its currency sign? write it as {plain})"
        return " (an amount with its currency sign? write it as a plain number)"
    if _THOUSANDS.fullmatch(text):
        plain = text.replace(",", "")
        if "." in text or not DECIMAL_COMMA.fullmatch(text):
            return f" (thousands separators? write it as {plain})"
        return (
            f" (thousands separators? write it as {plain}; or a decimal comma? write it as "
            f"{text.replace(',', '.')})"
        )
    if DECIMAL_COMMA.fullmatch(text):
        # A European spreadsheet's number: the fix is the mark, not the row.
        return f" (a decimal comma? write it as {text.replace('.', '').replace(',', '.')})"
    if _SPACED.fullmatch(text):  # '12 500', '1 234,5': French and ISO's thousands
        plain = re.sub(r"[ \u00a0\u202f]", "", text).replace(",", ".")
        return f" (thousands separated by spaces? write it as {plain})"
    # A formats helper's exports, each told only "is not a number".
    if match := _NUMBER_AND_UNIT.fullmatch(text):
        number, unit = match.groups()
        if unit == "%":
            share = f"{float(number) / 100:g}"
            return f" (a percentage? write the number alone, {number}, or {share} for a share)"
        return f" (a number with its unit? write the number alone: {number})"
    if _HEX.fullmatch(text):
        return f" (hexadecimal? write it in decimal: {int(text, 16)})"
    if _TYPOGRAPHIC_MINUS.fullmatch(text):
        return f" (a typographic minus? write it as -{text[1:].strip()})"
    if text.lower() in ("true", "false"):
        return f" (a truth value? write it as {int(text.lower() == 'true')})"
    return ""


#: A number followed by its unit: '12%', '12ms', '12 ms', '3.5 GB'.
_NUMBER_AND_UNIT = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+))\s*(%|[A-Za-zµ/]{1,6})")
#: A minus sign as word processors write it (U+2212, en dash) before a number.
_TYPOGRAPHIC_MINUS = re.compile(r"[\u2212\u2013]\s*(?:\d+\.?\d*|\.\d+)")


def _numbers_as_text(key: str, series: pd.Series) -> str | None:
    """What to say of a text column whose values (its first 1,000) are numbers written with a
    unit, in hex, with thousands separators or a decimal comma: read as labels, '28%' trained
    as a category of 72 (AUROC .91 against .99 as numbers), and past 200 values it was called
    an identifier."""
    texts = as_text(series.head(1_000)).dropna()
    written = texts[~texts.str.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")]
    if len(written) < 2:
        return None
    enough = _WRITTEN_SHARE * len(written)  # of the values that are not plain numbers
    first = written.iloc[0] if len(written.iloc[0]) <= 40 else f"{written.iloc[0][:40]}..."
    if written.str.fullmatch(_HEX.pattern).sum() >= enough:
        return (
            f"column '{key}' holds numbers in hexadecimal ({first!r}, ...), read as labels; "
            "write them as decimal numbers (in pandas: .apply(int, base=16)), or give "
            f"{option('categorical', key)} if they are labels"
        )
    if written.str.fullmatch(_CURRENCY.pattern).sum() >= enough:
        # Taken for an identifier past 200 values: the advice was to leave out the amount.
        return (
            f"column '{key}' holds amounts written with a currency sign ({first!r}, ...), read "
            "as text; write them as plain numbers (strip the sign and any thousands "
            "separators; several currencies: a column naming each row's)"
        )
    if written.str.fullmatch(_THOUSANDS.pattern).sum() >= enough:
        return (
            f"column '{key}' holds numbers written with thousands separators ({first!r}, ...), "
            "read as text; write them without (in pandas: read_csv(..., thousands=','))"
        )
    if written.str.fullmatch(DECIMAL_COMMA.pattern).sum() >= enough:
        return (
            f"column '{key}' holds numbers written with a decimal comma ({first!r}, ...), read "
            "as text; write them with '.' as the decimal mark (in pandas: "
            "read_csv(..., decimal=','))"
        )
    units = written.str.extract(_WITH_UNIT.pattern)[3].dropna().str.strip()
    if len(units) >= enough and units.nunique() == 1:
        return (
            f"column '{key}' holds numbers written with a unit ({first!r}, ...), read as "
            f"labels; write them as plain numbers (strip {units.iloc[0]!r}), or give "
            f"{option('categorical', key)} if they are labels"
        )
    return None


#: The first values of a text column that tell whether it holds times.
_TIMES_CHECKED = 200


def _holds_times(texts: pd.Series) -> bool:
    """Whether a text column's first values are nearly all ISO-8601 times (a timestamp)."""
    head = texts.dropna().head(_TIMES_CHECKED)
    stamps = pd.to_datetime(head, errors="coerce", utc=True, format="ISO8601")
    return len(head) > 0 and float(stamps.notna().mean()) >= 0.9


def is_nested(value: object) -> bool:
    """Whether a cell holds a list or an object (a Parquet list or struct, a dict) rather than
    one value."""
    return isinstance(value, dict | list | tuple | set | np.ndarray)


#: What a long table's column naming each row's metric is called (``pd.melt`` writes
#: 'variable'; Prometheus '__name__', InfluxDB '_field' and '_measurement').
_METRIC_NAMES = frozenset(
    {"metric", "metric_name", "metricname", "__name__", "measurement", "_measurement", "field",
     "_field", "variable", "kpi", "counter", "indicator"}
)  # fmt: skip


def long_format_problem(
    frame: pd.DataFrame, placing: Sequence[str] = (), categorical: Sequence[str] = ()
) -> str | None:
    """What to say of a long ('tidy') table, one row per metric (ts, host, metric, value), as
    Prometheus and InfluxDB export it: trained as it is, 'metric' became a category and
    'value' one number (AUROC .53, chance), and with a time column every metric's row was a
    duplicate of its time's first. ``None`` for a table of one column per metric."""
    rest = [c for c in frame.columns if c not in placing]
    numbers = [c for c in rest if _is_measure(frame[c])]
    names = [
        c
        for c in rest
        if str(c).strip().lower() in _METRIC_NAMES and c not in numbers and c not in categorical
    ]
    if len(numbers) != 1 or len(names) != 1:
        return None
    metric, value = names[0], numbers[0]
    if frame[metric].map(is_nested).any():
        return None  # lists or objects: refused as such by fit_schema, not counted here
    if not 2 <= frame[metric].nunique() <= MAX_CATEGORIES:
        return None
    index = [c for c in frame.columns if c not in (metric, value)]
    shown = ", ".join(repr(str(m)) for m in frame[metric].drop_duplicates().head(3))
    return (
        f"the table looks long, a row per metric: '{metric}' names it ({shown}, ...) and "
        f"'{value}' holds its value; pivot it to a column per metric first, e.g. in pandas "
        f"frame.pivot_table(index={[str(c) for c in index]}, columns='{metric}', "
        f"values='{value}').reset_index(); or give {option('categorical', str(metric))} if "
        "it is a category of its own"
    )


def _leave_out(column: str) -> str:
    """How to keep a column out of training, as the reader can: Python has no parameter."""
    if offered("ignore_column"):
        return f"leave it out with {option('ignore_column', column)}"
    return "drop it from the data"


def fingerprint(frame: pd.DataFrame) -> str:
    """A stable SHA-256 of a table's columns and values, to tell which data trained a model."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
