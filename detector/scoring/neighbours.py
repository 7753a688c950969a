"""Distance to the nearest normal rows: the nonparametric half of the default score.

A k-nearest-neighbour distance to the training rows is the strongest simple detector on
train-on-normal data (``tests/benchmarks/README.md``, "Detection quality"). ``NeighbourBank``
keeps a bank of normal training rows (the rows the network fitted on, never the validation or
calibration rows, so that the calibration scores are honest) and scores a record by the mean
Euclidean distance to its ``k`` nearest bank rows.

The distance is taken in the encoded feature space (``detector.features.encode.encode``), each
numeric column rescaled so that its scale is at least ``range_floor`` of its training range:
``weight_j = scale_j / max(scale_j, range_floor * (max_j - min_j))``, one-hot slots weight 1.
With the default 0.5 that is min-max-like scaling: a column with a long tail or a
near-constant one does not dominate the distance because its standard deviation is small.
Each column of a scored record is then clipped to its training range widened by ``margin``
of those units on each side, so no single column adds more than about ``margin`` beyond the
range to the distance. Both were chosen on every labelled family at once, with ``k`` and the
bank size (README, "Detection quality"; ``tests/benchmarks/bench_distance.py``).

The distance a record is scored by is that mean plus ``box_weight`` (0.5) times how far its
columns lie outside the *box* of the normal rows, summed over columns: each column's central
range, from its 0.5% to its 99.5% quantile over the fitted rows. The neighbour term judges the
record as a whole; the box term adds what an average over neighbours dilutes, a column beyond
where normal rows go. Of 33 variants on all 36 labelled sets (tables, rows and windows of
series) it had the best mean rank and was the leave-one-data-set-out choice on every one; it
costs the Donut KPIs' AUPRC (``bench_distance.py --study tails``, ``tests/benchmarks/README.md``).

Scores, oriented like the VAE's log-likelihood estimates (higher = more normal), added to the
estimates by ``scores``:

- ``knn``: minus that distance;
- ``elbo_knn``: minus the sum of the negative ELBO and the distance, each standardised by its
  median and interquartile range on the validation rows.

The bank holds training rows, in encoded units. A bundle that must not hold them can be
trained with ``neighbours=0`` (no bank; the ``knn`` scores are then unavailable). Saved as
``neighbours.npz`` and loaded with ``allow_pickle=False``: loading runs no code.

Per-column attribution for the distance: each column's squared difference between the record
and the mean of its ``k`` nearest bank rows, plus its squared (weighted) distance beyond the
box, so the column that is farthest from the normal rows most like the record is blamed first.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from detector.errors import BundleError
from detector.features.schema import Schema

#: Neighbours averaged over; 5 is the common default (scikit-learn, PyOD, ADBench's kNN).
DEFAULT_K = 5
#: Each numeric column's scale in the distance is at least this fraction of its training range.
DEFAULT_RANGE_FLOOR = 0.5
#: A scored value is clipped this many (widened) scale units beyond its column's training range.
DEFAULT_MARGIN = 0.5
#: Bank cells (rows x encoded features) at most: a record's search costs one multiply-add per
#: cell, so this bounds the scoring time whatever the width (4,210 rows of 38 features, 16,000
#: of 10). The rows are drawn at random from the fitted rows when there are more; the size
#: was chosen with its speed and detection measured (README, "Detection quality").
DEFAULT_BANK_CELLS = 160_000
#: The box's bounds: each column's quantiles at this level and one minus it, over the fit rows.
DEFAULT_BOX_QUANTILE = 0.005
#: The distance to the box counts this much beside the mean distance to the neighbours.
DEFAULT_BOX_WEIGHT = 0.5
#: Bank rows at most, however narrow the rows.
MAX_BANK_ROWS = 20_000
#: Rows per block where a step holds (rows, k, features) values: ~12 MB at 38 features.
_BLOCK = 8192
#: Score kinds this module adds, in order.
KINDS = ("knn", "elbo_knn")


@dataclass(frozen=True, eq=False)
class NeighbourBank:
    """Normal rows ``bank`` ``(m, n_features)`` in the weighted encoded space, the column
    ``weights`` ``(n_features,)`` that map encoded rows into it and the ``lower``/``upper``
    bounds ``(n_features,)`` a weighted row is clipped to, ``k``, the validation medians
    and IQRs ``location``/``scale`` ``(2,)`` of (negative ELBO, distance), and the normal
    rows' box ``box_low``/``box_high`` ``(n_features,)`` (weighted units) with its weight."""

    bank: np.ndarray
    weights: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    k: int
    location: np.ndarray
    scale: np.ndarray
    box_low: np.ndarray
    box_high: np.ndarray
    box_weight: float = DEFAULT_BOX_WEIGHT

    @classmethod
    def fit(
        cls,
        schema: Schema,
        fit_rows: np.ndarray,
        val_rows: np.ndarray,
        val_neg_elbo: np.ndarray,
        *,
        k: int = DEFAULT_K,
        range_floor: float = DEFAULT_RANGE_FLOOR,
        margin: float = DEFAULT_MARGIN,
        max_cells: int = DEFAULT_BANK_CELLS,
        seed: int = 0,
        leave_one_out: bool = False,
        box_quantile: float = DEFAULT_BOX_QUANTILE,
        box_weight: float = DEFAULT_BOX_WEIGHT,
    ) -> NeighbourBank:
        """A bank from the encoded rows the network fitted on ``(n_fit, n_features)``,
        standardised on the validation rows and their negative ELBO ``(n_val,)``.

        ``leave_one_out``: a table too small to hold rows out gives the same rows as both
        (``val_rows`` is ``fit_rows``), and each is then measured against the others only."""
        weights = column_weights(schema, range_floor)
        lower, upper = column_bounds(schema, weights, margin)
        rows = np.asarray(fit_rows, dtype=np.float32)
        # From every fitted row, not the bank's sample: the tails are what a sample misses.
        box_low, box_high = np.quantile(
            np.clip(rows * weights, lower, upper), [box_quantile, 1.0 - box_quantile], axis=0
        ).astype(np.float32)
        max_rows = bank_rows(schema.n_features, max_cells)
        if len(rows) > max_rows and not leave_one_out:
            pick = np.random.default_rng(seed).choice(len(rows), max_rows, replace=False)
            rows = rows[np.sort(pick)]
        partial = cls(
            bank=np.ascontiguousarray(rows * weights, dtype=np.float32),
            weights=weights,
            lower=lower,
            upper=upper,
            k=int(min(k, len(rows) - 1 if leave_one_out else len(rows))),
            location=np.zeros(2),
            scale=np.ones(2),
            box_low=box_low,
            box_high=box_high,
            box_weight=float(box_weight),
        )
        distance = partial.distances(val_rows, leave_one_out=leave_one_out)
        location, scale = [], []
        for values in (np.asarray(val_neg_elbo, dtype=np.float64), distance):
            location.append(float(np.median(values)))
            spread = float(np.subtract(*np.percentile(values, [75, 25])))
            scale.append(spread if spread > 0 else (float(np.std(values)) or 1.0))
        return cls(
            bank=partial.bank,
            weights=weights,
            lower=lower,
            upper=upper,
            k=partial.k,
            location=np.asarray(location),
            scale=np.asarray(scale),
            box_low=box_low,
            box_high=box_high,
            box_weight=partial.box_weight,
        )

    @cached_property
    def _index(self) -> Any:
        import faiss

        # Exact search (no approximation): one BLAS product and a heap per block of rows,
        # measured 3x faster than scikit-learn's brute force on 38 columns.
        index = faiss.IndexFlatL2(self.bank.shape[1])
        index.add(self.bank)
        return index

    def prepare(self) -> None:
        """Build the search index now rather than on the first query."""
        self._index  # noqa: B018 - a cached property: reading it builds it

    def neighbours(
        self, x: np.ndarray, *, leave_one_out: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encoded rows ``(n, n_features)`` -> distances and bank positions of their ``k``
        nearest bank rows, each ``(n, k)``. ``leave_one_out``: ``x`` is the bank's own rows,
        and each row's neighbours are the other rows."""
        return self._search(np.ascontiguousarray(self._project(x)), leave_one_out)

    def _search(self, query: np.ndarray, leave_one_out: bool) -> tuple[np.ndarray, np.ndarray]:
        """``neighbours`` for rows already in the distance space (``_project``)."""
        if len(query) == 0:
            return np.zeros((0, self.k)), np.zeros((0, self.k), dtype=np.int64)
        if not leave_one_out:
            index = self._index.search(query, self.k)[1]
            return self._exact(query, index), index
        if query.shape != self.bank.shape:
            raise ValueError("leave_one_out needs the bank's own rows")
        found = self._index.search(query, self.k + 1)[1]
        own = found == np.arange(len(found))[:, None]
        # Drop each row itself; where a duplicate pushed it out of the k + 1, drop the last.
        own[~own.any(axis=1), -1] = True
        index = found[~own].reshape(len(found), self.k)
        return self._exact(query, index), index

    def _exact(self, query: np.ndarray, index: np.ndarray) -> np.ndarray:
        # Recomputed from the differences in float64: the search's expanded |q|^2 - 2 q.b +
        # |b|^2 loses ~1e-3 relative in float32, and a record must score the same alone or in
        # a batch. In blocks: the differences of a million rows would take 1.5 GB.
        if len(query) <= _BLOCK:
            diff = query[:, None, :].astype(np.float64) - self.bank[index]
            return np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))  # type: ignore[no-any-return]
        out = np.empty(index.shape, dtype=np.float64)
        for i in range(0, len(query), _BLOCK):
            diff = (
                query[i : i + _BLOCK, None, :].astype(np.float64) - self.bank[index[i : i + _BLOCK]]
            )
            out[i : i + _BLOCK] = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff))
        return out

    def _project(self, x: np.ndarray) -> np.ndarray:
        """Encoded rows into the distance space: weighted, then clipped to the bounds."""
        weighted = np.asarray(x, dtype=np.float32) * self.weights
        return np.clip(weighted, self.lower, self.upper, out=weighted)  # type: ignore[no-any-return]

    def _box(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows in the distance space -> how far they lie outside the box, weighted and summed
        over columns ``(n,)``, and each column's square of its part ``(n, n_features)`` (the
        units of the neighbour term's attribution)."""
        beyond = np.maximum(query - self.box_high, 0) + np.maximum(self.box_low - query, 0)
        beyond *= np.float32(self.box_weight)
        return beyond.sum(axis=1, dtype=np.float64), np.square(beyond)

    def distances(self, x: np.ndarray, *, leave_one_out: bool = False) -> np.ndarray:
        """The distance of encoded rows ``(n, n_features)`` to the normal rows ``(n,)``: the
        mean to their ``k`` nearest bank rows plus the weighted distance to the box; higher =
        farther from every normal row."""
        query = np.ascontiguousarray(self._project(x))
        distance = self._search(query, leave_one_out)[0].sum(axis=1) / self.k
        return distance + self._box(query)[0]  # type: ignore[no-any-return]

    def scores(
        self, x: np.ndarray, estimates: dict[str, np.ndarray], *, leave_one_out: bool = False
    ) -> dict[str, np.ndarray]:
        """The ``KINDS`` scores for encoded rows ``x`` given the graph's ``estimates``, each
        ``(n,)``, higher = more normal (``elbo_knn`` only when ``estimates`` hold the ELBO); and
        ``knn_terms`` ``(n, n_features)``, each feature's squared difference from the mean of
        the ``k`` neighbours plus its squared part of the box term (for attribution)."""
        query = np.ascontiguousarray(self._project(x))
        distance, index = self._search(query, leave_one_out)
        # sum / k is what mean computes, without its per-call overhead (a record's scoring
        # makes two of these calls)
        box, box_terms = self._box(query)
        total = distance.sum(axis=1) / self.k + box
        if len(query) <= _BLOCK:
            terms = np.square(query - self.bank[index].sum(axis=1) / np.float32(self.k))
        else:
            terms = np.empty(query.shape, dtype=np.float32)
            for i in range(0, len(query), _BLOCK):  # bounds the (rows, k, features) gather
                centre = self.bank[index[i : i + _BLOCK]].mean(axis=1)
                terms[i : i + _BLOCK] = np.square(query[i : i + _BLOCK] - centre)
        out = {"knn": -total, "knn_terms": terms + box_terms}
        if "elbo" in estimates:
            standard_elbo = (-estimates["elbo"] - self.location[0]) / self.scale[0]
            standard_knn = (total - self.location[1]) / self.scale[1]
            out["elbo_knn"] = -(standard_elbo + standard_knn)
        return out

    # ---- persistence ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            bank=self.bank,
            weights=self.weights,
            lower=self.lower,
            upper=self.upper,
            k=np.asarray(self.k),
            location=self.location,
            scale=self.scale,
            box_low=self.box_low,
            box_high=self.box_high,
            box_weight=np.asarray(self.box_weight),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, content: bytes, n_features: int) -> NeighbourBank:
        """Read ``to_bytes``' output; ``BundleError`` if it is not a bank for ``n_features``."""
        try:
            with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
                bank = np.asarray(arrays["bank"], dtype=np.float32)
                weights = np.asarray(arrays["weights"], dtype=np.float32)
                lower = np.asarray(arrays["lower"], dtype=np.float32)
                upper = np.asarray(arrays["upper"], dtype=np.float32)
                k = int(arrays["k"])
                location = np.asarray(arrays["location"], dtype=np.float64)
                scale = np.asarray(arrays["scale"], dtype=np.float64)
                if "box_low" in arrays:
                    box_low = np.asarray(arrays["box_low"], dtype=np.float32)
                    box_high = np.asarray(arrays["box_high"], dtype=np.float32)
                    box_weight = float(arrays["box_weight"])
                else:  # a bank saved before the box: scored as it was trained, without it
                    box_low = np.full(n_features, -np.inf, dtype=np.float32)
                    box_high = np.full(n_features, np.inf, dtype=np.float32)
                    box_weight = 0.0
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"the neighbour bank cannot be read ({exc}); retrain") from None
        fine = (
            bank.ndim == 2
            and bank.shape[1] == n_features
            and weights.shape == lower.shape == upper.shape == (n_features,)
            and bool((lower <= upper).all())
            and 1 <= k <= len(bank)
            and location.shape == (2,)
            and scale.shape == (2,)
            and np.isfinite(bank).all()
            and bool((scale > 0).all())
            and box_low.shape == box_high.shape == (n_features,)
            and bool((box_low <= box_high).all())
            and np.isfinite(box_weight)
            and box_weight >= 0
        )
        if not fine:
            raise BundleError("the neighbour bank does not match the schema; retrain the model")
        return cls(
            bank=bank,
            weights=weights,
            lower=lower,
            upper=upper,
            k=k,
            location=location,
            scale=scale,
            box_low=box_low,
            box_high=box_high,
            box_weight=box_weight,
        )


