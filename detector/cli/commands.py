"""The ``anomaly`` commands' shared pieces, and the small commands: info, threshold, sample.

``detector.cli.main`` parses the arguments and calls one of the ``cmd_*`` functions with them. The
big commands have modules of their own (``detector.cli.train``, ``detector.cli.score``,
``detector.cli.evaluate``) and take what they share from here: clean-up on SIGTERM, a
file's header, scoring a labelled file. Heavy imports (TensorFlow, pandas) happen inside each
command, so ``anomaly --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from types import MappingProxyType
from typing import Any, NamedTuple

from detector.wording import printable, training_end


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is so that clean-up runs; the command then exits with
    128 + ``signum`` (143), the status Kubernetes and systemd read as stopped by it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


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
        raise Terminated(signum)

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


def _header(path: str, encoding: str | None = None) -> tuple[str, ...]:
    """A file's column names, read from its header (Parquet: its schema) alone; of a
    directory or glob, its first file's (``encoding``: its text's, ``None`` for UTF-8)."""
    from detector.io.sources import open_source
    from detector.io.tables import expand_inputs

    with open_source(expand_inputs([path])[0], encoding=encoding) as source:
        return tuple(source.columns)


class ScoredLabels(NamedTuple):
    """A labelled file scored: for the scored rows, labels ``(n,)`` (True = anomaly), anomaly
    scores ``(n,)`` and the ``by_column`` value of each (or ``None``); the rejected rows by
    reason code, and how many of them are labelled anomalous (where their label could be
    read: a row that did not parse has none); a series model's evictions (``max_series``);
    the rejected rows by ``by_column`` value, where it could be read; the scored rows a series
    model judged while their series warmed up; the scored rows that are exactly rows the
    bundle keeps from training (``None`` for a bundle that keeps none)."""

    labels: Any
    scores: Any
    groups: Any
    codes: Counter[str]
    rejected_anomalies: int = 0
    series_evicted: int = 0
    rejected_groups: Mapping[str, int] = MappingProxyType({})
    warming_up: int = 0  # scored rows among their series' first (a series model's)
    training_rows: int | None = None
    category_spelling: str | None = None  # ``SpellingTally.warning``


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
    max_ahead_seconds: float | None = 3600.0,
    max_series: int = 1_000_000,
    leave_out_unknown: bool = False,
    encoding: str | None = None,
) -> ScoredLabels:
    """Score a labelled file (``ScoredLabels``). Labels are 0/1, or text read with
    ``anomaly_values`` or ``normal_values`` (``_labels``)."""
    import numpy as np

    from detector.batch.scored_chunks import iter_scored
    from detector.errors import DataError
    from detector.features.encoded import SpellingTally

    extra = list(dict.fromkeys([label_column, *passthrough]))
    if by_column and by_column not in extra:
        extra.append(by_column)
    labels, scores, groups = [], [], []
    rejected: Counter[str] = Counter()
    rejected_groups: Counter[str] = Counter()
    rejected_anomalies = evicted = warming = 0
    spellings = SpellingTally()
    parts = iter_scored(
        bundle,
        path,
        passthrough=extra,
        impute=impute,
        chunk_rows=chunk_rows,
        max_ahead_seconds=max_ahead_seconds,
        max_series=max_series,
        # An empty or 'NA' label is a missing one, refused as such, as before kept columns
        # were kept as written.
        read_as_values=[label_column, *([by_column] if by_column else [])],
        leave_out_unknown=leave_out_unknown,
        count_training_rows=True,
        encoding=encoding,
    )
    trained = None if bundle.neighbours is None else 0
    for part in parts:
        evicted = part.series_evicted
        if trained is not None:
            trained += part.training_rows
        spellings.add_found(part.respelled)
        rejected.update(r.code for r in part.rejects)
        _require_column(part.frame.columns, label_column, part.source)
        if by_column:
            _require_column(part.frame.columns, by_column, part.source)
        if part.result is None:
            continue
        # Indexed by each row's place in its file, which messages about a label name.
        scored = part.frame.iloc[part.result.rows]
        labels.append(_labels(scored[label_column], label_column, anomaly_values, normal_values))
        scores.append(part.result.anomaly_score)
        if part.result.warming_up is not None:
            warming += int(part.result.warming_up.sum())
        if by_column:
            groups.append(_group_values(scored[by_column]))
        rejected.update(r.code for r in part.result.rejections)
        if part.result.rejections:
            rows = [r.row for r in part.result.rejections]
            if by_column:  # a group whose every row was rejected is still listed
                rejected_groups.update(_group_values(part.frame.iloc[rows][by_column]))
            with contextlib.suppress(DataError):  # labels no row's scoring needed
                values = part.frame.iloc[rows][label_column]
                rejected_anomalies += int(
                    _labels(values, label_column, anomaly_values, normal_values).sum()
                )
    if not labels:  # a header alone, or every row rejected
        return ScoredLabels(np.zeros(0, dtype=bool), np.zeros(0), None, rejected)
    return ScoredLabels(
        np.concatenate(labels),
        np.concatenate(scores),
        np.concatenate(groups) if groups else None,
        rejected,
        rejected_anomalies,
        evicted,
        rejected_groups,
        warming,
        trained,
        spellings.warning(),
    )


#: The share of the scored rows that are training rows past which evaluate says its numbers
#: are partly the training rows'; and the share of a bank's rows repeating another past which
#: a scored row equal to one is no sign of being it (a table of a few categories repeats).
MOSTLY_TRAINED = 0.1
REPEATING_BANK = 0.01


def _training_rows_warning(bundle: Any, found: int | None, scored: int) -> str | None:
    """What to say where many scored rows are the model's training rows: data/train.csv with
    eval.csv's 148 anomalies appended read a false-positive rate of 0.78% and AUROC .9982
    where eval.csv's held-out rows read 1.98% (warned of) and .9943, and nothing said why.
    Only the rows the bundle's neighbour bank keeps can be found (``found``; ``None`` where
    it keeps none, so nothing is said): where it keeps some of them, the rest are estimated."""
    bank = bundle.neighbours
    if not found or bank is None or bank.repeated > REPEATING_BANK:
        return None
    kept = len(bank.bank)
    trained = max(int(bundle.training.get("rows") or kept), kept)
    likely = min(scored, round(found * trained / kept))
    if likely < MOSTLY_TRAINED * scored:
        return None
    among = f"the {kept:,} training rows the bundle keeps"
    if trained > kept:
        among = (
            f"the {kept:,} of its {trained:,} training rows the bundle keeps, so about "
            f"{likely:,} in all"
        )
    return (
        f"{found:,} of the {scored:,} scored rows ({found / scored:.0%}) are rows the model was "
        f"trained on (found among {among}): metrics on training rows are optimistic, as the "
        "model has seen them; evaluate on rows kept out of training (a later period, or rows "
        "held back from `anomaly train`)"
    )


def _group_values(values: Any) -> Any:
    """``--by-column`` values as text ``(n,)``: an empty value is the group '' (shown as
    ``EMPTY_GROUP``), which no text read from a file is, not the text 'nan' or '(empty)' a value
    may also be."""
    return values.astype("string").fillna("").to_numpy(dtype=object).astype(str)


def _labels(
    values: Any,
    column: str,
    anomaly_values: Sequence[str] | None,
    normal_values: Sequence[str] | None = None,
) -> Any:
    """Labels ``(n,)``, True = anomaly: 0/1 or true/false; or, for text labels such as KDD Cup
    99's "smurf.", True where the label is one of ``anomaly_values`` (every other value
    but empty, normal), or where it is none of ``normal_values`` (every other value but empty,
    an anomaly: a data set with one normal label and many attack labels). An empty label is
    an ``UnlabelledRows`` either way."""
    from detector.errors import DataError
    from detector.scoring.evaluation import UnlabelledRows, check_labelled, parse_labels

    for named, means_anomaly in ((anomaly_values, True), (normal_values, False)):
        if named is not None:
            wanted = {value.strip() for value in named}
            text = values.astype("string").str.strip()
            # An empty label is no label, as without these options: read as "every other
            # value" it silently moved rows to a class (148 anomalies counted as 128).
            check_labelled(values, text, column)
            return text.isin(wanted).fillna(False).to_numpy(dtype=bool) == means_anomaly
    try:
        return parse_labels(values, column)
    except UnlabelledRows:
        raise  # no --anomaly-value reads an empty label
    except DataError as exc:
        raise DataError(
            f"{exc}; for other labels, name the value that means anomaly with --anomaly-value "
            "VALUE, or the one that means normal with --normal-value VALUE (each repeatable; "
            "every other value is then the other class)"
        ) from None


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
    from detector.bundles.bundle import load_bundle
    from detector.io.temporaries import check_outside_bundle
    from detector.io.writers import TableWriter
    from detector.nn.sampling import sample_batches

    check_outside_bundle(args.output, args.model, "--output")
    # '-' is standard output, as with no --output; a bad name fails before the model loads.
    writer = TableWriter(args.output) if args.output not in (None, "-") else None
    bundle = load_bundle(args.model)
    batches = sample_batches(bundle, args.n, seed=args.seed, context=dict(args.context))
    first = next(batches)
    note = _sampled_note(bundle, first)
    if writer is None:
        for frame in itertools.chain([first], batches):
            frame.to_csv(sys.stdout, index=False, header=frame.index[0] == 0)
        print(note, file=sys.stderr)
        return 0
    try:
        for frame in itertools.chain([first], batches):
            writer.write(frame)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    print(
        f"wrote {args.n} records sampled from {bundle.model_type} {bundle.version} to {args.output}"
    )
    print(note)
    return 0


#: Sampled records scored to say how the model itself judges its draws.
SAMPLES_JUDGED = 2_000


def _sampled_note(bundle: Any, drawn: Any) -> str:
    """How many of the first draws the model flags, and what the draws are for: a lifecycle
    helper took samples for test traffic, and the same model flagged 99.95% of them (a VAE's
    prior reaches places its training rows never were; joint structure is lost)."""
    import numpy as np

    from detector.features.encode import listed
    from detector.scoring.scores import score_frame

    judged = drawn.head(SAMPLES_JUDGED)
    result = score_frame(bundle, judged, max_ahead_seconds=None)
    empty = [c.name for c in bundle.schema.context if judged[c.name].isna().all()]
    if empty:
        # A cvae's samples without --context come back with no host, which scoring rejects:
        # "flags 0.0%" would have said they were all normal (a models helper).
        return (
            f"note: {listed(empty)} left empty (no context given), so these draws cannot be "
            f"scored as they are; give --context {empty[0]}=VALUE to draw one context's records"
        )
    flagged = float(np.mean(result.is_anomaly)) if len(result.is_anomaly) else 0.0
    return (
        f"note: this model flags {flagged:.1%} of the first {len(judged):,} "
        f"draws (its target: {bundle.calibrator.target_fpr:.2%}): they show what the VAE "
        "learned, column by column, not realistic traffic; to test a pipeline, use held-out "
        "normal rows"
    )


#: Training settings ``info`` shows for every model, then those of its model and of a series.
_SHOWN_SETTINGS = (
    "epochs", "batch_size", "learning_rate", "patience", "kl_warmup_epochs", "random_state",
    "range_floor", "min_scale", "max_scale", "clip", "n_samples", "neighbours",
)  # fmt: skip
_MODEL_SETTINGS = {
    "vae-svdd": "svdd_", "advae": "advae_", "iwae": "iwae_", "lsvae": "lsvae_", "fae": "fae_",
    "cvae": "context",
}  # fmt: skip
_SERIES_SETTINGS = (
    "window", "short_window", "deviation_window", "column_window", "level_hours",
    "max_gap_seconds", "calendar", "metric_parts",
)  # fmt: skip


def _settings(bundle: Any) -> str:
    params = bundle.params
    shown = {k: params[k] for k in _SHOWN_SETTINGS if k in params}
    prefix = _MODEL_SETTINGS.get(bundle.model_type)
    if prefix:
        shown |= {k: v for k, v in params.items() if k.startswith(prefix)}
    if bundle.series is not None:
        shown |= {k: params[k] for k in _SERIES_SETTINGS if k in params}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def cmd_info(args: argparse.Namespace) -> int:
    from detector.bundles.bundle import load_bundle
    from detector.series.cap import series_cap_note
    from detector.wording import measured_at_note, percent, scored_note

    bundle = load_bundle(args.model)
    training = {k: v for k, v in bundle.training.items() if k != "history"}
    expected = bundle.input_columns if bundle.series is not None else None
    info = {
        "path": args.model,
        "model_type": bundle.model_type,
        "version": bundle.version,
        "created_at": bundle.created_at,
        # Which releases read it: those reading its format and knowing each name it requires.
        "format_version": bundle.format_version,
        "requires": bundle.requires,
        "score": bundle.score_kind,
        "samples": bundle.n_samples,
        "neighbours": None
        if bundle.neighbours is None
        else {"k": bundle.neighbours.k, "bank_rows": len(bundle.neighbours.bank)},
        "threshold": bundle.calibrator.threshold,
        "target_fpr": bundle.calibrator.target_fpr,
        # What a record must hold (a series model's time and key columns included, its
        # window's internal columns not), as a list, and described with each column's kind.
        "columns": list(bundle.input_columns),
        "columns_described": bundle.schema.describe(expected),
        "training": training,
        "data_fingerprint": bundle.data_fingerprint,
        "ignored_columns": list(bundle.ignored_columns),
        "logged_columns": list(bundle.logged_columns),
        "series": None if bundle.series is None else asdict(bundle.series),
        "params": bundle.params,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"{bundle.model_type} bundle {bundle.version} at {printable(args.model)} "
        f"(created {bundle.created_at})"
    )
    print(
        f"bundle format {bundle.format_version}; requires: {', '.join(bundle.requires) or 'none'}"
    )
    print(f"columns: {printable(info['columns_described'])}")
    if bundle.series is not None:
        print(bundle.series.describe())
    if bundle.ignored_columns:
        print(f"ignored (carried through unscored): {printable(list(bundle.ignored_columns))}")
    print(
        f"score: {bundle.describe_score()}; threshold "
        f"{bundle.calibrator.threshold:.4f} at target FPR {percent(bundle.calibrator.target_fpr)}"
    )
    if logs := bundle.describe_logs():
        print(logs)
    for rare in bundle.schema.describe_rare():
        print(rare)
    if training:
        in_force = bundle.calibrator.target_fpr
        then = measured_at_note(training.get("target_fpr", in_force), in_force)
        read = training.get("rows_read")
        sampled = f" (a uniform sample of the {read:,} read)" if isinstance(read, int) else ""
        if whole := series_cap_note(training):
            sampled = f" ({whole})"
        print(
            f"trained on {training.get('rows')} rows{sampled} in {training.get('epochs_run')} "
            "epochs "
            f"({training_end(bool(training.get('stopped_early')), None, training.get('budget'))}"
            "); "
            f"validation ELBO {-training.get('val_neg_elbo', float('nan')):.3f}; "
            f"validation FPR {training.get('validation_fpr', float('nan')):.2%}{then}"
            f"{scored_note(training.get('validation_scored'), training.get('validation_rows'))}"
        )
        print(f"settings: {_settings(bundle)}")
        for warning in training.get("warnings", []):
            print(f"WARNING: {printable(warning)}")
    return 0


def cmd_threshold(args: argparse.Namespace) -> int:
    from detector.bundles.bundle import set_target_fpr

    # From threshold, not training: this command must not import TensorFlow.
    from detector.scoring.threshold import MAX_CALIBRATION_ROWS, calibration_warnings

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
    # The bundle changed on disk; a server holds the one it loaded, and said nothing of it.
    print(
        "a running `anomaly serve` keeps the old threshold until it reloads the model: send it "
        "SIGHUP, or POST /v1/models/NAME/reload with the admin token"
    )
    for warning in warnings:
        print(f"WARNING: {warning}")
    return 0
