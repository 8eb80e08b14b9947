"""Budget allocation: how many hot rows each table gets so that HBM serves the most lookups.

This is a knapsack whose items are rows: row i of table t costs `row_bytes[t]` bytes of HBM
(weights plus the optimizer state TorchRec charges) and is worth `count[t][i]` lookups. Taking
rows in order of lookups per byte (density) is optimal for the fractional problem; here every
item of a table has the same size, so the greedy answer is at most one row per table short of the
integral optimum (and exactly optimal when all tables have the same row size: then it takes the
globally most accessed rows).

The greedy is computed without sorting all tables together: a bisection on the density
threshold `d`, where each table contributes its rows with `count / row_bytes >= d`, finds the
smallest threshold whose rows fit; the leftover bytes then go to rows at the next density.

Rows never looked up are worth nothing and never become hot, except that a table whose every
row fits in what is left after the greedy is made whole in HBM (no split, no remap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TableDemand:
    """One table as the allocator sees it.

    Attributes:
        name: table name.
        sorted_counts: lookups per row, nonzero only, sorted descending (int64, length <= rows;
            or a row's worth in expected lookups, float64, `profiling.stats.expected_counts`).
        num_embeddings: rows of the table (zero-count rows included).
        row_bytes: bytes one row costs in HBM (weights + optimizer state).
    """

    name: str
    sorted_counts: np.ndarray
    num_embeddings: int
    row_bytes: int

    @staticmethod
    def from_counts(name: str, counts: np.ndarray, row_bytes: int) -> TableDemand:
        nonzero = counts[counts > 0]
        return TableDemand(name, -np.sort(-nonzero), int(counts.shape[0]), int(row_bytes))


def _rows_at_least(table: TableDemand, density: float) -> int:
    """Rows of `table` whose density (lookups per byte) is >= `density`."""
    # sorted_counts is descending; count >= density * row_bytes <=> -count <= -threshold.
    threshold = density * table.row_bytes
    return int(np.searchsorted(-table.sorted_counts, -threshold, side="right"))


def _rows_with_count_at_least(table: TableDemand, count: float) -> int:
    return int(np.searchsorted(-table.sorted_counts, -count, side="right"))


def allocate_hot_rows(
    tables: Sequence[TableDemand], budget_bytes: int, max_whole_table_bytes: int | None = None
) -> dict[str, int]:
    """Hot rows per table (the `k` most accessed rows of each) within `budget_bytes` in all.
    Tables of at most `max_whole_table_bytes` may be made whole with leftover budget.

    Returns name -> hot row count, with sum(k * row_bytes) <= budget_bytes.
    """
    if budget_bytes < 0:
        raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
    live = [t for t in tables if t.sorted_counts.size > 0]
    hot = {t.name: 0 for t in tables}
    if not live:
        return _promote_whole_tables(tables, hot, budget_bytes, max_whole_table_bytes)

    def cost(density: float) -> int:
        return sum(_rows_at_least(t, density) * t.row_bytes for t in live)

    top = max(float(t.sorted_counts[0]) / t.row_bytes for t in live)
    if cost(0.0) <= budget_bytes:  # every looked-up row fits
        for t in live:
            hot[t.name] = int(t.sorted_counts.size)
        return _promote_whole_tables(tables, hot, budget_bytes, max_whole_table_bytes)

    # Bisection: lo is a density whose rows do not fit, hi one whose rows fit.
    lo, hi = 0.0, top * (1.0 + 1e-12) + 1e-300
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if cost(mid) <= budget_bytes:
            hi = mid
        else:
            lo = mid
    for t in live:
        hot[t.name] = _rows_at_least(t, hi)
    left = budget_bytes - sum(hot[t.name] * t.row_bytes for t in live)
    # Fill what is left with the next rows in density order (ties split in table order).
    candidates = sorted(
        (t for t in live if hot[t.name] < t.sorted_counts.size),
        key=lambda t: -float(t.sorted_counts[hot[t.name]]) / t.row_bytes,
    )
    for t in candidates:
        k = hot[t.name]
        available = _rows_with_count_at_least(t, float(t.sorted_counts[k])) - k
        take = min(available, left // t.row_bytes)
        hot[t.name] = k + int(take)
        left -= int(take) * t.row_bytes
    return hot


def _promote_whole_tables(
    tables: Sequence[TableDemand],
    hot: dict[str, int],
    budget_bytes: int,
    max_whole_table_bytes: int | None,
) -> dict[str, int]:
    """Makes tables whole in HBM, cheapest first, while the leftover budget allows."""
    left = budget_bytes - sum(hot[t.name] * t.row_bytes for t in tables)
    limit = max_whole_table_bytes if max_whole_table_bytes is not None else budget_bytes
    partial = [
        t
        for t in tables
        if hot[t.name] < t.num_embeddings and t.num_embeddings * t.row_bytes <= limit
    ]
    for t in sorted(partial, key=lambda t: (t.num_embeddings - hot[t.name]) * t.row_bytes):
        extra = (t.num_embeddings - hot[t.name]) * t.row_bytes
        if extra <= left:
            hot[t.name] = t.num_embeddings
            left -= extra
    return hot
