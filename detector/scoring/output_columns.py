"""The columns scoring adds after a table's own, and the check that a table leaves their names
free: a file holding one of them could not be scored into one table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from detector.errors import SchemaError
from detector.wording import offered

#: Added after the input's own columns, in order (then ``top_feature_1..k``).
SCORE_COLUMNS = ("anomaly_score", "p_value", "is_anomaly")
#: Added after ``SCORE_COLUMNS`` for a conditional model: the row's context value was never
#: seen in training, and it was scored without its context.
CONTEXT_COLUMN = "context_unseen"
#: Added for a series model: the row had fewer rows of its series before it than its window.
WARMING_COLUMN = "warming_up"
#: ``top_feature_1`` .. ``top_feature_k``: the columns most to blame.
TOP_FEATURE_PREFIX = "top_feature_"
#: Added by Spark, which keeps a rejected row in its output with the reason.
REJECT_CODE = "reject_code"
REJECT_REASON = "reject_reason"
#: All of them but the top features, for messages.
ADDED = (*SCORE_COLUMNS, CONTEXT_COLUMN, WARMING_COLUMN, REJECT_CODE, REJECT_REASON)
#: The fields of a record's answer over HTTP, scored (the service's ``RecordResult``) or
#: rejected (``RejectedRecord``), whatever model sets them: no passthrough field takes their
#: names, or its value would be lost behind the answer's or taken for it.
ANSWER_FIELDS = (
    "index",
    "anomaly_score",
    "p_value",
    "is_anomaly",
    "severity",
    CONTEXT_COLUMN,
    WARMING_COLUMN,
    "training_spelling",
    "top_features",
    "code",
    "reasons",
)
#: What a field of those names is told, where it would be advised into passthrough_fields.
RENAME_ANSWER_FIELDS = (
    "the answer has its own field(s) of that name: rename them to have them echoed"
)


def names_taken(
    columns: Iterable[str],
    *,
    context: bool = True,
    series: bool = True,
    spark: bool = True,
    any_case: bool = False,
) -> list[str]:
    """Those of ``columns`` that scoring adds itself: for a conditional model (``context``),
    a series model (``series``), on Spark (``spark``); by default, for any of them. With
    ``any_case``, in any case too, as Spark compares names (``spark.sql.caseSensitive``
    false, its default)."""
    added = {
        *SCORE_COLUMNS,
        *([CONTEXT_COLUMN] if context else []),
        *([WARMING_COLUMN] if series else []),
        *([REJECT_CODE, REJECT_REASON] if spark else []),
    }
    if any_case:
        added = {c.lower() for c in added}
    spelt = [(c, c.lower() if any_case else c) for c in columns]
    return [c for c, name in spelt if name in added or name.startswith(TOP_FEATURE_PREFIX)]


def check_names_free(
    columns: Iterable[str], what: str, *, context: bool = True, series: bool = True
) -> None:
    """Before training: ``columns`` (``what`` they are) must leave free the names scoring adds
    (on any engine), or no file holding them could be scored."""
    taken = names_taken(columns, context=context, series=series)
    if taken:
        raise SchemaError(
            f"{what} {taken}: scoring adds columns of those names to its output "
            f"({', '.join(ADDED)}, {TOP_FEATURE_PREFIX}N), so no file holding them could be "
            f"scored; rename them in the data{_if_labels(taken)}"
        )


def _if_labels(taken: Sequence[str]) -> str:
    """A known label's column (``is_anomaly`` from another tool's output) is left out by
    naming it as the labels, not renamed and trained on: say so."""
    if "is_anomaly" not in taken:
        return ""
    if offered("ignore_column"):  # the command line, where training takes a label column
        return "; if is_anomaly holds labels, give --label-column is_anomaly instead"
    return "; if is_anomaly holds labels, drop it before fitting"
