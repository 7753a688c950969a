"""``anomaly evaluate``: score a labelled file and measure how well the scores find anomalies.

Heavy imports (TensorFlow, pandas) happen inside the functions, so ``anomaly --help`` answers at
once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

from detector.cli.commands import (
    _header,
    _labelled_scores,
    _require_column,
    _training_rows_warning,
)
from detector.cli.score import MOSTLY_REJECTED
from detector.scoring.evaluation import fpr_warning, group_name, precision_text
from detector.wording import printable


def _check_labelled_input(
    path: str, columns: Iterable[str], label_column: str, by_column: str | None
) -> None:
    """The label (then --by-column) first, as `train` does: a missing label explains the
    other columns scoring would call unknown."""
    present = list(columns)
    _require_column(present, label_column, path)
    if by_column:
        _require_column(present, by_column, path)


#: The share of scored rows warming up past which a series model's numbers are said to be
#: mostly its warm-up's.
MOSTLY_WARMING = 0.2


def _warm_up_warning(bundle: Any, warming: int, scored: int) -> str | None:
    """What to say where most rows were judged before their series' window filled: a fraud
    helper's card model had every test row warming up, and was told of drift instead."""
    if bundle.series is None or not scored or warming / scored <= MOSTLY_WARMING:
        return None
    return (
        f"{warming / scored:.0%} of the scored rows are warming up (their series had fewer "
        f"than {bundle.series.window - 1} rows before them), so these numbers are mostly of "
        "windows that had not filled: put each series' earlier rows ahead of these in the "
        "file, or, for sparse events rather than a metric a minute, train without "
        "--time-column"
    )


