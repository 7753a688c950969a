"""A scikit-learn compatible estimator over the same training, scoring and bundle code.

``VAEDetector`` follows IsolationForest's conventions, so it drops into pipelines and model
selection: ``score_samples`` is higher = more normal, ``decision_function`` is negative for
anomalies, ``predict`` gives -1 for anomalies and +1 for normal records. ``anomaly_score`` and
``score_records`` (the typed ``ScoreResult``) use the product's own direction: higher = more
anomalous.

Importing this module does not import TensorFlow: ``fit`` and ``save`` (and ``load``, where
LiteRT is not installed) import it, with its start-up chatter kept off stderr
(``detector.native``).
"""

from __future__ import annotations

import copy
import difflib
import inspect
import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from detector.bundles.bundle import Bundle, load_bundle, save_bundle
from detector.features.encode import Imputation, shortened
from detector.features.records import score_records
from detector.native import import_tensorflow_quietly
from detector.nn.lite_graph import litert_available
from detector.nn.option_specs import training_options
from detector.scoring.scores import ScoreResult, score_frame

if TYPE_CHECKING:
    from detector.nn.training import TrainingSummary


def _no_fit_predict(detector: Any) -> bool:
    """``available_if``'s check for ``fit_predict``: never, with what to do instead (the
    AttributeError's cause)."""
    from detector.errors import ConfigError

    raise ConfigError(
        "fit_predict would score the rows the detector was fitted on, which it keeps as "
        "normal and finds among their own nearest rows (they score too low); fit on normal "
        "rows, then predict others: detector.fit(X_normal).predict(X_new)"
    )


