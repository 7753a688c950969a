"""Overlap the batch scorer's stages: read the next chunk and write the last one while the
model scores the current one.

Parsing (Arrow), the scoring graph (TensorFlow) and writing (Arrow) each release the GIL for
most of their time, so on two cores a reader thread and a writer thread beside the scoring
thread keep both cores busy instead of taking turns. Queues are bounded, so memory stays a
few chunks whatever the input size; an error in a thread is raised in the caller. Each thread
runs in a copy of its starter's context (``contextvars``), so it sees what the caller set, such
as who reads the messages (``detector.wording``).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

#: How often a blocked thread looks whether the other side has given up, in seconds.
_POLL_S = 0.1
#: How long a consumer that stops early waits for the producer to see it, in seconds. A
#: producer blocked reading a pipe that stays open (stdin) never does; it is left behind (a
#: daemon thread) so that an interrupt can clean up and exit instead of hanging.
_ABANDON_S = 1.0


def _get(slots: queue.Queue[object]) -> object:
    """``slots.get()``, waking every ``_POLL_S``: the operating system hands a signal to any
    thread of the process, and Python runs its handler (Ctrl-C's KeyboardInterrupt) in the main
    thread only when that thread runs again; a main thread blocked without a timeout while
    another thread took SIGINT would wait for ever."""
    while True:
        try:
            return slots.get(timeout=_POLL_S)
        except queue.Empty:
            continue


def _put(slots: queue.Queue[object], item: object) -> None:
    """``slots.put(item)``, waking every ``_POLL_S`` (see ``_get``)."""
    while True:
        try:
            slots.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            continue


def _join(thread: threading.Thread) -> None:
    """``thread.join()``, waking every ``_POLL_S`` (see ``_get``)."""
    while thread.is_alive():
        thread.join(_POLL_S)


class _Done:
    """End of a stream; carries the producer's error, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield from ``items``, computing up to ``depth`` of them ahead in a background thread.

    An exception raised while producing an item is raised here, in order. Closing the
    generator early (a ``break``, an error or interrupt in the consumer) stops the thread
    before this returns, so whatever ``items`` reads from can be closed right after; unless
    the thread is blocked in a read for more than ``_ABANDON_S``, when it is left to end with
    the process (a read from a closed file then fails in that thread, unseen).
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(_Done(exc))
            return
        offer(_Done())

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(produce,), name="prefetch", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            item = _get(slots)
            if isinstance(item, _Done):
                finished = True
                if item.error is not None:
                    raise item.error
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(None if finished else _ABANDON_S)


class BackgroundSink(Generic[T]):
    """Call ``write(item)`` for each ``put`` item in one background thread, in order.

    ``close()`` waits for every item to be written and raises the first error; after an
    error, later ``put`` calls raise it at once instead of queueing more work.
    """

    def __init__(self, write: Callable[[T], None], depth: int = 1) -> None:
        self._write = write
        self._slots: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._drain,), name="writer", daemon=True
        )
        self._thread.start()

    def _drain(self) -> None:
        while True:
            item = self._slots.get()
            if isinstance(item, _Done):
                return
            if self._error is None:
                try:
                    self._write(item)  # type: ignore[arg-type]
                except BaseException as exc:  # raised in the caller by put/close
                    self._error = exc

    def put(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        _put(self._slots, item)

    def close(self) -> None:
        """Write what is queued, stop the thread, and raise the first write error."""
        if self._thread.is_alive():
            _put(self._slots, _Done())
            _join(self._thread)
        if self._error is not None:
            raise self._error
