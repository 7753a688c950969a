"""A series file longer than ``--max-rows``: whole series kept, never a uniform sample of rows,
which would tear every window apart.

Each series (its key: ``windows.series_keys``, as windowing tells series apart) draws a rank
from a seeded hash of its key, so the series kept do not depend on the file's order, its
chunks or which files of a glob hold it. Series are taken in that order while their rows fit
in ``max_rows``; the one that straddles the cap keeps its most recent rows that fit (a
contiguous time range: its windows stay whole), so a file of one series (no key column) keeps
its most recent ``max_rows`` rows. The file is read ``max_rows`` rows at a time, and only the
kept series' rows are held: a series whose rank is already past the cap never comes back, as
the rows before it only grow.

Rows no series can hold are kept, all of them: a row with no key, and, of the series cut to
its latest rows, a row whose time is no time. Training then stops naming them, as it does
reading the whole file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from detector.errors import SchemaError
from detector.features.encode import listed
from detector.io.frames import read_table, table_chunks
from detector.series.windows import parse_times, series_keys, unkeyed_rows
from detector.wording import option


@dataclass(frozen=True)
class SeriesCap:
    """What was kept of a series file: ``rows_read`` rows of ``series_read`` series, of which
    ``series_kept`` whole and ``series_cut`` (0 or 1) cut to its most recent rows."""

    rows_read: int
    rows_kept: int
    series_read: int
    series_kept: int
    series_cut: int
    max_rows: int
    keyed: bool

    @property
    def capped(self) -> bool:
        return self.rows_kept < self.rows_read

    def to_training(self) -> dict[str, int]:
        """The manifest's ``training`` entries (only where rows were left out)."""
        return {
            "rows_read": self.rows_read,
            "max_rows": self.max_rows,
            "series_read": self.series_read,
            "series_kept": self.series_kept,
            "series_cut": self.series_cut,
        }

    def describe(self) -> str:
        """The training summary's line."""
        again = f"{option('max_rows', self.max_rows)}; {option('max_rows', 0)} trains on every row"
        if not self.keyed:
            return (
                f"read {self.rows_read:,} rows of one series and kept its most recent "
                f"{self.rows_kept:,} ({again})"
            )
        if self.series_kept:
            cut = " and the most recent rows of one more" if self.series_cut else ""
            kept = f"{self.rows_kept:,}: {self.series_kept:,} whole series{cut}"
        else:
            kept = f"the most recent {self.rows_kept:,} rows of one of them"
        return (
            f"read {self.rows_read:,} rows of {self.series_read:,} series and kept {kept}, "
            f"chosen by a seeded hash of each series' key ({again})"
        )


def series_cap_note(training: Mapping[str, Any]) -> str | None:
    """How a bundle's manifest ``training`` says its rows were chosen from a longer file, as
    ``anomaly info`` says it (``None``: every row read, or a uniform sample of rows)."""
    read, kept, cut = (training.get(k) for k in ("series_read", "series_kept", "series_cut"))
    if not all(isinstance(v, int) for v in (read, kept, cut, training.get("rows_read"))):
        return None
    rows = f"{training['rows_read']:,} rows"
    if not kept:
        return f"the most recent rows of one of the {read:,} series and {rows} read"
    more = " and the most recent rows of one more" if cut else ""
    return f"{kept:,} whole series{more} of the {read:,} series and {rows} read"


