"""The ledger of a batch run: every row read is scored or rejected, in total and per file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from detector.errors import DataError

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
