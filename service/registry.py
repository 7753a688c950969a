"""The models a server process serves, swapped atomically on reload, the same in every worker.

A reload loads the new bundle completely before it replaces the old one, so requests see the
old model or the new one, never neither; if loading fails, the old model keeps serving and the
error goes back to the caller.

Under gunicorn each worker process holds its own models, and they meet in ``sync_dir``:

- A bundle loaded from a directory for the first time (at start, or by a reload) is copied to
  ``<sync_dir>/<name>/<id>/`` and loaded from that copy. Workers load the copy, never the
  directory, so a bundle changed in place later cannot split them, and a worker that restarts
  after the directory was broken still has the last good bundle.
- Only after the copy loaded does the worker publish it in ``<sync_dir>/<name>.json`` (the
  marker): its generation, the directory it came from and the copy, with the copies before it
  to fall back on. Generation numbers are allocated under a lock on ``<sync_dir>/<name>.lock``,
  so two reloads at once get different numbers and every worker ends on the later one.
- At the start of each request a worker stats the marker; when it names a later generation
  the worker loads that copy. A worker that cannot load what it should serve (the marker's
  copy, or at start any bundle at all) keeps what it has and tries again on later requests,
  as soon as the files change and at least every ``RETRY_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detector.bundles.bundle import Bundle, load_bundle
from detector.errors import BundleError
from service.model_sync import Marker, ModelSyncError, Published, SyncDir

log = logging.getLogger(__name__)
bundle_log = logging.getLogger(load_bundle.__module__)


class _ShownAs(logging.Filter):
    """Names, in what loading a bundle logs, the directory it was copied from, not the copy:
    a warning to retrain the model at a path under the server's run directory said not which
    of the user's bundles to retrain."""

    def __init__(self, path: str, shown_as: str) -> None:
        super().__init__()
        self.path, self.shown_as = path, shown_as

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.path in message:
            record.msg, record.args = message.replace(self.path, self.shown_as), None
        return True


#: A worker that could not load what it should serve tries again after this long, or sooner
#: when the files change.
RETRY_SECONDS = 30.0
#: Copies kept per model: the one published and the ones before it, to fall back on.
KEPT_COPIES = 3


@dataclass(frozen=True)
class LoadedModel:
    """One served model: its bundle, where it came from and when it was loaded."""

    name: str
    path: str
    bundle: Bundle
    loaded_at: float
    generation: int


class UnknownModel(KeyError):
    """No model of that name is configured."""


@dataclass(frozen=True)
class _Miss:
    """A failed attempt to load what a worker should serve: when to try again."""

    files: object  # _files_signature() of what failed to load
    at: float  # time.monotonic()


