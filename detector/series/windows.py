"""Metric streams as windows: each record with the last rows of its own series beside it.

A series is the rows of one key (a host, a service; every row when no key column is named),
ordered by a time column (ISO-8601 text or epoch seconds). ``make_windows`` orders each
series, reports what cannot be placed in one (a timestamp that does not parse, a second row at
the same timestamp of a key), restarts a series after a gap longer than ``max_gap_seconds``,
and gives each accepted row the previous ``window - 1`` rows of its series as extra columns
``COL[-1]``, ``COL[-2]``, ... (``representation="lags"``, a Donut-style flattened window whose
newest step keeps the column's own name, so attribution still names the metric), or the row
and its difference from the mean of those rows as ``COL[-mean]`` (``"deviation"``: a level
that moved with its recent history reads as normal). With ``deviation_window`` N, a lags window
also carries each numeric column's difference from the mean of the N - 1 rows before it as
``COL[-mean]``, judged with the distance's short part (``window_parts``); the default distance
judges each metric's own lags as a part of their own (``metric_parts``). The first rows of a
series, with fewer than ``window - 1`` rows before them, borrow the oldest row they have and
are marked as warming up; none is dropped. With ``calendar``, each row also gets its hour of
day and day of week (UTC, Monday 0) as text columns ``TIME[hour]`` and ``TIME[weekday]``: what
is normal at 3 pm may not be at 3 am (as Bagel conditions its VAE on time).

Rows come back in input order, so an output file lines up with its input; the order within a
file does not matter, as every row of a key is in hand.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Literal

import numpy as np
import pandas as pd

from detector.errors import SchemaError
from detector.features.encode import shortened
from detector.features.schema import Schema, is_nested
from detector.io.tables import MISSING_TEXT
from detector.series.levels import MAX_LEVEL_HOURS, ScoreLevels
from detector.wording import option

Representation = Literal["lags", "deviation"]
#: Why a row was not placed in its series, as a short code (a metrics label).
SERIES_REJECTION_CODES = (
    "bad_timestamp", "duplicate_timestamp", "out_of_order", "missing_key", "long_key",
    "future_timestamp", "bad_key",
)  # fmt: skip
#: The longest key a series may have (its key columns' texts joined), in characters: the
#: service keeps state for ``series_max_keys`` keys, which bounds its size only with this.
MAX_KEY_CHARS = 1024
#: What joins the values of several key columns into a series' key (its name in the state
#: kept between batches, in the service's state file and in a bundle's levels).
KEY_SEPARATOR = "\x1f"


def long_key_rejection(spec: SeriesSpec, row: int, length: int) -> SeriesRejection:
    """Why a row whose key is ``length`` characters (over ``MAX_KEY_CHARS``) is refused."""
    return SeriesRejection(
        row,
        "long_key",
        f"its key {list(spec.key_columns)} is {length:,} characters long; a series' key may be "
        f"at most {MAX_KEY_CHARS:,} (a host or service name, not a payload)",
    )


def separated_key_columns(spec: SeriesSpec, values: Mapping[str, object]) -> list[str]:
    """The key columns whose value in ``values`` (a row's) holds ``KEY_SEPARATOR``, where the
    key is several columns' values joined by it: ('a\\x1fb', 'c') and ('a', 'b\\x1fc') were
    one series, mixing two hosts' windows and rejecting one's rows as the other's repeated
    times. One key column's value is its key as written, whatever it holds."""
    if len(spec.key_columns) < 2:
        return []
    return [c for c in spec.key_columns if KEY_SEPARATOR in str(values.get(c))]


def separated_key_rejection(spec: SeriesSpec, row: int, columns: Sequence[str]) -> SeriesRejection:
    """Why a row whose key ``columns`` hold ``KEY_SEPARATOR`` is refused (rather than told
    apart by an encoding: every key without it keeps the series name it had, in state files
    and bundles alike, and a control character in a host's name is a fault to be told of)."""
    return SeriesRejection(
        row,
        "bad_key",
        f"its {' and '.join(map(repr, columns))} value holds the control character U+001F "
        f"(unit separator), which joins the values of the key columns {list(spec.key_columns)} "
        "into one series name, so it could name another key's series; remove it from the value",
    )


@dataclass(frozen=True)
class SeriesSpec:
    """How a table is a set of series: ``time_column``, the ``key_columns`` naming a series
    (none: one series), the ``window`` of rows a record is judged with (itself included), and
    the longest gap in seconds a series may have before its window starts again (``None``:
    no limit)."""

    time_column: str
    key_columns: tuple[str, ...] = ()
    window: int = 20  # the product's default, ``--window``
    max_gap_seconds: float | None = None
    representation: Representation = "lags"
    calendar: bool = False
    #: With lags: each of ``deviation_columns`` also as its difference from the mean of the
    #: ``deviation_window - 1`` rows before it (0: none). The columns are fixed at training,
    #: so a batch whose column reads as text still gets them.
    deviation_window: int = 0
    deviation_columns: tuple[str, ...] = ()
    #: Each score judged against its series' scores in the hours before
    #: (``detector.series.levels``); 0: as it is.
    level_hours: int = 0
    #: The training rows' first time (epoch seconds; ``None`` in bundles from before it):
    #: scoring refuses a time of 1970 when training's were decades later (``early_time``).
    trained_from: float | None = None

    @property
    def calendar_columns(self) -> tuple[str, ...]:
        """The columns ``calendar`` adds: ``ts[hour]``, ``ts[weekday]``."""
        if not self.calendar:
            return ()
        return (f"{self.time_column}[hour]", f"{self.time_column}[weekday]")

    def describe(self) -> str:
        """In words: ``series by host, in time order of ts; each record with the 4 rows before
        it``."""
        keys = ", ".join(self.key_columns) or "one series"
        before = self.window - 1
        what = "the mean of the" if self.representation == "deviation" else "the"
        gap = f"; a gap over {self.max_gap_seconds:g} s restarts" if self.max_gap_seconds else ""
        calendar = "; with its hour of day and day of week (UTC)" if self.calendar else ""
        deviation = ""
        if self.deviates:
            deviation = (
                f", and its difference from the mean of the {self.deviation_window - 1} rows "
                "before it"
            )
        return (
            f"series by {keys}, in time order of {self.time_column}; each record with {what} "
            f"{before} row{'s' if before != 1 else ''} before it{deviation}{gap}{calendar}"
        )

    @property
    def deviates(self) -> bool:
        """Whether a lags window carries the ``COL[-mean]`` deviation columns."""
        return (
            self.representation == "lags"
            and self.deviation_window >= 2
            and bool(self.deviation_columns)
        )

    def problems(self, columns: list[str]) -> list[str]:
        """What is wrong with this spec for a table with ``columns``."""
        problems = []
        named = [self.time_column, *self.key_columns]
        missing = [c for c in named if c not in columns]
        if missing:
            problems.append(f"no column {missing} in the data; its columns are {columns}")
        if len(set(named)) < len(named):
            twice = sorted({c for c in named if named.count(c) > 1})
            problems.append(
                f"the time column and the key columns must differ: {named} names {twice} "
                "more than once; name each column once"
            )
        if not 1 <= self.window <= 1000:
            problems.append(f"window {self.window} must be in [1, 1000] rows")
        if self.max_gap_seconds is not None and not self.max_gap_seconds > 0:
            problems.append(f"max_gap_seconds {self.max_gap_seconds} must be positive")
        if self.representation not in ("lags", "deviation"):
            problems.append(f"representation {self.representation!r} is not lags or deviation")
        if self.deviation_window and not 2 <= self.deviation_window <= self.window:
            problems.append(
                f"deviation_window {self.deviation_window} must be 0 (none) or in "
                f"[2, window {self.window}]"
            )
        if not 0 <= self.level_hours <= MAX_LEVEL_HOURS:
            problems.append(
                f"level_hours {self.level_hours} must be 0 (none) or in [1, {MAX_LEVEL_HOURS}]"
            )
        return problems


@dataclass(frozen=True)
class SeriesRejection:
    """A row that could not be placed in its series: its 0-based input position, a code from
    ``SERIES_REJECTION_CODES`` and the reason in words."""

    row: int
    code: str
    reason: str


@dataclass(frozen=True, eq=False)
class Windows:
    """The accepted rows with their windows, in input order: ``frame`` holds the value columns
    and their lag (or deviation) columns, ``rows`` the input positions, ``warming_up`` which
    rows had fewer than ``window - 1`` rows of history. ``restarts`` counts the series restarted
    after a gap. ``keys`` and ``seconds``: each row's series and its time in epoch seconds."""

    frame: pd.DataFrame
    rows: np.ndarray
    warming_up: np.ndarray
    rejections: tuple[SeriesRejection, ...]
    restarts: int
    keys: np.ndarray
    seconds: np.ndarray


def series_of(config: object) -> SeriesSpec | None:
    """The series a ``TrainingConfig`` declares, ``None`` without a time column."""
    time_column = getattr(config, "time_column", None)
    if time_column is None:
        return None
    return SeriesSpec(
        time_column,
        tuple(getattr(config, "series_columns", ())),
        window=int(getattr(config, "window", 20)),
        max_gap_seconds=getattr(config, "max_gap_seconds", None),
        calendar=bool(getattr(config, "calendar", False)),
    )


def with_deviation(
    spec: SeriesSpec, frame: pd.DataFrame, rows: int, exclude: tuple[str, ...] = ()
) -> SeriesSpec:
    """``spec`` whose windows also carry each numeric column of ``frame`` (but ``exclude``'s)
    as its difference from the mean of the ``rows - 1`` rows before (``rows`` at most the
    window; under 2, or no numeric column: ``spec`` as it is)."""
    rows = min(rows, spec.window)
    named = {spec.time_column, *spec.key_columns, *exclude}
    columns = tuple(
        str(c)
        for c in frame.columns
        if c not in named
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    )
    if rows < 2 or not columns or spec.representation != "lags":
        return spec
    return dataclasses.replace(spec, deviation_window=rows, deviation_columns=columns)


def whole(value: object, name: str) -> int:
    """A manifest's whole number as it is: ``int()`` took "20", 24.5 and true (one sample)."""
    if type(value) is not int:
        raise TypeError(f"{name} must be a whole number, not {value!r}")
    return value


def _names(value: object, name: str) -> tuple[str, ...]:
    """A manifest's list of column names: ``tuple()`` took "host" for the columns h, o, s, t."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a list of column names, not {value!r}")
    return tuple(value)


def _seconds_or_none(value: object, name: str) -> float | None:
    """A manifest's epoch seconds, or ``None`` where absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{name} must be epoch seconds, not {value!r}")
    return float(value)


def read_series(value: object) -> SeriesSpec | None:
    """A bundle manifest's ``series`` entry back as a ``SeriesSpec`` (``None`` when absent:
    bundles written before series existed score every record alone)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"series must be an object, not {value!r}")
    gap = value.get("max_gap_seconds")
    spec = SeriesSpec(
        time_column=str(value["time_column"]),
        key_columns=_names(value["key_columns"], "key_columns"),
        window=whole(value["window"], "window"),
        max_gap_seconds=None if gap is None else float(gap),
        representation=value.get("representation", "lags"),
        calendar=bool(value.get("calendar", False)),
        # Bundles from before the deviation part have neither: lags alone, as they were.
        deviation_window=whole(value.get("deviation_window", 0), "deviation_window"),
        deviation_columns=_names(value.get("deviation_columns", []), "deviation_columns"),
        # Bundles from before levels judge every score as it is.
        level_hours=whole(value.get("level_hours", 0), "level_hours"),
        trained_from=_seconds_or_none(value.get("trained_from"), "trained_from"),
    )
    problems = spec.problems([spec.time_column, *spec.key_columns])
    if problems:
        raise ValueError("; ".join(problems))
    return spec


#: The share of training rows that may repeat a time their series already had and be left
#: out with a warning (a scraper's double send); more, or any other reason, stops training.
MAX_REPEATED_SHARE = 0.01


def windowed_for_training(frame: pd.DataFrame, spec: SeriesSpec) -> tuple[Windows, str | None]:
    """``frame``'s rows with their windows, and what to say of rows left out. Training data
    must be whole, so a row that cannot be placed in its series stops training with the
    reasons; only a few rows repeating a time of their series (at most ``MAX_REPEATED_SHARE``,
    none of the patterns below that say the time or key columns are wrong) are left out, the
    first of each time kept, as scoring keeps it: one such row in 20,000 stopped a helper's
    training with no option."""
    if problem := _excel_days(frame[spec.time_column], spec.time_column):
        raise SchemaError(problem)
    # Training has no option for the clock's limit: a row stamped in the future is to be
    # fixed or dropped, as any other that cannot be placed.
    windows = SeriesState(spec, limit_settable=False).window(frame)
    if windows.rejections:
        # Rows sharing a reason are listed together: three rows with no key read as one line.
        by_reason: dict[str, list[int]] = {}
        for r in windows.rejections[:3]:
            by_reason.setdefault(r.reason, []).append(r.row + 1)
        shown = "; ".join(
            f"row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows))}: {reason}"
            for reason, rows in by_reason.items()
        )
        fix = "fix or drop them"
        repeated = [r.row for r in windows.rejections if r.code == "duplicate_timestamp"]
        given = frame[spec.time_column]
        if repeated and given.nunique(dropna=False) == 1:
            fix = (
                f"every row has the same {spec.time_column} ({shortened(repr(given.iat[0]))}): "
                f"name the column that holds each row's time in {option('time_column', 'COL')}"
            )
        elif repeated and _dates_only(given):
            fix = (
                f"{spec.time_column} holds dates without a time of day; if another column holds "
                "the time (12:30:00), join the two into one ISO-8601 time "
                "(2026-11-04T12:30:00Z) and name that"
            )
        elif repeated and not spec.key_columns:
            fix = f"if a column names the series (a host), add {option('series_columns', 'COL')}"
        elif repeated and "names no zone" in shown:
            fix = "fix them"  # the reasons say how
        elif repeated and _without_zone(given.iloc[repeated[:100]]):
            fix = (
                "these times name no zone, so they are read as UTC; if they are local times, "
                "an hour repeats where the clocks go back: write them in UTC or with their "
                "offset (2026-11-01T01:30:00-05:00)"
            )
        few = len(repeated) <= MAX_REPEATED_SHARE * len(frame)
        if fix == "fix or drop them" and few and len(repeated) == len(windows.rejections):
            return windows, (
                f"{len(repeated)} training row(s) repeat a time their series already had "
                f"({shown}): left out, the first row of each time kept, as scoring keeps it"
            )
        raise SchemaError(
            f"{len(windows.rejections)} training row(s) cannot be placed in their series "
            f"({shown}); {fix}"
        )
    return windows, None


#: Excel's serial days of 1970-01-01 and 2100-01-01: a spreadsheet's times as numbers.
_EXCEL_DAYS = (25_569.0, 73_051.0)


def _excel_days(times: pd.Series, column: str) -> str | None:
    """What to say of a time column of Excel serial days with times of day (46327.0104):
    read as epoch seconds they all fell within a day of 1970-01-01, a second or so apart, and
    the model trained on that (its hourly levels collapsed: normal rows flagged 12% against
    4%)."""
    if not (pd.api.types.is_float_dtype(times) or times.dtype == object):
        return None
    numbers = pd.to_numeric(times, errors="coerce").dropna()
    if len(numbers) < 2 or numbers.min() < _EXCEL_DAYS[0] or numbers.max() >= _EXCEL_DAYS[1]:
        return None
    if (numbers != np.floor(numbers)).mean() < 0.5:
        return None
    first = float(numbers.iloc[0])
    stamp = pd.Timestamp("1899-12-30") + pd.to_timedelta(first, unit="D")
    return (
        f"{column} {first!r} looks like Excel serial days ({stamp:%Y-%m-%dT%H:%M}), not "
        f"epoch seconds (which would be {pd.Timestamp(first, unit='s'):%Y-%m-%dT%H:%M:%S}); "
        "write it as ISO-8601 or as epoch seconds: (days - 25569) * 86400"
    )


#: A time of day alone (12:30, 12:30:00.5), as a spreadsheet's second time column holds it.
_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?")
#: A date alone, ISO-8601 (2026-11-04).
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _dates_only(times: pd.Series) -> bool:
    """Whether a time column's first values are dates without a time of day."""
    head = [str(t).strip() for t in times.head(100).tolist()]
    return bool(head) and all(_DATE_ONLY.fullmatch(t) for t in head)


#: An ISO-8601 time's zone: Z, or an offset such as +02:00, +0200 or -05.
_ZONE = re.compile(r"(?:[zZ]|[+-]\d\d(?::?\d\d)?)\s*$")


def _without_zone(times: pd.Series) -> bool:
    """Whether ``times`` are ISO-8601 texts that name no zone (epoch seconds are UTC)."""
    texts = [t for t in times.tolist() if isinstance(t, str)]
    return bool(texts) and all(":" in t and not _ZONE.search(t) for t in texts)


def key_text(column: pd.Series) -> pd.Series:
    """A key column as text, a whole number as one whatever its type: a host 7 read as 7.0
    (a column with an empty cell, a JSON emitter's floats) was a series apart from 7's."""
    text = column.astype(str)
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if kind == "boolean":  # as a file and JSON write it: 'true', not Python's 'True'
        return text.str.lower()
    if kind in ("string", "integer", "empty", "bytes"):
        return text  # text and integer keys, nearly all of them: one check, no per-row work
    if pd.api.types.is_float_dtype(column):  # vectorised: a million rows' keys in a blink
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            named = np.isfinite(values) & (values % 1 == 0) & (np.abs(values) < 2.0**63)
        text[named] = values[named].astype(np.int64).astype(str)
        return text
    spelled = [key_number(v) for v in column.tolist()]
    named = np.fromiter((w is not None for w in spelled), dtype=bool, count=len(spelled))
    text[named] = np.asarray(spelled, dtype=object)[named]
    return text


def key_number(value: object) -> str | None:
    """A key's ``value`` as text where it is a boolean or a whole number (``None`` for any
    other value, whose ``str`` is its text): JSON's true and a file's 'true' are one series,
    as are a JSON 7.0 and 7."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    whole = whole_number(value)
    return None if whole is None else str(whole)


def whole_number(value: object) -> int | None:
    """``value`` as an int where it is a float holding a whole number (else ``None``)."""
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value) % 1 == 0:
        return int(value)
    return None


def same_letters_keys(keys: pd.Series) -> pd.Series:
    """``keys`` (text) in one Unicode form (NFC, as ``schema.same_letters``): 'wéb-01' written
    with its accent as a character of its own (as macOS writes some files) is the same host's
    series as the composed one, not a series of its own. Normalised once per distinct key, and
    only where a key is not plain ASCII (a million rows of ASCII hosts cost one check)."""
    # pandas' text dtype keeps a missing key missing (rejected as such), and calls it not
    # ASCII: nothing to spell.
    plain = keys.str.isascii().to_numpy(dtype=bool) | keys.isna().to_numpy()
    if plain.all():
        return keys
    codes, distinct = pd.factorize(keys[~plain])
    normal = pd.Series(distinct, dtype=object).str.normalize("NFC").to_numpy(dtype=object)
    spelled = keys.copy()
    spelled[~plain] = normal[codes]
    return spelled


#: A key written as a decimal number ('007', '7.0', '1e3'), which another may write otherwise.
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _as_number(key: str) -> str:
    """``key`` as the one spelling of the number it writes ('007', '7.0' and '7e0': '7'), or
    as it is where it writes none (exact: 20-digit ids are told apart)."""
    if not _DECIMAL.fullmatch(key):
        return key
    try:
        # Exact to the key's last digit: 30-digit ids a digit apart are two numbers.
        return str(Decimal(key).normalize(Context(prec=len(key) + 1)))
    except ArithmeticError:  # an exponent past the context's (1e9999999)
        return key


def key_spelling_warning(keys: np.ndarray, spec: SeriesSpec) -> str | None:
    """What to say when series ``keys`` (training's, one per row, or a scoring run's) hold
    keys that differ from another only in case or spaces ('web-01', 'WEB-01 '), or write one
    number otherwise ('007', '7', '7.0': a key is its text as written, and a spreadsheet or a
    float column may have rewritten it): each is a series of its own, silently, where most
    likely one host's rows were split. (Keys in another Unicode form are one series already:
    ``same_letters_keys``; a JSON 7.0 is the series '7': ``key_number``.)"""
    if not spec.key_columns:
        return None
    distinct = pd.unique(pd.Series(keys).dropna())
    spelled = pd.Series(distinct).astype(str).str.normalize("NFC").str.strip().str.casefold()
    alike = spelled.map(_as_number).duplicated(keep=False)
    if not alike.any():
        return None
    shown = ", ".join(repr(k) for k in distinct[alike.to_numpy()][:4])
    return (
        f"{int(alike.sum()):,} series keys differ from another only in case or spaces, or "
        f"in how a number is written ({shown}); each is a series of its own: if they name one "
        f"{' and '.join(spec.key_columns)}, write them alike"
    )


#: Above this share of warming-up training rows, training says so: the bank is then mostly
#: windows padded with their series' first row, unlike a running series' windows.
WARMING_SHARE_LIMIT = 0.2


def warming_warning(windows: Windows, frame: pd.DataFrame, spec: SeriesSpec) -> str | None:
    """What to say when more than ``WARMING_SHARE_LIMIT`` of the training rows ``frame``
    (windowed as ``windows``) warm up, with the longest window that would keep them under it."""
    n, warm = len(windows.warming_up), int(np.sum(windows.warming_up))
    if n == 0 or warm / n <= WARMING_SHARE_LIMIT:
        return None
    gap = spec.max_gap_seconds
    if gap is not None and windows.restarts > WARMING_SHARE_LIMIT * n / max(spec.window - 1, 1):
        # The gaps restart the windows, not the series' lengths: a longer series or a shorter
        # window would not help (a helper got that advice for 15-minute rows and a 60 s gap).
        order = np.lexsort((windows.seconds, windows.keys))
        ordered, seconds = windows.keys[order], windows.seconds[order]
        steps = np.diff(seconds)[ordered[1:] == ordered[:-1]]
        step = f"{float(np.median(steps)):,.0f} s" if len(steps) else "unknown"
        return (
            f"{warm:,} of {n:,} training rows ({warm / n:.0%}) are warming up: a gap over "
            f"{option('max_gap_seconds', int(gap) if gap == int(gap) else gap)} restarted "
            f"their series' windows {windows.restarts:,} times (the median step between rows "
            f"is {step}); raise it above the rows' usual step, or leave it unset"
        )
    keys = list(spec.key_columns)
    lengths = frame.groupby(keys, dropna=True).size().to_numpy() if keys else np.array([n])
    fits = [w for w in range(2, spec.window) if
            np.minimum(lengths, w - 1).sum() / n <= WARMING_SHARE_LIMIT]  # fmt: skip
    shorter = (
        f"a shorter {option('window', max(fits))}"
        if fits
        else f"no window: train without {option('time_column', spec.time_column)}"
    )
    return (
        f"{warm:,} of {n:,} training rows ({warm / n:.0%}) are warming up: their series had "
        f"fewer than {spec.window - 1} rows before them, so their windows repeat the series' "
        "first row and the model learns less of how a running series looks; train on longer "
        f"series (a median of {int(np.median(lengths)):,} rows per "
        f"{', '.join(keys) or 'series'} here) or {shorter}"
    )


#: Epoch seconds this far from 1970 (about 3,200 years) are refused as times: such a number is
#: most likely epoch milliseconds (1.7e12 in 2026), whose gaps and hours of the day would be
#: read a thousand times too long.
EPOCH_SECONDS_LIMIT = 1e11
#: The times an ISO-8601 text may give: those pandas holds in nanoseconds (1677 to 2262).
FIRST_TIME = pd.Timestamp.min.tz_localize("UTC")
LAST_TIME = pd.Timestamp.max.tz_localize("UTC")
EPOCH = pd.Timestamp(0, tz="UTC")


#: Dates written without separators (ISO-8601's basic format), by their digits: a number of
#: 8 digits that is one is refused as epoch seconds (it would be a time in 1970, and the
#: row first in its series); those of 12 and 14 are beyond ``EPOCH_SECONDS_LIMIT`` anyway,
#: and are named so that their reason does not tell a user to divide them by 1,000.
_COMPACT_FORMATS = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
#: The years a compact date may name to be taken for one.
_COMPACT_YEARS = (1900, 2200)
#: A 32-bit float holds epoch seconds of today only to the nearest 128 s; past this size (its
#: integers' exact range) its times are refused rather than rounded.
_FLOAT32_EXACT = 2.0**24


def compact_date(number: float) -> str | None:
    """``number`` as the ISO-8601 time it spells where its digits are a date written without
    separators (``20261104`` -> ``2026-11-04``, also with hours and minutes, and seconds),
    else ``None``."""
    if not math.isfinite(number) or number <= 0 or number != math.floor(number):
        return None
    digits = str(int(number))
    shape = _COMPACT_FORMATS.get(len(digits))
    if shape is None or not _COMPACT_YEARS[0] <= int(digits[:4]) <= _COMPACT_YEARS[1]:
        return None
    try:
        stamp = datetime.datetime.strptime(digits, shape)
    except ValueError:
        return None
    return stamp.isoformat() if len(digits) > 8 else stamp.date().isoformat()


def _compact_dates(numbers: pd.Series) -> np.ndarray:
    """Which of ``numbers`` are 8-digit dates written without separators (``compact_date``),
    at once for a column."""
    low, high = _COMPACT_YEARS[0] * 10_000 + 101, _COMPACT_YEARS[1] * 10_000 + 1231
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    maybe = (values >= low) & (values <= high) & (values == np.floor(values))
    if maybe.any():
        texts = pd.Series(values[maybe].astype(np.int64).astype(str))
        maybe[maybe] = pd.to_datetime(texts, format="%Y%m%d", errors="coerce").notna()
    return maybe


def plausible_seconds(seconds: float) -> bool:
    """Whether a number read as epoch seconds is finite, within ``EPOCH_SECONDS_LIMIT`` and
    not a date written without separators (``compact_date``)."""
    return (
        math.isfinite(seconds) and abs(seconds) < EPOCH_SECONDS_LIMIT and not compact_date(seconds)
    )


#: 1971-01-01 and 1980-01-01 as epoch seconds: a time of 1970 (or before it) beside training
#: times from 1980 on is a number in another unit, not a time (``early_time``).
_FIRST_YEAR_ENDS, _MODERN = 31_536_000.0, 315_532_800.0


def early_time(spec: SeriesSpec, seconds: float) -> bool:
    """Whether ``seconds`` fall in 1970 (or before) while the model's training rows began in
    1980 or later: Excel's serial days (46327.5), epoch minutes or hours read as epoch seconds.
    Training refused a column of Excel days; scoring took them as the morning of 1970-01-01,
    scored them (12% flagged against 10%) and said nothing."""
    first = spec.trained_from
    return first is not None and first >= _MODERN and seconds < _FIRST_YEAR_ENDS


def early_reason(spec: SeriesSpec, value: object, seconds: float) -> str:
    """Why a time that is ``early_time`` is rejected, with what it most likely is."""
    shown = shortened(repr(value.item() if isinstance(value, np.generic) else value))
    assert spec.trained_from is not None
    read = pd.Timestamp(seconds, unit="s")
    trained = pd.Timestamp(spec.trained_from, unit="s")
    likely = "epoch seconds or ISO-8601 text"
    if _EXCEL_DAYS[0] <= seconds < _EXCEL_DAYS[1]:
        stamp = pd.Timestamp("1899-12-30") + pd.to_timedelta(seconds, unit="D")
        likely = (
            f"it looks like Excel serial days ({stamp:%Y-%m-%dT%H:%M}): give ISO-8601 text or "
            "epoch seconds, (days - 25569) * 86400"
        )
    return (
        f"{spec.time_column} {shown} read as epoch seconds is {read:%Y-%m-%dT%H:%M:%S}, decades "
        f"before the training rows (from {trained:%Y-%m-%d}); {likely}"
    )


def parse_times(values: pd.Series) -> pd.Series:
    """Seconds since the epoch as float (NaN where a value is not a time): numbers are epoch
    seconds, text is ISO-8601 (a zone-less time is taken as UTC); a column may mix both. An
    infinite time is none: every later row of its series would be out of order; nor is a
    number beyond ``EPOCH_SECONDS_LIMIT`` (milliseconds, most likely), a date written without
    separators (``compact_date``), a 32-bit float past its exact integers, a duration or a
    truth value. A column of periods (pandas') is read as their start times."""
    if isinstance(values.dtype, pd.PeriodDtype):  # ordinals in the period's unit, otherwise
        values = values.dt.to_timestamp()
    if pd.api.types.is_timedelta64_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pd.Series(np.nan, index=values.index)  # durations and truths place no row
    if pd.api.types.is_datetime64_any_dtype(values):  # Parquet's timestamps, a DataFrame's
        if isinstance(values.dtype, pd.ArrowDtype):
            # pyarrow-backed (read_parquet(dtype_backend="pyarrow")): its total_seconds
            # refused nanoseconds since the epoch as beyond a double's exact integers.
            stamp = values.dtype.pyarrow_dtype
            values = values.astype(f"datetime64[{stamp.unit}{', UTC' if stamp.tz else ''}]")
        utc = values.dt.tz_convert("UTC") if values.dt.tz else values.dt.tz_localize("UTC")
        return _epoch_seconds(utc)
    try:
        numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
    except OverflowError:  # an integer of hundreds of digits: as text, it reads as infinite
        numbers = pd.to_numeric(values.astype(str), errors="coerce").astype(np.float64)
    seconds = numbers.where((np.abs(numbers) < EPOCH_SECONDS_LIMIT) & ~_compact_dates(numbers))
    if values.dtype == np.float32:
        seconds = seconds.where(np.abs(numbers) <= _FLOAT32_EXACT)
    if pd.api.types.is_numeric_dtype(values):
        return seconds
    if values.dtype == object and numbers.notna().any():  # True and False: numbers to pandas
        read = numbers.notna()  # only those, not every text of a column of ISO times
        truths = values[read].map(lambda v: isinstance(v, bool | np.bool_))
        seconds[truths.index[truths.to_numpy(dtype=bool)]] = np.nan
    text = numbers.isna() & values.notna()
    if text.any():
        stamps = pd.to_datetime(values[text], errors="coerce", utc=True, format="ISO8601")
        seconds[text] = _epoch_seconds(stamps)
        if stamps.isna().any():  # only those that failed: respelling all cost a large file
            failed = values[stamps.index[stamps.isna()]]
            # Text alone: a duration (Parquet's, as an object) made pandas' times naive.
            failed = failed[failed.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)]
            if len(failed):
                respelled = failed.map(iso_spelling)
                stamps = pd.to_datetime(respelled, errors="coerce", utc=True, format="ISO8601")
                seconds[failed.index] = _epoch_seconds(stamps)
    return seconds


