"""A server worker's heap, frozen once its app is built (``gc.freeze``).

Python's garbage collector now and then walks every object the process holds (a full pass,
once the objects that survived younger passes reach a quarter of those it holds long-term).
A worker holds its libraries' and models' objects (~144,000 with a small model) as long as it
lives, and a 1,000-record request leaves enough young survivors for a full pass every 4 or 5
requests: ~140 ms each on a 2-core machine, 30 ms of CPU a request on average, against ~60
for the rest of it. Frozen, those objects are left out of every pass; the request's own
garbage is collected as before.

What is frozen is never collected as garbage, so a model replaced (a reload, or following
another worker's) gives the heap back to the collector, and it is frozen again once the
requests that held the old model have had ``settle_seconds`` to end.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

__all__ = ["FrozenHeap"]

#: How long after a model is replaced the heap is frozen again: longer than a request takes.
SETTLE_SECONDS = 60.0


class FrozenHeap:
    """Freezes the process's heap (``freeze``), thaws it when a model is replaced (``thaw``)
    and freezes it again at the end of the first request ``settle_seconds`` later
    (``settle``). The whole process's: one per worker, never in a test's process."""

    def __init__(
        self,
        *,
        settle_seconds: float = SETTLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._refreeze_at: float | None = None

    def freeze(self) -> None:
        """Leave every object held now out of the collector's passes."""
        gc.collect()  # what is garbage already is not frozen
        gc.freeze()
        self._refreeze_at = None

    def thaw(self) -> None:
        """A model was replaced: hand the heap back to the collector, to freeze it again
        ``settle_seconds`` from now."""
        gc.unfreeze()
        self._refreeze_at = self._clock() + self.settle_seconds

    def settle(self) -> None:
        """At the end of a request: freeze the heap again where it was thawed long enough ago."""
        if self._refreeze_at is not None and self._clock() >= self._refreeze_at:
            self.freeze()
