"""Windows for records that arrive a few at a time, as a service receives them.

``SeriesState.window`` builds windows for a table with pandas, which costs about 24 ms a call
whatever its size: too slow for one record per request. ``window_records`` builds the same
windows for a few records in plain Python, from each key's ``History`` (the times and values
of its last rows) held wherever the caller keeps state (``service.series_store`` keeps it in
SQLite, shared by the worker processes). The rules are ``SeriesState``'s, and a test checks
that records streamed one at a time get the windows of the whole table: rows ordered by time
within a key (within one call, in any order), a row at or before its key's last row rejected
(``out_of_order``, ``duplicate_timestamp``), a gap over ``max_gap_seconds`` restarting the
window, the first rows of a series borrowing its oldest row and marked as warming up.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from detector.features.schema import is_nested, same_letters
from detector.io.tables import MISSING_TEXT
from detector.series.windows import (
    EPOCH,
    FIRST_TIME,
    KEY_SEPARATOR,
    LAST_TIME,
    MAX_KEY_CHARS,
    SeriesRejection,
    SeriesSpec,
    calendar_values,
    deviation_name,
    early_reason,
    early_time,
    future_rejection,
    iso_spelling,
    key_number,
    lag_name,
    late_rejection,
    long_key_rejection,
    missing_key_reason,
    not_a_time,
    plausible_seconds,
    separated_key_columns,
    separated_key_rejection,
)

Value = float | int | str | None


@dataclass(frozen=True)
class History:
    """A key's last rows since its window last started (at most ``window - 1``, at least its
    last one, whose time orders what comes next): ``times`` in epoch seconds, oldest first,
    and ``rows`` of values in the order of the model's value columns."""

    times: tuple[float, ...]
    rows: tuple[tuple[Value, ...], ...]

    def to_json(self) -> str:
        return json.dumps([self.times, self.rows], allow_nan=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, width: int | None = None) -> History:
        """A history ``to_json`` wrote, of rows of ``width`` values where given; ``ValueError``
        for anything else (a hand's, a tool's), which would fail every request of its key."""
        times, rows = json.loads(text)
        history = cls(tuple(float(t) for t in times), tuple(tuple(r) for r in rows))
        seconds = np.asarray(history.times, dtype=np.float64)
        if (
            not len(rows)
            or len(rows) != len(times)
            or not np.isfinite(seconds).all()
            or (np.diff(seconds) <= 0).any()
            or (width is not None and any(len(r) != width for r in history.rows))
        ):
            raise ValueError("not a history of rows in time order")
        return history


@dataclass(frozen=True)
class StreamWindows:
    """What ``window_records`` made of a few records: ``records`` (each accepted record's value
    columns and window columns, as the model's schema names them), ``rows`` (their positions in
    the input), ``warming_up``, ``rejections``, ``histories``, the new state of every key
    the records touched (to store back), and each accepted record's series ``keys`` and time
    in epoch ``seconds``."""

    records: list[dict[str, Value]]
    rows: np.ndarray
    warming_up: np.ndarray
    rejections: tuple[SeriesRejection, ...]
    histories: dict[str, History]
    keys: np.ndarray
    seconds: np.ndarray

    def at_positions(
        self, positions: np.ndarray, rejected: Sequence[SeriesRejection]
    ) -> StreamWindows:
        """These windows, made of the records at ``positions`` of a larger input, in that
        input's positions, with ``rejected`` (its records never windowed) added."""
        moved = [replace(r, row=int(positions[r.row])) for r in self.rejections]
        return replace(
            self,
            rows=positions[self.rows],
            rejections=tuple(sorted([*moved, *rejected], key=lambda r: r.row)),
        )


def series_key(spec: SeriesSpec, record: Mapping[str, object]) -> str | None:
    """The record's series as one string, as ``SeriesState`` forms it (``None``: a key column
    has no value, or the key is several values and one holds the character joining them)."""
    parts = []
    for column in spec.key_columns:
        value = record.get(column)
        if no_key_value(value):
            return None
        number = key_number(value)  # 7.0 from a JSON emitter is host 7, true is 'true'
        parts.append(str(value) if number is None else number)
    if separated_key_columns(spec, record):
        return None
    return same_letters(KEY_SEPARATOR.join(parts))


