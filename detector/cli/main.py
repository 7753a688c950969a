"""The ``anomaly`` command line: train, score, evaluate, info, threshold, sample. This module
parses the arguments and maps errors to exit codes; the commands' bodies are
``detector.cli.commands`` and ``detector.cli.train``, ``_score`` and ``_evaluate``.

Exit codes: 0 success; 2 bad usage or bad input, or input too large for memory (the message
names the fix); 1 an internal error, or a write the system refused midway (a full disk).
Heavy imports (TensorFlow) happen inside the commands, so ``anomaly --help`` answers at once.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from detector import __version__
from detector.cli.commands import cmd_info, cmd_sample, cmd_threshold
from detector.cli.evaluate import cmd_evaluate
from detector.cli.score import cmd_score
from detector.cli.train import check_input_width, cmd_train
from detector.errors import DetectorError
from detector.io.tables import DEFAULT_MAX_ROWS
from detector.native import import_tensorflow_quietly
from detector.nn.option_specs import training_options
from detector.nn.options import MODEL_OPTIONS, describe, share

#: The names ``--model`` takes: ``detector.nn.options``'s registry, which needs no TensorFlow import
#: (a test keeps it equal to ``detector.nn.models.MODELS``).
MODEL_NAMES = tuple(MODEL_OPTIONS)

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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a detector on normal records",
        description="Train a detector on a CSV/Parquet of normal records and write a model "
        "bundle (a directory). Rows labelled anomalous in --label-column are left out.",
    )
    train.add_argument(
        "data", help="training data: .csv, .tsv, .jsonl or .parquet (.gz too) with a header"
    )
    train.add_argument("--out", required=True, help="bundle directory to write (replaced)")
    train.add_argument(
        "--label-column",
        help="a label column, dropped: rows labelled anomalous (1, or text with --anomaly-value "
        "or --normal-value) are left out",
    )
    _add_label_values(train)
    train.add_argument(
        "--ignore-column",
        action="append",
        default=[],
        metavar="COL",
        help="a column to leave out of the model, e.g. an id or timestamp (repeatable)",
    )
    train.add_argument(
        "--max-rows",
        type=_max_rows,
        default=DEFAULT_MAX_ROWS,
        metavar="N",
        help=f"train on a uniform sample of N rows (seeded by --seed) of a table of more, read "
        f"in chunks so memory stays the sample's; 0: every row (default {DEFAULT_MAX_ROWS:,}; a "
        "series model, --time-column, keeps whole series, chosen by a seeded hash of their "
        "keys, within N rows, the one that straddles N its most recent rows)",
    )
    _add_training_flags(train)
    _add_encoding_flag(train, refused="training refuses a file with text that does not decode")
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
    # The data's width is told from its header before TensorFlow's import (see run), which
    # cmd_train makes itself once the data is read: its first lines waited ~20 s for it.
    train.set_defaults(handler=cmd_train, check_input=check_input_width, tensorflow_later=True)

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
        help="records: .csv, .tsv, .jsonl or .parquet files (.gz too), directories of them, "
        "glob patterns ('exports/*.csv.gz'), or '-' for CSV or JSON Lines on stdin",
    )
    score.add_argument(
        "--output",
        required=True,
        help="output .csv, .tsv, .jsonl or .parquet (.gz too), written atomically (with --engine "
        "spark: a directory of part files); - for stdout, chunk by chunk",
    )
    score.add_argument(
        "--rejects",
        help="rejects file (default: OUTPUT.rejects.csv; with --output -, stderr); - for stdout",
    )
    score.add_argument(
        "--output-format",
        choices=("csv", "jsonl"),
        help="the format written to stdout and stderr (--output -, --rejects -): csv "
        "(default) or jsonl, one JSON object a line",
    )
    _add_scoring_flags(score)
    score.add_argument(
        "--top-k", type=_count, default=3, help="top contributing columns (default 3; 0: none)"
    )
    score.add_argument(
        "--max-reject-rate",
        type=_rate,
        metavar="RATE",
        help="fail (exit 2, no output written) when more than this share of rows is "
        "rejected, e.g. 0.01 or 1%% (default: fail only when every row is; 1: never)",
    )
    score.add_argument(
        "--escape-formulas",
        action="store_true",
        help="in a CSV or TSV output and rejects file, write each text cell that a spreadsheet "
        "runs as a formula (one beginning with =, +, -, @, a tab or a carriage return, e.g. "
        "=HYPERLINK(...)) with a leading apostrophe ('); numbers such as -5 stay as they are, "
        "and JSON Lines and Parquet are written as read (default: every cell as read, and the "
        "summary counts such cells)",
    )
    score.add_argument(
        "--engine",
        choices=["stream", "spark"],
        default="stream",
        help="stream (default): one process, chunk by chunk; spark: a Spark job (pip install "
        "'anomaly-detector[spark]'), for inputs beyond one machine",
    )
    _add_output_flags(score)
    # Scoring runs the bundle's LiteRT graph; TensorFlow is imported only for the Spark
    # engine and for bundles written before LiteRT (see cmd_score).
    score.set_defaults(handler=cmd_score, needs_tensorflow=False)

    evaluate = commands.add_parser(
        "evaluate",
        help="measure detection quality on labelled records",
        description="Score a labelled file and report AUROC, AUPRC, precision, recall and F1 at "
        "the bundle's threshold, and the best F1 over all thresholds.",
    )
    evaluate.add_argument("model", help="model bundle directory")
    evaluate.add_argument(
        "input", help="labelled records: .csv, .tsv, .jsonl or .parquet (.gz too)"
    )
    evaluate.add_argument(
        "--label-column",
        required=True,
        help="the label column: 0/1 (1 = anomaly), or text with --anomaly-value or --normal-value",
    )
    _add_label_values(evaluate)
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
    # Neither reads the network: TensorFlow's import was most of their time.
    info.set_defaults(handler=cmd_info, needs_tensorflow=False)

    threshold = commands.add_parser(
        "threshold",
        help="change a bundle's target false-positive rate",
        description="Recompute the threshold for a new target false-positive rate from the "
        "bundle's held-out calibration scores; no retraining. Rates below what the held-out "
        "sample resolves use its generalized-Pareto tail fit.",
    )
    threshold.add_argument("model", help="model bundle directory")
    threshold.add_argument(
        "--fpr", type=share, required=True, help="target rate, e.g. 0.001 or 0.1%%"
    )
    _add_output_flags(threshold)
    threshold.set_defaults(handler=cmd_threshold, needs_tensorflow=False)
    sample = commands.add_parser(
        "sample",
        help="draw synthetic records from a model",
        description="Draw records from the model's generative distribution: a latent code from "
        "the N(0, I) prior, then every column from the decoder's distribution (a Gaussian per "
        "numeric column, the softmax over the known categories per categorical one), in the "
        "training columns' order and units, each number clipped to the range its column "
        "spanned in training (a count never below 0). Shows what the network learned; the default "
        "score (knn) judges records against training rows, and flags most of these draws.",
    )
    sample.add_argument("model", help="model bundle directory")
    sample.add_argument(
        "-n", "--records", dest="n", type=int, required=True, help="how many records to draw"
    )
    sample.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--output",
        help=".csv, .tsv, .jsonl (any .gz) or .parquet, written atomically (default: CSV on "
        "stdout)",
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


def _add_training_flags(train: argparse.ArgumentParser) -> None:
    """A flag for every training option that has one (``detector.nn.options``): the options every
    model takes, then each model's own in a group of its own."""
    groups: dict[str | None, Any] = {None: train.add_argument_group("training options")}
    for model, options in MODEL_OPTIONS.items():
        if fields(options):
            groups[model] = train.add_argument_group(f"--model {model} ({describe(model)})")
    for o in training_options():
        if o.flag is None:
            continue
        text = o.help.replace("%", "%%")
        if o.many:
            groups[o.model].add_argument(
                o.flag, action="append", default=[], metavar=o.metavar, help=text
            )
        elif o.switch:
            groups[o.model].add_argument(o.flag, action="store_true", help=text)
        else:
            groups[o.model].add_argument(
                o.flag,
                type=o.kind,
                default=o.default,
                choices=o.choices,
                metavar=o.metavar,
                help=text,
            )


