"""Model bundles: a directory with ``model.keras``, ``scorer.tflite`` and a JSON ``manifest.json``.

The manifest holds everything besides the network: the schema and its fitted encoding, the
calibration, the scoring settings, training metrics and warnings, package versions, a
fingerprint of the training data and the creation time. ``scorer.tflite`` is the scoring graph
as a LiteRT flatbuffer (``detector.nn.lite_graph``): scoring runs it without importing TensorFlow,
and the Keras network is loaded only when something needs it (sampling, retraining). Nothing is
pickled, the flatbuffer holds builtin operators only, and the network is loaded with Keras safe
mode on, so loading a bundle never runs code from it; before that, ``model.keras``'s config is
checked against the classes a detector network may hold, on every load, even one that scores
with LiteRT (``detector.bundles.integrity``). The manifest holds a SHA-256 of each other file and a
checksum of its own content: together they detect a bundle damaged or edited after it was
written (corruption, not tampering, unless ``ANOMALY_BUNDLE_KEY`` signs it:
``detector.bundles.integrity`` says exactly what each protects). Calibration values are
checked too. A bundle written before ``scorer.tflite`` existed is refused with a message to
retrain it.

Writes are atomic: a bundle is written to a temporary sibling directory and renamed into place,
so a reader sees the old bundle or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detector.bundles.format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MODEL_FILE,
    NEIGHBOURS_FILE,
    SCORER_FILE,
    check_file,
    check_manifest,
    checked_bytes,
    column_names,
    load_network,
    package_versions,
    read_calibrator,
    sha256_of,
)
from detector.bundles.integrity import (
    BUNDLE_KEY_ENV,
    bundle_key,
    check_keras_archive,
    check_seal,
    is_signed,
    seal,
)
from detector.errors import BundleError
from detector.features.record_encoder import RecordEncoder
from detector.features.schema import Schema
from detector.io.temporaries import (
    check_writable,
    partial_path,
    remove_stale_temporaries,
    staging_path,
    told_as,
)
from detector.nn.lite_graph import LiteScoreGraph, litert_available
from detector.nn.training_options import DEVIATION_WEIGHT, MAX_SAMPLES, METRIC_WEIGHT
from detector.scoring.neighbours import DEFAULT_BOX_QUANTILE, NeighbourBank
from detector.scoring.neighbours import KINDS as NEIGHBOUR_KINDS
from detector.scoring.scores import ScoreGraph, score_kinds
from detector.scoring.threshold import MAX_CALIBRATION_ROWS, Calibrator, calibration_warnings
from detector.series.windows import SeriesSpec, is_window_column, read_series, whole
from detector.wording import option, printable, quoted, train_command

if TYPE_CHECKING:  # importing the models imports TensorFlow, which scoring no longer needs
    from detector.nn.models import VAE

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Bundle:
    """A trained detector: network, schema, calibration and the metadata that explains them.

    ``model`` is the network (Keras), loaded from ``path`` on first use; ``trained_network``
    is the one training just produced, ``None`` for a loaded bundle. ``scorer`` is the scoring
    graph as a LiteRT flatbuffer with ``kinds`` naming its score outputs; ``None`` scores with
    TensorFlow."""

    trained_network: VAE | None
    schema: Schema
    calibrator: Calibrator
    score_kind: str
    n_samples: int
    noise_seed: int
    #: Typical held-out negative log-likelihood of each model term ``(n_terms,)``; subtracted so
    #: contributions say how much more a column costs than usual.
    term_baseline: np.ndarray
    model_type: str = "vae"
    params: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    scorer: bytes | None = None
    kinds: tuple[str, ...] = ()
    path: Path | None = None
    weights_version: str | None = None
    #: Normal rows for the ``knn`` scores; ``None`` when trained with ``neighbours=0``.
    neighbours: NeighbourBank | None = None
    #: Input columns training left out (``anomaly train --ignore-column``, e.g. an id or a
    #: timestamp): scoring carries them through unscored instead of calling them unknown.
    ignored_columns: tuple[str, ...] = ()
    #: How records form series and how many rows of its series a record is judged with
    #: (``anomaly train --time-column``); ``None`` scores every record alone.
    series: SeriesSpec | None = None
    #: The bundle format of the manifest it was loaded from (a new one is saved in this one).
    format_version: int = FORMAT_VERSION

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The columns a record to score must have: the schema's, or for a series model its
        time and key columns and each window column's own column."""
        return record_columns(self.schema.column_order, self.series)

    @property
    def score_kinds(self) -> tuple[str, ...]:
        """Every score this bundle can give: the graph's, then the neighbour bank's."""
        kinds = self.kinds or score_kinds(self.model)
        return kinds + (NEIGHBOUR_KINDS if self.neighbours is not None else ())

    @cached_property
    def model(self) -> VAE:
        if self.trained_network is not None:
            return self.trained_network
        if self.path is None:
            raise BundleError("this bundle has neither a network nor a path to load one from")
        # Checked again here: the file may have been replaced since load_bundle looked at it.
        check_keras_archive(self.path / MODEL_FILE)
        model = load_network(self.path / MODEL_FILE)
        _check_network(self.path, self, model)
        return model

    @cached_property
    def graph(self) -> ScoreGraph | LiteScoreGraph:
        if self.scorer is not None and litert_available():
            return LiteScoreGraph(self.scorer, self.kinds, n_features=self.schema.n_features)
        return ScoreGraph(self.model, n_samples=self.n_samples, seed=self.noise_seed)

    @cached_property
    def record_encoder(self) -> RecordEncoder:
        """The schema's encoding for records given as mappings (``detector.features.records``)."""
        return RecordEncoder(self.schema)

    @property
    def logged_columns(self) -> tuple[str, ...]:
        """The input columns modelled as their logarithm (heavy-tailed in training): a series
        model's metric once for all its window's columns."""
        names = (c.name for c in self.schema.numeric if c.log)
        return tuple(dict.fromkeys(n[: n.rindex("[")] if is_window_column(n) else n for n in names))

    def describe_logs(self) -> str | None:
        """``logged_columns`` in words with how to keep them as they are, or ``None``."""
        names = self.logged_columns
        if not names:
            return None
        shown = ", ".join(f"'{printable(n)}'" for n in names[:10])
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        return (
            f"heavy-tailed, modelled as their logarithm: {shown}{more} "
            f"({option('raw_tails')} keeps them as they are)"
        )

    def describe_score(self) -> str:
        """The score in words, e.g. ``knn: mean distance to the 5 nearest of 4210 normal
        training rows + 0.5 x how far outside their central 99%`` or ``elbo with 8 latent
        samples``."""
        if self.score_kind == "knn" and self.neighbours is not None:
            bank = self.neighbours
            central = 100 * (1 - 2 * DEFAULT_BOX_QUANTILE)  # the bank keeps bounds, not levels
            box = f" + {bank.box_weight:g} x how far outside their central {central:g}%"
            if bank.far_weight > 0:
                box += f" (past the training range, {bank.far_weight:g} x log(1 + how far))"
            parts = ""
            series = self.series
            if len(bank.parts) > 1 and series is not None:
                short = self.params.get("short_window")
                lengths = 2 if isinstance(short, int) and 0 < short < series.window else 1
                deviation = (
                    f"each metric's difference from the mean of the "
                    f"{series.deviation_window - 1} rows before "
                )
                own = int(series.deviates and lengths == 1)  # the deviations' own part
                # The metrics' own parts, in the whole window's place (bundles since them).
                metrics = self.params.get("metric_parts")
                if isinstance(metrics, int) and metrics > 0:
                    rows = min(int(self.params.get("column_window", series.window)), series.window)
                    if metrics == 1:
                        alone = f"the one metric alone on its newest {rows} rows"
                        judged = [f"{alone} ({METRIC_WEIGHT:g} x it)"]
                    else:
                        alone = f"each of {metrics} metrics alone on its newest {rows} rows"
                        judged = [f"{alone} ({METRIC_WEIGHT:g} x their mean)"]
                else:
                    judged = [f"on all {series.window} rows of the window"]
                if lengths > 1:
                    joined = f" with {deviation}the newest" if series.deviates else ""
                    judged.insert(0, f"on the newest {short} rows{joined}")
                if own:
                    weight = f" (weight {DEVIATION_WEIGHT:g})"
                    judged.append(f"on the newest row with {deviation}it{weight}")
                parts = f", {', '.join(judged[:-1])} and {judged[-1]}, each standardised, summed"
            if bank.local_weight > 0 and len(bank.parts) > 1:
                parts += (
                    f"; each part {bank.local_weight:g} x relative to the normal rows' spread "
                    "around its neighbours"
                )
            elif bank.local_weight > 0:
                most = (
                    f", at most {bank.local_ceiling:g}x less"
                    if np.isfinite(bank.local_ceiling)
                    else ""
                )
                parts += f"; {bank.local_weight:g} x of it against the local spread{most}"
            level = ""
            if series is not None and series.level_hours:
                level = (
                    "; then against its series' level, the median of its hourly mean scores "
                    f"over the {series.level_hours} hours before"
                )
            return (
                f"knn: mean distance to the {bank.k} nearest of {len(bank.bank)} normal "
                f"training rows{box if bank.box_weight else ''}{parts}{level}"
            )
        return f"{self.score_kind} with {self.n_samples} latent samples"

    def prepare(self) -> None:
        """Build what scoring needs (the graph, the neighbour search index) now, so the
        first record does not wait for it."""
        self.graph  # noqa: B018 - a cached property: reading it builds it
        self.record_encoder  # noqa: B018
        if self.neighbours is not None:
            self.neighbours.prepare()

    @cached_property
    def weights_id(self) -> str:
        """A content id of the network's weights: the same weights give the same id."""
        if self.weights_version is not None:
            return self.weights_version
        digest = hashlib.sha256()
        for weight in self.model.weights:
            digest.update(np.asarray(weight.numpy()).tobytes())
        return digest.hexdigest()[:12]

    @cached_property
    def version(self) -> str:
        """A content id of what scores and flags a record: the network's weights, the score
        and its settings, the neighbour bank, the threshold, and the columns and series it
        reads. Of the weights alone, a bundle moved to another threshold (`anomaly
        threshold`) or scored another way (`--neighbours 0`) kept its version, as did one
        trained on the same values under other column names, which takes other records: a
        dashboard or client could not tell them apart."""
        digest = hashlib.sha256(self.weights_id.encode())
        settings = {
            "score": self.score_kind,
            "n_samples": self.n_samples,
            "noise_seed": self.noise_seed,
            "calibration": self.calibrator.to_dict(),
            "params": self.params,
            "schema": self.schema.to_dict(),
            "series": None if self.series is None else asdict(self.series),
        }
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        if self.neighbours is not None:
            digest.update(str(self.neighbours.k).encode())
            digest.update(np.asarray(self.neighbours.bank, dtype=np.float32).tobytes())
        return digest.hexdigest()[:12]

    @property
    def requires(self) -> list[str]:
        """What of ``KNOWN_FEATURES`` this bundle needs its reader to know."""
        series = self.series
        needs = {
            "neighbours": self.neighbours is not None,
            "series": series is not None,
            "series-levels": series is not None and series.level_hours > 0,
            "calendar": series is not None and series.calendar,
        }
        return sorted(name for name, needed in needs.items() if needed)

    def with_target_fpr(self, target_fpr: float) -> Bundle:
        return replace(self, calibrator=self.calibrator.with_target(target_fpr))

    def manifest(self, files: dict[str, str]) -> dict[str, Any]:
        """The manifest, given each written file's SHA-256."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "requires": self.requires,
            "model_type": self.model_type,
            "version": self.version,
            "weights_version": self.weights_id,
            "created_at": self.created_at,
            "packages": package_versions(),
            "params": self.params,
            "schema": self.schema.to_dict(),
            "scoring": {
                "score": self.score_kind,
                "n_samples": self.n_samples,
                "noise_seed": self.noise_seed,
                "term_baseline": [float(v) for v in self.term_baseline],
                "kinds": list(self.kinds or score_kinds(self.model)),
            },
            "calibration": self.calibrator.to_dict(),
            "training": self.training,
            "data_fingerprint": self.data_fingerprint,
            "ignored_columns": list(self.ignored_columns),
            "series": None if self.series is None else asdict(self.series),
            "files": {name: {"sha256": digest} for name, digest in files.items()},
        }


@dataclass(frozen=True)
class Found:
    """The bundle a folder held when a run began (its manifest's version; ``None``: no
    bundle), for ``save_bundle`` to refuse replacing one another run wrote there meanwhile."""

    version: str | None

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> Found:
        return cls(_version_at(Path(path)))


def _version_at(target: Path) -> str | None:
    """The version of the bundle at ``target``, read from its manifest alone; ``None`` where
    there is none, or its manifest cannot be read (loading it would say why)."""
    try:
        manifest = json.loads((target / MANIFEST_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return str(version) if version is not None else None


def save_bundle(
    bundle: Bundle, path: str | os.PathLike[str], *, replacing: Found | None = None
) -> Path:
    """Write ``bundle`` to the directory ``path`` atomically, replacing any bundle there; a
    path that cannot hold one (a file, a folder of other files) is refused before writing.
    ``replacing``: what ``path`` held when the run began; a bundle another run saved there
    since is refused, not replaced (``None``: whatever is there is replaced)."""
    target = Path(os.path.abspath(path))  # '.' or '' names the working directory
    check_not_a_mount_point(target)  # first: its parent may be read-only, and is not the fix
    check_writable(target, folder=True)
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Staging folders of a training run killed outright (its process gone) go first.
    remove_stale_temporaries(target)
    staging = staging_path(target, "tmp")
    staging.mkdir()
    try:
        with told_as(target):  # not the staging folder, which is gone when the error is read
            _write_files(bundle, staging)
        with changing(target):
            if replacing is not None:
                check_unchanged(target, replacing)
            _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_files(bundle: Bundle, staging: Path) -> None:
    with warnings.catch_warnings():
        # Keras' own deprecated numpy call, which failed a user's save under -W error
        # (their test suite's warnings-as-errors); nothing the caller can act on.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"keras\.")
        bundle.model.save(staging / MODEL_FILE)
    written = [MODEL_FILE]
    if bundle.scorer is not None:
        (staging / SCORER_FILE).write_bytes(bundle.scorer)
        written.append(SCORER_FILE)
    if bundle.neighbours is not None:
        (staging / NEIGHBOURS_FILE).write_bytes(bundle.neighbours.to_bytes())
        written.append(NEIGHBOURS_FILE)
    manifest = bundle.manifest({name: sha256_of(staging / name) for name in written})
    write_manifest(staging, manifest)


def check_unchanged(target: Path, replacing: Found) -> None:
    """Refuse to replace a bundle another run wrote while this one trained: two trainings
    into one --out both said "saved bundle <id>", and the first to finish had its id printed
    for a bundle no longer on disk."""
    now = _version_at(target)
    if now == replacing.version:
        return
    there = f"bundle {now} is there now" if now is not None else "it holds no bundle now"
    raise BundleError(
        f"{target} was written by another run while this one trained ({there}); this run's "
        f"bundle was not written: give another {option('out')}, or train again to replace it"
    )


def check_replaceable(target: Path) -> None:
    check_not_a_link(target)
    check_not_a_mount_point(target)
    if target.exists() and not (target / MANIFEST_FILE).exists() and any(target.iterdir()):
        raise BundleError(
            f"{target} exists and is not a model bundle; choose another {option('out')} or "
            "remove it"
        )


def check_not_a_link(target: Path) -> None:
    if target.is_symlink():
        # Renamed aside with its bundle put in its place, the link (a blue/green setup's
        # `current`) became a folder, and a hidden copy of it was left behind.
        real = os.path.realpath(target)
        raise BundleError(
            f"{target} is a symbolic link to {real}: a bundle is written beside it and renamed "
            f"into place, which would replace the link; give the folder it points to "
            f"({option('out', real)}), or write to a new folder and point the link at it"
        )


def check_not_a_mount_point(target: Path) -> None:
    if target.is_dir() and os.path.ismount(target):
        # Written beside it and renamed into place: a volume's mount point refuses the rename
        # (EBUSY), after the whole training, or its parent was read-only.
        raise BundleError(
            f"{target} is a mount point (a volume): a bundle is written beside its directory "
            f"and renamed into place, which a mount point refuses; give a directory inside "
            f"it ({option('out')} {target / 'model'})"
        )


def _swap_into_place(staging: Path, target: Path) -> None:
    check_replaceable(target)  # again: it may have changed while the bundle was written
    retired = staging_path(target, "old")
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def changing(target: Path) -> Iterator[None]:
    """Held while the bundle at ``target`` is swapped into place (training) or rewritten in
    place (``set_target_fpr``): a threshold change that read one bundle and wrote its
    manifest over another's files, trained meanwhile, left a bundle every load refused, or
    one model with the other's calibration. The lock is the folder holding it (no file left
    behind; other bundles there wait their turn too, for the moments these take)."""
    try:
        folder = os.open(target.parent, os.O_RDONLY)
    except OSError:  # a folder that cannot be read: nothing else could change a bundle in it
        yield
        return
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)


def set_target_fpr(path: str | os.PathLike[str], target_fpr: float) -> Bundle:
    """Change a saved bundle's target false-positive rate in place, without retraining."""
    # The real folder's parent: through a link (bg/current) the lock was the link's folder,
    # which a training into the real one never waited on.
    with changing(Path(os.path.realpath(path))):
        return _set_target_fpr(path, target_fpr)