def iso_spelling(value: object) -> object:
    """An ISO-8601 text as pandas reads it: RFC 3339's lower-case ``t`` and ``z`` and
    ISO-8601's decimal comma, spelled as upper case and a point (other values as they are)."""
    return value.upper().replace(",", ".") if isinstance(value, str) else value


def _epoch_seconds(stamps: pd.Series) -> pd.Series:
    """UTC times as epoch seconds; NaN outside ``FIRST_TIME`` to ``LAST_TIME``. pandas keeps
    times at the finest unit they need: the year 9999 parses at seconds alone, yet is NaT
    beside a nanosecond time (and overflowed the epoch's subtraction). Outside nanoseconds'
    range a time is refused, whatever came with it."""
    held = stamps.where((stamps >= FIRST_TIME) & (stamps <= LAST_TIME))
    return (held.dt.as_unit("ns") - EPOCH).dt.total_seconds()


def not_a_time(column: str, value: object, *, float32: bool = False) -> str:
    """Why ``value`` of the time ``column`` places no row in its series (``float32``: the
    column holds 32-bit floats)."""
    # pd.NA, as a text column read by pandas holds an empty cell, has no truth value.
    if (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, str) and value.strip() in ("", *MISSING_TEXT))
        or (isinstance(value, float) and np.isnan(value))
        or (isinstance(value, np.datetime64) and np.isnat(value))
    ):
        return f"{column} is empty; every row needs its time"
    shown = shortened(repr(value))
    if isinstance(value, bool | np.bool_):
        return f"{column} {shown} is a truth value, not a time (ISO-8601 text or epoch seconds)"
    if isinstance(value, datetime.timedelta | np.timedelta64):
        return (
            f"{column} {shown} is a duration, not a time: add it to the time it counts from, "
            "or give epoch seconds"
        )
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if math.isfinite(number) and (spelled := compact_date(number)):
        return (
            f"{column} {shown} looks like a date written without separators ({spelled}), "
            f"not epoch seconds; write it as ISO-8601 ({spelled}) or as epoch seconds"
        )
    if float32 and math.isfinite(number) and abs(number) > _FLOAT32_EXACT:
        return (
            f"{column} {shown} is a 32-bit float, which holds epoch seconds only to a minute or "
            "two; store the times as 64-bit numbers, timestamps or ISO-8601 text"
        )
    if math.isfinite(number) and not plausible_seconds(number):
        unit, factor = _epoch_unit(number)
        return (
            f"{column} {shown} is too far from 1970 to be epoch seconds; if it is epoch "
            f"{unit}, divide by {factor}"
        )
    if (isinstance(value, str) and _iso_out_of_range(value)) or isinstance(
        value, datetime.datetime | np.datetime64
    ):
        return (
            f"{column} {shortened(repr(value))} is a time this tool cannot place: times must "
            f"lie between the years {FIRST_TIME.year + 1} and {LAST_TIME.year - 1}"
        )
    if isinstance(value, str) and _LEAP_SECOND.search(value):
        return (
            f"{column} {shown} is a leap second, which this tool cannot place; give the second "
            "before it (23:59:59)"
        )
    if isinstance(value, str) and _TIME_OF_DAY.fullmatch(value.strip()):
        return (
            f"{column} {shown} is a time of day without its date; if another column holds the "
            "date, join the two into one ISO-8601 time (2026-11-04T12:30:00Z) and name that"
        )
    if isinstance(value, str) and _ZONE_NAME.search(value):
        return (
            f"{column} {shown} names its zone by name, which ISO-8601 does not; give it as an "
            "offset (+02:00) or as Z for UTC"
        )
    return f"{column} {shortened(repr(value))} is not a time (ISO-8601 text or epoch seconds)"


