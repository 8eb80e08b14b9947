"""Rows valued by their expected lookups in new input (`expected_counts`) and the planner's
allocation by them (`HotPlanner(rank_rows_by="expected")`), against plain references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import tables_of, zipf_profile
from torchrec_hot import HotPlanner, make_topology
from torchrec_hot.planner.memory import row_bytes
from torchrec_hot.profiling.stats import expected_counts
from torchrec_hot.tables.hottest import hottest_rows

PROPS = settings(max_examples=40, deadline=None, derandomize=True)


@PROPS
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=400),
    rate=st.sampled_from([1.0, 0.5]),
)
def test_expected_counts_keep_the_hottest_order(counts, rate):
    """Monotone in the count (so the hottest rows stay the most valued ones), 0 for rows never
    seen, positive for rows seen, the count itself above Good-Turing's range."""
    c = np.asarray(counts, dtype=np.int64)
    scaled = c / rate if rate < 1 else c
    e = expected_counts(scaled, rate)
    order = np.argsort(c, kind="stable")
    assert np.all(np.diff(e[order]) >= -1e-9)
    assert np.all((e == 0) == (c == 0))
    assert np.allclose(e[c > 22], scaled[c > 22])


def test_expected_counts_are_good_turing_where_it_applies():
    """Hand-made histogram: N1 = 100, N2 = 20, N3 = 10, N4 = 5; Good-Turing c* = (c+1)N[c+1]/N[c]
    gives 0.4, 1.5, 2.0, then 4 (N5 = 0: kept); already monotone."""
    c = np.repeat([0, 1, 2, 3, 4, 30], [50, 100, 20, 10, 5, 2])
    e = expected_counts(c)
    for count, want in ((0, 0.0), (1, 0.4), (2, 1.5), (3, 2.0), (4, 4.0), (30, 30.0)):
        assert e[c == count] == pytest.approx(want), count


def test_planner_ranks_rows_by_expected_lookups():
    """Each table's hot rows are still its hottest (raw order); across tables the budget goes to
    the rows of highest expected lookups per byte: a plain greedy over every row agrees within
    one row per table."""
    tables = tables_of([40_000, 30_000, 5_000], [16, 32, 16])
    profile = zipf_profile(tables, seed=3, num_batches=4, batch_size=1024, alpha=1.05)
    budget = 60_000
    plan = HotPlanner(make_topology(2, "cuda"), budget, batch_size=1024,
                      compare_with_stock=False, rank_rows_by="expected").plan(tables, profile)
    assert any(0 < tp.hot_rows < tp.num_embeddings for tp in plan.tables)  # a real split
    per_row = {t.name: row_bytes(t, None) for t in tables}
    values, owner = [], []
    for i, t in enumerate(tables):
        counts = profile.counts(t.name)
        tp = plan.table(t.name)
        if 0 < tp.hot_rows < t.num_embeddings:
            assert np.array_equal(tp.hot_ids, hottest_rows(counts, tp.hot_rows))
        e = expected_counts(counts)
        values.append(e[e > 0] / per_row[t.name])
        owner.append(np.full((e > 0).sum(), i))
    density, who = np.concatenate(values), np.concatenate(owner)
    order = np.argsort(-density, kind="stable")
    spent = np.cumsum([per_row[tables[i].name] for i in who[order]])
    taken = who[order][spent <= sum(tp.hot_rows * tp.row_bytes for tp in plan.tables)]
    for i, t in enumerate(tables):
        tp = plan.table(t.name)
        if tp.hot_rows < t.num_embeddings:  # whole tables are the planner's own promotion
            assert abs(tp.hot_rows - int((taken == i).sum())) <= max(1, len(tables)), t.name
    with pytest.raises(ValueError, match="rank_rows_by"):
        HotPlanner(make_topology(2, "cuda"), budget, rank_rows_by="luck")
