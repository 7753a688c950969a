"""The scoring graph as a LiteRT (TensorFlow Lite) flatbuffer, and the engine that runs it.

``ScoreGraph`` traces the scoring arithmetic in TensorFlow. At training time that trace is
converted once, with the network's weights and the fixed noise ``eps`` frozen in as constants,
into a flatbuffer the bundle stores beside ``model.keras``. Scoring then runs it with LiteRT's
interpreter (XNNPACK kernels) instead of TensorFlow, because on the 2-core machines we target
(``tests/benchmarks/results/scoring.md``):

- importing TensorFlow takes 5-7 s and ~700 MB before the first row is scored; the LiteRT
  runtime imports in 0.1 s and holds a few MB;
- the same graph runs in ~2.9 us per row on one thread against TensorFlow's 5.2-5.8, and a
  single record in ~12 us against ~150 us (numpy) or ~500 us (a TensorFlow call).

The flatbuffer holds builtin operators only (no TensorFlow "flex" ops, no custom ops), so the
interpreter executes nothing but its own kernels: loading one runs no code from the file.
Scores agree with TensorFlow's to float32 rounding (a test checks every model type).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from detector.scoring.scores import ScoreGraph

#: Rows per interpreter call: the activations of 256 rows x L samples stay in cache (measured
#: 2.9 us per row at 256 against 4.4 at 4096), and the ~10 us per call is noise at this size.
LITE_BATCH = 256


def litert_available() -> bool:
    """Whether the LiteRT runtime is installed (its wheels cover Linux and macOS; elsewhere,
    bundles score with TensorFlow)."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def to_flatbuffer(graph: ScoreGraph) -> bytes:
    """Convert a traced ``ScoreGraph`` to a LiteRT flatbuffer with its weights frozen in."""
    import tensorflow as tf

    # Passing no trackable object makes the converter freeze variables into constants; with one,
    # it keeps them as resource variables that a bare interpreter never initialises (every
    # score came out NaN). It logs that this path is deprecated; we chose it, so keep the
    # log quiet while converting.
    # Its C++ side also writes "Ignored output_format", "Ignored drop_control_dependency" to
    # descriptor 2 at every fit where TensorFlow was imported before this package could set its
    # log level (a notebook's `import keras` first).
    from detector.native import native_output_silenced

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([graph.concrete_function])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        with native_output_silenced():
            return bytes(converter.convert())
    finally:
        absl.setLevel(level)


#: Whether this process has applied LiteRT's XNNPACK delegate yet (``_first_delegate_quiet``).
_delegate_applied = False
_delegate_lock = threading.Lock()


@contextlib.contextmanager
def _first_delegate_quiet() -> Iterator[None]:
    """Keep "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." off stderr, where every
    command and the service would otherwise print it.

    LiteRT's native code writes it straight to descriptor 2, once per process, when the first
    interpreter applies the delegate; no log setting reaches it. So descriptor 2 is pointed
    away for that first interpreter only: later ones print nothing, and a process that is
    serving (other threads writing to stderr) is not muted again."""
    global _delegate_applied
    if _delegate_applied:
        yield
        return
    with _delegate_lock:
        from detector.native import native_output_silenced

        with native_output_silenced():
            yield
        _delegate_applied = True


class LiteScoreGraph:
    """``ScoreGraph``'s contract (encoded records -> each score kind and ``term_nll``), run by
    LiteRT from a flatbuffer. Safe to call from several threads: each has its own
    interpreter (an interpreter holds its buffers and is not reentrant)."""

    def __init__(self, flatbuffer: bytes, kinds: tuple[str, ...], *, n_features: int) -> None:
        self.kinds = kinds
        self.flatbuffer = flatbuffer
        self._local = threading.local()
        interpreter = self._interpreter()
        (given,) = interpreter.get_input_details()
        (output,) = interpreter.get_output_details()
        if int(given["shape_signature"][-1]) != n_features:
            raise ValueError(
                f"the scoring graph takes {int(given['shape_signature'][-1])} features, the "
                f"schema encodes {n_features}"
            )
        self.n_outputs = int(output["shape_signature"][-1])
        if self.n_outputs <= len(kinds):
            raise ValueError(
                f"the scoring graph has {self.n_outputs} outputs, fewer than its "
                f"{len(kinds)} score kinds and their per-term costs"
            )

    def _interpreter(self) -> Any:
        state = self._local
        if getattr(state, "interpreter", None) is None:
            from ai_edge_litert.interpreter import Interpreter

            with _first_delegate_quiet():
                # One thread: the batch scorer and the HTTP workers run their own threads.
                state.interpreter = Interpreter(model_content=self.flatbuffer, num_threads=1)
                # Allocating applies the XNNPACK delegate (and prints LiteRT's one notice
                # about it) now, at load time, rather than during the first request.
                state.interpreter.allocate_tensors()
            state.input = state.interpreter.get_input_details()[0]["index"]
            state.output = state.interpreter.get_output_details()[0]["index"]
            state.rows = -1
        return state.interpreter

    def _run(self, x: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter()
        state = self._local
        if state.rows != len(x):
            interpreter.resize_tensor_input(state.input, x.shape, strict=False)
            interpreter.allocate_tensors()
            state.rows = len(x)
        interpreter.set_tensor(state.input, x)
        interpreter.invoke()
        return interpreter.get_tensor(state.output)  # a copy: the buffer is reused

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            out = np.empty((0, self.n_outputs), np.float32)
        elif len(x) <= LITE_BATCH:
            out = self._run(x)
        else:
            out = np.concatenate(
                [self._run(x[i : i + LITE_BATCH]) for i in range(0, len(x), LITE_BATCH)]
            )
        named = {kind: out[:, i] for i, kind in enumerate(self.kinds)}
        named["term_nll"] = out[:, len(self.kinds) :]
        return named
