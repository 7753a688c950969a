"""Peak memory and wall time of encoding a large float64 table in process.

Run: ``python tests/benchmarks/bench_encode.py [--rows 1000000] [--columns 420] [--past-clip
0.001] [--rejected 0.001]`` under ``/usr/bin/time -v``.

Builds a frame of ``--rows`` x ``--columns`` standard normal float64 values (the size of a
series' windows: 1,000,000 windows of 20 metrics are 420 features) as pandas holds a series'
windows frame, one column-major block and its only copy, fits a schema on its first 20,000
rows and encodes it whole. ``--past-clip`` sets one value (in a column drawn at random) of
that share of the rows to 1e6, past the encoding's clip (an overflow report), ``--rejected``
one of that share's to NaN (rejected rows). Prints the encoding's wall time, the peak RSS
before it (the frame) and after it (``/usr/bin/time -v``'s "Maximum resident set size" is the
same number).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from detector.features.encode import encode
from detector.features.schema import fit_schema


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=420)
    parser.add_argument("--past-clip", type=float, default=0.0, help="share of rows, 0-1")
    parser.add_argument("--rejected", type=float, default=0.0, help="share of rows, 0-1")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # Column-major, filled a column at a time: no second copy of the table before encoding.
    values = np.empty((args.columns, args.rows)).T
    for j in range(args.columns):
        values[:, j] = rng.standard_normal(args.rows)
    names = [f"m{j}" for j in range(args.columns)]
    frame = pd.DataFrame(values, columns=names, copy=False)
    del values
    schema = fit_schema(frame.head(20_000))
    # After the schema is fitted on normal rows; each in a column drawn at random, so that
    # every block of columns meets some.
    for share, value in [(args.past_clip, 1e6), (args.rejected, np.nan)]:
        rows = rng.choice(args.rows, int(share * args.rows), replace=False)
        columns = rng.integers(0, args.columns, len(rows))
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            frame.iat[row, column] = value
    before = _peak_gb()
    start = time.perf_counter()
    batch = encode(schema, frame)
    wall = time.perf_counter() - start
    # Counted without making the overflow table (main's EncodedBatch held it: its rows).
    past_clip = getattr(batch, "past_clip", None)
    if past_clip is not None:
        past = len(past_clip.rows)
    else:
        past = 0 if batch.overflow is None else int(batch.overflow.any(axis=1).sum())
    print(
        f"encoded {args.rows:,} x {args.columns} in {wall:.2f} s: peak RSS {before:.2f} GB "
        f"before (the frame), {_peak_gb():.2f} GB after; result {batch.values.nbytes / 1e9:.2f} "
        f"GB {batch.values.dtype}, {len(batch.rejections):,} rows rejected, {past:,} with a "
        "value past the clip"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
