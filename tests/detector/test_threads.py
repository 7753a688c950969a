"""The batch scorer's background reader and writer: order, errors and early stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from detector.io.threads import BackgroundSink, prefetched


def test_prefetched_yields_every_item_in_order() -> None:
    assert list(prefetched(iter(range(100)), depth=3)) == list(range(100))


def test_an_error_while_producing_is_raised_in_the_consumer_after_the_good_items() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad chunk")

    seen = []
    with pytest.raises(ValueError, match="bad chunk"):
        for item in prefetched(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_stopping_early_stops_the_reader_before_returning() -> None:
    produced = []
    finished = threading.Event()

    def items() -> Iterator[int]:
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield i
        finally:
            finished.set()

    stream = prefetched(items(), depth=2)
    assert next(stream) == 0
    stream.close()
    # The reader is stopped and joined by close(): it read at most a few items ahead and
    # ran its cleanup, so the caller may close the source right away.
    assert finished.is_set()
    assert len(produced) <= 5


def test_sink_writes_everything_in_order_before_close_returns() -> None:
    written: list[int] = []
    sink: BackgroundSink[int] = BackgroundSink(written.append, depth=2)
    for i in range(50):
        sink.put(i)
    sink.close()
    assert written == list(range(50))


def test_a_write_error_is_raised_by_close_and_by_later_puts() -> None:
    def write(item: int) -> None:
        if item == 3:
            raise OSError("disk full")

    sink: BackgroundSink[int] = BackgroundSink(write, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            sink.put(i)
        sink.close()
    with pytest.raises(OSError, match="disk full"):
        sink.close()
