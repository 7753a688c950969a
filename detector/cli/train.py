"""``anomaly train``: read the data, train a model, save its bundle, write the --report page.

The flags' values come from ``detector.nn.options`` (one definition per option); the report scores
its --report-data with ``detector.cli.commands``' labelled-file scorer. Heavy imports (TensorFlow,
pandas) happen inside the functions, so ``anomaly --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from detector.cli.commands import (
    _header,
    _labelled_scores,
    _labels,
    _require_column,
    _training_rows_warning,
    _writes_files,
)
from detector.nn.option_specs import TrainingOption, training_options
from detector.wording import leave_one_out_note, option, scored_note, training_end


class _SaidInTheSummary(logging.Filter):
    """Leaves out the training's warnings that the summary prints (or ``--json`` holds):
    logged too, each was printed twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "in_summary", False)


def _show_training_progress(args: argparse.Namespace) -> bool:
    # Also when stderr is not a terminal: training can run for many minutes, and the trainer
    # then writes plain lines instead of a bar.
    return not args.quiet and not args.json


def _flag_value(args: argparse.Namespace, option: TrainingOption) -> Any:
    """The value of ``option``'s ``anomaly train`` flag, as the option holds it."""
    value = getattr(args, option.dest)
    return tuple(value) if isinstance(value, list) else value