def no_key_value(value: object) -> bool:
    """Whether a key column's ``value`` names no series: none, NaN, a list or an object, or
    text a file's reader takes for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or is_nested(value):
        return True
    return isinstance(value, str) and value.strip() in MISSING_TEXT  # as a file's reader


def parse_time(value: object) -> float | None:
    """Epoch seconds from a number or ISO-8601 text (zone-less: UTC), as
    ``windows.parse_times`` reads a column; ``None`` where it is not a time."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, datetime.datetime | np.datetime64):  # from Python, or Parquet's rows
        stamp = pd.Timestamp(value)
        if pd.isna(stamp):
            return None
        return _seconds(stamp.tz_convert("UTC") if stamp.tz else stamp.tz_localize("UTC"))
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            return None
        return number if plausible_seconds(number) else None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        # Python reads "1_000" as a number; a file's reader does not.
        number = math.nan if "_" in value else float(value)
        return number if plausible_seconds(number) else None
    except ValueError:
        pass
    return _text_seconds(value)


@functools.lru_cache(maxsize=1 << 14)
def _text_seconds(value: str) -> float | None:
    """``parse_time`` of a text that is not a number. Cached: pandas takes 0.1 ms a text, and
    a request's time was read three times a record (its lead on the clock, its checks, its
    window), two fifths of a 10,000-record series batch; a scrape's hosts share each time.
    A batch's distinct times fit."""
    stamp = pd.to_datetime(iso_spelling(value), errors="coerce", utc=True, format="ISO8601")
    return None if pd.isna(stamp) else _seconds(stamp)


def _seconds(stamp: pd.Timestamp) -> float | None:
    if not FIRST_TIME <= stamp <= LAST_TIME:
        return None
    return float((stamp.as_unit("ns") - EPOCH).total_seconds())


def ahead_of_clock(
    spec: SeriesSpec, records: Sequence[Mapping[str, object]], *, now: float, limit: float
) -> list[SeriesRejection]:
    """The ``records`` whose time is more than ``limit`` seconds after ``now`` (the receiver's
    clock, epoch seconds): placed, such a record would make every later, correct record of
    its series late (``SeriesState`` checks a table's rows alike)."""
    out = []
    for i, record in enumerate(records):
        value = record.get(spec.time_column)
        seconds = parse_time(value)
        if seconds is not None and seconds - now > limit:
            out.append(future_rejection(spec, i, value, ahead=seconds - now, limit=limit))
    return out