class ModelRegistry:
    """Thread-safe name -> ``LoadedModel`` map with atomic replacement."""

    def __init__(
        self,
        paths: dict[str, str],
        *,
        sync_dir: str | os.PathLike[str] | None = None,
        loader: Callable[[str], Bundle] = load_bundle,
        on_reload: Callable[[str, str], None] = lambda name, outcome: None,
        on_install: Callable[[LoadedModel, LoadedModel | None], None] = lambda new, old: None,
        accept: Callable[[str, Bundle], None] = lambda name, bundle: None,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        """``on_reload(name, outcome)`` counts reload requests ("success"/"failure") and
        failures to follow another worker's reload; ``on_install(new, previous)`` runs
        whenever a model is swapped in, however it came (start, reload, following);
        ``accept(name, bundle)`` raises ``BundleError`` where the service's settings cannot
        serve ``bundle`` as model ``name`` (it is then not loaded, as a broken bundle is not)."""
        self.retry_seconds = retry_seconds
        self._paths = dict(paths)
        self._models: dict[str, LoadedModel] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._catching_up = threading.Lock()
        self._loader = loader
        self._on_reload = on_reload
        self._on_install = on_install
        self._accept = accept
        self._sync = SyncDir(sync_dir) if sync_dir else None
        self._seen: dict[str, object] = {}  # the marker's stat last acted on, per model
        self._misses: dict[str, _Miss] = {}  # models not serving what they should

    def load_all(self) -> dict[str, str]:
        """Load every configured model; returns the errors of those that failed (not ready).
        A model whose reload was asked for (SIGHUP) is then reloaded by the one worker that
        claims it: its configured directory read again, as a restart reads it (a directory a
        reload request named since is left); on failure the last good one serves."""
        for name in self._paths:
            self._start(name)
            if self._sync is not None and self._sync.claim_reload(name):
                try:
                    self.reload(name, self._paths[name])
                except (BundleError, ModelSyncError) as exc:
                    log.error(
                        "model %s: reload on SIGHUP failed; %s: %s",
                        name,
                        "serving on" if name in self._models else "still not loaded",
                        exc,
                    )
        return dict(self._errors)

    def names(self) -> list[str]:
        return sorted(self._paths)

    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def ready(self, needs: Literal["all", "any"] = "all") -> bool:
        """Whether the configured models are loaded: every one, or (``any``) at least one."""
        if needs == "any":
            return any(name in self._models for name in self._paths)
        return bool(self._paths) and all(name in self._models for name in self._paths)

    def get(self, name: str) -> LoadedModel:
        if name not in self._paths:
            raise UnknownModel(name)
        model = self._models.get(name)
        if model is None:
            raise BundleError(
                f"model '{name}' is configured but not loaded: {self._errors.get(name, '')}"
            )
        return model

    def reload(self, name: str, path: str | None = None) -> LoadedModel:
        """Load ``path`` (default: the directory of the model in force), publish it to the
        other workers and swap it in. Raises ``BundleError`` (the bundle cannot be loaded) or
        ``ModelSyncError`` (it cannot be published), and then the old model keeps serving."""
        if name not in self._paths:
            raise UnknownModel(name)
        try:
            loaded = self._load_and_publish(name, path or self._current_path(name))
        except (BundleError, ModelSyncError):
            self._on_reload(name, "failure")
            raise
        self._on_reload(name, "success")
        log.info(
            "model %s: reloaded %s (version %s, generation %d)",
            name,
            loaded.path,
            loaded.bundle.version,
            loaded.generation,
        )
        return loaded

    def refresh(self) -> None:
        """Catch up with what other workers published, or retry what failed to load. Cheap
        when in step: one stat per model. Never raises: a request is answered with the model
        in force, and what went wrong is logged."""
        if self._sync is None and not self._misses:
            return
        if not self._catching_up.acquire(blocking=False):
            return  # another thread of this worker is at it; serve what is in force
        try:
            for name in self._paths:
                marker = self._marker_stat(name)
                if marker == self._seen.get(name) and name not in self._misses:
                    continue
                try:
                    self._catch_up(name, marker)
                except (BundleError, OSError) as exc:
                    log.error("model %s: could not catch up: %s", name, exc)
        finally:
            self._catching_up.release()

    # ----------------------------------------------------------------------- start and catch up

    def _start(self, name: str) -> None:
        """The marker's bundle if one is published, else the configured directory (published
        then); failing that, the last good bundle this worker can load."""
        source = self._paths[name]
        stat = self._marker_stat(name)  # before reading: a marker replaced after looks new
        marker = self._try_read_marker(name)
        if marker is None:
            files = _files_signature(source)
            try:
                self._load_and_publish(name, source)
                return
            except ModelSyncError as exc:
                log.error("model %s: served by this worker alone: %s", name, exc)
            except BundleError as exc:
                self._missed(name, source, files, exc)
                return
        elif self._load_last_good(name, marker, stat):
            return
        # Nothing published loads (deleted, unreadable): the configured directory, unpublished.
        files = _files_signature(source)
        try:
            self._install(name, source, self._load(name, source), generation=0)
        except BundleError as exc:
            self._missed(name, source, files, exc)

    def _load_last_good(self, name: str, marker: Marker, stat: object) -> bool:
        self._seen[name] = stat
        for good in marker.good:
            files = _files_signature(good.copy)
            try:
                self._install(
                    name, good.path, self._load(name, good.copy, good.path), good.generation
                )
            except BundleError as exc:
                if good is marker.current:
                    self._missed(name, good.path, files, exc)  # what refresh() retries
                continue
            if good is not marker.current:
                log.warning(
                    "model %s: serving generation %d until generation %d loads",
                    name,
                    good.generation,
                    marker.current.generation,
                )
            return True
        return False

    def _catch_up(self, name: str, stat: object) -> None:
        marker = self._try_read_marker(name) if stat is not None else None
        current = self._models.get(name)
        if marker is None:
            self._seen[name] = stat
            if current is None:
                self._retry_configured(name)
            return
        target = marker.current
        if current is not None and current.generation >= target.generation:
            self._seen[name] = stat
            self._misses.pop(name, None)
            return
        files = _files_signature(target.copy)
        if not self._due(name, files):
            return
        try:
            bundle = self._load(name, target.copy, target.path)
        except BundleError as exc:
            self._on_reload(name, "failure")
            self._missed(name, target.path, files, exc)
            return
        self._install(name, target.path, bundle, target.generation)
        self._seen[name] = stat
        self._misses.pop(name, None)

    def _retry_configured(self, name: str) -> None:
        """Nothing loaded and nothing published: the configured directory, once it changed."""
        source = self._paths[name]
        files = _files_signature(source)
        if not self._due(name, files):
            return
        try:
            self._load_and_publish(name, source)
        except (BundleError, ModelSyncError) as exc:
            self._missed(name, source, files, exc)

    def _due(self, name: str, files: object) -> bool:
        """Whether to try loading again: the files changed since the last failed try (their
        signature taken before it), or ``retry_seconds`` passed."""
        miss = self._misses.get(name)
        if miss is None:
            return True
        return time.monotonic() - miss.at >= self.retry_seconds or files != miss.files

    def _missed(self, name: str, path: str, files: object, exc: Exception) -> None:
        self._misses[name] = _Miss(files, time.monotonic())
        if name not in self._models:
            self._errors[name] = str(exc)
        log.error(
            "model %s: could not load %s (tried again when its files change, and every %.0f s): %s",
            name,
            path,
            self.retry_seconds,
            exc,
        )

    # ----------------------------------------------------------------------- load and publish

    def _load_and_publish(self, name: str, source: str) -> LoadedModel:
        if self._sync is None:
            bundle = self._load(name, source)
            current = self._models.get(name)
            return self._install(name, source, bundle, current.generation + 1 if current else 0)
        sync = self._sync
        copy = sync.copy(name, Path(source))
        try:
            bundle = self._load(name, str(copy), source)
            with sync.locked(name):
                marker = sync.read_marker(name)
                earlier = marker.good if marker else ()
                current = self._models.get(name)
                generation = 1 + max(
                    earlier[0].generation if earlier else 0, current.generation if current else 0
                )
                published = Published(generation, source, str(copy))
                kept = (published, *earlier)[:KEPT_COPIES]
                sync.write_marker(name, Marker(kept))
                # Before the lock goes: a marker another worker writes next must look new.
                self._seen[name] = self._marker_stat(name)
        except BaseException:
            shutil.rmtree(copy, ignore_errors=True)
            raise
        for dropped in earlier[KEPT_COPIES - 1 :]:
            shutil.rmtree(dropped.copy, ignore_errors=True)
        self._misses.pop(name, None)
        return self._install(name, source, bundle, generation)

    def _load(self, name: str, path: str, shown_as: str | None = None) -> Bundle:
        """Load and prepare the bundle at ``path`` for model ``name``, and ask ``accept`` if
        the service can serve it as that model; errors and warnings name ``shown_as`` (the
        directory a copy came from), and errors are ``BundleError``s, a failed read of a file
        included."""
        shown = _ShownAs(path, shown_as or path)
        bundle_log.addFilter(shown)
        try:
            bundle = self._loader(path)
            self._accept(name, bundle)
            bundle.prepare()  # the graph and the neighbour index, before the model takes traffic
            return bundle
        except BundleError as exc:
            detail = str(exc)
        except OSError as exc:
            detail = (
                f"could not read the bundle at {path} ({exc}); check the files there and "
                "their permissions, or write the bundle again"
            )
        finally:
            bundle_log.removeFilter(shown)
        raise BundleError(detail.replace(path, shown_as or path)) from None

    def _try_read_marker(self, name: str) -> Marker | None:
        if self._sync is None:
            return None
        try:
            return self._sync.read_marker(name)
        except ModelSyncError as exc:
            log.error("model %s: %s", name, exc)
            return None

    def _marker_stat(self, name: str) -> object:
        return None if self._sync is None else self._sync.marker_stat(name)

    # ----------------------------------------------------------------------- state

    def _current_path(self, name: str) -> str:
        model = self._models.get(name)
        return model.path if model is not None else self._paths[name]

    def _install(self, name: str, path: str, bundle: Bundle, generation: int) -> LoadedModel:
        loaded = LoadedModel(name, path, bundle, time.time(), generation)
        with self._lock:
            previous = self._models.get(name)
            if previous is not None and previous.generation > generation:
                return previous  # a later generation came in meanwhile (another thread)
            self._models[name] = loaded
            failed = self._errors.pop(name, None)
        if failed is not None:  # its errors were logged every try; say when they end
            log.info("model %s: loaded %s from %s; it scores again", name, bundle.version, path)
        self._on_install(loaded, previous)
        return loaded


def _files_signature(path: str | os.PathLike[str]) -> object:
    """What changes when the files of a bundle directory change: each file's name, size and
    modification time, and the directory itself (a bundle written again is a new directory)."""
    try:
        entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path))
        return (os.stat(path).st_ino, tuple(entries))
    except OSError as exc:
        return type(exc).__name__