@_writes_files
def cmd_train(args: argparse.Namespace) -> int:
    from detector.bundles.bundle import Found, save_bundle
    from detector.errors import ConfigError, DataError, SchemaError
    from detector.io.frames import sample_table
    from detector.io.temporaries import check_not_an_input, check_outside_bundle, check_writable
    from detector.native import import_tensorflow_quietly
    from detector.nn.progress import progress_line
    from detector.scoring.output_columns import check_names_free
    from detector.series.cap import SeriesCap, cap_series

    check_outside_bundle(args.report, args.out, "--report")
    _check_bundle_target(args.out)
    # Saved over only if still there then: another training into this --out may finish first.
    found = Found.at(args.out)
    if args.report:
        check_writable(args.report)
        read = [p for p in (args.data, args.report_data) if p is not None and p != "-"]
        check_not_an_input(args.report, read, "--report")
    max_rows = args.max_rows
    progress = _show_training_progress(args)
    # Reading and encoding 1,000,000 rows took half a minute before the first epoch's line.
    progress_line(f"reading {args.data}", enabled=progress)
    reading = time.monotonic()
    # A series' key is its text as written, whatever the other rows of its chunk or file:
    # typed, '007' read as 7 in a chunk of numbers and '007' beside a 'web-01'.
    text_columns = [*args.categorical, *args.context, *args.series_column]
    capped: SeriesCap | None = None
    if args.time_column and max_rows:
        # A series model's windows need each series' every row: whole series are kept.
        frame, capped = cap_series(
            args.data,
            max_rows=max_rows,
            time_column=args.time_column,
            key_columns=args.series_column,
            seed=args.seed,
            text_columns=text_columns,
            encoding=args.encoding,
        )
        rows_read = capped.rows_read
        sampled = capped.describe() if capped.capped else None
    else:
        frame, rows_read = sample_table(
            args.data,
            max_rows=max_rows,
            seed=args.seed,
            text_columns=text_columns,
            encoding=args.encoding,
            key_columns=args.series_column,
        )
        sampled = _sample_note(rows_read, len(frame), max_rows)
    kept = f", kept {len(frame):,}" if sampled else ""
    progress_line(
        f"read {rows_read:,} rows{kept} ({time.monotonic() - reading:.0f} s)", enabled=progress
    )
    dropped = 0
    excluded = [args.label_column] if args.label_column else []
    excluded += args.ignore_column
    placing = [args.time_column, *args.series_column] if args.time_column else []
    dropped_roles = [c for c in excluded if c in placing]
    if dropped_roles:
        raise ConfigError(
            f"{dropped_roles} would be left out (--ignore-column, --label-column) but the "
            "series need it to place each row (--time-column, --series-column): name it once"
        )
    for flag, used in (("--context", args.context), ("--categorical", args.categorical)):
        both = [c for c in excluded if c in used]
        if both:
            # It read "--context names columns not in the data", of a column that is.
            raise ConfigError(
                f"{both} would be left out (--ignore-column, --label-column) and used ({flag}): "
                "name each column in one of them"
            )
    series = bool(args.time_column)
    ignored = "--ignore-column"  # carried through to the output, beside what scoring adds
    check_names_free(args.ignore_column, ignored, context=bool(args.context), series=series)
    missing = [c for c in excluded if c not in frame.columns]
    if missing:
        raise SchemaError(f"{missing} not in {args.data}; its columns are {list(frame.columns)}")
    if (args.anomaly_value or args.normal_value) and not args.label_column:
        raise ConfigError("--anomaly-value and --normal-value read --label-column: name it too")
    if args.label_column:
        labels = _labels(
            frame[args.label_column], args.label_column, args.anomaly_value, args.normal_value
        )
        dropped = int(labels.sum())
        unmatched = (args.anomaly_value and not dropped and "--anomaly-value") or (
            args.normal_value and dropped == len(labels) and "--normal-value"
        )
        if unmatched:
            raise DataError(
                f"no row of {args.data} has '{args.label_column}' equal to "
                f"{args.anomaly_value or args.normal_value}; give {unmatched} exactly as the file "
                "spells the label (case and trailing dots count, e.g. 'smurf.')"
            )
        if dropped and dropped == len(labels):
            raise DataError(
                f"every one of the {dropped:,} rows of {args.data} is labelled anomalous (1) in "
                f"'{args.label_column}'; a model learns from normal rows: give it rows labelled 0"
            )
        frame = frame.loc[~labels]
    frame = frame.drop(columns=excluded).reset_index(drop=True)
    if not args.debug:
        # Here, not before the reading (``run``): its lines waited ~20 s for TensorFlow.
        import_tensorflow_quietly()
    from detector.nn.training import TrainingConfig, train

    config = TrainingConfig(
        **{o.name: _flag_value(args, o) for o in training_options() if o.flag is not None},
        progress=progress,
    )
    report_passthrough = _check_report_data(args, frame.columns)
    training_log = logging.getLogger("detector.nn.training")
    said_below = _SaidInTheSummary()
    training_log.addFilter(said_below)
    try:
        # Whole series are no uniform sample of rows: their row numbers lie together.
        uniform = sampled and capped is None
        bundle, summary = train(frame, config, sampled_from=rows_read if uniform else None)
    finally:
        training_log.removeFilter(said_below)
    # Recorded so that scoring a file that still holds them needs no --keep-column.
    bundle = replace(bundle, ignored_columns=tuple(dict.fromkeys(args.ignore_column)))
    if sampled:  # only then: a table of fewer rows keeps the manifest it always had
        how = {"rows_read": rows_read, "max_rows": max_rows}
        bundle = replace(
            bundle,
            training={**bundle.training, **(how if capped is None else capped.to_training())},
        )
    save_bundle(bundle, args.out, replacing=found)
    report = _write_training_report(args, bundle, report_passthrough)
    if args.json:
        payload = summary.to_dict()
        payload.pop("history")
        print(
            json.dumps(
                {
                    "bundle": args.out,
                    "version": bundle.version,
                    "anomalous_rows_left_out": dropped,
                    "rows_read": rows_read,
                    **payload,
                    **report,
                },
                indent=2,
            )
        )
        return 0
    s = summary
    overlap = leave_one_out_note(s.rows, s.fit_rows, s.validation_rows, s.calibration_rows)
    if sampled:
        print(sampled)
    print(
        f"trained {args.model} on {s.rows} rows ({s.fit_rows} fit / {s.validation_rows} "
        f"validation / {s.calibration_rows} calibration{overlap}), "
        f"{len(bundle.schema.column_order)} columns -> {s.n_features} features"
    )
    if bundle.series is not None:
        print(bundle.series.describe())
    if dropped:
        print(f"left out {dropped} rows labelled anomalous in '{args.label_column}'")
    stop = training_end(s.stopped_early, s.best_epoch, s.budget)
    print(
        f"network {'-'.join(map(str, s.hidden_units))}, latent {s.latent_dim}; "
        f"{s.epochs_run} epochs ({stop}); {s.seconds:.1f} s"
    )
    print(
        f"validation ELBO {-s.val_neg_elbo:.3f} nats/record (reconstruction {-s.val_nll:.3f}, "
        f"KL {s.val_kl:.3f}); active latent units {s.active_latent_units}/{s.latent_dim}"
    )
    print(f"score: {bundle.describe_score()}")
    if logs := bundle.describe_logs():
        print(logs)
    for rare in s.rare_labels:
        print(rare)
    print(
        f"threshold {s.threshold:.4f} at target FPR {s.target_fpr:.2%}; held-out validation "
        f"FPR {s.validation_fpr:.2%}{scored_note(s.validation_scored, s.validation_rows)}"
    )
    for warning in s.warnings:
        print(f"WARNING: {warning}")
    print(f"saved bundle {bundle.version} to {args.out}")
    if "report" in report:
        print(f"wrote report {report['report']}")
    return 0


def check_input_width(args: argparse.Namespace) -> None:
    """Refuse data too wide to train on from its header (a Parquet file's schema, a JSON Lines
    file's first records) before its rows are read, and before TensorFlow's import (the
    command line runs it first, as ``check_input``): a CSV of 1,000,000 columns was read whole
    (50 s, 3 GB) to end in an internal MemoryError, one of 100,000 in 30 s and 1.1 GB to be
    told it was too wide."""
    from detector.errors import DetectorError
    from detector.features.schema import check_width

    if args.data == "-":
        return  # stdin is read once, by read_table
    try:
        columns = _header(args.data, args.encoding)
    except DetectorError:
        return  # read_table names what is wrong with the file, as it always has
    # Columns with other roles are no features: left out, or placing or conditioning rows.
    roles = {args.label_column, args.time_column, *args.ignore_column, *args.context}
    check_width(len(set(columns) - roles - set(args.series_column)), args.data)


