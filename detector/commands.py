"""The ``anomaly`` commands' bodies: train, score, evaluate, info, threshold, sample.

``detector.cli`` parses the arguments and calls one of these with them. Heavy imports
(TensorFlow, pandas) happen inside each command, so ``anomaly --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from detector.native import native_output_silenced
from detector.options import TrainingOption, training_options


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and not args.json and sys.stderr.isatty()


def _show_training_progress(args: argparse.Namespace) -> bool:
    # Also when stderr is not a terminal: training can run for many minutes, and the trainer
    # then writes plain lines instead of a bar.
    return not args.quiet and not args.json


def _flag_value(args: argparse.Namespace, option: TrainingOption) -> Any:
    """The value of ``option``'s ``anomaly train`` flag, as the option holds it."""
    value = getattr(args, option.dest)
    return tuple(value) if isinstance(value, list) else value


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM (what ``kill``, ``timeout``, systemd and Kubernetes send)
    raises ``KeyboardInterrupt`` as Ctrl-C does, so that the command's own clean-up runs: a
    partial output or a bundle's staging folder is removed instead of left behind. In the main
    thread only (elsewhere signals cannot be handled); the previous handler comes back after.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _writes_files(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A command that writes files through a temporary: stopped by SIGTERM, it cleans up."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        with terminate_as_interrupt():
            return command(args)

    return run


@_writes_files
def cmd_train(args: argparse.Namespace) -> int:
    from detector.bundle import save_bundle
    from detector.errors import SchemaError
    from detector.evaluation import parse_labels
    from detector.tables import read_table
    from detector.training import TrainingConfig, train

    _check_bundle_target(args.out)
    frame = read_table(args.data, text_columns=[*args.categorical, *args.context])
    dropped = 0
    excluded = [args.label_column] if args.label_column else []
    excluded += args.ignore_column
    missing = [c for c in excluded if c not in frame.columns]
    if missing:
        raise SchemaError(f"{missing} not in {args.data}; its columns are {list(frame.columns)}")
    if args.label_column:
        labels = parse_labels(frame[args.label_column], args.label_column)
        dropped = int(labels.sum())
        frame = frame.loc[~labels]
    frame = frame.drop(columns=excluded).reset_index(drop=True)
    config = TrainingConfig(
        **{o.name: _flag_value(args, o) for o in training_options() if o.flag is not None},
        progress=_show_training_progress(args),
    )
    report_passthrough = _check_report_data(args, frame.columns)
    bundle, summary = train(frame, config)
    # Recorded so that scoring a file that still holds them needs no --keep-column.
    bundle = replace(bundle, ignored_columns=tuple(dict.fromkeys(args.ignore_column)))
    save_bundle(bundle, args.out)
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
                    **payload,
                    **report,
                },
                indent=2,
            )
        )
        return 0
    s = summary
    print(
        f"trained {args.model} on {s.rows} rows ({s.fit_rows} fit / {s.validation_rows} "
        f"validation / {s.calibration_rows} calibration), {len(bundle.schema.column_order)} "
        f"columns -> {s.n_features} features"
    )
    if dropped:
        print(f"left out {dropped} rows labelled anomalous in '{args.label_column}'")
    stop = f"early stop, best epoch {s.best_epoch}" if s.stopped_early else "epoch limit reached"
    print(
        f"network {'-'.join(map(str, s.hidden_units))}, latent {s.latent_dim}; "
        f"{s.epochs_run} epochs ({stop}); {s.seconds:.1f} s"
    )
    print(
        f"validation ELBO {-s.val_neg_elbo:.3f} nats/record (reconstruction {-s.val_nll:.3f}, "
        f"KL {s.val_kl:.3f}); active latent units {s.active_latent_units}/{s.latent_dim}"
    )
    print(f"score: {bundle.describe_score()}")
    print(
        f"threshold {s.threshold:.4f} at target FPR {s.target_fpr:.2%}; held-out validation "
        f"FPR {s.validation_fpr:.2%}"
    )
    for warning in s.warnings:
        print(f"WARNING: {warning}")
    print(f"saved bundle {bundle.version} to {args.out}")
    if "report" in report:
        print(f"wrote report {report['report']}")
    return 0


def _check_bundle_target(out: str) -> None:
    """Before reading or training, so a wrong --out costs no training time: saving replaces
    the whole directory, which is right for an old bundle and wrong for anything else."""
    from detector.bundle_format import MANIFEST_FILE
    from detector.errors import ConfigError

    target = Path(out)
    if target.exists() and not target.is_dir():
        raise ConfigError(
            f"--out {out} is a file; a bundle is a directory: give a new directory's name"
        )
    if target.is_dir() and not (target / MANIFEST_FILE).exists() and any(target.iterdir()):
        raise ConfigError(
            f"--out {out} holds other files and is not a model bundle; a bundle replaces its "
            f"whole directory, so give a new or empty one (e.g. --out {Path(out) / 'model'})"
        )


