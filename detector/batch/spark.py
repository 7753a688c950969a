"""Scoring files with Spark, for inputs beyond one machine
(``pip install 'anomaly-detector[spark]'``).

``score_files`` is ``anomaly score --engine spark``: read CSV/Parquet files or directories,
score, write the scored rows and the rejects as directories of part files, and return the
ledger. Run it on a cluster with ``spark-submit`` and the command-line module as the script
(``spark-submit .../detector/cli/main.py score MODEL INPUT --output OUT --engine spark``), so that
this module never imports the command line that imports it.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from detector.batch.ledger import BatchReport, SourceLedger, check_reject_rate
from detector.batch.spark_scoring import (
    CORRUPT_RECORD,
    PANDAS_WARNING,
    SOURCE_FILE,
    category_spelling,
    score_dataframe,
)
from detector.bundles.bundle import Bundle, load_bundle
from detector.errors import ConfigError, DataError, NotTextError, SchemaError
from detector.features.encode import Imputation, check_columns
from detector.io.frames import PANDAS_INDEX
from detector.io.tables import (
    JSON_LINES_SUFFIXES,
    NULL_VALUES,
    check_names,
    csv_delimiter,
    expand_inputs,
    input_format,
    table_format,
)
from detector.io.temporaries import (
    check_rejects_target,
    check_writable,
    partial_path,
    remove_stale_temporaries,
    staging_path,
)
from detector.io.transcode import encoding_fix, read_as
from detector.scoring.output_columns import (
    CONTEXT_COLUMN,
    REJECT_CODE,
    REJECT_REASON,
    SCORE_COLUMNS,
    WARMING_COLUMN,
)
from detector.series.windows import DEFAULT_MAX_AHEAD_SECONDS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def require_pyspark() -> None:
    """Raise ``ConfigError`` with the fix when pyspark or Java is missing."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", PANDAS_WARNING, FutureWarning)
            import pyspark.sql  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--engine spark needs pyspark: pip install 'anomaly-detector[spark]'"
        ) from None
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ConfigError("--engine spark needs Java 17 or later on PATH (or JAVA_HOME set)")


