"""Encoded records and the rows that could not be encoded: what ``detector.features.encode.encode``
gives the scorer, and the per-column number counts a whole input is judged by."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from detector.errors import SchemaError
from detector.features.schema import training_spellings

#: Why a row can be rejected, as a short fixed code (a metrics label); the reason text says more.
#: The last seven are a series model's (``detector.series.windows``; ``future_timestamp``: a time
#: too far ahead of the clock). A CSV record that does not parse has one of
#: ``detector.io.chunks.ParseReject``'s codes instead.
REJECTION_CODES = (
    "missing_value",
    "not_a_number",
    "infinite",
    "malformed",
    "bad_timestamp",
    "duplicate_timestamp",
    "out_of_order",
    "missing_key",
    "future_timestamp",
    "long_key",
    "bad_key",
)


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
    #: The accepted rows with a value beyond the encoding's ``±clip``: ``overflow``'s rows.
    past_clip: PastClip | None = None
    #: For each text column with values training knew only in another case: ``Respelling``.
    respelled: tuple[Respelling, ...] = ()

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.accepted)

    @property
    def overflow(self) -> np.ndarray | None:
        """``(n_accepted, n_numeric)`` float64: how far each numeric value lay beyond the
        encoding's ``±clip`` before it was clipped (0 within it), so a scorer can tell $2k from
        $1B; ``None`` when no value did. Made when asked: training, which never asks, held a
        float64 table of it (twice the float32 result) for a few values past the clip."""
        return None if self.past_clip is None else self.past_clip.dense()


@dataclass(frozen=True, eq=False)
class PastClip:
    """The rows of a batch with a value beyond the encoding's clip, and how far beyond:
    ``rows`` ``(k,)`` their ascending positions among the batch's ``n_rows`` (accepted) rows,
    ``excess`` ``(k, n_numeric)`` float64, as ``overflow_of`` gives it (0 within the clip)."""

    rows: np.ndarray
    excess: np.ndarray
    n_rows: int

    @classmethod
    def of(cls, overflow: np.ndarray | None) -> PastClip | None:
        """From ``overflow_of``'s ``(n_rows, n_numeric)``; ``None`` from ``None``."""
        if overflow is None:
            return None
        rows = np.flatnonzero(overflow.any(axis=1))
        return cls(rows, overflow[rows], len(overflow))

    def dense(self) -> np.ndarray:
        """``EncodedBatch.overflow``: ``(n_rows, n_numeric)``, zeros but in ``rows``."""
        out = np.zeros((self.n_rows, self.excess.shape[1]))
        out[self.rows] = self.excess
        return out


#: How far beyond its clip a value is kept as lying at most, in standard deviations: a
#: number so large that its logarithm still ranks it past every real value (1e300 given with a
#: scale of 0.01 is infinite).
_FAR = 1e300


def overflow_of(scaled: np.ndarray, clip: float) -> np.ndarray | None:
    """How far each standardised value of ``scaled`` lies beyond ``±clip`` (0 within it, and
    where it is not a number), or ``None`` when none does: ``EncodedBatch.overflow``."""
    with np.errstate(invalid="ignore"):
        # NaN compares false: the usual batch, two passes and no copy (np.abs made one, as
        # large as the batch: 0.67 GB of a series' 200,000 windows of 420 features).
        if not ((scaled > clip).any() or (scaled < -clip).any()):
            return None
        excess = scaled - np.clip(scaled, -clip, clip)
    # float64: a value past float32's range (1e300 given) would become inf, with a warning.
    return np.nan_to_num(excess, nan=0.0, posinf=_FAR, neginf=-_FAR)


@dataclass(frozen=True)
class NumberCount:
    """How a numeric column's values in one batch read: ``numbers`` parsed as numbers,
    ``not_numbers`` held text that is not one (empty values are neither), the first of which
    is ``example``."""

    name: str
    numbers: int
    not_numbers: int
    example: str | None = None


@dataclass(frozen=True)
class Respelling:
    """A text column's values in one batch that differ from a training value only in case
    (and spaces around them): 'tcp' where training saw 'TCP'. Each is encoded as a value
    training never saw, as it should be (a changed label may be the anomaly), but a user who
    meant the same label gets high scores without a word: ``rows`` counts them, ``examples``
    holds a few distinct ones with training's spelling, ``(given, trained)``: the first in
    sorted order, so that a whole input's few are the same however it is cut into batches
    (``SpellingTally``; Spark's batches come in no order of the input's)."""

    name: str
    rows: int
    examples: tuple[tuple[str, str], ...]


#: How many distinct respelled values a warning shows for a column.
RESPELLED_EXAMPLES = 3


def respelling(
    name: str, categories: tuple[str, ...], unseen: Sequence[object]
) -> Respelling | None:
    """Column ``name``'s ``unseen`` values (none a label of ``categories``) that are a label in
    another case, or ``None`` where none is."""
    # Each distinct value once: a chunk of new hosts is thousands of rows of a few values.
    counted = Counter(unseen)
    found = [
        (value, trained, n)
        for (value, n), trained in zip(
            counted.items(), training_spellings(categories, counted), strict=True
        )
        if trained is not None
    ]
    if not found:
        return None
    examples = tuple(sorted((str(v), t) for v, t, _ in found)[:RESPELLED_EXAMPLES])
    return Respelling(name, sum(n for _, _, n in found), examples)


class SpellingTally:
    """The ``Respelling`` of each text column over a whole input, and what to tell the user of
    them: scored as labels never seen, those rows likely scored high, or were flagged."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._examples: dict[str, dict[str, str]] = {}

    def add(self, batch: EncodedBatch) -> None:
        self.add_found(batch.respelled)

    def add_found(self, respelled: Iterable[Respelling]) -> None:
        for found in respelled:
            self._rows[found.name] = self._rows.get(found.name, 0) + found.rows
            examples = {**self._examples.get(found.name, {}), **dict(found.examples)}
            # The first few in sorted order, as each batch keeps them: the same few whatever
            # the batches, and whichever engine (Spark sums its batches in no input order).
            kept = sorted(examples.items())[:RESPELLED_EXAMPLES]
            self._examples[found.name] = dict(kept)

    def warning(self) -> str | None:
        """What to say of the respelled values, or ``None`` where there were none: the
        columns by name, each with its first few values in sorted order."""
        if not self._rows:
            return None
        columns = "; ".join(
            f"column '{name}': {rows:,} value{'s' if rows > 1 else ''} ("
            + ", ".join(f"{g!r} for {t!r}" for g, t in self._examples[name].items())
            + ")"
            for name, rows in sorted(self._rows.items())
        )
        return (
            f"text values differ from a training value only in case, {columns}; each was scored "
            "as a value training never saw, which raises its anomaly_score: where it means the "
            "training value, write it as training did (it is not matched for you, as a changed "
            "value may be the anomaly)"
        )


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