def _set_target_fpr(path: str | os.PathLike[str], target_fpr: float) -> Bundle:
    bundle = load_bundle(path).with_target_fpr(target_fpr)
    manifest_path = Path(path) / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    if is_signed(manifest) and bundle_key() is None:
        # Rewriting it unsigned would make every process that requires signatures refuse it.
        raise BundleError(
            f"{path} is signed; set {BUNDLE_KEY_ENV} to the key it was signed with to change it"
        )
    manifest["calibration"] = bundle.calibrator.to_dict()
    training = manifest.get("training")
    if isinstance(training, dict):
        # The calibration warnings judged the training's target; those of this one replace
        # them (the held-out rows are gone, so the held-out rate's is not judged again).
        kept = [w for w in training.get("warnings", []) if not w.startswith("calibration:")]
        training["warnings"] = kept + list(
            calibration_warnings(
                len(bundle.calibrator.reference),
                target_fpr,
                max_calibration_rows=MAX_CALIBRATION_ROWS,
            )
        )
        bundle = replace(bundle, training=training)
    try:
        with told_as(path):
            write_manifest(Path(path), manifest)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise BundleError(_unchangeable(path, exc)) from None
    return bundle


def _unchangeable(path: str | os.PathLike[str], exc: OSError) -> str:
    """Why ``set_target_fpr`` cannot rewrite the bundle at ``path``, and the way round: the
    system's message named the manifest's temporary file and fixes for a command's output,
    which threshold has no option for."""
    if exc.errno == errno.EROFS:
        why, fix = "is on a read-only file system (a volume mounted read-only?)", ""
    else:
        why = f"cannot be written by this user ({exc.strerror})"
        fix = "make it writable for this user, or "
    return (
        f"{printable(os.fspath(path))} {why}, so its threshold cannot be changed in place: "
        f"{fix}copy the bundle to a folder you can write to "
        f"(cp -r {quoted(os.fspath(path))} COPY), change the copy, and serve that; nothing was "
        "changed"
    )


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` into the bundle directory ``root`` with a checksum of its content, and
    a signature when ``ANOMALY_BUNDLE_KEY`` is set."""
    path = root / MANIFEST_FILE
    # Write beside, then rename: a reader never sees a half-written manifest; one a killed
    # `anomaly threshold` left beside it is removed here.
    sealed = seal(manifest, bundle_key())
    remove_stale_temporaries(path)
    partial = partial_path(path)
    text = json.dumps(sealed, indent=2, sort_keys=True) + "\n"
    if len(text) > MAX_MANIFEST_BYTES:  # ASCII (json escapes the rest): characters are bytes
        # Never a bundle that its own loader refuses: held whole in every worker.
        raise BundleError(
            f"the bundle's manifest would be over {MAX_MANIFEST_BYTES // 2**20} MB, what a "
            "loader reads (its schema holds every category's labels): leave out the text "
            f"columns of the most or longest values ({option('ignore_column')})"
        )
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def record_columns(schema_columns: Sequence[str], series: SeriesSpec | None) -> tuple[str, ...]:
    """``Bundle.input_columns`` from a schema's columns and a series spec."""
    if series is None:
        return tuple(schema_columns)
    own = [c for c in schema_columns if not is_window_column(c)]
    return (series.time_column, *series.key_columns, *own)


def bundle_record_fields(path: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """The fields a record scored by the bundle at ``path`` may hold (its input columns and
    the ignored ones), read from its manifest alone: nothing is loaded, for a process that must
    not load models (a server's master). ``None`` where the manifest cannot be read; loading
    the bundle says why."""
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text())
        columns = Schema.from_dict(manifest["schema"]).column_order
        own = record_columns(columns, read_series(manifest.get("series")))
        return (*own, *column_names(manifest.get("ignored_columns", [])))
    except (OSError, KeyError, TypeError, ValueError, AttributeError, RecursionError):
        return None


#: The largest manifest read: it is read whole, and held a few times over while parsed, in
#: every worker (a 150 MB one took a worker to 470 MB).
MAX_MANIFEST_BYTES = 64 * 2**20


def check_bundle_folder(root: Path) -> None:
    """Raise ``BundleError`` where ``root`` holds no manifest, saying what it is instead (a
    file, a folder of other files or of bundles, nothing) and what to name."""
    if (root / MANIFEST_FILE).is_file():
        return
    if root.is_file():
        raise BundleError(
            f"{root} is a file, not a model bundle (a folder {train_command('DIR')} writes)"
        )
    if root.is_dir() and any(root.iterdir()):
        # A fleet's models in one folder, and the folder named for one of them.
        bundles = sorted(d.name for d in root.iterdir() if (d / MANIFEST_FILE).is_file())
        if bundles:
            raise BundleError(
                f"no model bundle at {root} (no {MANIFEST_FILE}); its subfolders "
                f"{', '.join(bundles[:5])}{' ...' if len(bundles) > 5 else ''} are bundles: "
                f"name one of them, such as {root / bundles[0]}"
            )
        # Training would refuse to write into a folder of other files: not the fix to name.
        raise BundleError(
            f"no model bundle at {root} (no {MANIFEST_FILE}, and it holds other files); "
            f"name the folder training wrote, or train one with {train_command('NEW_DIR')}"
        )
    raise BundleError(
        f"no model bundle at {root} (no {MANIFEST_FILE}); train one with {train_command(root)}"
    )


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Load and check a bundle; raise ``BundleError`` saying what is wrong and what to do."""
    root = Path(path)
    check_bundle_folder(root)
    manifest_path = root / MANIFEST_FILE
    size = manifest_path.stat().st_size
    if size > MAX_MANIFEST_BYTES:  # read whole, a few times its size in memory, per worker
        raise BundleError(
            f"{manifest_path} is {size / 2**20:.0f} MB, over the {MAX_MANIFEST_BYTES // 2**20} MB "
            "a manifest may be (training writes one of well under 1 MB); it is not one this "
            "tool wrote: retrain the model"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc}); retrain the model") from None
    except RecursionError:  # not a ValueError: json says so of arrays nested thousands deep
        raise BundleError(
            f"{manifest_path} is not a manifest (JSON nested too deeply to read); retrain the model"
        ) from None
    check_manifest(root, manifest)
    if not check_seal(manifest_path, manifest, bundle_key()):
        log.warning(
            "%s has no checksum of its own (written before they existed): a damaged or edited "
            "calibration would go unnoticed; retrain the model to add one",
            manifest_path,
        )
    model_path = root / MODEL_FILE
    check_file(root, MODEL_FILE, manifest, sha256_of(model_path) if model_path.is_file() else None)
    check_keras_archive(model_path)
    if SCORER_FILE not in manifest.get("files", {}):
        raise BundleError(
            f"{root} was written by an older version, before bundles held {SCORER_FILE} (the "
            f"scoring graph this version scores with); retrain it: {train_command(root)}"
        )
    scorer = checked_bytes(root, SCORER_FILE, manifest)
    bank = None
    try:
        schema = Schema.from_dict(manifest["schema"])
        if NEIGHBOURS_FILE in manifest.get("files", {}):
            content = checked_bytes(root, NEIGHBOURS_FILE, manifest)
            bank = NeighbourBank.from_bytes(content, schema.n_features)
        calibrator = read_calibrator(manifest_path, manifest["calibration"])
        scoring = manifest["scoring"]
        bundle = Bundle(
            trained_network=None,
            schema=schema,
            calibrator=calibrator,
            score_kind=str(scoring["score"]),
            n_samples=whole(scoring["n_samples"], "n_samples"),
            noise_seed=whole(scoring["noise_seed"], "noise_seed"),
            term_baseline=np.asarray(scoring["term_baseline"], dtype=np.float64),
            model_type=str(manifest["model_type"]),
            params=dict(manifest.get("params", {})),
            training=dict(manifest.get("training", {})),
            data_fingerprint=dict(manifest.get("data_fingerprint", {})),
            created_at=str(manifest["created_at"]),
            scorer=scorer,
            kinds=tuple(str(kind) for kind in scoring.get("kinds", ())),
            path=root,
            # Written before the field: "version" was the weights' id.
            weights_version=str(manifest.get("weights_version", manifest["version"])),
            neighbours=bank,
            # Absent from bundles written before the field existed: nothing was ignored then.
            ignored_columns=column_names(manifest.get("ignored_columns", [])),
            series=read_series(manifest.get("series")),
            format_version=manifest["format_version"],  # an int check_manifest reads
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(
            f"{manifest_path} is malformed ({type(exc).__name__}: {exc}); it was edited or "
            "written by another tool: retrain the model"
        ) from None
    _check_consistent(root, bundle)
    return bundle


def _check_consistent(root: Path, bundle: Bundle) -> None:
    """What can be checked without the network; ``_check_network`` checks the rest when the
    network is loaded."""
    problems = []
    if bundle.term_baseline.ndim != 1 or len(bundle.term_baseline) != len(
        bundle.schema.feature_columns
    ):
        problems.append("term baseline length does not match the schema")
    if bundle.score_kind in NEIGHBOUR_KINDS and bundle.neighbours is None:
        problems.append(
            f"score kind {bundle.score_kind!r} needs the normal rows of {NEIGHBOURS_FILE}, "
            "which the manifest does not list"
        )
    elif bundle.kinds and bundle.score_kind not in bundle.score_kinds:
        problems.append(f"unknown score kind {bundle.score_kind!r}")
    if not 1 <= bundle.n_samples <= MAX_SAMPLES:
        problems.append(f"sample count {bundle.n_samples} out of range")
    if not np.isfinite(bundle.term_baseline).all():
        problems.append("term baseline holds a value that is not a finite number")
    if bundle.scorer is not None and not problems:
        try:
            bundle.graph  # noqa: B018 - checks the graph's input and output widths
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise BundleError(f"{root} is inconsistent ({'; '.join(problems)}); retrain the model")


def _check_network(root: Path, bundle: Bundle, model: VAE) -> None:
    problems = []
    if model.input_dim != bundle.schema.n_features:
        problems.append(
            f"network input width {model.input_dim} != schema width {bundle.schema.n_features}"
        )
    context_sizes = tuple(getattr(model, "context_sizes", ()))
    if context_sizes != bundle.schema.context_sizes:
        problems.append(
            f"network context widths {list(context_sizes)} != schema context widths "
            f"{list(bundle.schema.context_sizes)}"
        )
    from detector.nn.models import MODELS

    if MODELS.get(bundle.model_type) is not type(model):
        problems.append(
            f"manifest says model {bundle.model_type!r}, the network is a {type(model).__name__}"
        )
    bank_kinds = NEIGHBOUR_KINDS if bundle.neighbours is not None else ()
    if bundle.score_kind not in score_kinds(model) + bank_kinds:
        problems.append(f"unknown score kind {bundle.score_kind!r}")
    if problems:
        raise BundleError(f"{root} is inconsistent ({'; '.join(problems)}); retrain the model")