def _check_report_data(args: argparse.Namespace, columns: Sequence[str]) -> list[str] | None:
    """Before training, so a mistake costs no training time: the --report flags, and the
    --report-data file's labels and columns. Returns the file's columns the model does not
    score (carried through), or ``None`` without a file."""
    from detector.errors import ConfigError, DataError, SchemaError
    from detector.evaluation import parse_labels
    from detector.tables import read_table

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
    data = read_table(args.report_data)
    _require_column(data.columns, label, args.report_data)
    labels = parse_labels(data[label], label)
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


def _write_training_report(
    args: argparse.Namespace, bundle: Any, passthrough: list[str] | None
) -> dict[str, str]:
    """Write the --report page; a failure is a warning, never a failed training (the bundle
    is saved by then). Returns ``{"report": path}`` or ``{"report_error": reason}``."""
    if not args.report:
        return {}
    try:
        from detector.report import LabelledScores, training_report, write_report

        labelled = None
        if passthrough is not None:
            label = args.report_label_column or args.label_column
            labels, scores, _, rejected = _labelled_scores(
                bundle, args.report_data, label, passthrough=passthrough
            )
            labelled = LabelledScores(labels, scores, args.report_data, n_rejected=rejected)
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


@_writes_files
def cmd_score(args: argparse.Namespace) -> int:
    from detector.ledger import RejectRateExceeded

    options = {
        "keep_columns": args.keep_column,
        "impute": args.impute,
        "rejects_path": args.rejects,
        "top_k": args.top_k,
        "max_reject_rate": args.max_reject_rate,
    }
    try:
        from detector.bundle import load_bundle

        with native_output_silenced():  # load_bundle starts the LiteRT interpreter
            bundle = load_bundle(args.model)
        options["keep_columns"] = _carried_columns(
            args.keep_column, bundle.ignored_columns, args.input, strict=args.engine != "spark"
        )
        if args.engine == "spark":
            from detector.spark import score_files

            report = score_files(args.model, args.input, args.output, **options)
        else:
            import gc

            from detector.batch import score_file

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
            print(json.dumps({**exc.report.to_dict(), "ok": False}, indent=2))
        raise
    if args.json:
        print(json.dumps({**report.to_dict(), "ok": True}, indent=2))
        return 0
    print(
        f"rows read {report.rows_read} = scored {report.rows_scored} + rejected "
        f"{report.rows_rejected}"
    )
    print(
        f"anomalies {report.anomalies} ({report.anomalies / max(report.rows_scored, 1):.2%} "
        f"of scored) at threshold {report.threshold:.4f}"
    )
    if len(report.files) > 1:
        for ledger in report.files:
            print(
                f"  {ledger.source}: read {ledger.rows_read} = scored {ledger.rows_scored} + "
                f"rejected {ledger.rows_rejected}"
            )
    rate = report.rows_read / report.seconds if report.seconds else 0.0
    print(f"wrote {report.output} in {report.seconds:.1f} s ({rate:,.0f} rows/s)")
    if report.rejects:
        print(f"rejected rows and reasons in {report.rejects}")
    return 0


def _carried_columns(
    keep: Sequence[str], ignored: Sequence[str], inputs: Sequence[str], *, strict: bool
) -> list[str]:
    """The columns scoring carries through unscored: --keep-column's, then those training
    ignored that every input holds. Ignored columns are echoed, not dropped, because the output
    promises the input's columns, and an id or timestamp is what finds a flagged row again.
    Only files' headers are read here: stdin cannot be read twice, so it carries --keep-column's
    alone; so does a Spark input that is not a local file (``strict=False``)."""
    from detector.errors import DataError
    from detector.tables import expand_inputs

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
        present &= set(_header(path))
        if not present:
            break
    return [*keep, *(c for c in wanted if c in present)]


def _header(path: str) -> tuple[str, ...]:
    """A file's column names, read from its header (Parquet: its schema) alone."""
    from detector.sources import open_source

    with open_source(path) as source:
        return tuple(source.columns)


