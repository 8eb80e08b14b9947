"""Budget allocation against exact optima: global top-K (equal row sizes) and a knapsack DP."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import served_lookups
from torchrec_hot.tables.allocation import TableDemand, allocate_hot_rows

PROPS = settings(max_examples=60, deadline=None, derandomize=True)


def _counts(rng: np.random.Generator, rows: int, alpha: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, rows + 1) ** alpha
    draws = rng.choice(rows, size=rows * 3, p=weights / weights.sum())
    return np.bincount(rng.permutation(rows)[draws], minlength=rows).astype(np.int64)


def _knapsack_optimum(tables: list[TableDemand], budget: int) -> int:
    """Most lookups reachable by taking a prefix of every table's sorted counts (exact DP)."""
    best = np.zeros(budget + 1, dtype=np.int64)
    for t in tables:
        prefix = np.concatenate([[0], np.cumsum(t.sorted_counts)])
        new = best.copy()
        for k in range(1, len(prefix)):
            cost = k * t.row_bytes
            if cost > budget:
                break
            cand = best[: budget + 1 - cost] + prefix[k]
            new[cost:] = np.maximum(new[cost:], cand)
        best = new
    return int(best[budget])


@PROPS
@given(
    rows=st.lists(st.integers(1, 200), min_size=1, max_size=5),
    alphas=st.lists(st.floats(0.0, 1.5), min_size=5, max_size=5),
    budget_rows=st.integers(0, 600),
    seed=st.integers(0, 2**31),
)
def test_equal_row_sizes_take_the_globally_most_accessed_rows(rows, alphas, budget_rows, seed):
    rng = np.random.default_rng(seed)
    row_bytes = 132
    counts = [_counts(rng, n, a) for n, a in zip(rows, alphas, strict=False)]
    tables = [TableDemand.from_counts(f"t{i}", c, row_bytes) for i, c in enumerate(counts)]
    budget = budget_rows * row_bytes
    hot = allocate_hot_rows(tables, budget)
    assert sum(hot[t.name] * t.row_bytes for t in tables) <= budget
    best = np.sort(np.concatenate(counts))[::-1][:budget_rows].sum()
    assert served_lookups(tables, hot) == best  # exact, not just within 0.5%


@PROPS
@given(
    rows=st.lists(st.integers(1, 60), min_size=1, max_size=4),
    sizes=st.lists(st.sampled_from([2, 3, 5, 8]), min_size=4, max_size=4),
    budget=st.integers(0, 500),
    seed=st.integers(0, 2**31),
)
def test_different_row_sizes_are_near_the_knapsack_optimum(rows, sizes, budget, seed):
    rng = np.random.default_rng(seed)
    tables = [
        TableDemand.from_counts(f"t{i}", _counts(rng, n, 1.1) * 50, s)
        for i, (n, s) in enumerate(zip(rows, sizes, strict=False))
    ]
    hot = allocate_hot_rows(tables, budget)
    assert sum(hot[t.name] * t.row_bytes for t in tables) <= budget
    optimum = _knapsack_optimum(tables, budget)
    got = served_lookups(tables, hot)
    # greedy by density loses at most the lookups of one row per table
    slack = sum(int(t.sorted_counts[0]) for t in tables)
    assert got <= optimum and optimum - got <= slack
    total = sum(int(t.sorted_counts.sum()) for t in tables)
    if budget >= 50 * max(sizes):  # budgets of many rows: within 0.5% of all lookups
        assert optimum - got <= 0.005 * total


def test_whole_tables_when_everything_fits_and_nothing_for_zero_counts():
    small = TableDemand.from_counts("small", np.array([5, 0, 1, 0]), 10)
    unseen = TableDemand.from_counts("unseen", np.zeros(3, dtype=np.int64), 10)
    big = TableDemand.from_counts("big", np.array([9, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 10)
    hot = allocate_hot_rows([small, unseen, big], budget_bytes=80)
    # the looked-up rows (3 of them) cost 30; the rest of the budget makes the cheap tables
    # whole: unseen (30) then small (+20); big (+90) does not fit
    assert hot == {"small": 4, "unseen": 3, "big": 1}
    # tables over max_whole_table_bytes (small: 40 bytes whole) are not made whole
    assert allocate_hot_rows([small, unseen, big], 80, max_whole_table_bytes=35) == {
        "small": 2, "unseen": 3, "big": 1}
    assert allocate_hot_rows([small, unseen, big], 80, max_whole_table_bytes=0) == {
        "small": 2, "unseen": 0, "big": 1}


def test_negative_budget_is_refused():
    with pytest.raises(ValueError, match="budget_bytes"):
        allocate_hot_rows([], -1)
