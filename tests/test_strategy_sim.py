"""Per-table strategy evaluation on held-out batches (`strategy_sim`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import EmbeddingBagConfig

from torchrec_hot import PopularityProfile
from torchrec_hot.data.synthetic import zipf_ranks
from torchrec_hot.data.workloads import zipf_batches
from torchrec_hot.planner.strategy.fbgemm_cache import ASSOC, prepare_trace, simulate
from torchrec_hot.planner.strategy.simulate import (
    evaluate_table,
    holdout_batches,
    look_forward_rows,
)
from torchrec_hot.planner.strategy.types import Strategy
from torchrec_hot.tables.hottest import hotness_ranks

PROPS = settings(max_examples=15, deadline=None, derandomize=True)


def workload(seed: int, rows: int, batches: int, size: int, zipf: float | None):
    """(profiled counts, held-out batches) drawn from one popularity law."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(rows)

    def draw() -> np.ndarray:
        if zipf is None:
            return rng.integers(0, rows, size)
        return perm[zipf_ranks(rows, zipf, size, rng)]

    counts = np.bincount(np.concatenate([draw() for _ in range(8)]), minlength=rows)
    return counts.astype(np.int64), [draw() for _ in range(batches)]


def test_hot_ranks_follow_the_planner_order():
    counts = np.array([0, 5, 2, 5, 0, 9, 2, 0], dtype=np.int64)
    # by count descending, ties (zero counts too) by smaller id
    order = [5, 1, 3, 2, 6, 0, 4, 7]
    assert hotness_ranks(counts, np.arange(8)).tolist() == [order.index(i) for i in range(8)]
    assert hotness_ranks(np.zeros(4, np.int64), np.arange(4)).tolist() == [0, 1, 2, 3]


@PROPS
@given(st.integers(0, 1000), st.sampled_from([None, 0.8, 1.1]), st.integers(0, 600))
def test_static_hit_rate_is_the_hot_rows_share_of_held_out_lookups(seed, zipf, size):
    counts, batches = workload(seed, 500, 6, 300, zipf)
    res = evaluate_table("t", counts, batches, [size], warmup_batches=2)
    hot = np.argsort(-counts, kind="stable")[: min(size, 500)]
    measured = np.concatenate(batches[2:])
    share = np.isin(measured, hot).mean()
    static = res[Strategy.STATIC][0]
    assert static.hbm_hit_rate == pytest.approx(share)
    assert static.uvm_lookups == pytest.approx((1 - share) * 300)
    assert static.hbm_rows == min(size, 500) and static.fetched_rows == 0