def cap_series(
    path: str | os.PathLike[str],
    *,
    max_rows: int,
    time_column: str,
    key_columns: Sequence[str] = (),
    seed: int = 0,
    text_columns: Sequence[str] = (),
    encoding: str | None = None,
) -> tuple[pd.DataFrame, SeriesCap]:
    """The rows of the table ``read_table`` reads that training keeps (see the module), in
    file order, and what was kept. A table of no more than ``max_rows`` rows is read as
    ``frames.sample_table`` reads it (the same frame, the same model)."""
    keys_of = tuple(key_columns)
    held: list[pd.DataFrame] = []  # in file order
    held_keys: list[np.ndarray] = []  # each held row's series key (None: no key)
    counts: dict[str, int] = {}  # every series' rows read, kept or not
    ranks: dict[str, tuple[bytes, str]] = {}
    out: set[str] = set()  # series past the cap: they never come back
    read = 0
    last = (0, 0, 0)
    for chunk in table_chunks(
        path,
        chunk_rows=max_rows,
        text_columns=text_columns,
        encoding=encoding,
        key_columns=keys_of,
    ):
        _check_placing(chunk.columns, time_column, keys_of)
        keys = series_keys(chunk, keys_of)
        if keys_of:
            keys[unkeyed_rows(chunk, keys_of)] = None
        read += len(chunk)
        named, number = np.unique(keys[keys != None], return_counts=True)  # noqa: E711
        for key, n in zip(named.tolist(), number.tolist(), strict=True):
            if key not in counts:
                counts[key] = 0
                ranks[key] = (_rank(key, seed), key)
            counts[key] += n
        wanted = ~pd.Series(keys).isin(out).to_numpy()  # a row with no key is kept
        held.append(chunk if wanted.all() else chunk.iloc[np.flatnonzero(wanted)])
        held_keys.append(keys[wanted])
        if read > max_rows:
            order = sorted(counts, key=ranks.__getitem__)
            ends = np.cumsum([counts[k] for k in order])
            whole = int(np.searchsorted(ends, max_rows, side="right"))  # series that fit
            out.update(order[whole + 1 :])
            frame = pd.concat(held) if len(held) > 1 else held[0]
            every = np.concatenate(held_keys)
            kept = ~pd.Series(every).isin(out).to_numpy()
            room = max_rows - (int(ends[whole - 1]) if whole else 0)
            if whole < len(order):  # the series that straddles the cap: its latest rows
                kept &= _latest(frame, every, order[whole], room, time_column)
            held, held_keys = [frame.iloc[np.flatnonzero(kept)]], [every[kept]]
            last = (whole, int(whole < len(order) and room > 0), len(order))
    if not held or read <= max_rows:
        # As sample_table: an empty file is read_table's to name; a short one its frame.
        if not held:
            frame = read_table(
                path, text_columns=text_columns, encoding=encoding, key_columns=keys_of
            )
        else:
            frame = held[0] if len(held) == 1 else pd.concat(held, ignore_index=True)
        n_series = len(counts)
        cap = SeriesCap(len(frame), len(frame), n_series, n_series, 0, max_rows, bool(keys_of))
        return frame, cap
    frame = held[0].reset_index(drop=True)
    whole, cut, n_series = last
    return frame, SeriesCap(read, len(frame), n_series, whole, cut, max_rows, bool(keys_of))


def _rank(key: str, seed: int) -> bytes:
    """A series' place in the seeded order: a hash of its key (the same on every platform)."""
    salt = str(seed).encode()
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest()


def _latest(
    frame: pd.DataFrame, keys: np.ndarray, series: str, room: int, time_column: str
) -> np.ndarray:
    """Rows ``(len(frame),)`` to keep: all but those of ``series`` beyond its ``room`` most
    recent (by time, then file order); its rows whose time is no time are kept (training
    names them)."""
    keep = np.ones(len(frame), dtype=bool)
    rows = np.flatnonzero(keys == series)
    times = parse_times(frame[time_column].iloc[rows]).to_numpy(dtype=np.float64)
    timed = rows[~np.isnan(times)]
    times = times[~np.isnan(times)]
    # Newest first; of equal times, the later row in the file counts as the newer.
    newest = np.lexsort((-np.arange(len(timed)), -times))
    keep[timed[newest[max(room, 0) :]]] = False
    return keep


def _check_placing(columns: pd.Index, time_column: str, key_columns: tuple[str, ...]) -> None:
    """Training's own error where a column that places rows is not in the file, told before
    the file is read: the rows are told apart by them."""
    named = [(option("time_column"), time_column)]
    named += [(option("series_columns"), c) for c in key_columns]
    absent = [f"{flag} {column}" for flag, column in named if column not in columns]
    if absent:
        raise SchemaError(
            f"{', '.join(absent)}: not a column of the training data; its columns are "
            f"{listed([str(c) for c in columns])}"
        )