#: A time of day whose seconds are 60: a leap second (RFC 3339 allows it; pandas does not).
_LEAP_SECOND = re.compile(r"\d\d:\d\d:60(?:[.,]\d*)?(?:[zZ]|[+-]\d\d(?::?\d\d)?)?\s*$")
#: A time followed by a zone's name or abbreviation (UTC, CEST, Europe/Berlin).
_ZONE_NAME = re.compile(r"\d\d:\d\d(?::\d\d(?:[.,]\d*)?)?\s*(?:[A-Za-z]{3,}|\w+/[\w/+-]+)\s*$")


def _epoch_unit(number: float) -> tuple[str, str]:
    """The unit a number too large for epoch seconds most likely counts (today's times are
    about 1.8e12 milliseconds, 1.8e15 microseconds, 1.8e18 nanoseconds), and its divisor."""
    size = abs(number)
    if size < 1e14:
        return "milliseconds", "1,000"
    if size < 1e17:
        return "microseconds", "1,000,000"
    return "nanoseconds", "1,000,000,000"


def _iso_out_of_range(text: str) -> bool:
    """Whether ``text`` is an ISO-8601 time that pandas' nanosecond times cannot hold (the
    year 9999, say): telling its user it "is not a time" would send them looking for a typo."""
    try:
        stamp = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return False
    return not FIRST_TIME.year < stamp.year < LAST_TIME.year


