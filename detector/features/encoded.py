"""Encoded records and the rows that could not be encoded: what ``detector.features.encode.encode``
gives the scorer, and the per-column number counts a whole input is judged by."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detector.errors import SchemaError

#: Why a row can be rejected, as a short fixed code (a metrics label); the reason text says more.
#: The last five are a series model's (``detector.series.windows``; ``future_timestamp``: a time
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
    #: ``(n_accepted, n_numeric)``: how far each numeric value lay beyond the encoding's
    #: ``±clip`` before it was clipped (0 within it), so a scorer can tell $2k from $1B;
    #: ``None`` when no value did.
    overflow: np.ndarray | None = None

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.accepted)


#: How far beyond its clip a value is kept as lying at most, in standard deviations: a
#: number so large that its logarithm still ranks it past every real value (1e300 given with a
#: scale of 0.01 is infinite).
_FAR = 1e300


def overflow_of(scaled: np.ndarray, clip: float) -> np.ndarray | None:
    """How far each standardised value of ``scaled`` lies beyond ``±clip`` (0 within it, and
    where it is not a number), or ``None`` when none does: ``EncodedBatch.overflow``."""
    with np.errstate(invalid="ignore"):
        if not (np.abs(scaled) > clip).any():  # NaN compares false: the usual batch, one pass
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
