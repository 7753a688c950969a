"""What a model bundle directory holds (file names, format version, package versions) and the
checks on each part of it that need no network: the manifest, each file against its checksum,
the calibration, and the Keras network loaded in safe mode. ``detector.bundles.bundle`` loads and
saves bundles with them."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.errors import BundleError
from detector.scoring.threshold import Calibrator
from detector.wording import retarget_command

if TYPE_CHECKING:  # importing the models imports TensorFlow, which scoring no longer needs
    from detector.nn.models import VAE

FORMAT = "anomaly-detector-bundle"
#: The bundle format this release writes. 2 from 2026-12-07: format 1 grew arrays and fields
#: that change scores (the distance's box, parts and local spread, a series' levels), which
#: a release before them ignored, scoring a newer bundle differently without a word; such a
#: release refuses format 2. From format 2 on, ``requires`` names what a reader must know.
FORMAT_VERSION = 2
#: The formats this release reads: 1 (every bundle before 2026-12-07, scored as then) and 2.
READABLE_FORMATS = (1, 2)
#: What a bundle of format 2 may need its reader to know (``requires``): a release that adds
#: something a reader before it would ignore, and so score otherwise, adds its name here and
#: to the bundles that use it; a reader refuses a bundle needing a name it does not know.
KNOWN_FEATURES = frozenset({"neighbours", "series", "series-levels", "calendar"})
MODEL_FILE = "model.keras"
SCORER_FILE = "scorer.tflite"
#: The neighbour bank (``detector.scoring.neighbours``): normal training rows, in encoded units.
NEIGHBOURS_FILE = "neighbours.npz"
#: Files a bundle holds only when it needs them (its manifest lists each with a checksum).
OPTIONAL_FILES = (SCORER_FILE, NEIGHBOURS_FILE)
MANIFEST_FILE = "manifest.json"
_PACKAGES = (
    "anomaly-detector",
    "tensorflow",
    "keras",
    "ai-edge-litert",
    "numpy",
    "pandas",
    "scikit-learn",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def column_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise TypeError(f"ignored_columns must be a list of column names, not {value!r}")
    return tuple(value)


def check_manifest(root: Path, manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{root} is not an anomaly-detector model bundle")
    for entry in ("files", "packages"):
        table = manifest.get(entry, {})
        # Each read with .get(): another type there would fail as an internal error.
        if not isinstance(table, dict) or (
            entry == "files" and not all(isinstance(v, dict) for v in table.values())
        ):
            raise BundleError(
                f"{root}/{MANIFEST_FILE} has a malformed '{entry}' entry; it was edited or written "
                "by another tool: retrain the model"
            )
    version = manifest.get("format_version")
    if type(version) is not int or version not in READABLE_FORMATS:  # not True, 1.0 or "1"
        newer = type(version) is int and version > FORMAT_VERSION
        raise BundleError(
            f"{root} has bundle format {version!r}; this version of anomaly-detector reads "
            f"formats {', '.join(map(str, READABLE_FORMATS))}: "
            + (
                "a newer release wrote it; score it with that release, or retrain the model "
                "with this one"
                if newer
                else "retrain the model with this version"
            )
        )
    required = manifest.get("requires", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise BundleError(
            f"{root}/{MANIFEST_FILE} has a malformed 'requires' entry; it was edited or written "
            "by another tool: retrain the model"
        )
    unknown = sorted(set(required) - KNOWN_FEATURES)
    if unknown:
        raise BundleError(
            f"{root} needs {unknown}, which this release of anomaly-detector does not know (a "
            "newer one wrote it) and would score otherwise; score it with that release, or "
            "retrain the model with this one"
        )
    saved_keras = str(manifest.get("packages", {}).get("keras", "0"))
    current_keras = package_versions()["keras"]
    if saved_keras.split(".")[0] != current_keras.split(".")[0]:
        raise BundleError(
            f"{root} was written with Keras {saved_keras}, this is Keras {current_keras}; "
            "retrain the model or install a matching Keras"
        )


def read_calibrator(manifest_path: Path, state: Any) -> Calibrator:
    try:
        return Calibrator.from_dict(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"the calibration in {manifest_path} is invalid ({exc}); restore the bundle from its "
            f"source or retrain, and change the target only with {retarget_command()}"
        ) from None


def checked_bytes(root: Path, name: str, manifest: dict[str, Any]) -> bytes:
    path = root / name
    content = path.read_bytes() if path.is_file() else b""
    check_file(root, name, manifest, hashlib.sha256(content).hexdigest() if content else None)
    return content


def check_file(root: Path, name: str, manifest: dict[str, Any], digest: str | None) -> None:
    path = root / name
    if not path.is_file() or digest is None:
        raise BundleError(f"{root} has no {name}; the bundle is incomplete: retrain it")
    expected = manifest.get("files", {}).get(name, {}).get("sha256")
    if expected != digest:
        raise BundleError(
            f"{path} does not match the checksum in {MANIFEST_FILE}: the bundle was "
            "modified after it was written; restore it from its source or retrain"
        )


def load_network(model_path: Path) -> VAE:
    from detector.native import import_tensorflow_quietly

    import_tensorflow_quietly()  # a library caller sees no TensorFlow start-up lines either
    import keras

    from detector.nn.models import VAE

    try:
        # safe_mode refuses lambdas and other code embedded in the file.
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file; all mean the same here.
        raise BundleError(f"cannot load {model_path}: {exc}; retrain the model") from None
    if not isinstance(model, VAE):
        raise BundleError(f"{model_path} holds a {type(model).__name__}, not a detector model")
    return model