def late_rejection(
    spec: SeriesSpec,
    row: int,
    *,
    same_time: bool,
    last: float | None = None,
    value: object = None,
) -> SeriesRejection:
    """``row`` comes at (``same_time``) or before the last row already placed in its series,
    at ``last`` (epoch seconds), which the reason names: where one row's time is wrong, the
    rows it makes late point at it. ``value``: the row's time as given, for a hint where it
    names no zone (a local time repeats an hour where the clocks go back)."""
    column = spec.time_column
    seen = "" if last is None else f" ({iso_time(last)})"
    hint = ""
    if isinstance(value, str) and _without_zone(pd.Series([value])):
        hint = (
            f"; {shortened(repr(value))} names no zone, so it is read as UTC: if it is a "
            "local time, an hour repeats where the clocks go back, so send UTC or an offset "
            "(2026-11-01T01:30:00-05:00)"
        )
    elif isinstance(value, str) and _DATE_ONLY.fullmatch(value.strip()):
        # A file of dates scored 12 rows of 800, the rest "an earlier row has the same ts".
        hint = (
            f"; {shortened(repr(value))} is a date without a time of day: if another column "
            "holds the time, join the two into one ISO-8601 time (2026-11-04T12:30:00Z)"
        )
    if same_time:
        reason = f"an earlier row of its series has the same {column}{seen}{hint}"
        return SeriesRejection(row, "duplicate_timestamp", reason)
    reason = (
        f"its {column} is before the last row already seen for its series{seen}; send each "
        f"series in time order{hint}"
    )
    return SeriesRejection(row, "out_of_order", reason)