def _labelled_scores(
    bundle: Any,
    path: str,
    label_column: str,
    *,
    passthrough: Sequence[str] = (),
    by_column: str | None = None,
    impute: Any = None,
    chunk_rows: int = 65_536,
    anomaly_values: Sequence[str] | None = None,
    normal_values: Sequence[str] | None = None,
) -> tuple[Any, Any, Any, int]:
    """Score a labelled file: labels ``(n,)`` (True = anomaly), anomaly scores ``(n,)``, the
    ``by_column`` value per row ``(n,)`` (or ``None``), for the scored rows, and the number of
    rejected rows. Labels are 0/1, or text read with ``anomaly_values`` or ``normal_values``
    (``_labels``)."""
    import numpy as np

    from detector.batch import iter_scored

    extra = list(dict.fromkeys([label_column, *passthrough]))
    if by_column and by_column not in extra:
        extra.append(by_column)
    labels, scores, groups = [], [], []
    rejected = 0
    for part in iter_scored(bundle, path, passthrough=extra, impute=impute, chunk_rows=chunk_rows):
        _require_column(part.frame.columns, label_column, path)
        scored = part.frame.loc[part.result.rows]
        labels.append(_labels(scored[label_column], label_column, anomaly_values, normal_values))
        scores.append(part.result.anomaly_score)
        if by_column:
            _require_column(part.frame.columns, by_column, path)
            groups.append(scored[by_column].astype(str).to_numpy())
        rejected += len(part.result.rejections)
    return (
        np.concatenate(labels),
        np.concatenate(scores),
        np.concatenate(groups) if groups else None,
        rejected,
    )


def _labels(
    values: Any,
    column: str,
    anomaly_values: Sequence[str] | None,
    normal_values: Sequence[str] | None = None,
) -> Any:
    """Labels ``(n,)``, True = anomaly: 0/1 or true/false; or, for text labels such as KDD Cup
    99's "smurf.", True where the label is one of ``anomaly_values`` (every other value, empty
    included, normal), or where it is none of ``normal_values`` (every other value, empty
    included, an anomaly: a data set with one normal label and many attack labels)."""
    from detector.errors import DataError
    from detector.evaluation import parse_labels

    for named, means_anomaly in ((anomaly_values, True), (normal_values, False)):
        if named is not None:
            wanted = {value.strip() for value in named}
            matches = values.astype("string").str.strip().isin(wanted).fillna(False)
            return matches.to_numpy(dtype=bool) == means_anomaly
    try:
        return parse_labels(values, column)
    except DataError as exc:
        raise DataError(
            f"{exc}; for other labels, name the value that means anomaly with --anomaly-value "
            "VALUE, or the one that means normal with --normal-value VALUE (each repeatable; "
            "every other value is then the other class)"
        ) from None


def _check_labelled_input(
    path: str, columns: Iterable[str], label_column: str, by_column: str | None
) -> None:
    """The label (then --by-column) first, as `train` does: a missing label explains the
    other columns scoring would call unknown."""
    present = list(columns)
    _require_column(present, label_column, path)
    if by_column:
        _require_column(present, by_column, path)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detector.bundle import load_bundle
    from detector.errors import DataError
    from detector.evaluation import evaluate_scores

    bundle = load_bundle(args.model)
    if args.input != "-":  # stdin cannot be read twice; its header is checked as it is scored
        _check_labelled_input(args.input, _header(args.input), args.label_column, args.by_column)
    labels, scores, groups, rejected = _labelled_scores(
        bundle,
        args.input,
        args.label_column,
        # Training's ignored columns may be in the file or not; either way they are not scored.
        passthrough=[*args.keep_column, *bundle.ignored_columns],
        by_column=args.by_column,
        impute=args.impute,
        chunk_rows=args.chunk_rows,
        anomaly_values=args.anomaly_value,
        normal_values=args.normal_value,
    )
    for flag, named, unmatched in (
        ("--anomaly-value", args.anomaly_value, not labels.any()),
        ("--normal-value", args.normal_value, labels.all()),
    ):
        if named is not None and unmatched:
            raise DataError(
                f"no scored row of {args.input} has '{args.label_column}' equal to {named}; "
                f"give {flag} exactly as the file spells the label (case and trailing dots "
                "count, e.g. 'smurf.')"
            )
    result = evaluate_scores(
        labels, scores, bundle.calibrator.threshold, n_rejected=rejected, groups=groups
    )
    if args.report:
        from detector.report import LabelledScores, evaluation_report, write_report

        labelled = LabelledScores(
            labels,
            scores,
            args.input,
            n_rejected=rejected,
            groups=groups,
            group_column=args.by_column,
        )
        write_report(args.report, evaluation_report(bundle, labelled))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    r = result
    print(f"records {r.n} scored ({r.n_anomalies} labelled anomalous), {r.n_rejected} rejected")
    print(f"AUROC {r.auroc:.4f}   AUPRC {r.auprc:.4f}")
    print(
        f"at threshold {r.threshold:.4f}: precision {r.precision:.4f}  recall {r.recall:.4f}  "
        f"F1 {r.f1:.4f}  false-positive rate {r.false_positive_rate:.2%}"
    )
    print(f"best F1 {r.best_f1:.4f} at threshold {r.best_f1_threshold:.4f}")
    if r.by_group:
        print(f"by {args.by_column}: share flagged, recall, AUROC, AUPRC")
        for value, stats in sorted(r.by_group.items()):
            measured = "".join(
                f"  {key} {stats[key]:.4f}"
                for key in ("recall", "auroc", "auprc")
                if stats[key] is not None
            )
            print(f"  {value:<24} {stats['flagged']:7.2%} of {stats['n']:<6}{measured}")
    if args.report:
        print(f"wrote report {args.report}")
    return 0


