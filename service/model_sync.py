"""The directory the workers of one server share to agree on the models they serve
(``model_sync_dir``): a copy of each bundle loaded, and per model a marker naming the copy to
serve and the ones before it, written under a lock. ``service.registry`` says how workers use
it."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.bundles.bundle import MAX_MANIFEST_BYTES, check_bundle_folder
from detector.bundles.format import MANIFEST_FILE
from detector.errors import BundleError, DetectorError

log = logging.getLogger(__name__)


class ModelSyncError(DetectorError, OSError):
    """``sync_dir``, the directory the workers share, cannot be read or written. An OSError, so
    callers that answer a failed read of files also answer this one."""


@dataclass(frozen=True)
class Published:
    """A good bundle as a marker records it: its generation, the directory it was loaded from
    (the path users see) and the copy in ``sync_dir`` that workers load."""

    generation: int
    path: str
    copy: str

    def to_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "path": self.path, "copy": self.copy}

    @classmethod
    def from_dict(cls, d: Any) -> Published:
        return cls(int(d["generation"]), str(d["path"]), str(d["copy"]))


@dataclass(frozen=True)
class Marker:
    """``<sync_dir>/<name>.json``: the bundle to serve, newest first, then earlier good ones."""

    good: tuple[Published, ...]

    @property
    def current(self) -> Published:
        return self.good[0]


class SyncDir:
    """``root``: per model, ``<name>/<id>/`` copies, the marker ``<name>.json`` and the lock
    ``<name>.lock``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def copy(self, name: str, source: Path) -> Path:
        """Copy the files of the bundle directory ``source`` (a bundle is flat) into
        ``sync_dir``: those its manifest names, where it names them (a 300 MB training file
        kept beside a bundle was read into every worker and copied on every load), else every
        file. A ``source`` that is no bundle (no manifest), or a file that cannot be read, is a
        ``BundleError``."""
        copy = self.root / name / uuid.uuid4().hex[:12]
        try:
            copy.mkdir(parents=True)
        except OSError as exc:
            raise sync_error(self.root, exc) from None
        try:
            try:
                # Said of the source, as `anomaly info` says it: said of an empty copy, a file
                # or a folder of bundles was told to train into itself (`--out` it).
                check_bundle_folder(source)
                entries = sorted(source.iterdir())
            except OSError as exc:  # a folder of another user's, under umask 077
                raise BundleError(
                    f"could not read the folder {source} ({exc.strerror or exc}); make it "
                    "readable for the server's user, or write the bundle again"
                ) from None
            named = _named_files(source)
            for entry in entries:
                if not entry.is_file() or (named is not None and entry.name not in named):
                    continue
                try:
                    content = entry.read_bytes()
                except OSError as exc:
                    raise BundleError(
                        f"could not read {entry} ({exc}); check the file and its permissions, "
                        "or write the bundle again"
                    ) from None
                try:
                    (copy / entry.name).write_bytes(content)
                except OSError as exc:
                    raise sync_error(self.root, exc) from None
        except BaseException:
            shutil.rmtree(copy, ignore_errors=True)
            raise
        return copy

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """One process at a time allocates a generation and writes the marker."""
        try:
            fd = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise sync_error(self.root, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def read_marker(self, name: str) -> Marker | None:
        """The marker, or None when none is published. Raises ``ModelSyncError`` when it
        cannot be read; one that does not parse is treated as absent (and will be replaced)."""
        path = self.root / f"{name}.json"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise sync_error(self.root, exc) from None
        try:
            state = json.loads(text)
            good = [Published.from_dict(state), *map(Published.from_dict, state["earlier"])]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable reload marker %s: %s", path, exc)
            return None
        return Marker(tuple(good))

    def write_marker(self, name: str, marker: Marker) -> None:
        path = self.root / f"{name}.json"
        state = marker.current.to_dict() | {"earlier": [p.to_dict() for p in marker.good[1:]]}
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        try:
            partial.write_text(json.dumps(state))
            os.replace(partial, path)  # readers see the old marker or the new one, whole
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise sync_error(self.root, exc) from None

    def request_reload(self, name: str) -> None:
        """Ask the next worker to start (after SIGHUP) to reload the model: ``<name>.hup``."""
        try:
            (self.root / f"{name}.hup").touch()
        except OSError as exc:
            log.error("model %s: cannot ask for a reload: %s", name, sync_error(self.root, exc))

    def claim_reload(self, name: str) -> bool:
        """Whether this process takes the reload asked for: the one that removes the request
        does it, so one worker loads and publishes and the others follow it."""
        try:
            (self.root / f"{name}.hup").unlink()
        except OSError:
            return False
        return True

    def marker_stat(self, name: str) -> object:
        """What changes when the marker is replaced (a new inode each time), or None."""
        try:
            stat = (self.root / f"{name}.json").stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def sync_error(sync_dir: Path, exc: OSError) -> ModelSyncError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # Told to make a full directory "writable", an on-call helper had nothing to change.
        return ModelSyncError(
            f"model_sync_dir {sync_dir} is on a full disk ({exc.strerror}): a reload copies "
            "the bundle there; free space there, or point model_sync_dir at a larger disk; the "
            "model in force keeps serving"
        )
    return ModelSyncError(
        f"cannot use model_sync_dir {sync_dir} ({exc}); make it a writable directory that only "
        "this server's workers share; the model in force keeps serving"
    )


def _named_files(bundle: Path) -> set[str] | None:
    """The manifest and the files it lists, or ``None`` where the manifest cannot say (then
    every file is copied, and loading the copy says what is wrong)."""
    manifest = bundle / MANIFEST_FILE
    try:
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        listed = json.loads(manifest.read_bytes())["files"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    if not isinstance(listed, dict) or not all(isinstance(name, str) for name in listed):
        return None
    return {MANIFEST_FILE, *listed}