def spark_session(app_name: str = "anomaly score") -> SparkSession:
    """The active Spark session, or a new one: under ``spark-submit`` its master and settings
    apply; run directly, a local one on every core with this interpreter as the workers'."""
    require_pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The Python workers, started by the JVM with this environment, import pyspark's pandas
    # helpers too, and printed the same warning on every run that reached them.
    quiet = f"ignore:{PANDAS_WARNING}:FutureWarning"
    if quiet not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(
            filter(None, [os.environ.get("PYTHONWARNINGS"), quiet])
        )
    builder = SparkSession.builder.appName(app_name)
    # spark-submit starts the JVM first and tells Python where it is; then its --master and
    # --conf settings apply. Otherwise this is a local run.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = (
            builder.master("local[*]")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            # Parquet timestamps as instants (UTC), as the local engine writes them, not INT96,
            # which readers take for zone-less times.
            .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        )
    with warnings.catch_warnings():
        # Starting the context imports pyspark's own test helpers, which warn on pandas 3
        # (tested here) into the user's console, as the import in ``require_pyspark`` would.
        warnings.filterwarnings("ignore", PANDAS_WARNING, FutureWarning)
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def score_files(
    model: str,
    inputs: Sequence[str],
    output: str,
    *,
    keep_columns: Sequence[str] = (),
    impute: Imputation = None,
    rejects_path: str | None = None,
    top_k: int = 3,
    max_reject_rate: float | None = None,
    max_ahead_seconds: float | None = DEFAULT_MAX_AHEAD_SECONDS,
    shared: bool = False,
    encoding: str | None = None,
    session: SparkSession | None = None,
) -> BatchReport:
    """``anomaly score --engine spark``: score CSV or Parquet files (paths, directories, globs;
    local or any URI Spark reads) into ``output``, a directory of part files (Parquet when it
    ends in ``.parquet``, else CSV with a header), and the rejects into ``rejects_path``
    (default ``OUTPUT.rejects``, CSV part files: row and line are empty, as Spark does not
    track them; source, code, reason and raw are set). ``encoding``: the CSV files' text
    encoding as Python names it (``transcode.encoding_name``), where not UTF-8."""
    started = time.perf_counter()
    check_line_encoding(encoding)
    require_pyspark()
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if output.rstrip("/").lower().endswith(".parquet.gz"):
        # Written as a folder of gzipped CSV parts before: Parquet compresses its own pages.
        raise ConfigError(
            f"--output {output}: Parquet is compressed inside its files; name it .parquet"
        )
    if output.rstrip("/").lower().endswith(JSON_LINES_SUFFIXES):
        raise DataError(
            f"--engine spark writes a folder of CSV or Parquet part files, not JSON Lines "
            f"({output}); name the output .parquet or a folder, or score with the default engine"
        )
    bundle = load_bundle(model)
    rejects_dir = rejects_path or f"{output.rstrip('/')}.rejects"
    for target in (output, rejects_dir):
        if "://" not in target:
            check_writable(target.rstrip("/"), folder=True)
    if "://" not in rejects_dir and "://" not in output:
        check_rejects_target(rejects_dir.rstrip("/"), output.rstrip("/"), [])
    paths = _spark_paths(inputs)
    if table_format(paths[0].rstrip("/*")) != "parquet":
        _check_csv_orders(paths, encoding)
    for flag, target in (("--output", output), ("--rejects", rejects_dir)):
        _check_not_over_inputs(flag, target, paths)
        _check_replaceable(flag, target)
    spark = session or spark_session()
    fmt = table_format(paths[0].rstrip("/*"))
    if fmt == "parquet":
        _check_parquet_columns(bundle, paths, keep_columns)
    charset = None if fmt == "parquet" else _java_charset(spark, encoding)
    # Times written (and rejects' reasons) in UTC, as the default engine writes them, whatever
    # zone the machine's clock is set to: Spark's session zone is the JVM's by default.
    settings: dict[str, str | None] = {"spark.sql.session.timeZone": "UTC"}
    if charset is not None and charset.lower() not in _SPARK_CHARSETS:
        settings["spark.sql.legacy.javaCharsets"] = "true"
    # For this run only: a caller's own session kept them after it (Java's legacy charsets
    # left allowed for its every later read, its zone moved to UTC).
    earlier = _set_for_run(spark, settings)
    scored = None
    staged: dict[str, Path | None] = {}  # target: its part files written beside it
    try:
        if fmt == "parquet":
            frame = spark.read.parquet(*paths)
        else:  # kept columns the model does not read are written as they came ('NA' too)
            exact = [c for c in keep_columns if c not in bundle.input_columns]
            frame = _read_csv(spark, paths, exact, charset, encoding)
        frame = frame.withColumn(SOURCE_FILE, F.input_file_name())
        absent = [c for c in keep_columns if c not in frame.columns]
        if absent:
            raise SchemaError(
                f"--keep-column {absent} not in the input; its columns are {frame.columns}"
            )
        scored = score_dataframe(
            frame,
            model,
            keep_columns=keep_columns,
            impute=impute,
            top_k=top_k,
            shared=shared,
            max_ahead_seconds=max_ahead_seconds,
            respelled=True,
            encoding=None if fmt == "parquet" else encoding,
            decoded=fmt != "parquet",
        ).persist(StorageLevel.MEMORY_AND_DISK)
        ledger = (
            scored.groupBy(SOURCE_FILE)
            .agg(
                F.count(F.lit(1)).alias("read"),
                F.count(F.when(F.col(REJECT_CODE).isNull(), 1)).alias("scored"),
                F.count(F.when(F.col("is_anomaly"), 1)).alias("anomalies"),
            )
            .orderBy(SOURCE_FILE)
            .collect()
        )
        files = tuple(
            SourceLedger(r[SOURCE_FILE], r["read"], r["scored"], r["read"] - r["scored"])
            for r in ledger
        )
        read = sum(f.rows_read for f in files)
        rejected = sum(f.rows_rejected for f in files)
        rejects_target = rejects_path or f"{output.rstrip('/')}.rejects"
        codes = {}
        if rejected:
            counted = scored.where(F.col(REJECT_CODE).isNotNull()).groupBy(REJECT_CODE).count()
            codes = {r[REJECT_CODE]: int(r["count"]) for r in counted.collect()}
        report = BatchReport(
            input=" ".join(inputs),
            output=output,
            rejects=rejects_target if rejected else None,
            rows_read=read,
            rows_scored=read - rejected,
            rows_rejected=rejected,
            anomalies=sum(int(r["anomalies"]) for r in ledger),
            threshold=bundle.calibrator.threshold,
            model_version=bundle.version,
            files=files,
            engine="spark",
            encoding=encoding,
            rejected_by_code=dict(sorted(codes.items(), key=lambda item: -item[1])),
            category_spelling=category_spelling(scored),
        )
        if read == 0:
            raise DataError(f"{' '.join(inputs)} holds no data rows; nothing to score")
        data_columns = [c for c in frame.columns if c not in (CORRUPT_RECORD, SOURCE_FILE)]
        if rejected:
            raw = F.coalesce(
                F.col(CORRUPT_RECORD) if CORRUPT_RECORD in frame.columns else F.lit(None),
                F.to_json(F.struct(*data_columns)),
            )
            rejects = scored.where(F.col(REJECT_CODE).isNotNull()).select(
                F.lit(None).cast("long").alias("row"),
                F.col(SOURCE_FILE).alias("source"),
                F.lit(None).cast("long").alias("line"),
                F.col(REJECT_CODE).alias("code"),
                F.col(REJECT_REASON).alias("reason"),
                raw.alias("raw"),
            )
            staged[rejects_target] = _write_staged(rejects, rejects_target, "csv")
        try:
            check_reject_rate(report, max_reject_rate)
        except DataError:
            _into_place(rejects_target, staged.pop(rejects_target, None))  # they explain it
            raise
        k = min(top_k, len(bundle.schema.scored_columns))
        out_columns = [
            *data_columns,
            *SCORE_COLUMNS,
            *([CONTEXT_COLUMN] if bundle.schema.context else []),
            *([WARMING_COLUMN] if bundle.series else []),
            *(f"top_feature_{j + 1}" for j in range(k)),
        ]
        good = scored.where(F.col(REJECT_CODE).isNull()).select(*out_columns)
        parquet = output.rstrip("/").endswith(".parquet")
        if parquet:  # numbers as numbers, as the streaming engine writes Parquet
            for col in bundle.schema.numeric:
                if col.name in data_columns:  # a series model's window columns are not
                    good = good.withColumn(col.name, F.col(col.name).cast("double"))
        staged[output] = _write_staged(good, output, "parquet" if parquet else "csv")
        # Both written before either is in place, as the default engine does: a disk that
        # filled on the scores left the rejects in place without them.
        if not rejected and "://" not in rejects_target and Path(rejects_target).is_dir():
            # An earlier run's rejects there would pass for this run's, which rejected none.
            shutil.rmtree(rejects_target)
        for target in list(staged):
            _into_place(target, staged.pop(target))
    finally:
        for staging in staged.values():  # a write that failed: nothing of it is left
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        if scored is not None:
            scored.unpersist()
        _set_for_run(spark, earlier)
    return replace(report, seconds=time.perf_counter() - started)