def iso_time(seconds: float) -> str:
    """Epoch ``seconds`` as ISO-8601 UTC text, to the second: ``2026-11-12T10:15:00Z``."""
    stamp = pd.Timestamp(round(seconds), unit="s", tz="UTC")
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


#: How far ahead of the clock a row's time may be before it is rejected (``future_timestamp``),
#: by default: a row placed far ahead would make every later, correct row of its series late.
DEFAULT_MAX_AHEAD_SECONDS = 3600.0
#: The series a batch run keeps (each its last rows and its level: about 1 KB at 4 metrics),
#: by default; past it the least recently seen is evicted and warms up again if it comes back.
#: Bounds memory when every row is a series of its own (a key column that is an id).
DEFAULT_MAX_SERIES = 1_000_000


def future_rejection(
    spec: SeriesSpec, row: int, value: object, *, ahead: float, limit: float, settable: bool = True
) -> SeriesRejection:
    """``row``'s time (``value``) is ``ahead`` seconds after the clock, past ``limit``, which
    the reason names as an option where the reader can set it (``settable``)."""
    shown = shortened(repr(value.item() if isinstance(value, np.generic) else value))
    named = f", {option('max_ahead_seconds')}" if settable else ""
    by, most = duration(ahead), duration(limit)
    if by == most:  # "1.0 h ahead (the limit: 1.0 h)" read as within the limit
        by, most = f"{ahead:,.0f} s", f"{limit:,.0f} s"
    return SeriesRejection(
        row,
        "future_timestamp",
        f"its {spec.time_column} {shown} is {by} ahead of the clock (the limit: "
        f"{most}{named}); fix the clock that stamped it, or give the time with its "
        "zone (one without is read as UTC)",
    )


def duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it at 1 or more: ``2.0 h``, ``3.5 days``."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


@functools.lru_cache(maxsize=65_536)
def is_window_column(name: str) -> bool:
    """Whether ``name`` is a column the window added (``cpu[-2]``, ``cpu[-mean]``, and the
    calendar's ``ts[hour]``, ``ts[weekday]``): not an input column. Remembered: a series
    model asks it of every schema column for each request (38 metrics: 798 columns), which
    cost a 38-metric record 2.6 of its 9.9 ms in-process (``bench_streams.py``'s wide stream)."""
    return re.search(r"\[(-\d+|-mean|hour|weekday)\]$", name) is not None


def lag_of(name: str) -> int:
    """How many rows back a window column looks: 2 for ``cpu[-2]``, 0 for any other column
    (the newest row's own, the calendar's, a context column)."""
    found = re.search(r"\[-(\d+)\]$", name)
    return int(found.group(1)) if found else 0


def window_parts(schema: Schema, lengths: tuple[int, ...]) -> np.ndarray:
    """For each of ``lengths``, which of ``schema``'s encoded features hold the newest that
    many rows of a window (lags below the length, and every column that is not a lag or a
    deviation). Where the window has ``COL[-mean]`` deviation columns, they join the first
    (the shortest) part when there are several, which costs no search of its own; with one
    length they are one more part, with the newest row. ``(parts, n_features)`` booleans, the
    parts a neighbour bank judges a record on (``detector.scoring.neighbours``)."""
    names = [c.name for c in schema.numeric]
    for categorical in schema.categorical:
        names += [categorical.name] * categorical.width
    for context in schema.context:
        names += [context.name] * context.width
    lags = np.array([lag_of(name) for name in names])
    deviation = np.array([name.endswith(DEVIATION_SUFFIX) for name in names])
    parts = [(lags < length) & ~deviation for length in lengths]
    if deviation.any() and len(parts) > 1:
        parts[0] |= deviation
    elif deviation.any():
        parts.append(lags == 0)
    return np.array(parts, dtype=bool)


def metric_parts(schema: Schema, length: int) -> np.ndarray:
    """For each numeric metric of ``schema``'s window (a column with lags), which encoded
    features hold its newest ``length`` rows, and nothing else: the parts the distance judges
    each metric on alone (``--column-window``). ``(metrics, n_features)`` booleans, in the
    schema's order; none for a window without lags."""
    names = [c.name for c in schema.numeric]
    width = schema.n_features - len(names)  # one-hot and context slots: in no metric's part
    lags = np.array([lag_of(name) for name in names] + [0] * width)
    bases = [re.sub(r"\[-\d+\]$", "", name) for name in names] + [""] * width
    lagged = {base for base, lag in zip(bases, lags, strict=True) if lag > 0}
    metrics = [base for base in dict.fromkeys(bases) if base in lagged]
    parts = [np.array([b == base for b in bases]) & (lags < length) for base in metrics]
    return np.array(parts, dtype=bool).reshape(len(parts), schema.n_features)


