"""``anomaly score``: score files, in-process or on Spark, into one output file.

Heavy imports (TensorFlow, pandas, PySpark) happen inside the functions, so ``anomaly --help``
answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from detector.cli.commands import _header, _writes_files
from detector.native import native_output_silenced

if TYPE_CHECKING:
    from detector.batch.ledger import BatchReport
    from detector.bundles.bundle import Bundle


#: Above this share of flagged rows the summary says the input as a whole looks unlike training.
MOSTLY_FLAGGED = 0.5
#: The share of rejected rows past which a run that still succeeds says how to make it fail.
MOSTLY_REJECTED = 0.5


def _show_progress(args: argparse.Namespace) -> bool:
    # With --output -, standard error may carry the rejected rows: no bar among them.
    return not args.quiet and not args.json and sys.stderr.isatty() and args.output != "-"


def _summary_stream(args: argparse.Namespace) -> TextIO:
    """Where the run's summary goes: standard error when standard output carries the scores
    or the rejects ('-'), so that a pipe reads nothing but CSV."""
    return sys.stderr if "-" in (args.output, args.rejects) else sys.stdout


@_writes_files
def cmd_score(args: argparse.Namespace) -> int:
    from detector.batch.ledger import RejectRateExceeded, encoding_hint

    options = {
        "keep_columns": args.keep_column,
        "impute": args.impute,
        "rejects_path": args.rejects,
        "top_k": args.top_k,
        "max_reject_rate": args.max_reject_rate,
        "max_ahead_seconds": args.max_ahead_seconds,
        "max_series": args.max_series,
        "escape_formulas": args.escape_formulas,
        "encoding": args.encoding,
    }
    if args.output_format is not None:
        options["stream_format"] = args.output_format
    if args.engine == "spark" and "-" in (args.output, args.rejects):
        from detector.errors import ConfigError

        raise ConfigError(
            "--engine spark writes folders of part files, which cannot go to standard output "
            "('-'): give --output (and --rejects) a path"
        )
    if args.engine == "spark":
        from detector.batch.spark import check_line_encoding

        check_line_encoding(args.encoding)  # before the headers are read in it
    if args.engine == "spark" and args.escape_formulas:
        from detector.errors import ConfigError

        raise ConfigError(
            "--escape-formulas is not available with --engine spark, whose part files Spark "
            "writes: score without --engine spark, or leave the option out and write .parquet, "
            "which no spreadsheet runs formulas of"
        )
    from detector.io.temporaries import check_outside_bundle

    check_outside_bundle(args.output, args.model, "--output")
    check_outside_bundle(args.rejects, args.model, "--rejects")
    say = _summary_stream(args)
    try:
        from detector.bundles.bundle import load_bundle

        with native_output_silenced():  # load_bundle starts the LiteRT interpreter
            bundle = load_bundle(args.model)
        options["keep_columns"] = _carried_columns(
            args.keep_column,
            bundle.ignored_columns,
            args.input,
            strict=args.engine != "spark",
            encoding=args.encoding,
        )
        if args.engine == "spark":
            from detector.batch.files import check_stream_format
            from detector.batch.spark import score_files, spark_refusal
            from detector.errors import DataError

            check_stream_format(options.pop("stream_format", None), args.output, args.rejects)
            del options["max_series"]  # Spark hands each series to one task, whole
            del options["escape_formulas"]  # refused above where asked for

            try:
                report = score_files(args.model, args.input, args.output, **options)
            except Exception as exc:
                said = spark_refusal(exc)
                if said is None:
                    raise
                # Its Java stack was printed whole as an internal error; the default engine
                # reads most such inputs, or names what is wrong with them.
                raise DataError(
                    f"Spark could not read {' '.join(args.input)}: {said}; score it without "
                    "--engine spark, which reads it or names the file and what is wrong"
                ) from None
        else:
            import gc

            from detector.batch.files import score_file

            # The process is ours until it exits: keep the garbage collector from re-walking
            # TensorFlow's objects on every chunk (encode's per-row lists trigger it; this
            # made encoding ~5x faster).
            gc.freeze()
            report = score_file(
                bundle,
                args.input,
                args.output,
                chunk_rows=args.chunk_rows,
                progress=_show_progress(args),
                **options,
            )
    except RejectRateExceeded as exc:
        if args.json:
            print(json.dumps({**exc.report.to_dict(), "ok": False}, indent=2), file=say)
        raise
    if args.json:
        print(json.dumps({**report.to_dict(), "ok": True}, indent=2), file=say)
        return 0
    print(
        f"rows read {report.rows_read} = scored {report.rows_scored} + rejected "
        f"{report.rows_rejected}",
        file=say,
    )
    share = report.anomalies / max(report.rows_scored, 1)
    print(
        f"anomalies {report.anomalies} ({share:.2%} of scored) at threshold {report.threshold:.4f}",
        file=say,
    )
    if share > MOSTLY_FLAGGED and report.rows_scored >= 20:
        # A file of '28%' where training saw 28, or of hosts training never saw, came back
        # 100% flagged with nothing to say why.
        print(
            f"over {MOSTLY_FLAGGED:.0%} of the rows are flagged: most likely the input differs "
            "from the training data as a whole (units or scales, categories or hosts training "
            "never saw, another source); each row's top_feature_1 names the column it is "
            "blamed on",
            file=say,
        )
    if len(report.files) > 1:
        for ledger in report.files:
            print(
                f"  {ledger.source}: read {ledger.rows_read} = scored {ledger.rows_scored} + "
                f"rejected {ledger.rows_rejected}",
                file=say,
            )
    rate = report.rows_read / report.seconds if report.seconds else 0.0
    output = "<stdout>" if report.output == "-" else report.output
    print(f"wrote {output} in {report.seconds:.1f} s ({rate:,.0f} rows/s)", file=say)
    if report.rejects:
        counts = ", ".join(f"{code} {n:,}" for code, n in report.rejected_by_code.items())
        rejects = "<stdout>" if report.rejects == "-" else report.rejects
        print(f"rejected rows and reasons in {rejects} ({counts})", file=say)
        if hint := encoding_hint(report):
            print(f"hint: {hint}", file=say)
        late = report.rejected_by_code.get("out_of_order", 0)
        # Spark hands each series to one task whole, so only the local engine's chunks can
        # leave a series out of order.
        if bundle.series is not None and args.engine != "spark" and late > report.rows_read // 100:
            print(_unsorted_hint(bundle, late, args.chunk_rows), file=say)
        rejected = report.rows_rejected / max(report.rows_read, 1)
        if rejected > MOSTLY_REJECTED and args.max_reject_rate is None:
            # A pipeline took a run that scored 1% of its rows for a success (exit 0).
            print(
                f"most rows were rejected ({rejected:.0%}); the run succeeded for the rows "
                "it scored: give --max-reject-rate (e.g. 0.01) to make such a run fail (exit 2)",
                file=say,
            )
    if report.series_key_spelling:
        print(f"warning: {report.series_key_spelling}", file=say)
    if report.category_spelling:
        print(f"warning: {report.category_spelling}", file=say)
    if not args.escape_formulas and (said := _formula_warning(report)):
        print(said, file=say)
    if report.series_evicted:
        print(
            f"series evicted {report.series_evicted:,}: more than --max-series "
            f"{args.max_series:,} series were held, and each series forgotten warmed up again "
            "if it came back; raise --max-series, or sort the input by its series",
            file=say,
        )
    return 0


def _formula_warning(report: BatchReport) -> str | None:
    """What to say where a CSV output or rejects file holds text cells that a spreadsheet runs
    as a formula when an analyst opens it: written as read, they run there."""
    from detector.wording import printable

    cells = sum(report.formula_cells.values()) + sum(report.rejects_formula_cells.values())
    if not cells:
        return None
    columns = [printable(c) for c in report.formula_cells]
    columns += [f"{printable(c)} of the rejects" for c in report.rejects_formula_cells]
    shown = ", ".join(columns[:5]) + (f" and {len(columns) - 5} more" if len(columns) > 5 else "")
    many = cells > 1
    return (
        f"warning: {cells:,} text cell{'s' if many else ''} (column"
        f"{'s' if len(columns) > 1 else ''} {shown}) begin{'' if many else 's'} with =, +, -, @, "
        "a tab or a carriage return, which a spreadsheet runs as a formula; give "
        f"--escape-formulas to write {'them' if many else 'it'} with a leading '"
    )


def _unsorted_hint(bundle: Bundle, late: int, chunk_rows: int) -> str:
    """What to do when many rows of a series model's input came after later rows of their
    series: the input was not in time order beyond what one chunk puts in order."""
    from detector.batch.scored_chunks import chunk_rows_for

    assert bundle.series is not None
    column = bundle.series.time_column
    rows = chunk_rows_for(bundle, chunk_rows)
    return (
        f"hint: {late:,} rows came after later rows of their series: rows are put in time order "
        f"only within a chunk ({rows:,} rows for this model); sort the input by {column} (or by "
        f"its series, then {column}) and score it again"
    )


def _carried_columns(
    keep: Sequence[str],
    ignored: Sequence[str],
    inputs: Sequence[str],
    *,
    strict: bool,
    encoding: str | None = None,
) -> list[str]:
    """The columns scoring carries through unscored: --keep-column's, then those training
    ignored that every input holds. Ignored columns are echoed, not dropped, because the output
    promises the input's columns, and an id or timestamp is what finds a flagged row again.
    Only files' headers are read here: stdin cannot be read twice, so it carries --keep-column's
    alone; so does a Spark input that is not a local file (``strict=False``)."""
    from detector.errors import DataError
    from detector.io.tables import expand_inputs

    wanted = [c for c in ignored if c not in keep]
    if not wanted or "-" in inputs:
        return list(keep)
    try:
        files = expand_inputs(inputs)
    except DataError:
        if strict:
            raise
        return list(keep)
    present = set(wanted)
    for path in files:
        present &= set(_header(path, encoding))
        if not present:
            break
    return [*keep, *(c for c in wanted if c in present)]