def _set_for_run(spark: SparkSession, settings: dict[str, str | None]) -> dict[str, str | None]:
    """Set ``settings`` in the session (``None``: unset), returning what they were, to be set
    back the same way once the run is done."""
    held = spark.conf.getAll  # only what is set: a setting left at its default is not there
    earlier = {key: held.get(key) for key in settings}
    for key, value in settings.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)
    return earlier


def spark_refusal(exc: BaseException) -> str | None:
    """What Spark said when it could not read or plan on the input (a footer it cannot read,
    files whose headers or types disagree, nanosecond Parquet times), in one line; ``None``
    for anything else, a failure of this package's own code on the workers included."""
    try:
        from py4j.protocol import Py4JJavaError
        from pyspark.errors import AnalysisException, PythonException
    except ImportError:  # no pyspark: what failed is the install, said by require_pyspark
        return None
    if isinstance(exc, PythonException) or not isinstance(exc, AnalysisException | Py4JJavaError):
        return None
    said = exc.java_exception.toString() if isinstance(exc, Py4JJavaError) else str(exc)
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:400]


#: What a folder Spark wrote holds: its part files, its commit markers and their checksums.
_SPARK_OUTPUT_NAMES = ("part-", "_SUCCESS", "_committed_", "_started_", ".part-", "._SUCCESS")


