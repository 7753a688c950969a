"""The ledger of a batch run: every row read is scored or rejected, in total and per file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from detector.errors import DataError
from detector.wording import option

#: Columns of the rejects file. ``row`` is the 1-based data row number in its source (header
#: not counted), ``line`` the physical line the record starts on (empty for Parquet).
REJECT_COLUMNS = ("row", "source", "line", "code", "reason", "raw")


@dataclass(frozen=True)
class SourceLedger:
    """One input file's share of the ledger."""

    source: str
    rows_read: int
    rows_scored: int
    rows_rejected: int


@dataclass(frozen=True)
class BatchReport:
    """The ledger of a batch run: ``rows_read == rows_scored + rows_rejected``, in total and
    for each file in ``files``."""

    input: str
    output: str
    rejects: str | None
    rows_read: int
    rows_scored: int
    rows_rejected: int
    anomalies: int
    threshold: float
    model_version: str
    files: tuple[SourceLedger, ...] = ()
    seconds: float = 0.0
    engine: str = "stream"
    #: How many rows were rejected for each reason code, most first.
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    #: Series models: how many times a series was evicted (more series than ``max_series``);
    #: each warmed up again if it came back.
    series_evicted: int = 0
    #: Series models: what to say of series keys that differ only in case or spaces.
    series_key_spelling: str | None = None
    #: What to say of text values that training knew only in another case ('tcp', 'TCP').
    category_spelling: str | None = None
    #: CSV text cells a spreadsheet runs as a formula ('=...', '@...'), by column, in the
    #: output and in the rejects file: escaped with a leading "'" where asked, else as read.
    formula_cells: dict[str, int] = field(default_factory=dict)
    rejects_formula_cells: dict[str, int] = field(default_factory=dict)
    #: The inputs' text encoding as given (``encoding``); ``None``: UTF-8.
    encoding: str | None = None

    @property
    def reject_rate(self) -> float:
        return self.rows_rejected / self.rows_read if self.rows_read else 0.0

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["reject_rate"] = self.reject_rate
        payload["rows_per_second"] = self.rows_read / self.seconds if self.seconds else None
        return payload


class RejectRateExceeded(DataError):
    """More rows were rejected than ``max_reject_rate`` allows; no output was written."""

    def __init__(self, message: str, report: BatchReport) -> None:
        super().__init__(message)
        self.report = report


def encoding_hint(report: BatchReport) -> str | None:
    """What to do where most rows were rejected as not UTF-8 (or not the encoding given): the
    file is in another encoding (a Latin-1 export rejected its 3,072 rows one by one, each
    "re-save it as UTF-8")."""
    garbled = report.rejected_by_code.get("encoding", 0)
    return undecoded_hint(garbled, report.rows_read, report.encoding)


def undecoded_hint(garbled: int, rows: int, encoding: str | None) -> str | None:
    """``encoding_hint`` of ``garbled`` rows rejected as not ``encoding`` text (``None``: UTF-8)
    among ``rows`` read."""
    if garbled <= rows // 2:
        return None
    if encoding is not None:
        return (
            f"{garbled:,} rows are not {encoding} text: the file is in another "
            f"encoding; give that one ({option('encoding')}), or convert the file once to UTF-8"
        )
    return (
        f"{garbled:,} rows are not UTF-8 text: the file is most likely in another encoding "
        "(Windows-1252 or Latin-1, as spreadsheets save); give it with "
        f"{option('encoding', 'cp1252')}, or convert it once, e.g. "
        "iconv -f cp1252 -t utf-8 IN > OUT"
    )


def check_reject_rate(report: BatchReport, max_reject_rate: float | None) -> None:
    """Raise ``RejectRateExceeded`` where ``report`` rejected more than ``max_reject_rate`` of
    its rows, or, with no limit given, every one of them: a run that scored nothing (epoch
    milliseconds in a time column, say) must not pass for a run that found no anomaly."""
    ledger = (
        f"rows read {report.rows_read} = scored {report.rows_scored} + rejected "
        f"{report.rows_rejected}"
    )
    where = f"the rejected rows and reasons are in {report.rejects}"
    if hint := encoding_hint(report):
        where = f"{hint}; {where}"
    # A file is written at the end or not at all; stdout ('-') has had each chunk's rows.
    none = (
        "the rows already on stdout are not a whole run: discard them"
        if report.output == "-"
        else "no output was written"
    )
    if max_reject_rate is None:
        if report.rows_read == 0 or report.rows_scored > 0:
            return
        codes = ", ".join(f"{code} {n}" for code, n in report.rejected_by_code.items())
        raise RejectRateExceeded(
            f"{ledger}: every row was rejected ({codes}), so nothing was scored and {none}; "
            f"{where}: fix those rows, or pass "
            f"{option('max_reject_rate', '1')} to write an empty output",
            report,
        )
    if report.reject_rate > max_reject_rate:
        raise RejectRateExceeded(
            f"{ledger}: {report.reject_rate:.2%} rejected is more than "
            f"{option('max_reject_rate', f'{max_reject_rate:g}')}; {none}; {where}",
            report,
        )