def _max_rows(text: str) -> int:
    from detector.features.schema import MIN_TRAINING_ROWS

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text} is not a number of rows; give a whole number, or 0 to train on every row"
        )
    if 0 < value < MIN_TRAINING_ROWS:
        # Sampled to 10, the table was refused after reading as "has 10 rows", unsaid why.
        raise argparse.ArgumentTypeError(
            f"{text} rows are too few to train on (a model needs at least {MIN_TRAINING_ROWS}); "
            "give more, or 0 to train on every row"
        )
    return value


def _add_encoding_flag(
    parser: argparse.ArgumentParser,
    refused: str = "a row that does not decode in it is rejected, with its reason",
) -> None:
    parser.add_argument(
        "--encoding",
        type=_encoding,
        metavar="NAME",
        help="the text encoding of CSV, TSV and JSON Lines inputs, as Python names it: cp1252 "
        "(Windows Western Europe: Excel's 'CSV' in Europe), latin-1, utf-16 (with a byte-order "
        f"mark)... (default: UTF-8, a byte-order mark skipped); {refused}",
    )


def _encoding(text: str) -> str | None:
    from detector.errors import ConfigError
    from detector.io.transcode import encoding_name

    try:
        return encoding_name(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_scoring_flags(parser: argparse.ArgumentParser) -> None:
    _add_encoding_flag(parser)
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
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=65_536,
        help="at most this many rows per chunk (fewer for wide encodings, to bound memory)",
    )
    parser.add_argument(
        "--max-ahead-seconds",
        type=_seconds_or_none,
        default=3600.0,
        metavar="SECONDS",
        help="series models: reject a row stamped more than this after this machine's clock "
        "(default 3600; 'none': never), so that one wrong clock does not make the rest of its "
        "series late",
    )
    parser.add_argument(
        "--max-series",
        type=_positive_count,
        default=1_000_000,
        metavar="N",
        help="series models: keep the last rows of at most N series (default 1,000,000, about "
        "1 KB each at 4 metrics); past it the least recently seen is forgotten and warms up "
        "again if it comes back",
    )


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _key_value(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not column.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not COLUMN=VALUE")
    return column.strip(), value.strip()


def _seconds_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds or 'none'") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        below = "negative" if least == 0 else f"less than {least}"
        raise argparse.ArgumentTypeError(f"{text} is {below}; give {least} or more")
    return value


def _count(text: str) -> int:
    return _whole_number(text, 0)


def _positive_count(text: str) -> int:
    return _whole_number(text, 1)


def _seed(text: str) -> int:
    value = _count(text)
    if value >= 2**32:  # what numpy takes
        raise argparse.ArgumentTypeError(f"{text} is over 2**32 - 1; give a smaller seed")
    return value


def _rate(text: str) -> float:
    value = share(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a rate between 0 and 1")
    return value


#: What the system, not this tool, refused while a command wrote its output, and what to do.
#: A path that cannot be written at all is refused before any work (``check_writable``);
#: these come later, mid-write, and the command's clean-up has removed what it wrote.
_SYSTEM_FIXES = {
    errno.ENOSPC: "free space on that disk, or write to another one",
    errno.EDQUOT: "free space within your quota, or write to another disk",
    errno.EFBIG: "",  # what to write instead depends on the file (_size_limit_fix)
    errno.EROFS: "write to another file system",
    # Checked before any work where the tool can (check_writable), but root is allowed by
    # the mode bits and refused by an immutable flag, and `threshold` rewrites a bundle in place.
    errno.EACCES: "make it writable for this user, or write elsewhere (copy a bundle first)",
    errno.EPERM: "make it writable for this user, or write elsewhere (copy a bundle first)",
}


#: What to make smaller when a command runs out of memory: what grows with its input.
_MEMORY_FIXES = {
    "train": (
        f"train on a smaller sample of the rows (--max-rows N, default {DEFAULT_MAX_ROWS:,}; a "
        "series model keeps fewer whole series), or on fewer columns "
        "(--ignore-column COL, or a file of fewer columns)"
    ),
    "score": "lower --chunk-rows (default 65536; e.g. 8192), and for a series model --max-series",
    "evaluate": "evaluate a sample of the rows, or lower --chunk-rows",
}
_MEMORY_FIX = "free memory (stop other programs), or run it on a machine with more"


def _add_label_values(parser: argparse.ArgumentParser) -> None:
    """``--anomaly-value`` / ``--normal-value``: how a text label column is read."""
    text_labels = parser.add_mutually_exclusive_group()
    text_labels.add_argument(
        "--anomaly-value",
        action="append",
        metavar="VALUE",
        help="a label value that means anomaly, for text labels such as 'smurf.' "
        "(repeatable); every other value is normal (an empty label is refused)",
    )
    text_labels.add_argument(
        "--normal-value",
        action="append",
        metavar="VALUE",
        help="a label value that means normal, for text labels such as KDD Cup 99's "
        "'normal.' (repeatable); every other value is an anomaly (an empty label is refused)",
    )


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command's handler, mapping errors to exit codes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if option := _given_double_dash(argv):
        parser.error(
            f"argument {option}: '--' is not a value (it ends the options); give the value "
            f"after the option, e.g. {option} VALUE, and write a file named -- as ./--"
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "needs_tensorflow", True) or args.command == "serve":
        # TensorFlow's import, and a server's run folder, need one: a traceback otherwise.
        try:
            tempfile.gettempdir()
        except FileNotFoundError:
            print(
                "error: no writable temporary folder (TMPDIR, /tmp, /var/tmp and the working "
                "directory were tried): set TMPDIR to a folder this user can write to",
                file=sys.stderr,
            )
            return 2
    if getattr(args, "needs_tensorflow", True) and (missing := _refused_input(args)):
        # Before TensorFlow's import: a mistyped path cost 9 s and 0.8 GB to be told.
        from detector.wording import printable_message

        print(f"error: {printable_message(str(missing))}", file=sys.stderr)
        return missing.exit_code
    later = getattr(args, "tensorflow_later", False)  # the command imports it itself
    if not args.debug and getattr(args, "needs_tensorflow", True) and not later:
        import_tensorflow_quietly()
    from detector.errors import DetectorError
    from detector.wording import printable_message, speaking_to

    try:
        with speaking_to("cli"):  # messages name flags, not Python parameters
            return int(args.handler(args))
    except DetectorError as exc:
        print(f"error: {printable_message(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as stop:
        # Ctrl-C is how a stream to stdout ends (`tail -f x.csv | anomaly score m - --output -`)
        if "-" in (getattr(args, "output", ""), getattr(args, "rejects", "")) or (
            args.command == "sample" and args.output is None
        ):
            print("interrupted; stdout holds the rows written so far", file=sys.stderr)
        else:
            print("interrupted; no output was written", file=sys.stderr)
        # 128 + the signal, as a shell reports it: SIGTERM's 143 (a stop by kill, systemd or
        # Kubernetes) was 130, Ctrl-C's.
        return 128 + getattr(stop, "signum", signal.SIGINT)
    except BrokenPipeError:
        # The reader of stdout left (``anomaly sample | head``): stop as a shell tool does on
        # SIGPIPE, with 128 + 13 and no traceback; stdout is pointed at /dev/null first, or the
        # interpreter's last flush would fail again on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except MemoryError as exc:
        if args.debug:
            raise
        # Too much input for this machine, not a fault to report: say what to make smaller.
        what = f" ({exc})" if str(exc) else ""
        smaller = _MEMORY_FIXES.get(args.command, _MEMORY_FIX)
        print(f"error: anomaly {args.command} ran out of memory{what}: {smaller}", file=sys.stderr)
        return 2
    except OSError as exc:
        fix = _SYSTEM_FIXES.get(exc.errno or 0)
        if fix is None or args.debug:
            raise
        if exc.errno in (errno.EACCES, errno.EPERM) and _unreadable(exc.filename):
            fix = "make it readable for this user (its mode, or its owner's)"  # not writable
        if exc.errno == errno.EFBIG:
            fix = _size_limit_fix(args, exc.filename)
        where = f" ({exc.filename})" if exc.filename else ""
        # Only of a command that writes: `anomaly info` on a bundle it may not read said so.
        nothing = "; no output was written" if _writes(args) else ""
        if not exc.filename and _on_stdout(args):
            # Standard output redirected to a full disk: it holds what was written before, which
            # "no output was written" denied.
            where = " (standard output)"
            nothing = "; standard output holds the rows written so far, not a whole run"
        print(f"error: {exc.strerror}{where}: {fix}{nothing}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return 1


def _given_double_dash(argv: Sequence[str]) -> str | None:
    """The first option given ``--`` as its value (``--fpr=--``, ``-n--``), if any: Python
    3.11's argparse reads that value as an empty list, which reached the commands (``threshold
    --fpr=--`` ended in an internal TypeError). Given apart (``--fpr --``), ``--`` ends the
    options, and argparse itself says the option wants a value."""
    for token in argv:
        if token == "--":  # what follows are positional values, any text
            return None
        if token.startswith("--") and token.partition("=")[2] == "--":
            return token.partition("=")[0]
        if token[:1] == "-" and token[1:2] not in ("", "-") and token[2:] in ("--", "=--"):
            return token[:2]
    return None


def _refused_input(args: argparse.Namespace) -> DetectorError | None:
    """What is wrong with the command's input that can be told before anything heavy runs:
    its path (``_missing_input``), then what the command checks of it (``check_input``:
    ``train``'s width, from the header)."""
    from detector.wording import speaking_to

    missing = _missing_input(args)
    check = getattr(args, "check_input", None)
    if missing is not None or check is None:
        return missing
    try:
        with speaking_to("cli"):
            check(args)
    except DetectorError as exc:
        return exc
    return None


def _missing_input(args: argparse.Namespace) -> DetectorError | None:
    """What is wrong with the command's input path (``train DATA``, ``evaluate MODEL INPUT``),
    told before anything heavy runs; ``None`` where it names files (the command reads them)."""
    from detector.io.tables import expand_inputs

    for name in ("data", "input"):
        value = getattr(args, name, None)
        if isinstance(value, str):
            try:
                expand_inputs([value])
            except DetectorError as exc:
                return exc
    return None


def _on_stdout(args: argparse.Namespace) -> bool:
    """Whether the command writes its rows to standard output (``--output -``; ``sample``
    without ``--output``)."""
    output = getattr(args, "output", None)
    return output == "-" or (args.command == "sample" and output is None)


def _size_limit_fix(args: argparse.Namespace, filename: object) -> str:
    """What to do when the file size limit (``ulimit -f``) refused ``filename``: a smaller
    output's formats are the fix for scored rows alone; a bundle, its manifest or a report has
    no smaller form, and "write a smaller output (.csv.gz or .parquet)" was said of them too."""
    limit = "the file passed this system's size limit (ulimit -f); raise it"
    written = os.fspath(filename) if isinstance(filename, str | os.PathLike) else ""
    if written and written == getattr(args, "report", None):
        return f"{limit}, or leave out --report (the metrics are printed above)"
    if args.command == "train":
        return f"{limit} (a bundle is written whole), then train again"
    if args.command == "threshold":
        return f"{limit}: the bundle's manifest is rewritten whole"
    return f"{limit}, or write a smaller output (.csv.gz or .parquet)"


def _writes(args: argparse.Namespace) -> bool:
    """Whether the command run writes a file: training, scoring, a threshold, or an output or
    report asked for."""
    asked = getattr(args, "output", None) or getattr(args, "report", None)
    return args.command in ("train", "score", "threshold") or bool(asked)


def _unreadable(path: object) -> bool:
    """Whether ``path`` names something this user cannot read (a bundle of another user's,
    written under umask 077): the fix is its mode, where a write's is another place."""
    if not isinstance(path, str | bytes | os.PathLike):
        return False
    target = Path(os.fsdecode(path))
    folder = target if target.is_dir() else target.parent
    return not os.access(folder, os.R_OK | os.X_OK) or (
        target.is_file() and not os.access(target, os.R_OK)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The library's commands alone; the installed ``anomaly`` adds ``serve`` (service.cli)."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
