"""Keeping native libraries' start-up chatter off stderr.

TensorFlow (oneDNN, CUDA probing) and LiteRT ("Created TensorFlow Lite XNNPACK delegate") print
from C++ before any log setting applies, so the only way to keep a command's output readable is
to point file descriptor 2 elsewhere meanwhile. A module of its own because both the commands
and the scoring engine (``detector.lite_graph``) need it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Keep C++ start-up chatter (TensorFlow's oneDNN and CUDA probing, LiteRT's "Created
    TensorFlow Lite XNNPACK delegate") off stderr while the block runs.

    Use it before other threads start (a command's start, a server worker's model load):
    whatever any thread writes to stderr meanwhile is lost. Python exceptions still propagate
    and are reported as usual.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