class VAEDetector(OutlierMixin, BaseEstimator):  # type: ignore[misc]
    """Variational-autoencoder anomaly detector trained on normal records only.

    Hyperparameters are keyword-only and stored as given; ``fit`` does the work. They are the
    training options of ``detector.nn.options``, by the same names and with the same defaults.
    Inputs are a pandas DataFrame (numeric and categorical columns) or a 2-D numeric array
    ``(n_samples, n_features)``, whose columns are then named ``x0, x1, ...``.

    The default ``score_kind`` (``"knn"``) measures distances among the encoded input rows, not
    in the network's latent space: the network's own settings (``hidden_units``,
    ``latent_dim``, ``epochs``, ...) do not change its scores, so a parameter search over them
    finds ties. Search ``neighbours`` or ``range_floor`` there, or the network's settings
    with a VAE score (``score_kind="elbo"``, ``"iwae"``, ``"recon_prob"``).

    Fitted attributes: ``bundle_`` (the trained ``Bundle``), ``summary_`` (``TrainingSummary``),
    ``offset_`` (minus the anomaly-score threshold, as IsolationForest's ``offset_``),
    ``feature_names_in_`` and ``n_features_in_``.
    """

    def __init__(self, **params: Any) -> None:
        # The parameters are detector.nn.options' fields, keyword-only with their defaults: the
        # signature set below says so to scikit-learn (get_params, clone) and to help().
        if unknown := [name for name in params if name not in _PARAMETERS]:
            raise TypeError(_unknown_parameters(unknown))
        bound = inspect.signature(type(self).__init__).bind(self, **params)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *(
                inspect.Parameter(
                    o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.hint
                )
                for o in training_options()
            ),
        ],
        return_annotation=None,
    )

    # ---- fitting ---------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> VAEDetector:
        """Train on normal records ``X``; ``y`` is ignored (present for pipeline compatibility):
        leave labelled anomalies out yourself, ``fit(X[y == 0])``, or they are learnt as
        normal (the command line's ``--label-column`` does it)."""
        import_tensorflow_quietly()
        from detector.nn.training import TrainingConfig, train

        config = TrainingConfig(**_as_options(self.get_params()))
        series = (config.time_column, *config.series_columns) if config.time_column else ()
        frame = _as_frame(X, wanted=series)
        bundle, summary = train(frame, config)
        self._set_fitted(bundle, summary)
        return self

    @available_if(_no_fit_predict)
    def fit_predict(self, X: Any, y: Any = None, **kwargs: Any) -> np.ndarray:
        """Absent, as scikit-learn's ``LocalOutlierFactor(novelty=True)`` hides it: the
        records the detector was fitted on are among the normal rows its distance measures
        against, so each finds itself and scores low (a helper's: 0.3% flagged at a 1%
        target, against 1.5% of new rows from the same data). ``hasattr`` says False, as
        scikit-learn's code asks before it calls (a method that raised crashed it)."""
        raise AssertionError("unreachable: available_if refuses it")  # pragma: no cover

    def _set_fitted(self, bundle: Bundle, summary: TrainingSummary | None) -> None:
        self.bundle_ = bundle
        self.summary_ = summary
        self.offset_ = -bundle.calibrator.threshold
        # The columns a record is given with: a series model's window columns are its own.
        self.feature_names_in_ = np.asarray(bundle.input_columns, dtype=object)
        self.n_features_in_ = len(bundle.input_columns)

    # ---- scoring ---------------------------------------------------------------------------

    def score_records(
        self, X: Any, *, impute: Imputation = None, passthrough: Sequence[str] = ()
    ) -> ScoreResult:
        """The full typed result: anomaly scores, p-values, decisions, contributions, and the
        rows rejected with their reasons. ``X`` is a table, or one record as a mapping of
        column -> value (or a table's row, a pandas Series), or a list or generator of them (no
        records: an empty result): mappings skip the DataFrame, the fast way to score one
        record (``detector.features.records``). ``passthrough`` names columns to accept and
        leave unscored (an id, a timestamp)."""
        check_is_fitted(self, "bundle_")
        if impute not in (None, "median"):
            from detector.errors import ConfigError

            raise ConfigError(f"impute={impute!r}: give None (reject empty values) or 'median'")
        # One name given bare ('id') is one column, not the letters 'i' and 'd'. The columns
        # training ignored (`anomaly train --ignore-column`) are taken, as `anomaly score` does.
        kept = (passthrough,) if isinstance(passthrough, str) else tuple(passthrough)
        kept += tuple(c for c in self.bundle_.ignored_columns if c not in kept)
        if isinstance(X, pd.Series):  # one row of a table (frame.iloc[0]): a record
            _check_series_is_a_record(X, self.bundle_.input_columns)
            X = X.to_dict()
        if _columnar(X):  # {column: [values]}, as pd.DataFrame(d) takes it: was one record
            X = pd.DataFrame(dict(X))
        if isinstance(X, Mapping):
            return score_records(self.bundle_, [X], impute=impute, passthrough=kept)
        if isinstance(X, Iterator):  # records as a generator yields them
            X = list(X)
        if isinstance(X, list | tuple) and not X:  # no records: no scores, as an empty frame
            X = pd.DataFrame(columns=list(self.bundle_.input_columns))
        if isinstance(X, list | tuple) and all(isinstance(r, Mapping) for r in X):
            return score_records(self.bundle_, list(X), impute=impute, passthrough=kept)
        if self.bundle_.series is not None and not isinstance(X, pd.DataFrame):
            from detector.errors import DataError

            # An array has no names, and a series' time and key columns have no fixed place.
            raise DataError(
                "a series model reads its records by column name "
                f"({', '.join(self.bundle_.input_columns[:4])}, ...): pass a DataFrame, or "
                "records as mappings"
            )
        frame = _as_frame(X, self.feature_names_in_, wanted=self.bundle_.input_columns)
        asked = (passthrough,) if isinstance(passthrough, str) else tuple(passthrough)
        if absent := [c for c in asked if c not in frame.columns]:
            from detector.errors import SchemaError

            # A misspelt name was ignored, and the column the caller meant to keep was missing
            # from what they joined the scores to.
            raise SchemaError(
                f"passthrough {absent} not in the table; its columns are "
                f"{shortened(list(frame.columns), 400)}"
            )
        result = score_frame(self.bundle_, frame, impute=impute, passthrough=kept)
        if isinstance(X, pd.DataFrame) and not X.index.equals(pd.RangeIndex(len(X))):
            result = replace(result, labels=X.index)
        return result

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Higher = more anomalous, one per row ``(n_samples,)``; raises if any row is invalid."""
        result = self.score_records(X)
        if result.rejections:
            first = result.rejections[0]
            from detector.errors import DataError

            raise DataError(
                f"{len(result.rejections)} row(s) cannot be scored, e.g. row {first.row}: "
                f"{first.reason}; use score_records() to get scores for the valid rows "
                "and reasons for the others"
            )
        return result.anomaly_score

    def score_samples(self, X: Any) -> np.ndarray:
        """Higher = more normal (scikit-learn's convention): minus ``anomaly_score``."""
        return -self.anomaly_score(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """Negative for anomalies, positive for normal records: threshold - anomaly_score."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """-1 for anomalies, +1 for normal records, at the calibrated threshold."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    # ---- persistence -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted detector as a model bundle (no pickle)."""
        check_is_fitted(self, "bundle_")
        import_tensorflow_quietly()  # the network is written in Keras's format
        save_bundle(self.bundle_, path)

    def __getstate__(self) -> dict[str, Any]:
        # pickle (joblib.dump) of a fitted detector: loading a pickle runs code from the file,
        # which this tool's models never do. Unfitted, it pickles (parallel grid searches).
        if "bundle_" in self.__dict__:
            raise TypeError(
                "a fitted VAEDetector is not pickled (loading a pickle can run code from the "
                "file): save it as a bundle with det.save(path) and read it back with "
                "VAEDetector.load(path)"
            )
        return self.__dict__.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> VAEDetector:
        # The fitted bundle is only read, never changed, so a copy shares it (it holds
        # per-thread interpreters, which cannot be copied).
        copied = type(self)(**copy.deepcopy(self.get_params(deep=False), memo))
        if "bundle_" in self.__dict__:
            copied._set_fitted(self.bundle_, self.summary_)
        return copied

    def __copy__(self) -> VAEDetector:
        # copy.copy went through __getstate__ and was refused as a pickle.
        return self.__deepcopy__({})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VAEDetector:
        """A fitted detector from a bundle directory, with the hyperparameters it was trained
        with."""
        bundle = load_bundle(path)
        if not litert_available():
            import_tensorflow_quietly()  # it scores with TensorFlow
        accepted = cls().get_params()
        detector = cls(**_as_options({k: v for k, v in bundle.params.items() if k in accepted}))
        detector._set_fitted(bundle, None)
        return detector


#: Every parameter's name, and what other estimators call some of them.
_PARAMETERS = frozenset(o.name for o in training_options())
_ELSEWHERE = {
    "contamination": "target_fpr (the false-positive rate the threshold is set for)",
    "n_neighbors": "neighbours",
    "seed": "random_state",
    "max_epochs": "epochs",
    "hidden_layer_sizes": "hidden_units",
}


def _unknown_parameters(names: list[str]) -> str:
    """What to say of constructor keywords that are no parameter: a typo's likely meaning, or
    this estimator's name for another's parameter."""
    told = []
    for name in names:
        close = difflib.get_close_matches(name, _PARAMETERS, n=1, cutoff=0.75)
        if name in _ELSEWHERE:
            told.append(f"{name!r} (here: {_ELSEWHERE[name]})")
        else:
            told.append(f"{name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    return (
        f"VAEDetector has no parameter {', '.join(told)}; its parameters are "
        f"{', '.join(sorted(_PARAMETERS))}"
    )


def _as_options(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with lists (from a caller, from a bundle's JSON) as the tuples options hold,
    numpy numbers as Python's, ``random_state`` as an integer seed (``_seed``), and one value
    given bare to an option of several (``series_columns="host"``,
    ``hidden_units=64``) as a tuple of one: a string was taken letter by letter."""
    several = {o.name for o in training_options() if _holds_several(o.hint)}
    out = {}
    for name, value in params.items():
        if isinstance(value, np.generic):  # from a parameter grid of np.arange(...)
            value = value.item()
        if name == "random_state" and not isinstance(value, int | str | float):
            value = _seed(value)
        if isinstance(value, list):
            value = tuple(value)
        elif name in several and isinstance(value, str | int | float) and value is not None:
            value = (value,)
        out[name] = value
    return out


def _seed(random_state: Any) -> Any:
    """scikit-learn's ``random_state``: ``None`` (a fresh seed each fit) or a numpy
    ``RandomState``/``Generator`` (a seed drawn from it) as the integer seed training takes;
    the bundle records the seed used. Anything else is left for the options' check."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    return random_state


def _holds_several(hint: Any) -> bool:
    """Whether an option's type is a tuple (maybe ``| None``)."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return any(typing.get_origin(k) is tuple for k in kinds)


def _frame_of(column: pd.Series) -> str:
    """How to make a DataFrame of one ``column``, in the caller's terms."""
    if isinstance(column.name, str):
        return f"X[[{column.name!r}]] of its table, or X.to_frame()"
    return "X.to_frame(name=...)"


def _check_series_is_a_record(X: pd.Series, columns: Sequence[str]) -> None:
    """A Series is one record (``frame.iloc[0]``) when it is indexed by column names; one
    indexed otherwise is a column (``frame["cpu"]``), which was taken for a record of columns
    '0', '1', ... and refused as "missing column(s) cpu, mem; unknown column(s) 0, 1, ..."."""
    from detector.errors import DataError

    names = set(columns)  # a model of numbered columns knows them as '0', '1', ...
    if len(X) and not any(str(label) in names for label in X.index[:10_000]):
        named = f" {X.name!r}" if X.name is not None else ""
        raise DataError(
            f"got a pandas Series{named} of {len(X):,} values whose index ({X.index[0]!r}, ...) "
            f"names no column of the model: one column of a table? Pass a DataFrame: "
            f"{_frame_of(X)}; one record is a Series indexed by column names (frame.iloc[0]) "
            "or a dict"
        )


def _as_frame(
    X: Any, names: np.ndarray | None = None, *, wanted: Sequence[str] = ()
) -> pd.DataFrame:
    """``X`` as a DataFrame. Of the ``wanted`` columns, those a DataFrame holds as index levels
    (a time series indexed by its time: ``frame.set_index("ts")``) become columns again."""
    from detector.errors import DataError

    if isinstance(X, pd.DataFrame):
        if isinstance(X.columns, pd.MultiIndex):
            raise DataError(
                f"the columns are a MultiIndex (first {X.columns[0]!r}): a model's columns have "
                "one name each; flatten them first, e.g. frame.columns = "
                "['_'.join(map(str, c)) for c in frame.columns]"
            )
        fitted = [] if names is None else list(names)
        positional = fitted == [f"x{i}" for i in range(len(fitted))]
        if fitted and positional and list(X.columns) == list(range(len(fitted))):
            # A model fitted on an array, given pd.DataFrame(array): columns by position, as
            # scikit-learn takes a frame without names (it was refused: "missing x0, ...").
            X = X.set_axis(fitted, axis=1)
        if not all(isinstance(c, str) for c in X.columns):  # pd.DataFrame(array): 0, 1, 2...
            X = X.rename(columns=str)
        levels = [c for c in wanted if c not in X.columns and c in X.index.names]
        return X.reset_index(level=levels) if levels else X
    if _columnar(X):
        return _as_frame(pd.DataFrame(dict(X)), names, wanted=wanted)
    if X is None or isinstance(X, str | bytes | os.PathLike):
        hint = "" if X is None else ": read the file first, e.g. pd.read_csv(path)"
        raise DataError(f"expected a table of records, got {X!r}{hint}")
    if isinstance(X, Iterator):  # records as a generator yields them
        X = list(X)
    if isinstance(X, list | tuple) and X and all(isinstance(r, Mapping) for r in X):
        return _as_frame(pd.DataFrame.from_records(list(X)), names, wanted=wanted)
    if hasattr(X, "toarray") and hasattr(X, "nnz"):  # a SciPy sparse matrix (one-hot, counts)
        X = X.toarray()
    array = np.asarray(X)
    if array.dtype.names:  # a structured array (np.rec, DataFrame.to_records()): named columns
        return _as_frame(pd.DataFrame(array), names, wanted=wanted)
    if array.ndim != 2:
        hint = (
            ": one record is X.reshape(1, -1), one column X.reshape(-1, 1)"
            if array.ndim == 1
            else ""
        )
        if isinstance(X, pd.Series):  # a Series has no reshape: it was the hint given
            hint = f": one column is {_frame_of(X)}"
        raise DataError(
            f"expected a 2-D table (n_samples, n_features), got shape {array.shape}{hint}"
        )
    if names is None:
        names = np.asarray([f"x{i}" for i in range(array.shape[1])], dtype=object)
    if array.shape[1] != len(names):
        shown = ", ".join(map(str, names[:5])) + (", ..." if len(names) > 5 else "")
        raise DataError(
            f"expected {len(names)} columns ({shown}) as the model was fitted, got "
            f"{array.shape[1]}; pass the same columns in the same order, or a DataFrame"
        )
    frame = pd.DataFrame(array, columns=list(names))
    # An object array (a mixed frame's .to_numpy()) holds numbers as objects: read as such,
    # each float column would be text, a category per value.
    return frame.infer_objects() if array.dtype == object else frame


def _columnar(X: object) -> bool:
    """Whether ``X`` is a table given by columns, ``{name: [values, ...]}`` of one length each
    (``frame.to_dict("list")``): not a record, whose values are one each."""
    if not isinstance(X, Mapping) or not X:
        return False
    values = list(X.values())
    if not all(isinstance(v, list | tuple | np.ndarray | pd.Series) for v in values):
        return False
    return len({len(v) for v in values}) == 1