def _label_input_warning(bundle: Any, label_column: str) -> str | None:
    """What to say where the label is one of the model's inputs: its scores see the answer (a
    helper's AUROC was .999 with it, .9935 without, and nothing said so)."""
    if label_column not in bundle.input_columns:
        return None
    return (
        f"the label column '{label_column}' is one of the model's inputs, so its scores see "
        "the label and these metrics are optimistic: train without it (`anomaly train ... "
        f"--label-column {label_column}` drops it and leaves out the rows labelled anomalous, "
        f"or --ignore-column {label_column})"
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detector.batch.ledger import undecoded_hint
    from detector.bundles.bundle import load_bundle
    from detector.errors import DataError
    from detector.features.encode import listed
    from detector.io.temporaries import check_not_an_input, check_outside_bundle, check_writable
    from detector.scoring.evaluation import evaluate_scores, left_out_note

    check_outside_bundle(args.report, args.model, "--report")
    bundle = load_bundle(args.model)
    if args.report:
        check_writable(args.report)  # before scoring, which the report would wait for
        check_not_an_input(args.report, [args.input] if args.input != "-" else [], "--report")
    left_out: list[str] = []
    if args.input != "-":  # stdin cannot be read twice; its header is checked as it is scored
        header = _header(args.input, args.encoding)
        _check_labelled_input(args.input, header, args.label_column, args.by_column)
        # Nothing is written, so a column the model does not score (a note, a second label)
        # is left out rather than refused as `score` refuses it; a renamed model column is
        # still refused, as missing.
        named = {*bundle.input_columns, *bundle.ignored_columns, *args.keep_column}
        named |= {args.label_column, args.by_column}
        left_out = [c for c in header if c not in named]
    scored = _labelled_scores(
        bundle,
        args.input,
        args.label_column,
        # Training's ignored columns may be in the file or not; either way they are not scored.
        passthrough=[*args.keep_column, *bundle.ignored_columns, *left_out],
        by_column=args.by_column,
        impute=args.impute,
        chunk_rows=args.chunk_rows,
        max_ahead_seconds=args.max_ahead_seconds,
        max_series=args.max_series,
        anomaly_values=args.anomaly_value,
        normal_values=args.normal_value,
        # stdin's header is read only as it is scored: its other columns are left out there.
        leave_out_unknown=args.input == "-",
        encoding=args.encoding,
    )
    labels, scores, groups, codes, rejected_anomalies, evicted, rejected_groups = scored[:7]
    warming = scored.warming_up
    if not len(scores) and not codes:
        raise DataError(f"{args.input} has a header but no data rows; nothing to evaluate")
    if not len(scores):
        why = ", ".join(f"{code} {n:,}" for code, n in codes.most_common())
        rows = sum(codes.values())
        hint = undecoded_hint(codes.get("encoding", 0), rows, args.encoding)
        raise DataError(
            f"no row of {args.input} could be scored: every one of its {rows:,} rows was "
            f"rejected ({why}); {f'{hint}; ' if hint else ''}`anomaly score` writes each row's "
            "reason to a rejects file"
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
    rejected = sum(codes.values())
    why = ", ".join(f"{code} {n:,}" for code, n in codes.most_common())
    if rejected_anomalies and not labels.any():
        raise DataError(
            f"every row of {args.input} labelled anomalous ({rejected_anomalies:,}) was rejected "
            f"({why}), so the scored rows hold normal ones alone; `anomaly score` writes each "
            "row's reason to a rejects file"
        )
    late = codes.get("out_of_order", 0)
    if bundle.series is not None and late > (len(scores) + rejected) // 100:
        from detector.cli.score import _unsorted_hint

        print(_unsorted_hint(bundle, late, args.chunk_rows), file=sys.stderr)
    result = evaluate_scores(
        labels, scores, bundle.calibrator.threshold, n_rejected=rejected, groups=groups
    )
    warnings = [
        w
        for w in [
            _label_input_warning(bundle, args.label_column),
            _training_rows_warning(bundle, scored.training_rows, len(scores)),
            _warm_up_warning(bundle, warming, len(scores)),
            scored.category_spelling,
        ]
        if w
    ]
    report_failed: OSError | None = None
    if args.report:
        from detector.cli.report import LabelledScores, evaluation_report, write_report

        labelled = LabelledScores(
            labels,
            scores,
            args.input,
            n_rejected=rejected,
            groups=groups,
            group_column=args.by_column,
            warnings=tuple(warnings),
        )
        try:
            write_report(args.report, evaluation_report(bundle, labelled))
        except OSError as exc:
            # Raised once the metrics are printed: a full disk at the report cost the whole
            # evaluation (nothing printed, exit 1), however long the scoring took.
            report_failed = exc
    if args.json:
        print(
            json.dumps(
                {
                    **result.to_dict(),
                    "rejected_by_code": dict(codes.most_common()),
                    "rejected_anomalies": rejected_anomalies,
                    "rejected_by_group": dict(Counter(rejected_groups).most_common()),
                    "series_evicted": evicted,
                    "warming_up": warming if bundle.series else None,
                    "columns_not_scored": left_out,
                    "recall_with_rejected": _recall_with_rejected(result, rejected_anomalies),
                    # None where the bundle keeps no training rows to find them by.
                    "training_rows_found": scored.training_rows,
                    "warnings": [
                        *warnings,
                        *filter(None, [fpr_warning(result, bundle.calibrator.target_fpr)]),
                    ],
                },
                indent=2,
            )
        )
        return _report_written(report_failed)
    r = result
    if left_out:
        print(f"not scored (not the model's columns): {listed(left_out)}")
    print(
        f"records {r.n} scored ({r.n_anomalies} labelled anomalous), {r.n_rejected} rejected"
        + (f" ({why})" if why else "")
    )
    if bundle.series is not None:
        gap = bundle.series.max_gap_seconds
        # A gap restarts a window too: 20 of a helper's 97 such rows came after gaps, which
        # "each series' first rows" left unexplained.
        again = f", and the first after each gap over {gap:g} s" if gap else ""
        print(
            f"warming up {warming:,} ({warming / r.n:.1%} of scored: each series' first "
            f"{bundle.series.window - 1} rows{again}, judged on the rows it had)"
        )
    for said in warnings:
        print(f"WARNING: {said}")
    if evicted:
        print(
            f"series evicted {evicted:,}: more than --max-series {args.max_series:,} series were "
            "held, and each series forgotten warmed up again if it came back"
        )
    if r.n_rejected > MOSTLY_REJECTED * (r.n + r.n_rejected):
        # 88% rejected exited 0 with metrics of the few rows left, as if they were the file's.
        print(
            f"WARNING: most rows were rejected ({r.n_rejected / (r.n + r.n_rejected):.0%}): the "
            "metrics below judge the rows scored alone; `anomaly score` writes each rejected "
            "row's reason to a rejects file"
        )
        if hint := undecoded_hint(codes.get("encoding", 0), r.n + r.n_rejected, args.encoding):
            print(f"hint: {hint}")
    if rejected_anomalies:
        print(
            f"{rejected_anomalies:,} of the rejected rows are labelled anomalous; the metrics "
            "below leave them out (counted as missed, recall is "
            f"{_recall_with_rejected(r, rejected_anomalies):.4f})"
        )
    print(f"AUROC {r.auroc:.4f}   AUPRC {r.auprc:.4f}")
    print(
        f"at threshold {r.threshold:.4f}: precision {precision_text(r)}  recall {r.recall:.4f}  "
        f"F1 {r.f1:.4f}  false-positive rate {r.false_positive_rate:.2%}"
    )
    if warning := fpr_warning(r, bundle.calibrator.target_fpr):
        print(f"WARNING: {warning}")
    print(
        f"best F1 {r.best_f1:.4f} at threshold {r.best_f1_threshold:.4f} (chosen on these labels)"
    )
    if r.by_group:
        print(f"by {args.by_column}: share flagged, recall, AUROC, AUPRC")
        against_all = False
        for value, stats in sorted(r.by_group.items(), key=_group_order):
            measured = "".join(
                f"  {key} {stats[key]:.4f}"
                for key in ("recall", "auroc", "auprc")
                if stats[key] is not None
            )
            n_rejected = rejected_groups.get(value, 0)
            also = f"  ({n_rejected:,} rejected)" if n_rejected else ""
            if stats.get("against") == "every normal record" and stats["auroc"] is not None:
                measured += " *"
                against_all = True
            shown = printable(group_name(value))
            print(f"  {shown:<24} {stats['flagged']:7.2%} of {stats['n']:<6}{measured}{also}")
        for value, n in sorted(rejected_groups.items(), key=_group_order):
            if value not in r.by_group:  # every row of it rejected: the line says so
                print(f"  {printable(group_name(value)):<24} none scored ({n:,} rejected)")
        if against_all:
            # Otherwise within the group: two meanings side by side, which the table named not.
            print(
                "  * anomalies only: AUROC and AUPRC rank them against every normal row of the "
                "file (a group with both kinds, against its own normal rows)"
            )
        if r.groups_left_out:
            print(f"  {left_out_note(r)}")
    if args.report and report_failed is None:
        print(f"wrote report {args.report}")
    return _report_written(report_failed)


def _report_written(failed: OSError | None) -> int:
    """0, or the report's failure raised, the metrics printed before it."""
    if failed is not None:
        sys.stdout.flush()
        raise failed
    return 0


def _recall_with_rejected(result: Any, rejected_anomalies: int) -> float:
    """Recall at the threshold with the rejected rows labelled anomalous counted as missed:
    a row never scored is an anomaly nobody was told of."""
    found = round(result.recall * result.n_anomalies)
    return float(found / (result.n_anomalies + rejected_anomalies))


def _group_order(item: tuple[str, Any]) -> tuple[int, float, str]:
    """Groups named by numbers in their numbers' order (2 before 10), then the others."""
    try:
        return (0, float(item[0]), item[0])
    except ValueError:
        return (1, 0.0, item[0])