def _check_replaceable(flag: str, target: str) -> None:
    """A local folder is replaced whole once the run is written: only an empty one or one an
    earlier Spark run wrote. A folder of other files given as --output or --rejects was
    deleted with them, even by a run that rejected nothing."""
    if "://" in target:
        return
    folder = Path(target.rstrip("/"))
    if not folder.is_dir():
        return
    others = [p.name for p in folder.iterdir() if not p.name.startswith(_SPARK_OUTPUT_NAMES)]
    if others:
        raise ConfigError(
            f"{flag} {target} is a folder holding files Spark did not write (e.g. "
            f"{sorted(others)[0]!r}): writing it replaces the folder whole, and they would be "
            f"lost; name a new folder, or one an earlier --engine spark run wrote"
        )


def _check_not_over_inputs(flag: str, target: str, paths: Sequence[str]) -> None:
    """A local output folder must hold none of the inputs: the folder is replaced whole once
    the run is written, and the data in it would be lost."""
    if "://" in target:
        return
    folder = Path(target.rstrip("/")).resolve()
    for path in paths:
        if "://" in path:
            continue
        resolved = Path(path.rstrip("/*")).resolve()
        if resolved == folder or folder in resolved.parents:
            raise ConfigError(
                f"{flag} {target} holds the input {path}: writing it replaces the folder whole, "
                f"and the data would be lost; name another folder for {flag}"
            )


def _spark_paths(inputs: Sequence[str]) -> list[str]:
    """Local inputs expanded as the streaming engine does (and checked to exist); URIs such
    as ``hdfs://`` or ``s3a://`` passed to Spark as given."""
    local = [p for p in inputs if "://" not in p]
    if "-" in local:
        raise ConfigError("--engine spark cannot read stdin; give files or directories")
    paths = [os.path.abspath(p) for p in expand_inputs(local)] if local else []
    paths += [p for p in inputs if "://" in p]
    json_lines = [p for p in paths if _is_json_lines(p)]
    if json_lines:
        raise DataError(
            f"--engine spark reads CSV and Parquet, not JSON Lines ({json_lines[0]}); score "
            "JSON Lines with the default engine, or convert them to Parquet first"
        )
    formats = {table_format(p.rstrip("/*")) for p in paths}
    if len(formats) > 1:
        raise DataError("--engine spark reads one format per run: give CSV or Parquet files")
    return paths


def _check_csv_orders(paths: Sequence[str], encoding: str | None = None) -> None:
    """Each local CSV file's columns in the first one's order: Spark reads every file with the
    first one's header, so a file of the same columns in another order stopped the run after
    17 s of Java trace ("CSV header does not conform to the schema"). A header that is not
    text in ``encoding`` is refused as the default engine refuses it: Spark checks only the
    first file's, and a later one's ended in "[FAILED_READ_FILE.NO_HINT] ... b.csv"."""
    from detector.io.sources import open_source

    first: tuple[str, ...] | None = None
    for path in paths:
        if "://" in path:
            continue
        try:
            with open_source(path, encoding=encoding) as source:
                names = tuple(n.strip() for n in source.columns)
        except NotTextError:
            raise
        except DataError:
            continue  # an empty or unreadable file: Spark's reading says so
        if first is None:
            first, named = names, path
        elif names != first and sorted(names) == sorted(first):
            raise DataError(
                f"{path} holds the columns of {named} in another order; Spark reads every CSV "
                "file by the first one's header: write them in one order, or score without "
                "--engine spark (the default engine takes each file's own order)"
            )


