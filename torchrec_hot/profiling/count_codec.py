"""How one table's exact counts are stored in a profile file (format 3): sparse or dense, with
the narrowest count dtype that holds them.

  dense   `counts`: one count per row;
  sparse  `rows` (ascending) and `counts` of the rows counted at least once;
whichever takes fewer bytes: sparse when nnz * (row bytes + count bytes) < rows * count bytes.
Counts are uint8, uint16 or uint32 when the largest count fits (int64 beyond); rows are uint32
for tables of up to 2^32 rows (int64 beyond), so a table's bytes follow the rows it counted,
not its size. Measured (docs/BENCHMARKS.md): an exact Criteo-Kaggle-shaped profile of 40,000
samples (0.4% of 33.8M rows counted) went from 143 MB (dense int32) to 4.9 MB, most of it the
int32 trace; the 1.04-billion-id Terabyte-shaped one (12% of 178M rows) from 725 MB to 175 MB.
zlib (np.savez_compressed) would take the former to 1.9 MB but made its save 0.44 s instead of
0.01 s, and would cost seconds on the latter: files stay uncompressed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from torchrec_hot.profiling.counters import ExactCounter
from torchrec_hot.profiling.table_pool import TablePool

COUNT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.int64))
ROW_DTYPES = (np.dtype(np.uint32), np.dtype(np.int64))
# dtypes a dense table's counts may have on reading (format 2 wrote int32/int64)
DENSE_READ_DTYPES = (*COUNT_DTYPES, np.dtype(np.int32))


def count_dtype(high: int) -> np.dtype:
    """The narrowest of `COUNT_DTYPES` holding every count up to `high` (>= 0)."""
    for dtype in COUNT_DTYPES[:-1]:
        if high <= np.iinfo(dtype).max:
            return dtype
    return COUNT_DTYPES[-1]


def encode_counts(counter: ExactCounter) -> tuple[str, dict[str, np.ndarray]]:
    """("sparse", {"rows", "counts"}) or ("dense", {"counts"}), whichever is smaller."""
    rows, counts = counter.nonzero()
    cdt = count_dtype(int(counts.max()) if counts.size else 0)
    rdt = counter.row_dtype
    if rows.size * (rdt.itemsize + cdt.itemsize) < counter.num_rows * cdt.itemsize:
        return "sparse", {"rows": rows, "counts": _narrowed(counts, cdt)}
    return "dense", {"counts": _narrowed(counter.raw(), cdt)}


def _narrowed(counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Non-negative `counts` as `dtype`: int32 -> uint32 is a view (same bits), else a cast."""
    if counts.dtype == np.int32 and dtype == np.uint32:
        return counts.view(np.uint32)
    return counts.astype(dtype, copy=False)


def encode_all(
    counters: Sequence[ExactCounter], threads: int | None = None
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """`encode_counts` of each counter, in order, on `threads` threads (`TablePool`; numpy's
    nonzero, gathers and casts release the GIL; Criteo Terabyte's 178M rows: 1.0 s on one)."""
    with TablePool(threads) as pool:
        return pool.map(encode_counts, counters, [c.num_rows for c in counters])


def decode_counts(
    layout: str, num_rows: int, rows: np.ndarray | None, counts: np.ndarray, total: int
) -> ExactCounter:
    """The counter `encode_counts` wrote, checked: dense counts have `num_rows` entries;
    sparse rows ascend strictly within [0, num_rows) and their counts are positive; the counts
    add up to `total`. Raises `ValueError` saying what is wrong."""
    if counts.ndim != 1:
        raise ValueError(f"counts have shape {counts.shape}, expected 1-D")
    if layout == "dense":
        if counts.shape != (num_rows,) or counts.dtype not in DENSE_READ_DTYPES:
            raise ValueError(
                f"dense counts have shape {counts.shape} and dtype {counts.dtype}, expected "
                f"({num_rows},) of {'/'.join(str(d) for d in DENSE_READ_DTYPES)}"
            )
        if counts.dtype.kind == "i" and counts.size and counts.min() < 0:
            raise ValueError("dense counts are negative")
        counter = ExactCounter.from_counts(counts)
    elif layout == "sparse":
        if rows is None or rows.shape != counts.shape or rows.dtype not in ROW_DTYPES:
            got = "none" if rows is None else f"shape {rows.shape}, dtype {rows.dtype}"
            raise ValueError(f"sparse rows ({got}) do not match counts of shape {counts.shape}")
        if counts.dtype not in COUNT_DTYPES:
            raise ValueError(f"sparse counts have dtype {counts.dtype}")
        if rows.size and (
            rows[0] < 0
            or rows[-1] >= num_rows
            or (rows[1:] <= rows[:-1]).any()
            or (counts == 0).any()
            or (counts.dtype.kind == "i" and (counts < 0).any())
        ):
            raise ValueError(
                f"sparse counts are inconsistent (rows not ascending within [0, {num_rows}), "
                "or a count not positive)"
            )
        counter = ExactCounter.from_nonzero(num_rows, rows, counts)
    else:
        raise ValueError(f"unknown counts layout {layout!r}")
    if counter.total != total:
        raise ValueError(f"counts add up to {counter.total}, the file says {total}")
    return counter
