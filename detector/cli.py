"""The ``anomaly`` command line: train, score, evaluate, info, threshold, sample.

Exit codes: 0 success; 2 bad usage or bad input (the message names the fix); 1 internal error.
Heavy imports (TensorFlow) happen inside the commands, so ``anomaly --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: ``detector.models.MODELS``'s names, repeated here so ``--help`` needs no TensorFlow import
#: (a test keeps the two equal).
MODEL_NAMES = ("vae", "vae-svdd", "advae", "cvae")

EXAMPLES = """examples:
  anomaly train data/train.csv --out models/default
  anomaly score models/default data/eval.csv --output scored.csv --keep-column label
  anomaly evaluate models/default data/eval.csv --label-column label --by-column anomaly_kind
  anomaly threshold models/default --fpr 0.001
  anomaly sample models/default -n 1000 --output synthetic.csv
"""


def build_parser(
    extra_commands: Callable[[Any], None] | None = None,
) -> argparse.ArgumentParser:
    """The parser for every library command. ``extra_commands`` receives the sub-command
    registry to add more (``service.cli`` adds ``serve``; this package never imports it)."""
    parser = argparse.ArgumentParser(
        prog="anomaly",
        description="Train VAE anomaly detectors on normal records and score new records.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a detector on normal records",
        description="Train a detector on a CSV/Parquet of normal records and write a model "
        "bundle (a directory). Rows labelled anomalous in --label-column are left out.",
    )
    train.add_argument("data", help="training data: .csv, .csv.gz or .parquet with a header")
    train.add_argument("--out", required=True, help="bundle directory to write (replaced)")
    train.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default="vae",
        help="vae (default), vae-svdd (VAE + Deep SVDD hypersphere), advae (self-adversarial "
        "VAE), cvae (conditional on --context columns)",
    )
    train.add_argument("--label-column", help="a 0/1 label column: dropped; rows with 1 left out")
    train.add_argument(
        "--ignore-column",
        action="append",
        default=[],
        metavar="COL",
        help="a column to leave out of the model, e.g. an id or timestamp (repeatable)",
    )
    train.add_argument(
        "--categorical",
        action="append",
        default=[],
        metavar="COL",
        help="treat a numeric-looking column as categorical (repeatable)",
    )
    train.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="COL",
        help="cvae: a column normal behaviour depends on, e.g. host; the model is conditioned "
        "on it, not scoring it (repeatable)",
    )
    train.add_argument(
        "--context-dropout",
        type=float,
        default=0.1,
        help="cvae: share of training rows each context column is hidden from, so a context "
        "value never seen in training can be scored without it (default 0.1)",
    )
    train.add_argument("--epochs", type=int, default=300, help="maximum epochs (default 300)")
    train.add_argument("--batch-size", type=int, default=128, help="default 128")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="default 0.001")
    train.add_argument("--latent-dim", type=int, help="latent width (default: from the data)")
    train.add_argument(
        "--hidden-units",
        type=_int_list,
        metavar="N,N",
        help="encoder layer sizes, e.g. 64,32 (default: from the data)",
    )
    train.add_argument("--kl-warmup-epochs", type=int, default=10, help="default 10")
    train.add_argument("--patience", type=int, default=20, help="early-stopping patience")
    train.add_argument(
        "--min-scale",
        type=float,
        default=0.3,
        help="decoder standard-deviation floor, standardised units (default 0.3)",
    )
    train.add_argument(
        "--target-fpr",
        type=float,
        default=0.01,
        help="false-positive rate the threshold is set for (default 0.01)",
    )
    train.add_argument(
        "--samples", type=int, default=8, help="latent samples L per scored record (default 8)"
    )
    train.add_argument(
        "--score",
        metavar="KIND",
        help="score: recon_prob, mean_log_lik, elbo or iwae, or a model's own (vae-svdd: "
        "svdd_distance, combined; advae: recon_error); default: the model's own choice",
    )
    train.add_argument(
        "--svdd-weight",
        type=float,
        help="vae-svdd: weight of the hypersphere term mean ||mu - c||^2 (default 0.1)",
    )
    train.add_argument(
        "--svdd-nu",
        type=float,
        help="vae-svdd: soft-boundary share nu in (0, 1] of records allowed outside the "
        "sphere (default: none, one-class Deep SVDD)",
    )
    for flag, meaning, default in (
        ("--advae-lambda", "weight lambda of the transformer's KL term", 0.01),
        ("--advae-gamma", "weight gamma of the encoder-adversarial KL terms", 0.001),
        ("--advae-margin-x", "margin m_x between G(z) and G(z_T), squared units", 2.0),
        ("--advae-margin-z", "margin m_z in nats of a generated record's KL", 40.0),
    ):
        train.add_argument(flag, type=float, help=f"advae: {meaning} (default {default})")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument(
        "--report",
        metavar="PATH.html",
        help="also write an HTML report: summary, loss curves, held-out score histogram (and "
        "ROC/precision-recall curves with --report-data); a failure to write it is a warning",
    )
    train.add_argument(
        "--report-data",
        metavar="FILE",
        help="labelled records the model does not train on (e.g. data/eval.csv), scored for "
        "the report's ROC and precision-recall curves",
    )
    train.add_argument(
        "--report-label-column",
        metavar="COL",
        help="the 0/1 label column of --report-data (default: --label-column's name)",
    )
    _add_output_flags(train)
    train.set_defaults(handler=cmd_train)

    score = commands.add_parser(
        "score",
        help="score files of records",
        description="Score every record of INPUT into --output: the input's columns plus "
        "anomaly_score (higher = more anomalous), p_value, is_anomaly and the top "
        "contributing columns. Files are read and scored in chunks, so memory does not grow "
        "with their size. Every row is scored or rejected: the ledger 'rows read = scored + "
        "rejected' ends the run, and rejected rows go to a rejects file with their source "
        "file, row and line number, reason and raw text.",
    )
    score.add_argument("model", help="model bundle directory")
    score.add_argument(
        "input",
        nargs="+",
        help="records: .csv, .csv.gz, .tsv or .parquet files, directories of them, glob "
        "patterns ('exports/*.csv.gz'), or '-' for CSV on stdin",
    )
    score.add_argument(
        "--output",
        required=True,
        help="output .csv, .csv.gz or .parquet, written atomically (with --engine spark: a "
        "directory of part files)",
    )
    score.add_argument("--rejects", help="rejects file (default: OUTPUT.rejects.csv)")
    _add_scoring_flags(score)
    score.add_argument("--top-k", type=int, default=3, help="top contributing columns (default 3)")
    score.add_argument(
        "--max-reject-rate",
        type=_rate,
        metavar="RATE",
        help="fail (exit 2, no output written) when more than this share of rows is "
        "rejected, e.g. 0.01",
    )
    score.add_argument(
        "--engine",
        choices=["stream", "spark"],
        default="stream",
        help="stream (default): one process, chunk by chunk; spark: a Spark job (pip install "
        "'anomaly-detector[spark]'), for inputs beyond one machine",
    )
    _add_output_flags(score)
    score.set_defaults(handler=cmd_score)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure detection quality on labelled records",
        description="Score a labelled file and report AUROC, AUPRC, precision, recall and F1 at "
        "the bundle's threshold, and the best F1 over all thresholds.",
    )
    evaluate.add_argument("model", help="model bundle directory")
    evaluate.add_argument("input", help="labelled records: .csv, .csv.gz or .parquet")
    evaluate.add_argument("--label-column", required=True, help="0/1 label, 1 = anomaly")
    evaluate.add_argument("--by-column", help="also report the share flagged per value of COL")
    evaluate.add_argument(
        "--report",
        metavar="PATH.html",
        help="also write an HTML report: ROC and precision-recall curves, score histograms "
        "by label",
    )
    _add_scoring_flags(evaluate)
    _add_output_flags(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    info = commands.add_parser(
        "info",
        help="describe a model bundle",
        description="Print a bundle's schema, threshold and training summary.",
    )
    info.add_argument("model", help="model bundle directory")
    _add_output_flags(info)
    info.set_defaults(handler=cmd_info)

    threshold = commands.add_parser(
        "threshold",
        help="change a bundle's target false-positive rate",
        description="Recompute the threshold for a new target false-positive rate from the "
        "bundle's held-out calibration scores; no retraining. Rates below what the held-out "
        "sample resolves use its generalized-Pareto tail fit.",
    )
    threshold.add_argument("model", help="model bundle directory")
    threshold.add_argument("--fpr", type=float, required=True, help="target rate, e.g. 0.001")
    _add_output_flags(threshold)
    threshold.set_defaults(handler=cmd_threshold)
    sample = commands.add_parser(
        "sample",
        help="draw synthetic records from a model",
        description="Draw records from the model's generative distribution: a latent code from "
        "the N(0, I) prior, then every column from the decoder's distribution (a Gaussian per "
        "numeric column, the softmax over the known categories per categorical one), in the "
        "training columns' order and units. Shows what the model takes for normal data.",
    )
    sample.add_argument("model", help="model bundle directory")
    sample.add_argument(
        "-n", "--records", dest="n", type=int, required=True, help="how many records to draw"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--output", help=".csv, .csv.gz or .parquet, written atomically (default: CSV on stdout)"
    )
    sample.add_argument(
        "--context",
        action="append",
        default=[],
        type=_key_value,
        metavar="COL=VALUE",
        help="cvae: draw records for this value of a context column (repeatable)",
    )
    sample.set_defaults(handler=cmd_sample)
    if extra_commands is not None:
        extra_commands(commands)
    return parser


def _add_scoring_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-column",
        action="append",
        default=[],
        metavar="COL",
        help="an extra input column to carry through unscored, e.g. an id (repeatable)",
    )
    parser.add_argument(
        "--impute",
        choices=["median"],
        help="fill empty values with the training median (most frequent category) "
        "instead of rejecting the row",
    )
    parser.add_argument("--chunk-rows", type=int, default=65_536, help="rows per chunk")


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of sizes"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return values


def _key_value(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not column.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not COLUMN=VALUE")
    return column.strip(), value.strip()


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and not args.json and sys.stderr.isatty()


# ---- commands ------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from detector.bundle import save_bundle
    from detector.errors import SchemaError
    from detector.evaluation import parse_labels
    from detector.tables import read_table
    from detector.training import TrainingConfig, train

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
        model=args.model,
        latent_dim=args.latent_dim,
        hidden_units=args.hidden_units,
        min_scale=args.min_scale,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        kl_warmup_epochs=args.kl_warmup_epochs,
        patience=args.patience,
        target_fpr=args.target_fpr,
        n_samples=args.samples,
        score_kind=args.score,
        categorical=tuple(args.categorical),
        context=tuple(args.context),
        context_dropout=args.context_dropout,
        random_state=args.seed,
        progress=_show_progress(args),
        # Left unset, the default; set for another model, check() says it does not apply.
        svdd_weight=TrainingConfig.svdd_weight if args.svdd_weight is None else args.svdd_weight,
        svdd_nu=args.svdd_nu,
        **{
            name: getattr(args, name)
            for name in ("advae_lambda", "advae_gamma", "advae_margin_x", "advae_margin_z")
            if getattr(args, name) is not None
        },
    )
    report_passthrough = _check_report_data(args, frame.columns)
    bundle, summary = train(frame, config)
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
    _require_column(data, label, args.report_data)
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


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a rate between 0 and 1")
    return value


def cmd_score(args: argparse.Namespace) -> int:
    from detector.batch import RejectRateExceeded

    options = {
        "keep_columns": args.keep_column,
        "impute": args.impute,
        "rejects_path": args.rejects,
        "top_k": args.top_k,
        "max_reject_rate": args.max_reject_rate,
    }
    try:
        if args.engine == "spark":
            from detector.spark import score_files

            report = score_files(args.model, args.input, args.output, **options)
        else:
            import gc

            import tensorflow as tf

            from detector.batch import score_file
            from detector.bundle import load_bundle

            # One thread inside each model call: the scorer keeps the cores busy with its own
            # threads (read and encode, model, write), and TensorFlow's pool, spinning while
            # it waits for work, took CPU from them (measured: 94k against 89k rows/s). A
            # process that has run TensorFlow already keeps its setting.
            with contextlib.suppress(RuntimeError):
                tf.config.threading.set_intra_op_parallelism_threads(1)
            bundle = load_bundle(args.model)
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


def _labelled_scores(
    bundle: Any,
    path: str,
    label_column: str,
    *,
    passthrough: Sequence[str] = (),
    by_column: str | None = None,
    impute: Any = None,
    chunk_rows: int = 65_536,
) -> tuple[Any, Any, Any, int]:
    """Score a labelled file: labels ``(n,)`` (True = anomaly), anomaly scores ``(n,)``, the
    ``by_column`` value per row ``(n,)`` (or ``None``), for the scored rows, and the number of
    rejected rows."""
    import numpy as np

    from detector.batch import iter_scored
    from detector.evaluation import parse_labels

    extra = list(dict.fromkeys([label_column, *passthrough]))
    if by_column and by_column not in extra:
        extra.append(by_column)
    labels, scores, groups = [], [], []
    rejected = 0
    for part in iter_scored(bundle, path, passthrough=extra, impute=impute, chunk_rows=chunk_rows):
        _require_column(part.frame, label_column, path)
        scored = part.frame.loc[part.result.rows]
        labels.append(parse_labels(scored[label_column], label_column))
        scores.append(part.result.anomaly_score)
        if by_column:
            _require_column(part.frame, by_column, path)
            groups.append(scored[by_column].astype(str).to_numpy())
        rejected += len(part.result.rejections)
    return (
        np.concatenate(labels),
        np.concatenate(scores),
        np.concatenate(groups) if groups else None,
        rejected,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detector.bundle import load_bundle
    from detector.evaluation import evaluate_scores

    bundle = load_bundle(args.model)
    labels, scores, groups, rejected = _labelled_scores(
        bundle,
        args.input,
        args.label_column,
        passthrough=args.keep_column,
        by_column=args.by_column,
        impute=args.impute,
        chunk_rows=args.chunk_rows,
    )
    result = evaluate_scores(
        labels, scores, bundle.calibrator.threshold, n_rejected=rejected, groups=groups
    )
    if args.report:
        from detector.report import LabelledScores, evaluation_report, write_report

        labelled = LabelledScores(labels, scores, args.input, n_rejected=rejected)
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
        print(f"flagged by {args.by_column}:")
        for value, stats in sorted(r.by_group.items()):
            print(f"  {value:<24} {stats['flagged']:7.2%} of {stats['n']}")
    if args.report:
        print(f"wrote report {args.report}")
    return 0


def _require_column(frame: Any, column: str, path: str) -> None:
    from detector.errors import SchemaError

    if column not in frame.columns:
        raise SchemaError(
            f"column '{column}' is not in {path}; its columns are {list(frame.columns)}"
        )


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
        "threshold": bundle.calibrator.threshold,
        "target_fpr": bundle.calibrator.target_fpr,
        "columns": bundle.schema.describe(),
        "training": training,
        "data_fingerprint": bundle.data_fingerprint,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"{bundle.model_type} bundle {bundle.version} at {args.model} (created {bundle.created_at})"
    )
    print(f"columns: {info['columns']}")
    print(
        f"score: {bundle.score_kind} with {bundle.n_samples} latent samples; threshold "
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

    bundle = set_target_fpr(args.model, args.fpr)
    cal = bundle.calibrator
    source = "held-out sample" if args.fpr >= cal.tail_fraction else "generalized-Pareto tail fit"
    if args.json:
        print(
            json.dumps(
                {"target_fpr": cal.target_fpr, "threshold": cal.threshold, "method": source},
                indent=2,
            )
        )
        return 0
    print(
        f"threshold {cal.threshold:.4f} for target FPR {cal.target_fpr:.4%} (from the {source}); "
        f"saved to {args.model}"
    )
    return 0


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (oneDNN, CUDA probing) kept off stderr.

    Those lines are printed before TensorFlow's own log settings apply, so the only way to keep
    a command's output readable is to point file descriptor 2 elsewhere for the import.
    Python exceptions still propagate and are reported as usual.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command's handler, mapping errors to exit codes."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.debug and getattr(args, "needs_tensorflow", True):
        import_tensorflow_quietly()
    from detector.errors import DetectorError

    try:
        return int(args.handler(args))
    except DetectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; no output was written", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """The library's commands alone; the installed ``anomaly`` adds ``serve`` (service.cli)."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