def _check_parquet_columns(bundle: Bundle, paths: Sequence[str], kept: Sequence[str]) -> None:
    """Each local Parquet file's columns, as the default engine checks them: Spark reads a
    folder with its first file's columns, so a file lacking a model column had every row
    rejected (exit 0), and one with another column had it dropped without a word."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in paths:
        if "://" in path:
            continue
        try:
            names = pq.read_schema(path).names
        except (OSError, pa.ArrowException):
            continue  # unreadable: Spark's own message says so (spark_refusal)
        names = [n for n in names if not PANDAS_INDEX.fullmatch(n)]
        try:
            check_columns(bundle.schema, names, passthrough=kept, expected=bundle.input_columns)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from None


def _is_json_lines(path: str) -> bool:
    if "://" in path:
        return path.rstrip("/*").lower().endswith(JSON_LINES_SUFFIXES)
    return input_format(path) == "jsonl"


def check_line_encoding(encoding: str | None) -> None:
    """``ConfigError`` where ``encoding`` writes a newline or a comma in other bytes than
    ASCII's (UTF-16, UTF-32): Spark splits a file into records at newline bytes before it
    decodes them, and read such a file as garbled, broken rows."""
    if encoding is not None and "\n,".encode(encoding) != b"\n,":
        raise ConfigError(
            f"--encoding {encoding} is not available with --engine spark, which splits files "
            f"at newline bytes before decoding them, and {encoding} writes a newline in other "
            f"bytes: convert the files once (iconv -f {encoding} -t utf-8 IN > OUT), or score "
            "without --engine spark"
        )


def _java_charset(spark: SparkSession, encoding: str | None) -> str | None:
    """The Java charset Spark decodes ``encoding`` (Python's name) with, ``None`` for UTF-8;
    ``ConfigError`` where Java has none of that name. Spark takes only a few charsets unless
    ``spark.sql.legacy.javaCharsets`` is set (Windows-1252, Excel's CSV in Western Europe,
    is not among them): ``score_files`` sets it for its run where the charset needs it."""
    if encoding is None:
        return None
    charset = spark.sparkContext._jvm.java.nio.charset.Charset  # type: ignore[union-attr]
    if not charset.isSupported(encoding):
        raise ConfigError(
            f"--encoding {encoding} is not available with --engine spark: Spark decodes with "
            f"Java's charsets, which have none of that name: convert the files once (iconv -f "
            f"{encoding} -t utf-8 IN > OUT), or score without --engine spark"
        )
    return str(charset.forName(encoding).name())


#: The charsets Spark's CSV reader takes without ``spark.sql.legacy.javaCharsets``.
_SPARK_CHARSETS = ("iso-8859-1", "us-ascii", "utf-16", "utf-16be", "utf-16le", "utf-32", "utf-8")


def _read_csv(
    spark: SparkSession,
    paths: list[str],
    exact: Sequence[str] = (),
    charset: str | None = None,
    encoding: str | None = None,
) -> DataFrame:
    """The CSV files as text columns (named as the local reader names them) and Spark's
    ``CORRUPT_RECORD``; ``charset``: their Java charset, where not UTF-8 (``encoding``: its
    Python name, as the user gave it)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    # One separator for the run, from the first input's name, as the format is.
    sep = csv_delimiter(paths[0].rstrip("/*"))
    options: dict[str, str | bool] = {
        "header": True,
        "escape": '"',
        "sep": sep,
        "encoding": charset or "UTF-8",
    }
    raw = spark.read.options(**options).csv(paths[0]).columns
    # Named as the local reader names them: stripped of spaces, and checked alike (no header
    # row, another separator, an unnamed or repeated column).
    names = [n.strip() for n in raw]
    if any("\ufffd" in n for n in names):
        # Bytes Spark could not decode, read as U+FFFD: the refusal said "unknown column(s)
        # ['anomaly_k\ufffdnd'] (... keep them with --keep-column 'anomaly_k\ufffdnd')".
        raise DataError(
            f"the header of {paths[0]} is not {read_as(encoding)} text; {encoding_fix(encoding)}"
        )
    check_names(names, paths[0])
    schema = T.StructType(
        [T.StructField(n, T.StringType()) for n in raw]
        + [T.StructField(CORRUPT_RECORD, T.StringType())]
    )
    frame = (
        spark.read.schema(schema)
        .options(**options)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_RECORD)
        # A record per line. Across lines, a stray quote made the rest of its file one
        # "record" (180 of 200 rows gone from the ledger, rows read 20); so a quoted field
        # that spans lines is rejected as malformed here, each of its lines, where the local
        # reader scores it. Files are also split between tasks again.
        .option("multiLine", False)
        .option("enforceSchema", False)
        # No text is null as Spark reads it (its own nullValue is ""): the model's columns
        # take the empty texts below, and the ``exact`` ones keep an empty field as "".
        .option("nullValue", "\u0000")
        .csv(paths)
    )
    # The cells the local reader takes for empty ("nan", "NA", ...; Spark's own option takes
    # one such text): a row is then rejected, or imputed, for the same reason by both engines.
    empty = list(NULL_VALUES)
    # Backquoted: a name such as 'cpu.pct' is a column, not a field of a struct 'cpu'.
    cells = [F.col("`" + r.replace("`", "``") + "`") for r in raw]
    kept = [
        c.alias(n) if n in exact else F.when(c.isin(empty), F.lit(None)).otherwise(c).alias(n)
        for c, n in zip(cells, names, strict=True)
    ]
    return frame.select(*kept, F.col(CORRUPT_RECORD))