def _sample_note(read: int, kept: int, max_rows: int) -> str | None:
    """What to say of a table longer than ``--max-rows``, or ``None`` where every row was kept."""
    if kept >= read:
        return None
    return (
        f"read {read:,} rows and kept a uniform sample of {kept:,} ({option('max_rows', max_rows)}"
        f"; {option('max_rows', 0)} trains on every row)"
    )


def _check_bundle_target(out: str) -> None:
    """Before reading or training, so a wrong --out costs no training time: saving replaces
    the whole directory, which is right for an old bundle and wrong for anything else."""
    from detector.bundles.bundle import check_not_a_link, check_not_a_mount_point
    from detector.bundles.format import MANIFEST_FILE
    from detector.errors import ConfigError
    from detector.io.temporaries import check_writable

    target = Path(out)
    check_not_a_link(target)
    if target.exists() and not target.is_dir():
        raise ConfigError(
            f"--out {out} is a file; a bundle is a directory: give a new directory's name"
        )
    check_not_a_mount_point(Path(os.path.abspath(target)))
    if target.is_dir() and not (target / MANIFEST_FILE).exists() and any(target.iterdir()):
        raise ConfigError(
            f"--out {out} holds other files and is not a model bundle; a bundle replaces its "
            f"whole directory, so give a new or empty one (e.g. --out {Path(out) / 'model'})"
        )
    check_writable(out, folder=True)


def _check_report_data(args: argparse.Namespace, columns: Sequence[str]) -> list[str] | None:
    """Before training, so a mistake costs no training time: the --report flags, and the
    --report-data file's labels and columns. Returns the file's columns the model does not
    score (carried through), or ``None`` without a file."""
    from detector.errors import ConfigError, DataError, SchemaError
    from detector.io.frames import read_table

    if args.report_data is None:
        if args.report_label_column:
            raise ConfigError("--report-label-column names a column of --report-data FILE")
        return None
    if not args.report:
        raise ConfigError(
            "--report-data is scored for the report's ROC and precision-recall curves; add "
            "--report PATH.html"
        )
    label = args.report_label_column or args.label_column
    if not label:
        raise ConfigError(
            f"name the 0/1 label column of {args.report_data} with --report-label-column COL"
        )
    data = read_table(args.report_data, encoding=args.encoding, key_columns=args.series_column)
    _require_column(data.columns, label, args.report_data)
    labels = _labels(data[label], label, *_label_values(args, label))
    if labels.all() or not labels.any():
        raise DataError(
            f"'{label}' in {args.report_data} holds one class only; ROC and precision-recall "
            "curves need normal (0) and anomalous (1) records"
        )
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise SchemaError(
            f"{args.report_data} lacks the training column(s) {missing}; give --report-data "
            "records with the training data's columns and a label"
        )
    return [c for c in data.columns if c not in set(columns)]


def _label_values(
    args: argparse.Namespace, label: str
) -> tuple[Sequence[str] | None, Sequence[str] | None]:
    """--anomaly-value / --normal-value, for --report-data's labels where they are in the
    training's label column (its name): text labels trained with were refused there."""
    if label != args.label_column:
        return None, None
    return args.anomaly_value, args.normal_value


def _write_training_report(
    args: argparse.Namespace, bundle: Any, passthrough: list[str] | None
) -> dict[str, str]:
    """Write the --report page; a failure is a warning, never a failed training (the bundle
    is saved by then). Returns ``{"report": path}`` or ``{"report_error": reason}``."""
    if not args.report:
        return {}
    try:
        from detector.cli.report import LabelledScores, training_report, write_report

        labelled = None
        if passthrough is not None:
            label = args.report_label_column or args.label_column
            anomaly_values, normal_values = _label_values(args, label)
            scored = _labelled_scores(
                bundle,
                args.report_data,
                label,
                passthrough=passthrough,
                anomaly_values=anomaly_values,
                normal_values=normal_values,
                encoding=args.encoding,
            )
            # --report-data of the training file: its curves would be the training rows'.
            trained = _training_rows_warning(bundle, scored.training_rows, len(scored.scores))
            labelled = LabelledScores(
                scored.labels,
                scored.scores,
                args.report_data,
                n_rejected=sum(scored.codes.values()),
                warnings=tuple(filter(None, [trained])),
            )
        write_report(args.report, training_report(bundle, labelled=labelled))
    except Exception as exc:
        if args.debug:
            logging.getLogger(__name__).exception("writing the report failed")
        reason = f"{type(exc).__name__}: {exc}"
        print(
            f"WARNING: could not write the report {args.report} ({reason}); the bundle was "
            f"saved to {args.out}",
            file=sys.stderr,
        )
        return {"report_error": reason}
    return {"report": args.report}
