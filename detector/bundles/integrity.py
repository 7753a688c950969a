"""What a bundle's checksums and optional signature protect, and the check of ``model.keras``.

The manifest lists the SHA-256 of every other file and carries a seal of its own content
(``integrity.sha256``: a SHA-256 of the manifest in canonical JSON), so any change to any byte
that affects scoring (calibration, threshold, target FPR, schema, score kind, a file) no longer
matches. A SHA-256 anyone can recompute detects **corruption** (a damaged disk or copy, a
half-written file, a careless hand edit), never **tampering**: whoever can write the bundle can
write a matching checksum. Against tampering, set ``ANOMALY_BUNDLE_KEY``: bundles written with
it also carry ``integrity.hmac_sha256``, an HMAC-SHA256 of the same bytes under that key, and
every process that loads bundles with the key set refuses one without a valid signature.

``model.keras`` is a zip whose ``config.json`` names the classes Keras will build. Before Keras
ever reads it, ``check_keras_archive`` requires every object named there to be one of this
package's registered classes or the optimizer training uses. This refuses a ``Lambda`` (Python
code) or any other class without importing TensorFlow, so it runs even for bundles that score
with LiteRT, and it also closes the published safe-mode bypasses (CVE-2025-1550,
CVE-2025-9906), which work through objects a detector network never contains.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detector.errors import BundleError

#: The environment variable holding the key that signs bundles and that loading then requires.
BUNDLE_KEY_ENV = "ANOMALY_BUNDLE_KEY"
#: The manifest key holding its own checksum (and signature).
SEAL = "integrity"
#: The only objects a detector network's config may name besides this package's registered
#: classes: the optimizer ``detector.nn.training`` compiles with (saved with the model).
KERAS_OBJECTS = frozenset({("keras.optimizers", "Adam")})
#: A network's config.json is a few kB; refuse to decompress a zip bomb posing as one.
MAX_KERAS_CONFIG_BYTES = 1 << 20


def bundle_key() -> bytes | None:
    """The signing key from ``ANOMALY_BUNDLE_KEY``, or ``None`` when it is unset."""
    value = os.environ.get(BUNDLE_KEY_ENV)
    if value is None:
        return None
    if not value.strip():
        # An empty value is a secret that failed to mount, not a choice to sign with nothing.
        raise BundleError(
            f"{BUNDLE_KEY_ENV} is set but empty; set it to the bundle signing key or unset it"
        )
    try:
        return value.encode()
    except UnicodeEncodeError:
        # Bytes the environment held that are no text (os.environ keeps them as surrogates).
        raise BundleError(
            f"{BUNDLE_KEY_ENV} holds bytes that are not text; set it to a text key (e.g. the "
            "output of 'openssl rand -hex 32')"
        ) from None


def seal(manifest: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """``manifest`` as JSON will read it back, with its checksum (and signature under ``key``)."""
    content = json.loads(json.dumps({k: v for k, v in manifest.items() if k != SEAL}))
    body = _canonical(content)
    stamp = {"sha256": hashlib.sha256(body).hexdigest()}
    if key is not None:
        stamp["hmac_sha256"] = hmac.new(key, body, hashlib.sha256).hexdigest()
    return {**content, SEAL: stamp}


def is_signed(manifest: dict[str, Any]) -> bool:
    stamp = manifest.get(SEAL)
    return isinstance(stamp, dict) and "hmac_sha256" in stamp


def check_seal(manifest_path: Path, manifest: dict[str, Any], key: bytes | None) -> bool:
    """Raise ``BundleError`` unless the manifest matches its checksum, and, when ``key`` is
    given, its signature. Returns ``False`` for a manifest written before seals existed (it
    loads only without a key)."""
    stamp = manifest.get(SEAL)
    if stamp is None and key is None:
        version = manifest.get("format_version")
        if type(version) is int and version >= 2:
            # Every bundle of format 2 on was written with its checksum: one without it had
            # it taken away, and an edit so made loaded with a warning that it was old.
            raise BundleError(
                f"{manifest_path} has no checksum, though every bundle of format {version} is "
                "written with one: it was removed after the bundle was written; restore the "
                "bundle from its source or retrain"
            )
        return False
    if stamp is not None and not isinstance(stamp, dict):
        raise BundleError(f"{manifest_path} has a malformed '{SEAL}' entry; retrain the model")
    body = _canonical({k: v for k, v in manifest.items() if k != SEAL})
    expected = str((stamp or {}).get("sha256", ""))
    if stamp is not None and not _same(expected, hashlib.sha256(body).hexdigest()):
        raise BundleError(
            f"{manifest_path} does not match its own checksum: it was edited or damaged after it "
            "was written; restore the bundle from its source or retrain (change a threshold "
            "with `anomaly threshold MODEL --fpr`, never by hand)"
        )
    if key is None:
        return True
    signature = str((stamp or {}).get("hmac_sha256", ""))
    if not signature:
        raise BundleError(
            f"{manifest_path} is not signed, and {BUNDLE_KEY_ENV} is set, so only signed bundles "
            f"load; retrain it with {BUNDLE_KEY_ENV} set, or unset {BUNDLE_KEY_ENV} to accept "
            "unsigned bundles"
        )
    if not _same(signature, hmac.new(key, body, hashlib.sha256).hexdigest()):
        raise BundleError(
            f"{manifest_path} does not carry a valid signature for the key in {BUNDLE_KEY_ENV}: "
            "the bundle was changed after it was signed, or signed with another key; restore it "
            "from its source or retrain it with this key"
        )
    return True


def check_keras_archive(model_path: Path) -> None:
    """Refuse a ``model.keras`` whose config names anything a detector network never holds,
    reading the config as plain JSON (no Keras, nothing built)."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > MAX_KERAS_CONFIG_BYTES:
                raise BundleError(
                    f"cannot load {model_path}: its config.json is {info.file_size} bytes, far "
                    "more than a detector network's; restore the bundle from its source or retrain"
                )
            config = json.loads(archive.read(info))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError, RecursionError):
        raise BundleError(
            f"cannot load {model_path}: it is not a Keras archive with a readable config.json; "
            "restore the bundle from its source or retrain"
        ) from None
    refused = sorted(set(_unknown_objects(config)))
    if refused:
        raise BundleError(
            f"cannot load {model_path}: its config names {', '.join(refused)}, which a detector "
            "network never holds and which could run code when built (a Lambda is Python code); "
            "the file was replaced: restore the bundle from its source or retrain"
        )
    if not (isinstance(config, dict) and _is_detector_class(config)):
        raise BundleError(
            f"cannot load {model_path}: it does not hold a detector network; restore the bundle "
            "from its source or retrain"
        )


def _same(saved: str, computed: str) -> bool:
    # In constant time, and as bytes: compare_digest refuses str with non-ASCII characters,
    # which an edited manifest may hold.
    return hmac.compare_digest(saved.encode(), computed.encode())


def _canonical(content: dict[str, Any]) -> bytes:
    # Sorted keys and no whitespace: the same content gives the same bytes however the file
    # was indented, and a float's repr reads back as the same float.
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def _is_detector_class(node: dict[str, Any]) -> bool:
    module, name = node.get("module"), node.get("class_name")
    return (
        isinstance(module, str)
        and module.startswith("detector.")
        and node.get("registered_name") == f"detector>{name}"
    )


def _unknown_objects(config: Any) -> Iterator[str]:
    """``module.Class`` of each object in a Keras config that is neither this package's nor
    in ``KERAS_OBJECTS``; walked without recursion, so nesting depth cannot exhaust the stack."""
    pending = [config]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "class_name" in node and not (
                _is_detector_class(node)
                or (node.get("module"), node.get("class_name")) in KERAS_OBJECTS
            ):
                yield f"{node.get('module')}.{node.get('class_name')}"
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