def _write_staged(frame: DataFrame, target: str, fmt: str) -> Path | None:
    """Write part files to a temporary sibling of ``target`` and return it, for ``_into_place``
    (local paths); for a URI, written in place and ``None``: Spark's commit protocol
    (``_SUCCESS`` last) is what readers rely on. A write the disk refuses (full, a quota,
    ``ulimit -f``) is an ``OSError`` naming ``target``, and its temporary is removed."""
    from pyspark.sql import functions as F

    if fmt == "csv":
        # Booleans as the streaming engine's CSV writes them (True/False, as pandas does).
        for field in frame.schema.fields:
            if field.dataType.typeName() == "boolean":
                text = F.when(F.col(field.name), "True").when(~F.col(field.name), "False")
                frame = frame.withColumn(field.name, text)
    writer = frame.write.mode("overwrite")
    if fmt == "csv":
        # RFC 4180 quoting (quotes doubled), not Spark's default backslash escapes; values
        # as they are (Spark's CSV writer trims their spaces by default).
        writer = (
            writer.option("header", True)
            .option("escape", '"')
            .option("ignoreLeadingWhiteSpace", False)
            .option("ignoreTrailingWhiteSpace", False)
        )
        if target.endswith(".gz"):
            writer = writer.option("compression", "gzip")
        if target.removesuffix(".gz").endswith(".tsv"):  # written comma-separated before
            writer = writer.option("sep", "\t")
    if "://" in target:
        writer.format(fmt).save(target)
        return None
    final = Path(target)
    # Named for this process, as the streaming writer's are, so that what a killed run left
    # beside the output is removed by the next run that writes it.
    remove_stale_temporaries(final)
    staging = partial_path(final)
    try:
        writer.format(fmt).save(str(staging))
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)  # Spark's abort leaves the folder itself
        refused = _no_room(exc)
        if refused is None:
            raise
        # Spark's own words were "Spark could not read INPUT: ... [TASK_WRITE_FAILED]" and
        # its Java stack: the input was fine, the disk was not.
        raise OSError(refused, os.strerror(refused), target) from None
    return staging


def _into_place(target: str, staging: Path | None) -> None:
    """Rename a folder ``_write_staged`` wrote over ``target``."""
    if staging is None:
        return
    final = Path(target)
    if final.is_dir():
        retired = staging_path(final, "old")
        os.replace(final, retired)
        os.replace(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        if final.exists():
            final.unlink()
        os.replace(staging, final)


#: Writes refused for want of room, as Java says them (the system's own words).
_ROOM = {os.strerror(code): code for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)}


def _no_room(exc: BaseException) -> int | None:
    """The errno of a write Spark's Java side was refused for want of room (a full disk, a
    quota, a file size limit), found among the causes of ``exc``; ``None`` otherwise."""
    # Py4JJavaError's, or the Java exception pyspark turned into one of its own
    java = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    for _ in range(64):  # a chain of causes, never a loop
        if java is None:
            return None
        said = str(java.getMessage() or "")
        for words, code in _ROOM.items():
            if words in said:
                return code
        java = java.getCause()
    return None
