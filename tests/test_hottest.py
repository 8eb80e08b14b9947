"""The one hottest-rows order (`tables.hottest`) against a plain reference, and every stage that
picks hot rows (planner, simulator, evaluate, stock comparison) picks the same rows."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import EmbeddingBagConfig

from tests.builders import profile_of_ids
from torchrec_hot.evaluate import evaluate_drift
from torchrec_hot.planner.table_plans import table_plan_from_counts
from torchrec_hot.tables.hottest import hot_lookups, hotness_ranks, hottest_rows

PROPS = settings(max_examples=60, deadline=None, derandomize=True)


def _reference(counts: np.ndarray, k: int) -> np.ndarray:
    """A stable argsort by descending count: ties (zero counts included) by smaller id."""
    return np.sort(np.argsort(-counts, kind="stable")[: max(0, min(k, counts.size))])


@st.composite
def _counts_and_k(draw):
    rows = draw(st.integers(1, 60))
    # few distinct values: many ties, many zero counts
    counts = np.array(draw(st.lists(st.integers(0, 4), min_size=rows, max_size=rows)), np.int64)
    return counts, draw(st.integers(-2, rows + 3))


@PROPS
@given(_counts_and_k())
def test_hottest_rows_follow_the_stable_descending_order(case):
    counts, k = case
    ids = hottest_rows(counts, k)
    assert ids.dtype == np.int64
    assert np.array_equal(ids, _reference(counts, k))
    ranks = hotness_ranks(counts, np.arange(counts.size))
    assert np.array_equal(np.flatnonzero(ranks < k), ids)
    assert sorted(ranks.tolist()) == list(range(counts.size))  # a permutation
    assert hot_lookups(counts, k) == int(counts[_reference(counts, k)].sum())


@PROPS
@given(_counts_and_k())
def test_planner_and_evaluate_pick_the_same_rows(case):
    counts, k = case
    n, k = counts.size, max(0, min(k, counts.size))
    table = EmbeddingBagConfig(name="t", num_embeddings=n, embedding_dim=4, feature_names=["f"])
    planned = table_plan_from_counts(table, counts, k, 16).hot_ids
    assert np.array_equal(planned, hottest_rows(counts, k))
    if k == 0 or k == n:
        return
    # The profile repeats each row `count` times; the hold-out looks up exactly the planned
    # rows, so `evaluate` finds all its held-out lookups on its chosen rows only if it chose
    # the planned rows (ties included).
    ids = np.repeat(np.arange(n), counts)
    if ids.size == 0:
        return
    profile = profile_of_ids([table], {"t": ids})
    holdout = profile_of_ids([table], {"t": planned})
    (row,) = evaluate_drift(profile, holdout, {"k": {"t": k}})
    assert row.actual == 1.0