def window_records(
    spec: SeriesSpec,
    value_columns: Sequence[str],
    records: Sequence[Mapping[str, object]],
    histories: Mapping[str, History],
) -> StreamWindows:
    """Window ``records`` (see the module) given the ``histories`` of their keys (a key
    absent: nothing seen yet). Values are taken as they are; the encoder judges them later."""
    rejections: list[SeriesRejection] = []
    by_key: dict[str, list[tuple[float, int]]] = {}
    for i, record in enumerate(records):
        seconds = parse_time(record.get(spec.time_column))
        if seconds is None:
            reason = not_a_time(spec.time_column, record.get(spec.time_column))
            rejections.append(SeriesRejection(i, "bad_timestamp", reason))
            continue
        if early_time(spec, seconds):
            reason = early_reason(spec, record.get(spec.time_column), seconds)
            rejections.append(SeriesRejection(i, "bad_timestamp", reason))
            continue
        key = series_key(spec, record)
        if key is None:
            empty = [c for c in spec.key_columns if no_key_value(record.get(c))]
            rejection = (
                SeriesRejection(i, "missing_key", missing_key_reason(spec, empty))
                if empty
                else separated_key_rejection(spec, i, separated_key_columns(spec, record))
            )
            rejections.append(rejection)
            continue
        if len(key) > MAX_KEY_CHARS:
            rejections.append(long_key_rejection(spec, i, len(key)))
            continue
        by_key.setdefault(key, []).append((seconds, i))

    keep = max(spec.window - 1, 1)
    lagged = _lag_names(tuple(value_columns), spec.window)
    placed: list[tuple[int, dict[str, Value], bool, str, float]] = []
    updated: dict[str, History] = {}
    for key, arrivals in by_key.items():
        known = histories.get(key)
        times = list(known.times) if known else []
        rows = [tuple(r) for r in known.rows] if known else []
        # Rows since the window started, oldest first; the stored ones begin it.
        segment: list[tuple[Value, ...]] = list(rows)
        for seconds, i in sorted(arrivals):
            if times and seconds <= times[-1]:
                same = seconds == times[-1]
                given = records[i].get(spec.time_column)
                rejections.append(
                    late_rejection(spec, i, same_time=same, last=times[-1], value=given)
                )
                continue
            gap = spec.max_gap_seconds
            if times and gap is not None and seconds - times[-1] > gap:
                segment, times = [], []
            values = tuple(_value(records[i].get(c)) for c in value_columns)
            position = len(segment)
            segment.append(values)
            times.append(seconds)
            window = dict(zip(value_columns, values, strict=True))
            for lag, names in enumerate(lagged, start=1):
                source = segment[position - lag] if position >= lag else segment[0]
                window.update(zip(names, source, strict=True))
            if spec.deviates:
                window |= _deviations(spec, value_columns, segment, position)
            if spec.calendar:
                window |= dict(zip(spec.calendar_columns, calendar_values(seconds), strict=True))
            placed.append((i, window, position < spec.window - 1, key, seconds))
            if len(segment) > keep:  # the oldest row is no longer in any window
                del segment[0]
                del times[0]
        if times:
            kept = len(segment[-keep:])
            updated[key] = History(tuple(times[-kept:]), tuple(segment[-kept:]))
    placed.sort(key=lambda p: p[0])
    return StreamWindows(
        records=[p[1] for p in placed],
        rows=np.asarray([p[0] for p in placed], dtype=np.int64),
        warming_up=np.asarray([p[2] for p in placed], dtype=bool),
        rejections=tuple(sorted(rejections, key=lambda r: r.row)),
        histories=updated,
        keys=np.asarray([p[3] for p in placed], dtype=object),
        seconds=np.asarray([p[4] for p in placed], dtype=np.float64),
    )


@functools.lru_cache(maxsize=64)
def _lag_names(columns: tuple[str, ...], window: int) -> tuple[tuple[str, ...], ...]:
    """Each lag's names of ``columns`` (``cpu[-1]``, then ``cpu[-2]`` ...) up to the window's
    oldest row: made once per model, not for every record (38 metrics: 722 names a record)."""
    return tuple(tuple(lag_name(c, lag) for c in columns) for lag in range(1, window))


def _deviations(
    spec: SeriesSpec, value_columns: Sequence[str], segment: list[tuple[Value, ...]], position: int
) -> dict[str, Value]:
    """The newest row's ``COL[-mean]`` columns, as ``windows._deviation`` makes them: each
    deviation column's value less the mean of its ``deviation_window - 1`` rows before (the
    segment's first row standing in for rows before it)."""
    out: dict[str, Value] = {}
    for column in spec.deviation_columns:
        at = value_columns.index(column)
        before = [
            _number(segment[position - lag][at] if position >= lag else segment[0][at])
            for lag in range(1, spec.deviation_window)
        ]
        # Summed in order from 0.0, as the table's windows sum them: the same result.
        mean = sum(before, 0.0) / len(before)
        out[deviation_name(column)] = _number(segment[position][at]) - mean
    return out


def _number(value: Value) -> float:
    """A value as a number, NaN where it is none (as ``pd.to_numeric(errors="coerce")``)."""
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # past float's range: infinite, as pandas reads it
            return math.inf if value > 0 else -math.inf
    try:
        return float(value) if isinstance(value, str) else math.nan
    except ValueError:
        return math.nan


def _value(value: object) -> Value:
    """A record's value as the windows keep it (and the state stores it, as JSON): what a
    table's row would hold for it, so that a window's columns encode as the row's do."""
    if value is None or isinstance(value, str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        # The label a CSV's true has ('True'); as 1.0 a JSON true was a category never seen,
        # and a card model flagged 76% of ordinary payments for their is_3ds.
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return int(value)  # a label 3 stays '3' (as 3.0, '3.0' was never seen)
    if isinstance(value, float | np.floating):
        return float(value)
    return str(value)
