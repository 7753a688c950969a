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


#: Run in a process of its own: a Ctrl-C that the operating system hands to another thread
#: than the main one, while the main thread waits for the reader (blocked on a pipe).
_SIGNAL_ON_ANOTHER_THREAD = """
import signal, threading
from detector.io.threads import BackgroundSink, prefetched

consumed = threading.Event()
never = threading.Event()

def items():
    yield 1
    never.wait()  # a read from a pipe that stays open
    yield 2

def press_ctrl_c():
    consumed.wait()
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # this thread takes it

threading.Thread(target=press_ctrl_c, daemon=True).start()
try:
    for item in prefetched(items()):
        consumed.set()
except KeyboardInterrupt:
    print("interrupted while reading")
sink = BackgroundSink(lambda item: never.wait())
sink.put(1)
consumed.clear()
threading.Thread(target=press_ctrl_c, daemon=True).start()
try:
    consumed.set()
    sink.put(2)  # waits for the writer, which never finishes
    sink.put(3)
except KeyboardInterrupt:
    print("interrupted while writing")
"""


def test_ctrl_c_taken_by_another_thread_still_stops_the_main_one() -> None:
    """`anomaly score m - --output -` hung on Ctrl-C when the signal landed on a thread other
    than the main one: the main thread waited on the reader's queue with no timeout, so
    Python never ran the handler that raises KeyboardInterrupt."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _SIGNAL_ON_ANOTHER_THREAD],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.split("\n")[:2] == ["interrupted while reading", "interrupted while writing"]
