"""The models a server process serves, swapped atomically on reload.

A reload loads the new bundle completely before it replaces the old one, so requests see the
old model or the new one, never neither; if loading fails, the old model keeps serving and the
error goes back to the caller.

Under gunicorn each worker process holds its own models. A reload request reaches one worker;
it writes ``<sync_dir>/<name>.json`` (path and a generation number), and every other worker,
checking that file's modification time at the start of each request, loads the same bundle
before it scores again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from detector.bundle import Bundle, load_bundle
from detector.errors import BundleError

log = logging.getLogger(__name__)


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
    ) -> None:
        """``on_reload(name, outcome)`` counts reload requests ("success"/"failure") and
        failures to follow another worker's reload; ``on_install(new, previous)`` runs
        whenever a model is swapped in, however it came (start, reload, following)."""
        self._paths = dict(paths)
        self._models: dict[str, LoadedModel] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._loader = loader
        self._on_reload = on_reload
        self._on_install = on_install
        self._sync_dir = Path(sync_dir) if sync_dir else None
        self._seen: dict[str, int] = {}  # sync file mtime (ns) last acted on, per model

    def load_all(self) -> dict[str, str]:
        """Load every configured model; returns the errors of those that failed (not ready)."""
        for name, path in self._paths.items():
            try:
                self._install(name, path, self._loader(path), generation=0)
            except BundleError as exc:
                self._errors[name] = str(exc)
                log.error("model %s not loaded: %s", name, exc)
        self.refresh()
        return dict(self._errors)

    def names(self) -> list[str]:
        return sorted(self._paths)

    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def ready(self) -> bool:
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
        """Load ``path`` (default: the model's current path) and swap it in. Raises
        ``BundleError`` and keeps the old model when the new one cannot be loaded."""
        if name not in self._paths:
            raise UnknownModel(name)
        source = path or self._current_path(name)
        try:
            bundle = self._loader(source)
        except BundleError:
            self._on_reload(name, "failure")
            raise
        generation = self._next_generation(name)
        loaded = self._install(name, source, bundle, generation=generation)
        self._publish(loaded)
        self._on_reload(name, "success")
        return loaded

    def refresh(self) -> None:
        """Pick up reloads other worker processes published (cheap: one stat per model)."""
        if self._sync_dir is None:
            return
        for name in self._paths:
            marker = self._sync_dir / f"{name}.json"
            try:
                mtime = marker.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if self._seen.get(name) == mtime:
                continue
            self._seen[name] = mtime
            try:
                state = json.loads(marker.read_text())
                generation, path = int(state["generation"]), str(state["path"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable reload marker %s: %s", marker, exc)
                continue
            current = self._models.get(name)
            if current is not None and current.generation >= generation:
                continue
            try:
                self._install(name, path, self._loader(path), generation=generation)
            except BundleError as exc:
                self._on_reload(name, "failure")
                log.error("worker could not follow reload of %s from %s: %s", name, path, exc)

    def _current_path(self, name: str) -> str:
        model = self._models.get(name)
        return model.path if model is not None else self._paths[name]

    def _next_generation(self, name: str) -> int:
        current = self._models.get(name)
        published = 0
        if self._sync_dir is not None:
            try:
                state = json.loads((self._sync_dir / f"{name}.json").read_text())
                published = int(state["generation"])
            except (OSError, ValueError, KeyError, TypeError):
                published = 0
        return max(published, current.generation if current else 0) + 1

    def _install(self, name: str, path: str, bundle: Bundle, *, generation: int) -> LoadedModel:
        bundle.prepare()  # the graph and the neighbour index, before the model takes traffic
        loaded = LoadedModel(name, path, bundle, time.time(), generation)
        with self._lock:
            previous = self._models.get(name)
            self._models[name] = loaded
            self._errors.pop(name, None)
        self._on_install(loaded, previous)
        return loaded

    def _publish(self, loaded: LoadedModel) -> None:
        if self._sync_dir is None:
            return
        self._sync_dir.mkdir(parents=True, exist_ok=True)
        marker = self._sync_dir / f"{loaded.name}.json"
        partial = marker.with_name(f".{marker.name}.{uuid.uuid4().hex[:8]}")
        partial.write_text(json.dumps({"path": loaded.path, "generation": loaded.generation}))
        os.replace(partial, marker)
        self._seen[loaded.name] = marker.stat().st_mtime_ns
