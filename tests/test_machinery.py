"""Cache machinery, all-reduce and replication terms of the cost model against plain formulas."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrec_hot.planner.strategy.cost_model import CostModel, HardwareSpec, TableCostSpec
from torchrec_hot.planner.strategy.machinery import NO_MACHINERY, CacheMachinery
from torchrec_hot.planner.strategy.replication import (
    best_replication,
    holdout_hot_shares,
    replication_options,
)
from torchrec_hot.planner.strategy.types import Strategy, TableTraffic

PROPS = settings(max_examples=60, deadline=None, derandomize=True)
TOY = HardwareSpec("toy", hbm_bw=1e12, host_link_bw=1e10, ddr_bw=1e11, intra_host_bw=1e11,
                   inter_host_bw=1e10)
MACH = CacheMachinery(per_batch_us=40.0, per_lookup_ns=0.5, per_unique_ns=2.0,
                      per_insert_ns=7.0)


def _traffic(strategy, table="t", hbm_rows=64, hot_rows=0, lookups=1000.0, unique=300.0,
             fetched=50.0) -> TableTraffic:
    return TableTraffic(table=table, strategy=strategy, hbm_rows=hbm_rows, lookups=lookups,
                        unique_rows=unique, hbm_hit_rate=1.0, uvm_lookups=0.0,
                        fetched_rows=fetched, written_back_rows=0.0,
                        fetch_overlappable=strategy.prefetched, hot_rows=hot_rows)


def _models(n, tables=("t",), **kw):
    spec = TableCostSpec(dim=8, optimizer_bytes=4)
    specs = {t: spec for t in tables}
    return (CostModel(TOY, n, specs, 16, machinery=MACH, **kw),
            CostModel(TOY, n, specs, 16, machinery=NO_MACHINERY, **kw))


@PROPS
@given(strategy=st.sampled_from(list(Strategy)), n=st.integers(1, 64),
       lookups=st.floats(0, 1e7), unique_frac=st.floats(0, 1), fetched_frac=st.floats(0, 1),
       hbm_rows=st.integers(0, 10_000), hot_frac=st.floats(0, 1))
def test_per_id_machinery_is_the_plain_formula_where_the_kernels_run(
        strategy, n, lookups, unique_frac, fetched_frac, hbm_rows, hot_frac):
    unique = lookups * unique_frac
    hot = int(hbm_rows * hot_frac) if strategy is Strategy.STATIC_LOOK_FORWARD else 0
    traffic = _traffic(strategy, hbm_rows=hbm_rows, hot_rows=hot, lookups=lookups,
                       unique=unique, fetched=unique * fetched_frac)
    with_m, without = (m.table_cost(traffic) for m in _models(n))
    cached = strategy in (Strategy.LRU_CACHE, Strategy.LFU_CACHE, Strategy.LOOK_FORWARD,
                          Strategy.STATIC_LOOK_FORWARD) and hbm_rows - hot > 0
    expected = (lookups * 0.5 + unique * 2.0 + unique * fetched_frac * 7.0) / n / 1e6
    expected = expected if cached else 0.0
    critical = with_m.hbm_ms - without.hbm_ms
    background = with_m.background_ms - without.background_ms
    if strategy in (Strategy.LOOK_FORWARD, Strategy.STATIC_LOOK_FORWARD):  # prefetch stream
        assert critical == pytest.approx(0.0, abs=1e-15)
        assert background == pytest.approx(expected, rel=1e-9, abs=1e-15)
    else:
        assert background == pytest.approx(0.0, abs=1e-15)
        assert critical == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_per_batch_machinery_is_paid_once_per_cache_kind():
    tables = ("a", "b", "c", "d", "e")
    with_m, without = _models(8, tables, dense_ms=100.0)  # a wide window hides prefetches
    plan = [_traffic(Strategy.LRU_CACHE, "a"), _traffic(Strategy.LRU_CACHE, "b"),
            _traffic(Strategy.LOOK_FORWARD, "c"), _traffic(Strategy.LFU_CACHE, "d"),
            _traffic(Strategy.STATIC, "e")]
    a, b = with_m.evaluate(plan), without.evaluate(plan)
    assert a.batch_machinery_ms == pytest.approx(2 * 0.040)  # lru + lfu, on the critical path
    per_id = sum(with_m.table_cost(t).hbm_ms - without.table_cost(t).hbm_ms for t in plan)
    assert a.embedding_ms - b.embedding_ms == pytest.approx(2 * 0.040 + per_id)
    lf_per_id = with_m.table_cost(plan[2]).background_ms - without.table_cost(plan[2]).background_ms
    assert a.background_ms - b.background_ms == pytest.approx(0.040 + lf_per_id)
    # no window: the prefetched kind's per-batch charge is exposed too
    tight, _ = _models(8, tables)
    only_lf = [_traffic(Strategy.LOOK_FORWARD, "c", lookups=0.0, unique=0.0, fetched=0.0)]
    bd = tight.evaluate(only_lf)
    assert bd.batch_machinery_ms == 0.0 and bd.exposed_ms == pytest.approx(0.040 - bd.window_ms)


def test_a_cache_without_slots_and_scaled_machinery():
    with_m, _ = _models(2)
    empty = _traffic(Strategy.LRU_CACHE, hbm_rows=0)
    assert with_m.table_cost(empty).machinery_ms == 0.0
    assert with_m.evaluate([empty]).batch_machinery_ms == 0.0
    assert MACH.scaled(2.0).per_insert_ns == 14.0 and MACH.scaled(0.0) == NO_MACHINERY
    with pytest.raises(ValueError):
        CacheMachinery(per_batch_us=-1.0)
    with pytest.raises(ValueError):
        MACH.scaled(-1.0)


@PROPS
@given(n=st.integers(1, 128), local=st.integers(1, 16), nbytes=st.floats(0, 1e10))
def test_allreduce_is_a_ring_over_the_all_to_all_bandwidth(n, local, nbytes):
    model = CostModel(TOY, n, {}, 1, local_world_size=local)
    bw = TOY.intra_host_bw if n <= local else TOY.inter_host_bw
    assert model.allreduce_ms(nbytes) == pytest.approx(2 * (n - 1) / n * nbytes / bw * 1e3)


@PROPS
@given(n=st.sampled_from([1, 8, 64]), local=st.sampled_from([1, 8]),
       batch=st.integers(1, 8192), dim=st.sampled_from([16, 128]),
       pooling=st.floats(1.0, 4.0), seed=st.integers(0, 2**16))
def test_replication_terms_and_best_against_plain_formulas(n, local, batch, dim, pooling, seed):
    rng = np.random.default_rng(seed)
    spec = TableCostSpec(dim=dim, optimizer_bytes=4)
    model = CostModel(TOY, n, {"t": spec}, batch, local_world_size=local)
    sizes = [0, *sorted(rng.integers(1, 100_000, 5).tolist())]
    shares = np.sort(rng.random(len(sizes)))
    shares[0] = 0.0
    opts = replication_options(model, "t", sizes, shares, pooling)
    net = TOY.intra_host_bw if n <= local else TOY.inter_host_bw
    a2a = 2 * (n * batch * dim * 4) * (n - 1) / n**2 / net * 1e3
    for o, r, s in zip(opts, sizes, shares, strict=True):
        assert o.saved_a2a_ms == pytest.approx(a2a * s**pooling)
        assert o.allreduce_ms == pytest.approx(2 * (n - 1) / n * r * dim * 4 / net * 1e3)
        assert o.update_ms == pytest.approx(2 * r * (dim * 4 + 4) / TOY.hbm_bw * 1e3)
        assert o.hbm_bytes_per_rank == r * (dim * 4 + 4)
    best = best_replication(opts)
    assert best.net_ms == max(o.net_ms for o in opts) and best.net_ms >= 0.0  # R = 0 is free


def test_holdout_hot_shares_rank_by_the_profile_and_count_the_holdout():
    rng = np.random.default_rng(0)
    profile = rng.integers(1, 6, 500)  # positive, many ties: smaller id first
    holdout = rng.integers(0, 50, 500)
    order = np.lexsort((np.arange(500), -profile))
    sizes = [0, 1, 7, 100, 499, 500]
    want = [holdout[order[:r]].sum() / holdout.sum() for r in sizes]
    assert holdout_hot_shares(profile, holdout, sizes) == pytest.approx(want)
    assert holdout_hot_shares(profile, np.zeros(500, np.int64), sizes).tolist() == [0.0] * 6