def calendar_values(seconds: float) -> tuple[str, str]:
    """Hour of day and day of week (Monday 0), in UTC, of epoch ``seconds``, as text."""
    days, rest = divmod(seconds, 86400.0)
    return str(int(rest // 3600)), str(int((days + 3) % 7))  # 1 January 1970 was a Thursday


#: A deviation column's name ends so: ``cpu[-mean]``.
DEVIATION_SUFFIX = "[-mean]"


def deviation_name(column: str) -> str:
    """The name of ``column``'s difference from the mean of the rows before it."""
    return f"{column}{DEVIATION_SUFFIX}"


def lag_name(column: str, lag: int) -> str:
    """The name of ``column``'s value ``lag`` rows back: ``cpu[-2]``."""
    return f"{column}[-{lag}]"


def make_windows(frame: pd.DataFrame, spec: SeriesSpec) -> Windows:
    """Order ``frame``'s series and window every row it can place (see the module)."""
    return SeriesState(spec).window(frame)


def missing_key_reason(spec: SeriesSpec, empty: Sequence[str] = ()) -> str:
    """Why a row with no usable key (``_missing_keys``, ``stream.series_key``) is rejected,
    naming the key columns ``empty`` for it (all of them where not given): of two, the
    reason named both and left the user to find which was empty."""
    named = list(empty) if len(empty) else list(spec.key_columns)
    return (
        f"no value for key {named}: it is empty, text read as missing (NA, null) or a list or "
        "an object"
    )


def series_keys(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """Each row's series as one string ``(n,)`` (empty when no key column is named), as
    windowing tells series apart (a row with no key gets a text such as 'nan':
    ``unkeyed_rows`` tells them)."""
    if not columns:
        return np.full(len(frame), "", dtype=object)
    first, *rest = (key_text(frame[c]) for c in columns)
    joined = first.str.cat(rest, sep=KEY_SEPARATOR) if rest else first
    return same_letters_keys(joined).to_numpy(dtype=object)


def unkeyed_rows(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """Which rows ``(n,)`` have no value in a key column (``_missing_keys``): no series."""
    return np.asarray(_missing_keys(frame, columns).any(axis=1), dtype=bool)


def _missing_keys(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """Rows and key columns ``(n, len(columns))`` with no value: empty, or text a file's
    reader takes for missing with or without spaces (" NA ", "null"), so that a record's
    series is the same from a file and from JSON. Judged once per distinct value: a million
    rows of a thousand hosts cost a factorisation, not a million strips."""
    found = np.zeros((len(frame), len(columns)), dtype=bool)
    for j, column in enumerate(columns):
        missing = found[:, j]
        keys = frame[column]
        if keys.dtype == object:  # a Parquet struct or list cannot be hashed to factorise
            nested = np.fromiter(map(is_nested, keys), dtype=bool, count=len(keys))
            if nested.any():
                missing |= nested
                keys = keys.where(~nested, None)
        codes, values = pd.factorize(keys, use_na_sentinel=True)
        # The last entry, True, is what an empty cell's code (-1) picks.
        marked = [isinstance(v, str) and v.strip() in MISSING_TEXT for v in values] + [True]
        missing |= np.asarray(marked, dtype=bool)[codes]
    return found


class SeriesState:
    """What windowing needs to remember between batches of rows: for each key the time of its
    last row and its last ``window - 1`` rows (since a gap restarted it), the ``max_keys``
    most recently seen keys (an evicted key warms up again when it comes back).

    ``window`` places the rows of one batch, in any order within it; a row at or before the
    last row already seen for its key is rejected (``out_of_order``, ``duplicate_timestamp``),
    never mixed into its series. Windowing a table in one call, or row by row in time order,
    gives every row the same window.
    """

    def __init__(
        self,
        spec: SeriesSpec,
        *,
        max_keys: int | None = None,
        max_ahead_seconds: float | None = DEFAULT_MAX_AHEAD_SECONDS,
        clock: Callable[[], float] = time.time,
        limit_settable: bool = True,
    ) -> None:
        self.spec = spec
        self.max_keys = max_keys
        #: A row more than this many seconds after ``clock()`` is rejected (``None``: never).
        self.max_ahead_seconds = max_ahead_seconds
        self.clock = clock
        self.limit_settable = limit_settable  # a rejection names the option that sets the limit
        self.evicted = 0
        #: Each series' recent scores, for the scorer (``detector.scoring.scores``).
        self.levels = ScoreLevels(spec.level_hours, max_keys)
        #: key -> (times, values): its last rows since the segment start, at most window - 1
        #: (numpy rather than a frame per key: 100,000 small frames would cost gigabytes).
        self._history: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._history)

    def keys(self) -> np.ndarray:
        """The series held now, least recently seen first."""
        return np.asarray(list(self._history), dtype=object)

    def window(
        self,
        frame: pd.DataFrame,
        *,
        check: Callable[[pd.DataFrame], list[SeriesRejection]] | None = None,
    ) -> Windows:
        """Window ``frame``'s rows (see the class); ``check`` (``detector.series.values``) names
        rows whose own values cannot be scored: they are rejected and kept out of their
        series."""
        spec = self.spec
        problems = spec.problems([str(c) for c in frame.columns])
        if problems:
            raise SchemaError("; ".join(problems))
        frame = frame.reset_index(drop=True)
        times = parse_times(frame[spec.time_column])
        float32 = frame[spec.time_column].dtype == np.float32
        rejections = [
            SeriesRejection(
                int(i), "bad_timestamp", not_a_time(spec.time_column, v, float32=float32)
            )
            for i, v in frame.loc[times.isna(), spec.time_column].items()
        ]
        usable = times.notna().to_numpy().copy()
        if spec.trained_from is not None:
            for i in np.flatnonzero(usable & (times.to_numpy() < _FIRST_YEAR_ENDS)):
                if early_time(spec, float(times.iat[i])):
                    value = frame[spec.time_column].iat[i]
                    reason = early_reason(spec, value, float(times.iat[i]))
                    rejections.append(SeriesRejection(int(i), "bad_timestamp", reason))
                    usable[i] = False
        most = self.max_ahead_seconds
        if most is not None:
            ahead = times.to_numpy() - self.clock()
            for i in np.flatnonzero(usable & (ahead > most)):
                value = frame[spec.time_column].iat[i]
                rejection = future_rejection(
                    spec, int(i), value, ahead=ahead[i], limit=most, settable=self.limit_settable
                )
                rejections.append(rejection)
                usable[i] = False
        if spec.key_columns:
            empty = _missing_keys(frame, spec.key_columns)
            missing = empty.any(axis=1) & usable
            columns = np.asarray(spec.key_columns, dtype=object)
            rejections += [
                SeriesRejection(int(i), "missing_key", missing_key_reason(spec, columns[empty[i]]))
                for i in np.flatnonzero(missing)
            ]
            usable &= ~missing
        keys = self._keys(frame)
        if len(spec.key_columns) > 1:
            # Judged once per distinct key: a key holds one separator fewer than its columns
            # unless a value holds one too.
            codes, distinct = pd.factorize(keys)
            most = len(spec.key_columns) - 1
            extra = [k.count(KEY_SEPARATOR) > most for k in distinct] + [False]  # -1: missing
            for i in np.flatnonzero(np.asarray(extra, dtype=bool)[codes] & usable):
                given = {c: frame[c].iat[i] for c in spec.key_columns}
                joining = separated_key_columns(spec, given)
                rejections.append(separated_key_rejection(spec, int(i), joining))
                usable[i] = False
        if spec.key_columns:
            placed = np.flatnonzero(usable)  # a missing key is NaN, not text, and has no length
            lengths = np.fromiter(map(len, keys[placed]), dtype=np.int64, count=len(placed))
            long = lengths > MAX_KEY_CHARS  # len() over the keys: 15x pandas' .str.len
            rejections += [
                long_key_rejection(spec, int(i), int(n))
                for i, n in zip(placed[long], lengths[long], strict=True)
            ]
            usable[placed[long]] = False
        if check is not None:
            bad = [r for r in check(frame) if usable[r.row]]  # a bad time's reason comes first
            rejections += bad
            usable[[r.row for r in bad]] = False
        positions = np.flatnonzero(usable)
        new = frame.drop(columns=[spec.time_column, *spec.key_columns]).iloc[positions]
        new = new.reset_index(drop=True).assign(
            _time=times.to_numpy()[positions], _key=keys[positions],
            _row=positions,
        )  # fmt: skip
        known = [k for k in pd.unique(new["_key"]) if k in self._history]
        rows = pd.concat([self._recalled(known, new), new], ignore_index=True) if known else new
        rows = rows.sort_values(["_key", "_time", "_row"], kind="stable", ignore_index=True)
        old = rows["_row"].isna().to_numpy()
        # A row at or before the last one an earlier batch placed for its series is late.
        seen = {k: float(self._history[k][0][-1]) for k in known}
        last = np.full(len(rows), -np.inf)
        if seen:  # the batch's own rows only: the remembered ones are most of a batch's rows
            own_rows = np.flatnonzero(~old)
            last[own_rows] = rows["_key"].iloc[own_rows].map(seen).fillna(-np.inf).to_numpy()
        seconds = rows["_time"].to_numpy()
        late = ~old & (seconds <= last)
        given = frame[spec.time_column]
        for i in np.flatnonzero(late):
            row = int(rows["_row"].iat[i])
            rejections.append(
                late_rejection(
                    spec, row, same_time=seconds[i] == last[i], last=last[i], value=given.iat[row]
                )
            )
        rows, old = rows[~late].reset_index(drop=True), old[~late]
        key, seconds = rows["_key"].to_numpy(), rows["_time"].to_numpy()
        repeated = np.zeros(len(key), dtype=bool)
        repeated[1:] = (key[1:] == key[:-1]) & (seconds[1:] == seconds[:-1])
        repeated &= ~old
        for i in np.flatnonzero(repeated):
            row = int(rows["_row"].iat[i])
            rejections.append(
                late_rejection(spec, row, same_time=True, last=seconds[i], value=given.iat[row])
            )
        rows, old = rows[~repeated].reset_index(drop=True), old[~repeated]
        key, seconds = rows["_key"].to_numpy(), rows["_time"].to_numpy()
        # Sized from the rows, so that a batch whose every row was rejected windows to nothing.
        new_key = np.ones(len(key), dtype=bool)
        new_key[1:] = key[1:] != key[:-1]
        gap = np.diff(seconds, prepend=seconds[:1])
        limit = spec.max_gap_seconds
        restart = ~new_key & (limit is not None) & (gap > (limit or 0))
        segment = np.cumsum(new_key | restart)
        values = rows.drop(columns=["_time", "_key", "_row"])
        placed = np.flatnonzero(~old)
        back = placed[np.argsort(rows["_row"].to_numpy()[placed], kind="stable")]
        windowed, warming = _window(values, segment, spec, back)
        if spec.calendar:
            # calendar_values, for every row at once.
            at = seconds[back]
            hours = ((at % 86400.0) // 3600.0).astype(np.int64).astype(str)
            weekdays = ((at // 86400.0 + 3) % 7).astype(np.int64).astype(str)
            hour, weekday = spec.calendar_columns
            # Joined, not assigned: a window of many columns is a frame of many blocks, to
            # which pandas warned of each insert ("highly fragmented") on the user's screen.
            calendar = pd.DataFrame(
                {hour: hours.astype(object), weekday: weekdays.astype(object)},
                index=windowed.index,
            )
            windowed = pd.concat([windowed, calendar], axis=1)
        self._remember(rows, segment)
        return Windows(
            frame=windowed,
            rows=rows["_row"].to_numpy()[back].astype(np.int64),
            warming_up=warming,
            rejections=tuple(sorted(rejections, key=lambda r: r.row)),
            restarts=int((restart & ~old).sum()),
            keys=key[back],
            seconds=seconds[back].astype(np.float64),
        )

    def _keys(self, frame: pd.DataFrame) -> np.ndarray:
        return series_keys(frame, self.spec.key_columns)

    def _recalled(self, keys: list[str], new: pd.DataFrame) -> pd.DataFrame:
        """The remembered rows of ``keys`` as a frame like ``new`` (``_row`` NaN)."""
        values = [c for c in new.columns if c not in ("_time", "_key", "_row")]
        remembered = [self._history[k] for k in keys]
        frame = pd.DataFrame(np.concatenate([v for _, v in remembered]), columns=values)
        frame = frame.astype(new[values].dtypes.to_dict())
        counts = [len(t) for t, _ in remembered]
        return frame.assign(
            _time=np.concatenate([t for t, _ in remembered]),
            _key=np.repeat(np.asarray(keys, dtype=object), counts),
            _row=np.nan,
        )

    def _remember(self, rows: pd.DataFrame, segment: np.ndarray) -> None:
        """Keep each key's last ``window - 1`` rows of its last segment (at least its last row,
        for the time order), most recently seen keys last."""
        key = rows["_key"].to_numpy()
        if not len(key):
            return
        # The rows are sorted by series and time: each series is one run, its last segment last.
        ends = np.flatnonzero(np.append(key[1:] != key[:-1], True))
        segment_starts = np.flatnonzero(np.insert(segment[1:] != segment[:-1], 0, True))
        last_segment = segment_starts[np.searchsorted(segment_starts, ends, side="right") - 1]
        begins = np.maximum(last_segment, ends + 1 - max(self.spec.window - 1, 1))
        times = rows["_time"].to_numpy()
        values = rows.drop(columns=["_time", "_key", "_row"]).to_numpy()
        for name, begin, end in zip(
            key[ends].tolist(), begins.tolist(), (ends + 1).tolist(), strict=True
        ):
            self._history.pop(name, None)  # copies: a view would keep the whole batch alive
            self._history[name] = (times[begin:end].copy(), values[begin:end].copy())
        while self.max_keys is not None and len(self._history) > self.max_keys:
            name, _ = self._history.popitem(last=False)
            self.levels.forget(name)
            self.evicted += 1


def _window(values: pd.DataFrame, segment: np.ndarray, spec: SeriesSpec, at: np.ndarray):  # type: ignore[no-untyped-def]
    """The window columns of rows ``at`` (in that order; a new index) of rows sorted by series
    and time, ``segment`` numbering each run of one series; and whether each is warming up.
    Row i's value ``lag`` rows back is row i - lag of its segment, or the segment's first row
    where the segment is shorter. Only the rows ``at`` are windowed: the rows remembered from
    earlier batches are most of a batch of many series (19 a series before each batch's few)."""
    index = np.arange(len(values))
    first = np.ones(len(segment), dtype=bool)
    first[1:] = segment[1:] != segment[:-1]
    start = np.maximum.accumulate(np.where(first, index, 0))[at]
    position = at - start
    warming = position < spec.window - 1
    own = values.iloc[at].reset_index(drop=True)
    if spec.window == 1:
        return own, warming
    sources = [np.where(position >= lag, at - lag, start) for lag in range(1, spec.window)]
    kinds = set(values.dtypes)
    alike = len(kinds) == 1 and kinds.pop() in (np.dtype(np.float64), np.dtype(np.int64))
    if spec.representation == "lags" and alike and values.dtypes.iat[0] == np.float64:
        # Written into one array, the frame's own: the lags' list, their stack and the frame
        # concatenated from them were three copies (2.2 GB at 200,000 windows of 420).
        x = values.to_numpy()
        k = x.shape[1]
        deviation = _deviation(values, at, sources, spec) if spec.deviates else None
        extra = 0 if deviation is None else deviation.shape[1]
        out = np.empty((len(at), k * spec.window + extra))
        out[:, :k] = x[at]
        for n, source in enumerate(sources, 1):
            out[:, n * k : (n + 1) * k] = x[source]
        names = [lag_name(str(c), n) for n in range(1, spec.window) for c in values.columns]
        if deviation is not None:
            out[:, k * spec.window :] = deviation.to_numpy()
            names += list(deviation.columns)
        return pd.DataFrame(out, columns=[*values.columns, *names], copy=False), warming
    if spec.representation == "lags" and alike:
        # One array for the lags of every column, of their one type (a frame per lag cost 3x).
        x = values.to_numpy()
        names = [lag_name(str(c), n) for n in range(1, spec.window) for c in values.columns]
        lagged = pd.DataFrame(np.hstack([x[source] for source in sources]), columns=names)
        parts = [own, lagged]
        if spec.deviates:
            parts.append(_deviation(values, at, sources, spec))
        return pd.concat(parts, axis=1), warming
    if spec.representation == "lags":
        lags = [
            values.iloc[source]
            .set_axis(own.index)
            .set_axis([lag_name(str(c), n) for c in values.columns], axis=1)
            for n, source in enumerate(sources, 1)
        ]
        if spec.deviates:
            lags.append(_deviation(values, at, sources, spec))
        return pd.concat([own, *lags], axis=1), warming
    numeric = values.select_dtypes("number").columns
    x = values[numeric].to_numpy(np.float64)
    history = np.mean([x[source] for source in sources], axis=0)
    deviation = pd.DataFrame(
        x[at] - history, index=own.index, columns=[deviation_name(c) for c in numeric]
    )
    return pd.concat([own, deviation], axis=1), warming


def _deviation(
    values: pd.DataFrame, at: np.ndarray, sources: list[np.ndarray], spec: SeriesSpec
) -> pd.DataFrame:
    """Each of ``spec.deviation_columns``' difference from the mean of its ``deviation_window
    - 1`` rows before, for rows ``at`` whose rows before are ``sources`` (a value that is not a
    number counts as missing)."""
    columns = list(spec.deviation_columns)
    x = values[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    before = sources[: spec.deviation_window - 1]
    # Added one row at a time, as a streamed record's (``stream._deviations``) is: the same
    # float64 operations in the same order, so a record scores the same either way.
    history = sum((x[source] for source in before), np.zeros((len(at), x.shape[1]))) / len(before)
    return pd.DataFrame(
        x[at] - history, index=pd.RangeIndex(len(at)), columns=[deviation_name(c) for c in columns]
    )
