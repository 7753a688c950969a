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
then each categorical column's one-hot group of ``len(categories) + 1`` slots (one more, its
rare labels' slot before the unseen one, where it has ``rare`` labels), then each
context column's one-hot group of ``len(categories)`` slots: ``[features | context]``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd

from detector.errors import SchemaError
from detector.features.encoded import (
    EncodedBatch,
    NumberCount,
    PastClip,
    Rejection,
    Respelling,
    overflow_of,
    respelling,
)
from detector.features.schema import (
    CategoricalColumn,
    ContextColumn,
    NumericColumn,
    Schema,
    as_text,
    is_nested,
    label_lookup,
    number_hint,
    same_letters,
    signed_log,
)
from detector.io.tables import MISSING_TEXT
from detector.scoring.output_columns import ANSWER_FIELDS, RENAME_ANSWER_FIELDS
from detector.wording import current_surface, offered, option

Imputation = Literal["median"] | None
#: Row position -> (code, sentence) for each problem found in that row.
Reasons = defaultdict[int, list[tuple[str, str]]]


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
    expected: Sequence[str] | None = None,
) -> None:
    """Raise ``SchemaError`` naming missing or unknown columns and what the model expects
    (``expected``: the input's columns where they are not the schema's, as for a series
    model). Linear in the number of columns; the message lists a few of each kind
    (``listed``)."""
    present = [str(c) for c in columns]
    counts = Counter(present)
    dupes = sorted(c for c, n in counts.items() if n > 1)
    if dupes:
        raise SchemaError(
            f"duplicate column names {listed(dupes)}; give every column a unique name"
        )
    order = schema.column_order if expected is None else tuple(expected)
    known = set(order)
    kept = set(passthrough)
    missing = [c for c in order if c not in counts]
    unknown = [c for c in present if c not in known and c not in kept]
    problems = []
    if missing:
        problems.append(f"missing column(s) {listed(missing)}")
    by_letters = {same_letters(c): c for c in missing}
    forms = [(u, by_letters[same_letters(u)]) for u in unknown if same_letters(u) in by_letters]
    # A header in capitals (HOST for host) was told to keep HOST unscored, which left host
    # missing still (a formats helper).
    by_case = {same_letters(c).casefold(): c for c in missing}
    formed = {u for u, _ in forms}
    cased = [
        (u, by_case[key])
        for u in unknown
        if u not in formed and (key := same_letters(u).casefold()) in by_case
    ]
    others = [c for c in unknown if c not in formed and c not in {u for u, _ in cased}]
    # The service refuses passthrough_fields named like its answer's own fields.
    answers = [c for c in others if c in ANSWER_FIELDS] if current_surface() == "http" else []
    others = [c for c in others if c not in answers]
    if answers:
        problems.append(f"unknown column(s) {listed(answers)} (drop them; {RENAME_ANSWER_FIELDS})")
    if others:
        keep = option("passthrough", *(shortened(c) for c in others[:LISTED_NAMES]))
        if current_surface() == "python":  # predict() and anomaly_score() take no passthrough
            keep = f"score_records(X, {keep})"
        more = " ..." if len(others) > LISTED_NAMES else ""
        problems.append(
            f"unknown column(s) {listed(others)} (drop them, or keep them in the output unscored "
            f"with {keep}{more})"
        )
    if cased:
        problems.insert(
            1,
            f"{listed([u for u, _ in cased])} differ from the model's "
            f"{listed([m for _, m in cased])} only in case: rename them as the model names them",
        )
    if forms:
        problems.insert(
            1,
            f"{listed([u for u, _ in forms])} hold the letters of {listed([m for _, m in forms])} "
            "in another Unicode form (accents as characters of their own, as some tools on "
            "macOS write them): save the file's text as NFC, or rename the columns",
        )
    alike = {u for u, _ in forms} | {m for _, m in forms} | {u for u, _ in cased}
    alike |= {m for _, m in cased}
    renamed = _misspelled(
        [c for c in missing if c not in alike], [c for c in unknown if c not in alike]
    )
    if renamed:
        problems.insert(1, f"rename {renamed} (each looks like the model's column, misspelled)")
    if problems:
        raise SchemaError("; ".join(problems) + f". The model expects: {schema.describe(expected)}")


