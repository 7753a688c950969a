"""The exceptions the detector raises, each naming what was wrong and how to fix it.

::

    DetectorError                 base; never raised itself
    ├── InputError                the caller's input is wrong (CLI exit code 2); a ValueError
    │   ├── SchemaError           columns missing, unknown or of the wrong type
    │   ├── DataError             unreadable file, empty table, too many rejected rows
    │   │   └── NotTextError      a header's bytes are not text in the file's encoding
    │   └── ConfigError           an option value that cannot work
    ├── BundleError               a bundle missing, incompatible or tampered with (exit 2)
    └── TrainingError             training produced no usable model (NaN loss, collapse) (exit 1)

Everything else that escapes is a bug, and the CLI reports it as an internal error (exit 1).
"""

from __future__ import annotations


class DetectorError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class InputError(DetectorError, ValueError):
    """The input is wrong; the message says what to change. A ``ValueError`` too, as
    scikit-learn's own checks raise for bad input: code that wraps estimators in
    ``except ValueError`` missed ours (an empty table, NaN, a column too few)."""

    exit_code = 2


class SchemaError(InputError):
    """Columns are missing, unknown or of a type the model cannot use."""


class DataError(InputError):
    """The data cannot be read or holds too little that is usable."""


class NotTextError(DataError):
    """A file's header holds bytes that are not text in its encoding (given, or UTF-8)."""


class ConfigError(InputError):
    """An option has a value that cannot work."""


class BundleError(DetectorError):
    """A model bundle cannot be loaded safely."""

    exit_code = 2


class TrainingError(DetectorError):
    """Training finished without a model worth keeping."""