@PROPS
@given(st.integers(0, 1000), st.sampled_from([None, 1.05]), st.integers(0, 3))
def test_look_forward_size_has_no_current_batch_misses(seed, zipf, k):
    _, batches = workload(seed, 4000, 8, 400, zipf)
    rows = look_forward_rows(batches, k)
    assert rows % ASSOC == 0
    working = max(
        np.unique(np.concatenate(batches[max(0, t - k) : t + 1])).size for t in range(len(batches))
    )
    assert rows >= working
    run = simulate(prepare_trace(batches), rows // ASSOC, "lru", look_ahead=k)
    assert run.uncached.sum() == 0 and run.uncached_lookups.sum() == 0


def test_look_forward_strategy_at_its_size_serves_everything_from_hbm():
    counts, batches = workload(7, 20_000, 10, 2000, 1.05)
    size = look_forward_rows(batches, 1)
    res = evaluate_table("t", counts, batches, [size // 2, size], look_ahead=1)
    small, exact = res[Strategy.LOOK_FORWARD]
    assert exact.misses_current_batch == 0 and exact.hbm_hit_rate == 1.0
    assert exact.fetch_overlappable and exact.fetched_rows > 0
    assert small.misses_current_batch > 0 and small.hbm_hit_rate < 1.0
    slf = res[Strategy.STATIC_LOOK_FORWARD][1]
    assert slf.hbm_rows <= size and slf.fetched_rows < exact.fetched_rows


def test_bounds_and_sanity_over_sizes():
    counts, batches = workload(3, 5000, 12, 800, 1.1)
    sizes = [0, 40, 200, 1000, 5000, 9000]
    res = evaluate_table("t", counts, batches, sizes)
    assert set(res) == set(Strategy) and all(len(v) == len(sizes) for v in res.values())
    lookups = res[Strategy.ALL_UVM][0].lookups
    assert lookups == 800
    for hbm, uvm in zip(res[Strategy.ALL_HBM], res[Strategy.ALL_UVM], strict=True):
        assert (hbm.hbm_hit_rate, hbm.uvm_lookups, hbm.hbm_rows) == (1.0, 0.0, 5000)
        assert (uvm.hbm_hit_rate, uvm.uvm_lookups, uvm.hbm_rows) == (0.0, lookups, 0)
    static = [t.hbm_hit_rate for t in res[Strategy.STATIC]]
    assert static == sorted(static) and static[0] == 0.0 and static[-1] == 1.0
    for strategy in (Strategy.LRU_CACHE, Strategy.LFU_CACHE, Strategy.LOOK_FORWARD):
        entries = res[strategy]
        assert [t.hbm_rows for t in entries] == [ASSOC * -(-min(s, 5000) // ASSOC) for s in sizes]
        assert entries[0].hbm_hit_rate == 0.0 and entries[0].fetched_rows == 0
        for t in entries:
            assert 0.0 <= t.hbm_hit_rate <= 1.0
            assert t.uvm_lookups == pytest.approx((1 - t.hbm_hit_rate) * lookups)
            assert t.written_back_rows <= t.fetched_rows + 1e-9 or t.fetched_rows == 0
        assert entries[-1].hbm_hit_rate == pytest.approx(1.0, abs=0.02)
    for t in res[Strategy.STATIC_LOOK_FORWARD]:
        assert t.hbm_rows <= max(t.hbm_rows, 0) and t.fetch_overlappable
    assert res[Strategy.LRU_CACHE][3].fetch_overlappable is False


def test_held_out_batches_come_from_a_profile_trace():
    table = EmbeddingBagConfig(name="t", num_embeddings=1000, embedding_dim=8, feature_names=["f"])
    kjts = list(zipf_batches([table], 12, 64, alpha=1.05, seed=4))
    profile = PopularityProfile([table], trace_max_ids=100_000, trace_run_batches=12)
    for kjt in kjts:
        profile.update(kjt)
    ids = [k.values().numpy() for k in kjts]
    got = holdout_batches(profile, "t")
    assert len(got) == 12 and all((a == b).all() for a, b in zip(got, ids, strict=True))
    merged = holdout_batches(profile, "t", global_batch_size=4 * 64)
    assert len(merged) == 3 and (merged[1] == np.concatenate(ids[4:8])).all()
    uneven = holdout_batches(profile, "t", global_batch_size=5 * 64)  # 12 = 5 + 5 + 2
    assert len(uneven) == 2
    counts = profile.counts("t")
    res = evaluate_table("t", counts, got, [100])
    assert res[Strategy.STATIC][0].hbm_hit_rate > 0.3
    with pytest.raises(KeyError):
        holdout_batches(profile, "nope")


def test_bad_inputs_raise_clear_errors():
    counts, batches = workload(1, 100, 3, 50, None)
    with pytest.raises(ValueError, match="HBM sizes must be >= 0"):
        evaluate_table("t", counts, batches, [10, -1])
    with pytest.raises(ValueError, match=r"outside \[0, 100\)"):
        evaluate_table("t", counts, [*batches, np.array([100])], [10])
    with pytest.raises(ValueError, match=r"outside \[0, 100\)"):
        evaluate_table("t", counts, [np.array([-2, 3])], [10])
    with pytest.raises(ValueError, match="look_ahead"):
        evaluate_table("t", counts, batches, [10], look_ahead=-1)
    with pytest.raises(ValueError, match="warmup_batches"):
        evaluate_table("t", counts, batches, [10], warmup_batches=3)
    with pytest.raises(ValueError, match="at least one"):
        evaluate_table("t", counts, [], [10])
    with pytest.raises(ValueError, match="counts"):
        evaluate_table("t", counts.reshape(10, 10), batches, [10])
    with pytest.raises(ValueError, match="look-ahead"):
        look_forward_rows(batches, -1)


def test_static_parts_are_reported_for_the_planner():
    """`hot_rows` says how many of a point's HBM rows are static hot rows: all of them for
    STATIC, part for STATIC_LOOK_FORWARD (the rest is the cold half's cache), none for caches;
    and the static part is the profile's top rows, whose lookups the cache never sees."""
    seed = int(np.random.default_rng().integers(2**20))
    counts, batches = workload(seed, 4000, 12, 2000, 1.1)
    sizes = [0, 64, 500, 1500, 4000]
    out = evaluate_table("t", counts, batches, sizes)
    for size, s in zip(sizes, out[Strategy.STATIC], strict=True):
        assert s.hot_rows == s.hbm_rows == size, seed
    for p in out[Strategy.STATIC_LOOK_FORWARD]:
        assert 0 <= p.hot_rows <= p.hbm_rows, (seed, p)
        assert (p.hbm_rows - p.hot_rows) % ASSOC == 0, (seed, p)
    assert any(p.hot_rows > 0 for p in out[Strategy.STATIC_LOOK_FORWARD]), seed
    for strategy in (Strategy.LRU_CACHE, Strategy.LFU_CACHE, Strategy.LOOK_FORWARD):
        assert all(p.hot_rows == 0 for p in out[strategy])


def test_a_strategy_subset_runs_only_those_and_gives_the_same_traffic():
    counts, batches = workload(11, 3000, 6, 400, 1.1)
    sizes = [64, 640]
    full = evaluate_table("t", counts, batches, sizes)
    for wanted in ([Strategy.LFU_CACHE], [Strategy.LOOK_FORWARD, Strategy.STATIC_LOOK_FORWARD]):
        part = evaluate_table("t", counts, batches, sizes, strategies=wanted)
        assert set(part) == {*wanted, Strategy.ALL_HBM, Strategy.ALL_UVM}
        for s in part:
            assert part[s] == full[s], s