def _require_column(columns: Iterable[str], column: str, path: str) -> None:
    from detector.errors import SchemaError

    present = list(columns)
    if column not in present:
        raise SchemaError(f"column '{column}' is not in {path}; its columns are {present}")


@_writes_files
def cmd_sample(args: argparse.Namespace) -> int:
    from detector.errors import ConfigError

    if args.n < 1:
        raise ConfigError(f"-n {args.n}: the number of records to sample must be at least 1")
    names = [column for column, _ in args.context]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise ConfigError(f"--context gives {repeated} more than once; give each column once")
    from detector.bundle import load_bundle
    from detector.sampling import sample_records
    from detector.writers import TableWriter

    writer = TableWriter(args.output) if args.output else None  # a bad name fails first
    bundle = load_bundle(args.model)
    frame = sample_records(bundle, args.n, seed=args.seed, context=dict(args.context))
    if writer is None:
        frame.to_csv(sys.stdout, index=False)
        return 0
    try:
        writer.write(frame)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    print(
        f"wrote {len(frame)} records sampled from {bundle.model_type} {bundle.version} to "
        f"{args.output}"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from detector.bundle import load_bundle

    bundle = load_bundle(args.model)
    training = {k: v for k, v in bundle.training.items() if k != "history"}
    info = {
        "path": args.model,
        "model_type": bundle.model_type,
        "version": bundle.version,
        "created_at": bundle.created_at,
        "score": bundle.score_kind,
        "samples": bundle.n_samples,
        "neighbours": None
        if bundle.neighbours is None
        else {"k": bundle.neighbours.k, "bank_rows": len(bundle.neighbours.bank)},
        "threshold": bundle.calibrator.threshold,
        "target_fpr": bundle.calibrator.target_fpr,
        "columns": bundle.schema.describe(),
        "training": training,
        "data_fingerprint": bundle.data_fingerprint,
        "ignored_columns": list(bundle.ignored_columns),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"{bundle.model_type} bundle {bundle.version} at {args.model} (created {bundle.created_at})"
    )
    print(f"columns: {info['columns']}")
    if bundle.ignored_columns:
        print(f"ignored (carried through unscored): {list(bundle.ignored_columns)}")
    print(
        f"score: {bundle.describe_score()}; threshold "
        f"{bundle.calibrator.threshold:.4f} at target FPR {bundle.calibrator.target_fpr:.3%}"
    )
    if training:
        print(
            f"trained on {training.get('rows')} rows in {training.get('epochs_run')} epochs; "
            f"validation ELBO {-training.get('val_neg_elbo', float('nan')):.3f}; "
            f"validation FPR {training.get('validation_fpr', float('nan')):.2%}"
        )
        for warning in training.get("warnings", []):
            print(f"WARNING: {warning}")
    return 0


def cmd_threshold(args: argparse.Namespace) -> int:
    from detector.bundle import set_target_fpr

    # From threshold, not training: this command must not import TensorFlow.
    from detector.threshold import MAX_CALIBRATION_ROWS, calibration_warnings

    bundle = set_target_fpr(args.model, args.fpr)
    cal = bundle.calibrator
    source = "held-out sample" if args.fpr >= cal.tail_fraction else "generalized-Pareto tail fit"
    warnings = calibration_warnings(
        len(cal.reference), cal.target_fpr, max_calibration_rows=MAX_CALIBRATION_ROWS
    )
    if args.json:
        print(
            json.dumps(
                {
                    "target_fpr": cal.target_fpr,
                    "threshold": cal.threshold,
                    "method": source,
                    "warnings": list(warnings),
                },
                indent=2,
            )
        )
        return 0
    print(
        f"threshold {cal.threshold:.4f} for target FPR {cal.target_fpr:.4%} (from the {source}); "
        f"saved to {args.model}"
    )
    for warning in warnings:
        print(f"WARNING: {warning}")
    return 0