def _misspelled(missing: Sequence[str], unknown: Sequence[str]) -> str:
    """``'cpu_pc' to 'cpu_pct'``, ... for each unknown column that is a near spelling of a
    missing one (a few, as ``listed`` names them): a typo named only as one missing and one
    unknown column led to the fix of keeping the typo unscored."""
    import difflib

    if not missing or not unknown or len(missing) * len(unknown) > 10_000:
        return ""
    pairs = []
    for name in unknown[:LISTED_NAMES]:
        near = difflib.get_close_matches(name, missing, n=1, cutoff=0.8)
        if near:
            pairs.append(f"{shortened(name)!r} to {shortened(near[0])!r}")
    return ", ".join(pairs)


#: From this many rows on, numeric columns that are all plain numbers are read at once: one
#: at a time, a series window's 798 columns (SMD's 38 metrics) took most of a batch's reading.
#: Below it, one at a time: selecting them all costs pandas a copy of the frame, most of a
#: single record's encoding time.
_AT_ONCE_ROWS = 64
_PLAIN_NUMBERS = (np.dtype(np.float64), np.dtype(np.int64))

#: Numeric columns are read, scaled and clipped as float64 this many values at a time (whole
#: columns: ``max(1, _BLOCK_VALUES // n_rows)`` of them), each block cast into the float32
#: result as it is done. Read at once, a float64 copy of every numeric column was held beside
#: the table and the result: 3.4 GB of a series' 1,000,000 windows of 420 features. The
#: arithmetic is per value, so the blocks give the same bits; a request's few rows are one block.
_BLOCK_VALUES = 1 << 23


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
    if not all(isinstance(name, str) for name in frame.columns):
        # Columns are named as text (a schema fitted on pd.DataFrame(array) holds '0', '1',
        # ...), and records given as {0: ...} reach here with their numbers as names.
        frame = frame.rename(columns=str)
    n = len(frame)
    # Reasons only for rows that have any: a list per row of a 65k-row chunk would keep the
    # garbage collector busy (measured 5x slower encoding).
    reasons: Reasons = defaultdict(list)
    bad = np.zeros(n, dtype=bool)
    # The float32 result, written a block of columns at a time: no float64 copy of the whole.
    values = np.empty((n, schema.n_features), dtype=np.float32)

    numbers: list[NumberCount] = []
    # (first column, rows, their excess): only the rows with a value past the clip, not the
    # block's full float64 excess (a block of the table wherever one value passed it).
    excess: list[tuple[int, np.ndarray, np.ndarray]] = []
    if schema.n_numeric:
        means = np.array([c.mean for c in schema.numeric])
        scales = np.array([c.scale for c in schema.numeric])
        logged = set(schema.logged)
        step = max(1, _BLOCK_VALUES // max(n, 1))
        for start in range(0, schema.n_numeric, step):
            stop = min(start + step, schema.n_numeric)
            numeric, numeric_bad, counts = _numeric_block(
                schema, frame, impute, reasons, range(start, stop)
            )
            bad |= numeric_bad
            numbers.extend(counts)
            for j in range(start, stop):
                if j in logged:
                    numeric[:, j - start] = signed_log(numeric[:, j - start])
            numeric -= means[start:stop]  # in place: the block is this call's own
            numeric /= scales[start:stop]
            if (over := overflow_of(numeric, schema.clip)) is not None:
                rows = np.flatnonzero(over.any(axis=1))
                excess.append((start, rows, over[rows]))
            values[:, start:stop] = np.clip(numeric, -schema.clip, schema.clip, out=numeric)

    respelled: list[Respelling] = []
    at = schema.n_numeric
    for cat in schema.categorical:
        codes, col_bad = _parse_categorical(frame[cat.name], cat, impute, reasons, respelled)
        values[:, at : at + cat.width] = 0.0
        values[np.arange(n), at + codes] = 1.0
        at += cat.width
        bad |= col_bad

    unseen = np.zeros(n, dtype=bool)
    for ctx in schema.context:
        ctx_unseen, col_bad = _encode_context(
            frame[ctx.name], ctx, impute, reasons, respelled, values[:, at : at + ctx.width]
        )
        at += ctx.width
        unseen |= ctx_unseen
        bad |= col_bad

    accepted = ~bad
    rejections = tuple(
        Rejection(i, tuple(text for _, text in reasons[i]), reasons[i][0][0])
        for i in np.flatnonzero(bad).tolist()
    )
    if bad.any():
        # values[accepted] made in place: indexed, it was a second float32 copy of the table
        # beside the first (for one rejected row in a million).
        kept = _move_up(values, accepted)
        try:  # the rows past them handed back; refused where a view of the array lives
            values.resize((kept, schema.n_features), refcheck=True)
        except ValueError:
            values = values[:kept]
    return EncodedBatch(
        values=values,
        accepted=accepted,
        rejections=rejections,
        context_unseen=unseen[accepted] if schema.context else None,
        numbers=tuple(numbers),
        past_clip=_past_clip(excess, accepted, schema.n_numeric),
        respelled=tuple(respelled),
    )


#: Accepted rows are moved up over the rejected ones this many rows at a time.
_MOVE_ROWS = 1 << 14


def _move_up(values: np.ndarray, accepted: np.ndarray) -> int:
    """Move the ``accepted`` rows of ``values`` up over the rejected ones, a few at a time, in
    place: ``values[:n_accepted]`` becomes ``values[accepted]``. Returns ``n_accepted``."""
    rows = np.flatnonzero(accepted)
    for at in range(0, len(rows), _MOVE_ROWS):
        # A row moves up or stays, never down: those still to move lie below those written.
        chunk = rows[at : at + _MOVE_ROWS]
        if chunk[-1] != at + len(chunk) - 1:  # else every row of the chunk stays where it is
            values[at : at + len(chunk)] = values[chunk]
    return len(rows)


def _past_clip(
    excess: Sequence[tuple[int, np.ndarray, np.ndarray]], accepted: np.ndarray, n_numeric: int
) -> PastClip | None:
    """The accepted rows with a value past the clip, from each block's: ``None`` where none."""
    position = np.cumsum(accepted) - 1  # an accepted row's position among the accepted
    kept = [(start, rows[accepted[rows]], over[accepted[rows]]) for start, rows, over in excess]
    if not any(len(rows) for _, rows, _ in kept):
        return None
    rows = np.unique(np.concatenate([rows for _, rows, _ in kept]))
    table = np.zeros((len(rows), n_numeric))
    for start, mine, over in kept:
        table[np.searchsorted(rows, mine), start : start + over.shape[1]] = over
    return PastClip(position[rows], table, int(accepted.sum()))


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
            columns[col.name] = col.raw(means[j] + scales[j] * numeric[:, j])
    start = schema.n_numeric
    for cat in schema.categorical:
        codes = values[:, start : start + cat.width].argmax(axis=1)
        labels = np.array(
            [*cat.categories, *[None] * (cat.width - len(cat.categories))], dtype=object
        )
        columns[cat.name] = labels[codes]
        start += cat.width
    for ctx in schema.context:
        block = values[:, start : start + ctx.width]
        codes = np.where(block.max(axis=1) > 0, block.argmax(axis=1), ctx.width)
        labels = np.array([*ctx.categories, None], dtype=object)[codes]
        columns[ctx.name] = labels
        start += ctx.width
    return pd.DataFrame({name: columns[name] for name in schema.column_order})


def _numeric_block(
    schema: Schema, frame: pd.DataFrame, impute: Imputation, reasons: Reasons, columns: range
) -> tuple[np.ndarray, np.ndarray, tuple[NumberCount, ...]]:
    """The schema's numeric ``columns`` (positions among its numeric columns) as floats
    ``(n, len(columns))``, this call's own, a mask of rows with a bad value, and how many
    values of each column read as numbers."""
    n = len(frame)
    bad = np.zeros(n, dtype=bool)
    chosen = [schema.numeric[j] for j in columns]
    names = [col.name for col in chosen]
    if not n:
        # No rows (a request whose records were all rejected): a series model's 231 window
        # columns read one at a time as text took 0.3 s for nothing.
        nothing = tuple(NumberCount(name, 0, 0, None) for name in names)
        return np.empty((0, len(names))), bad, nothing
    dtypes = frame.dtypes
    if n >= _AT_ONCE_ROWS and all(dtypes[name] in _PLAIN_NUMBERS for name in names):
        return _plain_numeric_block(chosen, frame, names, impute, reasons)
    numeric = np.empty((n, len(names)), dtype=np.float64)
    counts = []
    for j, col in enumerate(chosen):
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


def _plain_numeric_block(
    chosen: list[NumericColumn],
    frame: pd.DataFrame,
    names: list[str],
    impute: Imputation,
    reasons: Reasons,
) -> tuple[np.ndarray, np.ndarray, tuple[NumberCount, ...]]:
    """``_numeric_block`` for columns that are all plain numbers (float64, int64): read at
    once, and each column with a missing or infinite value flagged as there."""
    n = len(frame)
    numeric = frame[names].to_numpy(dtype=np.float64, copy=True)  # scaled in place later
    present = n - np.isnan(numeric).sum(axis=0)
    counts = tuple(
        NumberCount(name, int(p), 0, None) for name, p in zip(names, present, strict=True)
    )
    bad = np.zeros(n, dtype=bool)
    unparsed = np.zeros(n, dtype=bool)
    for j in np.flatnonzero(~np.isfinite(numeric).all(axis=0)):
        col = chosen[j]
        numeric[:, j], col_bad = _flag_numeric(
            numeric[:, j], unparsed, frame[col.name], col, impute, reasons
        )
        bad |= col_bad
    return numeric, bad, counts


def _is_number(dtype: Any) -> bool:
    # Not a complex number: read as float64 it was its real part, scored without a word.
    return (
        pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and not pd.api.types.is_complex_dtype(dtype)
    )


def _to_float(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 (NaN where missing or unparseable) and the mask of unparseable ones."""
    if _is_number(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(series), bool)
    texts = as_text(series)
    values = pd.to_numeric(texts, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    unparsed = (texts.notna() & np.isnan(values)).to_numpy(dtype=bool)
    if unparsed.any():  # 'NA', 'null'...: missing, as a file's reader takes them
        where = np.flatnonzero(unparsed)
        marked = texts.iloc[where].str.strip().isin(MISSING_TEXT).to_numpy(dtype=bool)
        unparsed = unparsed.copy()
        unparsed[where[marked]] = False
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
        value = raw.iloc[i]
        # As the user wrote it: True, not numpy's np.True_ from a bool column.
        shown = value.item() if isinstance(value, np.generic) else value
        # Shortened: each reason went back whole, a 1 MB text ten times a 10 MB answer.
        text = shortened(repr(shown))
        hint = number_hint(shown) if isinstance(shown, str) else ""
        reasons[int(i)].append(
            ("not_a_number", f"column '{col.name}': {text} is not a number{hint}")
        )
    for i in np.flatnonzero(infinite):
        reasons[int(i)].append(("infinite", f"column '{col.name}': value is infinite"))
    if impute == "median":
        values = np.where(missing, col.raw(col.median), values)  # in the data's units
        missing = np.zeros_like(missing)
    elif missing.any():
        reason = ("missing_value", f"column '{col.name}' is empty {_fill_it()}")
        for i in np.flatnonzero(missing):
            reasons[int(i)].append(reason)
    bad = unparsed | infinite | missing
    return np.where(bad, 0.0, values), bad


def _lookup_labels(
    series: pd.Series,
    categories: tuple[str, ...],
    name: str,
    reasons: Reasons,
    respelled: list[Respelling],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each value's index in ``categories`` (-1 where it is not one of them), the mask of
    empty values, and the mask of lists and objects (a Parquet struct, a frame's dict), each
    given its reason here: neither a label nor empty, so never imputed. Values that are a
    label in another case are added to ``respelled``, and stay unseen."""
    values = series.to_numpy(dtype=object, na_value=None)
    missing = np.asarray(pd.isna(values), dtype=bool)
    nested = np.zeros(len(values), dtype=bool)
    lookup = _category_codes(categories)
    try:
        codes = np.fromiter((lookup.get(v, -1) for v in values), dtype=np.int64, count=len(values))
    except TypeError:  # an unhashable value: only then is each one asked what it is
        nested = np.fromiter(map(is_nested, values), dtype=bool, count=len(values))
        for i in np.flatnonzero(nested):
            shown = shortened(repr(values[i]), 60)
            reasons[int(i)].append(
                ("malformed", f"column '{name}': {shown} is a list or an object, not a value")
            )
        codes = np.fromiter(
            (-1 if n else lookup.get(v, -1) for v, n in zip(values, nested, strict=True)),
            dtype=np.int64,
            count=len(values),
        )
    # Values that did not match as given (ints from JSON, padding) pay for normalising to
    # stripped text; everything else took one dictionary lookup.
    retry = np.flatnonzero((codes < 0) & ~missing & ~nested)
    if len(retry):
        cleaned = [same_letters(str(v).strip()) for v in values[retry]]
        codes[retry] = [lookup.get(v, -1) for v in cleaned]
        # A label of digits read as a float (Parquet, JSON Lines, a KServe FP64 tensor): 7.0
        # is the hour '7', where '7.0' was never seen (every such row scored 22, flagged).
        whole = [
            (int(at), str(int(v)))
            for at, v, c in zip(retry, values[retry], codes[retry], strict=True)
            if c < 0 and isinstance(v, float | np.floating) and float(v).is_integer()
        ]
        for at, label in whole:
            codes[at] = lookup.get(label, -1)
        # Text a file's reader takes for missing ('NA', 'null'...) is missing however the
        # record came (a JSON string, a DataFrame's cell), unless training knew it as a label.
        gone = np.asarray(
            [v in MISSING_TEXT and c < 0 for v, c in zip(cleaned, codes[retry], strict=True)],
            dtype=bool,
        )
        missing[retry[gone]] = True
        unseen = retry[(codes[retry] < 0) & ~missing[retry]]
        if found := respelling(name, categories, values[unseen]):
            respelled.append(found)
    return codes, missing, nested


def _encode_context(
    series: pd.Series,
    col: ContextColumn,
    impute: Imputation,
    reasons: Reasons,
    respelled: list[Respelling],
    group: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Write a context column's one-hot group into ``group`` ``(n, width)``; return the mask of
    rows encoded as no context (a value not seen in training; an empty one when imputing) and
    the mask of rejected rows."""
    codes, missing, nested = _lookup_labels(series, col.categories, col.name, reasons, respelled)
    if impute != "median" and missing.any():
        fix = _fill_it(" to score the record without its context")
        reason = ("missing_value", f"context column '{col.name}' is empty {fix}")
        for i in np.flatnonzero(missing):
            reasons[int(i)].append(reason)
    known = np.flatnonzero(codes >= 0)
    group[:] = 0.0
    group[known, codes[known]] = 1.0
    unseen = codes < 0
    return unseen, (missing if impute != "median" else np.zeros_like(missing)) | nested


def _parse_categorical(
    series: pd.Series,
    col: CategoricalColumn,
    impute: Imputation,
    reasons: Reasons,
    respelled: list[Respelling],
) -> tuple[np.ndarray, np.ndarray]:
    codes, missing, nested = _lookup_labels(series, col.labels, col.name, reasons, respelled)
    if impute == "median" and missing.any():
        # For a category the median's counterpart is the most frequent training value.
        codes[missing] = col.categories.index(col.mode)
        missing[:] = False
    # A rare training label (after the slotted ones in ``labels``) goes to the rare slot; -1
    # (not among the training labels) to the group's last, "unseen", slot.
    codes = np.minimum(codes, len(col.categories))
    codes = np.where(codes < 0, col.width - 1, codes)
    if missing.any():
        # "median" read oddly of a text column (a QA helper): it fills the most common label.
        fill = _fill_it(f", which fills {shortened(repr(col.mode), 60)}, its most common label")
        reason = ("missing_value", f"column '{col.name}' is empty {fill}")
        for i in np.flatnonzero(missing):
            reasons[int(i)].append(reason)
    bad = missing | nested
    return np.where(bad, 0, codes), bad


def _fill_it(imputing: str = "") -> str:
    """The fix for an empty value, as the reader can apply it: the service cannot impute."""
    if not offered("impute"):
        return "(fill it)"
    return f"(fill it, or score with {option('impute', 'median')}{imputing})"


@lru_cache(maxsize=256)
def _category_codes(categories: tuple[str, ...]) -> dict[object, int]:
    codes: dict[object, int] = {}
    codes.update(label_lookup(categories))  # looked up with values of any type
    return codes
