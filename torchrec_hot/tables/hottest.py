"""The one order of a table's hottest rows, used by the planner, the simulator, `evaluate` and
the stock comparison alike.

Rows are ordered by count descending; ties, zero counts included, go to the smaller id (what a
stable argsort of `-counts` gives). So the k hottest rows are the counted rows with the
highest counts and, when fewer than k rows were counted, the zero-count rows of smallest id.
"""

from __future__ import annotations

import numpy as np


def hottest_rows(counts: np.ndarray, k: int) -> np.ndarray:
    """Sorted int64 ids of the `k` hottest rows of a table with per-row `counts` (N,); k is
    clipped to [0, N]. O(N): a partition at the k-th largest count, not a full sort."""
    n = counts.shape[0]
    k = max(0, min(int(k), n))
    if k == n:
        return np.arange(n, dtype=np.int64)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    nonzero = np.flatnonzero(counts)
    values = counts[nonzero]
    if k < values.size:
        kth = np.partition(values, values.size - k)[values.size - k]  # k-th largest count
        above = nonzero[values > kth]
        top = np.concatenate([above, nonzero[values == kth][: k - above.size]])
    else:  # fewer rows were counted than asked for: zero-count rows, smallest ids first
        top = np.concatenate([nonzero, np.flatnonzero(counts == 0)[: k - nonzero.size]])
    return np.sort(top).astype(np.int64)


def hot_lookups(counts: np.ndarray, k: int) -> int:
    """Lookups served by the `k` hottest rows (the sum of the k largest counts)."""
    return int(counts[hottest_rows(counts, k)].sum())


def hotness_ranks(counts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each of `ids` in the hottest-rows order (int64): row r is among the k
    hottest iff rank(r) < k."""
    ids = np.asarray(ids, dtype=np.int64)
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        return ids.copy()
    order = np.argsort(-counts[nonzero], kind="stable")
    rank_of = np.empty(nonzero.size, dtype=np.int64)
    rank_of[order] = np.arange(nonzero.size, dtype=np.int64)
    pos = np.searchsorted(nonzero, ids)
    found = pos < nonzero.size
    found[found] = nonzero[pos[found]] == ids[found]
    # a zero-count row comes after every counted row, then by id among the zero-count rows
    return np.where(found, rank_of[np.minimum(pos, nonzero.size - 1)], nonzero.size + ids - pos)
