"""Heavy-hitter sketch: Misra-Gries bounds against exact counts, merging, the 5%-memory coverage
bar on Zipf 0.8-1.3, memory planning, and sketched profiles through the planner."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import EmbeddingBagConfig

from torchrec_hot import HotPlanner, PopularityProfile, make_topology
from torchrec_hot.data.synthetic import zipf_ranks
from torchrec_hot.data.workloads import window_batches
from torchrec_hot.profiling.counters import (
    EXACT_BYTES_PER_ROW,
    SKETCH_BYTES_PER_COUNTER,
    HeavyHitterSketch,
    plan_sketch_capacities,
)
from torchrec_hot.tables.spec import TableSpec

PROPS = settings(max_examples=40, deadline=None, derandomize=True)


def _check_bounds(sketch: HeavyHitterSketch, exact: np.ndarray) -> None:
    d = sketch.error_bound
    total = int(exact.sum())
    assert sketch.total == total
    assert sketch.ids.size <= sketch.capacity
    assert d <= (total - int(sketch.counters.sum())) / (sketch.capacity + 1) + 1e-9
    ids, est = sketch.estimates()
    assert np.all(est - d <= exact[ids]) and np.all(exact[ids] <= est)
    untracked = np.ones(exact.shape[0], dtype=bool)
    untracked[ids] = False
    assert np.all(exact[untracked] <= d)
    dense = sketch.counts()
    assert dense.dtype == np.int64 and dense.shape == exact.shape
    assert dense.sum() <= total


@PROPS
@given(
    rows=st.integers(1, 400),
    capacity=st.integers(1, 60),
    batches=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    alpha=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**31),
)
def test_misra_gries_bounds_hold_against_exact_counts(rows, capacity, batches, alpha, seed):
    rng = np.random.default_rng(seed)
    sketch = HeavyHitterSketch(rows, capacity)
    exact = np.zeros(rows, dtype=np.int64)
    for size in batches:
        ids = zipf_ranks(rows, alpha, size, rng) if alpha > 0 else rng.integers(0, rows, size)
        sketch.add(torch.from_numpy(ids))
        exact += np.bincount(ids, minlength=rows)
    _check_bounds(sketch, exact)


@PROPS
@given(rows=st.integers(1, 300), capacity=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_merged_sketches_keep_the_bounds_of_the_joint_stream(rows, capacity, seed):
    rng = np.random.default_rng(seed)
    parts, exact = [], np.zeros(rows, dtype=np.int64)
    for _ in range(3):
        s = HeavyHitterSketch(rows, capacity)
        for _ in range(2):
            ids = zipf_ranks(rows, 1.1, int(rng.integers(0, 200)), rng)
            s.add(torch.from_numpy(ids))
            exact += np.bincount(ids, minlength=rows)
        parts.append(s)
    merged = HeavyHitterSketch(rows, capacity)
    for s in parts:
        merged.merge(s)
    _check_bounds(merged, exact)


@pytest.mark.parametrize("alpha", [0.8, 0.95, 1.1, 1.3])
def test_sketch_at_5_percent_memory_covers_99_percent_of_exact_hot_lookups(alpha):
    """The bar: memory capped to 5% of exact counts' (8 bytes/row), hot rows chosen from the
    sketch cover >= 99% of the lookups exact counts' hot rows cover, at hot sizes 0.1-2%."""
    rows = 200_000
    capacity = int(0.05 * rows * EXACT_BYTES_PER_ROW) // SKETCH_BYTES_PER_COUNTER
    spec = TableSpec("t", rows, 16, ("f",))
    profile = PopularityProfile([spec], sketch_capacities={"t": capacity}, trace_max_ids=0)
    assert profile.mode("t") == "sketch"
    assert profile.nbytes <= 0.05 * rows * EXACT_BYTES_PER_ROW
    rng = np.random.default_rng()
    perm = rng.permutation(rows)
    exact = np.zeros(rows, dtype=np.int64)
    for _ in range(4):  # 4M lookups, 20 per row
        ids = perm[zipf_ranks(rows, alpha, 1_000_000, rng)]
        exact += np.bincount(ids, minlength=rows)
        profile.update_chunk(_chunk(ids))
    estimates = profile.counts("t")
    for frac in (0.001, 0.01, 0.02):
        k = int(frac * rows)
        best = np.sort(exact)[::-1][:k].sum()
        chosen = np.argsort(-estimates, kind="stable")[:k]
        assert exact[chosen].sum() >= 0.99 * best, (alpha, frac)
        share = profile.hot_share_estimate("t", k)
        true = best / exact.sum()
        assert share.lower - 1e-12 <= true <= share.upper + 1e-12


def _chunk(ids: np.ndarray):
    from torchrec_hot.data.chunk import FeatureIds, IdChunk

    return IdChunk(ids.shape[0], {"f": FeatureIds(torch.from_numpy(ids))})


def test_memory_plan_sketches_the_largest_tables_first_and_fits():
    specs = [TableSpec(f"t{i}", n, 8, (f"f{i}",)) for i, n in enumerate([10, 1000, 10**6, 10**5])]
    assert set(plan_sketch_capacities(specs, None).values()) == {None}
    limit = 2_000_000
    caps = plan_sketch_capacities(specs, limit)
    assert caps["t0"] is None and caps["t1"] is None and caps["t2"] is not None
    used = sum(
        t.num_embeddings * EXACT_BYTES_PER_ROW if caps[t.name] is None
        else caps[t.name] * SKETCH_BYTES_PER_COUNTER
        for t in specs
    )
    assert used <= limit
    with pytest.raises(ValueError, match="too small"):
        plan_sketch_capacities(specs, 1000)


def test_sketched_profile_plans_like_an_exact_one():
    tables = [
        EmbeddingBagConfig(name=f"t{i}", num_embeddings=n, embedding_dim=16,
                           feature_names=[f"f{i}"])
        for i, n in enumerate([20_000, 300, 50_000])
    ]
    exact = PopularityProfile(tables)
    sketched = PopularityProfile(tables, max_memory_bytes=int(0.1 * 70_300 * 8))
    assert [sketched.mode(t.name) for t in tables] == ["sketch", "exact", "sketch"]
    for kjt in window_batches(tables, 10, 4096, 1.1, seed=3):
        exact.update(kjt)
        sketched.update(kjt)
    for t in tables:
        assert sketched.lookups(t.name) == exact.lookups(t.name)
        assert sketched.counts(t.name).sum() <= exact.lookups(t.name)
    planner = HotPlanner(make_topology(2, "cuda"), hbm_budget_bytes=2**14, batch_size=512,
                         compare_with_stock=False)
    a, b = planner.plan(tables, exact), planner.plan(tables, sketched)
    for ta, tb in zip(a.tables, b.tables, strict=True):
        assert abs(ta.hot_rows - tb.hot_rows) <= 0.02 * max(ta.hot_rows, 1) + 2
        served = exact.counts(ta.name)[tb.hot_ids].sum()
        assert served >= 0.99 * exact.counts(ta.name)[ta.hot_ids].sum()
