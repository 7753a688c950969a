"""Keeping native libraries' start-up chatter off stderr.

TensorFlow (oneDNN, CUDA probing, "Unable to register cuDNN factory", "TF-TRT Warning") and
LiteRT ("Created TensorFlow Lite XNNPACK delegate") print from C++ before any log setting
applies, so the only way to keep a command's or a notebook's output readable is to point file
descriptor 2 elsewhere meanwhile. What else arrives there in that time (a Python warning, another
thread's log line) is written back afterwards; only the chatter is dropped, and only as far as
``TF_CPP_MIN_LOG_LEVEL`` says, when the user has set it (0 shows everything). A module of its own
because the commands, the estimator and the scoring engine (``detector.nn.lite_graph``) need it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator

#: The log level the package uses when the user has not set ``TF_CPP_MIN_LOG_LEVEL``: after
#: start-up TensorFlow itself then drops its INFO and WARNING lines (errors still show).
DEFAULT_TF_LOG_LEVEL = "2"

#: A TensorFlow C++ log line and its severity: absl's format
#: ("I0000 00:00:1796408797.463039   27164 port.cc:153] oneDNN custom operations are on") or
#: glog's of older releases ("2024-01-31 12:00:00.123456: E external/.../cuda_dnn.cc:8] ...").
_LOG_LINE = re.compile(
    rb"^(?:(?P<absl>[IWEF])\d{4} [\d:.]+ +\d+ |[\d-]+ [\d:.]+: (?P<glog>[IWEF]) )\S+:\d+\] "
)
#: TF_CPP_MIN_LOG_LEVEL's scale: a line shows when its severity is at least the level.
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
#: Chatter without a severity, shown at level 0 only: absl's notice before its logging starts,
#: the second line of TensorFlow's CPU-feature note, LiteRT's delegate notice.
_NOTICES = (
    b"WARNING: All log messages before absl::InitializeLog() is called",
    b"To enable the following instructions:",
    b"INFO: Created TensorFlow Lite XNNPACK delegate",
)


#: Set beside ``TF_CPP_MIN_LOG_LEVEL`` when the package set that, not the user: a child process
#: (a grid search's workers) inherits both and takes the level for unset, as its parent did;
#: it took the package's 2 for the user's and showed CUDA's start-up errors.
_DEFAULTED_MARK = "ANOMALY_DETECTOR_DEFAULTED_TF_LOG_LEVEL"

#: Held while descriptor 2 points away: it is the process's, so two threads' silenced blocks
#: that overlapped restored each other's saved descriptor, and stderr could stay pointed at a
#: deleted temporary file for good.
_SILENCING = threading.RLock()

#: One import of TensorFlow at a time (``import_tensorflow_quietly``), finished before any
#: caller goes on: two threads' first fits imported it at once and Python's import locks
#: raised a deadlock, or one went on with a half-imported module.
_IMPORTING = threading.Lock()
_tensorflow_ready = False


def _level() -> int:
    """The user's ``TF_CPP_MIN_LOG_LEVEL``; unset (or unreadable, or the package's own
    default), 3: start-up prints errors that are not (no CUDA driver on a CPU machine,
    factories registered twice)."""
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if value is None or value == os.environ.get(_DEFAULTED_MARK):
        return 3
    try:
        return int(value)
    except ValueError:
        return 3


def _shown(line: bytes, level: int) -> bool:
    match = _LOG_LINE.match(line)
    if match is not None:
        return _SEVERITY[match["absl"] or match["glog"]] >= level
    return level <= 0 or not line.startswith(_NOTICES)


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Keep C++ start-up chatter (TensorFlow's oneDNN and CUDA probing, LiteRT's "Created
    TensorFlow Lite XNNPACK delegate") off stderr while the block runs.

    Descriptor 2 goes to a temporary file meanwhile; afterwards every other line written there
    (Python warnings, other threads' output) is written back, in order. With
    ``TF_CPP_MIN_LOG_LEVEL=0`` nothing is redirected. Python exceptions propagate as usual.
    """
    level = _level()
    if level <= 0:
        yield
        return
    with _SILENCING:
        yield from _silenced(level)


def _silenced(level: int) -> Iterator[None]:
    try:
        capture = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the with below)
    except OSError:  # no writable temporary folder: the chatter shows, and the work goes on
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                capture.seek(0)
                kept = b"".join(line for line in capture if _shown(line, level))
                while kept:
                    kept = kept[os.write(2, kept) :]
    finally:
        os.close(saved)


@contextlib.contextmanager
def global_random_state_kept() -> Iterator[None]:
    """Restore numpy's and Python's global generators after the block: importing TensorFlow
    draws from Python's, and ``keras.utils.set_random_seed`` seeds both (after a fit, every
    caller's ``np.random.rand()`` drew the same numbers, whatever they had seeded)."""
    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (once per process) with its start-up chatter kept off stderr, and,
    unless the user set ``TF_CPP_MIN_LOG_LEVEL``, set it to ``DEFAULT_TF_LOG_LEVEL`` first."""
    # Each fit builds new training functions for a new network, which TensorFlow counts as
    # "retracing" and warns of after a few fits in one process (a grid search, a loop over
    # data sets): expected here, and no fault of the caller's. Filtered whoever imported
    # TensorFlow first (a caller's `import keras` before ours left the warning on).
    tf_log = logging.getLogger("tensorflow")
    if _not_retracing not in tf_log.filters:
        tf_log.addFilter(_not_retracing)
    global _tensorflow_ready
    if _tensorflow_ready:
        return
    with _IMPORTING:
        if _tensorflow_ready:
            return
        if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = DEFAULT_TF_LOG_LEVEL
            os.environ[_DEFAULTED_MARK] = DEFAULT_TF_LOG_LEVEL
        _settings_folders_kept_private()
        with native_output_silenced(), global_random_state_kept():
            import tensorflow as tf

            # Probing devices is when CUDA prints its complaints; do it now, while muted.
            tf.config.list_physical_devices()
        _tensorflow_ready = True


def _settings_folders_kept_private() -> None:
    """Where the home folder is not one this user can write (a container's user, a service
    with its home read-only), give Keras and Matplotlib a folder of this process's in the
    temporary folder, removed at exit. Keras fell back to the shared /tmp/.keras, outside
    TMPDIR, and read the keras.json any local user could put there first (its backend, its
    float type); Matplotlib, which Keras imports, warned on every command to set MPLCONFIGDIR.
    Either variable set by the user is kept."""
    home = os.path.expanduser("~")
    if os.path.isdir(home) and os.access(home, os.W_OK):
        return
    unset = [name for name in ("KERAS_HOME", "MPLCONFIGDIR") if name not in os.environ]
    if not unset:
        return
    try:
        folder = tempfile.mkdtemp(prefix="anomaly-settings-")
    except OSError:  # no writable temporary folder: each library's own fallback, as before
        return
    atexit.register(_removed_by, os.getpid(), folder)
    for name in unset:
        os.environ[name] = os.path.join(folder, name.lower())


def _removed_by(owner: int, folder: str) -> None:
    # A forked child (a caller's worker process) inherits the exit handler, and the folder is
    # still its parent's when it exits.
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _not_retracing(record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()