def column_weights(schema: Schema, range_floor: float) -> np.ndarray:
    """``(n_features,)`` weights mapping encoded rows into the distance space: each numeric
    column's scale raised to at least ``range_floor`` of its training range; one-hot slots 1."""
    weights = np.ones(schema.n_features, dtype=np.float32)
    for j, col in enumerate(schema.numeric):
        widened = max(col.scale, range_floor * (col.maximum - col.minimum))
        weights[j] = col.scale / widened if widened > 0 else 1.0
    return weights


def column_bounds(
    schema: Schema, weights: np.ndarray, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(n_features,)`` lower and upper bounds of the distance space: each numeric column's
    training range, weighted, widened by ``margin`` on each side; one-hot slots unbounded."""
    lower = np.full(schema.n_features, -np.inf, dtype=np.float32)
    upper = np.full(schema.n_features, np.inf, dtype=np.float32)
    for j, col in enumerate(schema.numeric):
        lower[j] = (col.minimum - col.mean) / col.scale * weights[j] - margin
        upper[j] = (col.maximum - col.mean) / col.scale * weights[j] + margin
    return lower, upper


def bank_rows(n_features: int, max_cells: int = DEFAULT_BANK_CELLS) -> int:
    """How many rows a bank of ``n_features``-wide rows keeps: ``max_cells`` over the width,
    at least 1,000 and at most ``MAX_BANK_ROWS``."""
    return int(min(MAX_BANK_ROWS, max(1_000, max_cells // max(n_features, 1))))


def set_search_threads(threads: int) -> None:
    """The threads the neighbour search uses in this process (faiss's OpenMP pool). Several
    server workers on a few cores each take their share, so they do not oversubscribe them."""
    import faiss

    faiss.omp_set_num_threads(max(1, int(threads)))
