"""HotPlanner with per-table strategies: plans, constraints, budgets, files, reports, exactness.

The workload mixes stable, drifting and session-like tables (fresh seeds every run); the
profile is one window and the hold-out the next, so drift and sessions really move.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from torchrec.optim import RowWiseAdagrad

from tests.builders import zipf_profile
from tests.dist_utils import run_on_ranks
from tests.workers import strategy_training_worker
from torchrec_hot import (
    HotPlan,
    HotPlanner,
    PopularityProfile,
    build_report,
    format_report,
    make_topology,
)
from torchrec_hot.data.synthetic import criteo_tables
from torchrec_hot.data.workloads import workload_batches, zipf_batches
from torchrec_hot.planner.strategy.evaluation import StrategyOptions
from torchrec_hot.planner.strategy.machinery import NO_MACHINERY

WORLD, BATCH = 4, 256


def _workload(seed: int):
    tables = criteo_tables("criteo-kaggle", scale=0.01, embedding_dim=32)
    kinds = {tables[2].name: "session", tables[11].name: "session", tables[3].name: "drift"}
    profile = PopularityProfile(tables, trace_max_ids=0)
    profile.update_all(workload_batches(tables, 24, WORLD * BATCH, 1.05, kinds, 0, seed))
    holdout = PopularityProfile(tables, trace_max_ids=1 << 24)
    holdout.update_all(workload_batches(tables, 12, WORLD * BATCH, 1.05, kinds, 1, seed))
    return tables, kinds, profile, holdout


@pytest.fixture(scope="module")
def planned():
    seed = int(np.random.default_rng().integers(2**20))
    tables, kinds, profile, holdout = _workload(seed)
    total = sum(t.num_embeddings * (t.embedding_dim * 4 + 4) for t in tables)
    budget = int(0.05 * total / WORLD)
    planner = HotPlanner(make_topology(WORLD, "cuda"), budget, batch_size=BATCH,
                         optimizer_class=RowWiseAdagrad,
                         # bytes only, so this small workload's caches win
                         strategies=StrategyOptions(holdout=holdout, machinery=NO_MACHINERY))
    return seed, tables, kinds, planner.plan(tables, profile), budget


def test_every_rank_stays_within_the_budget_and_caches_become_torchrec_constraints(planned):
    seed, tables, kinds, plan, budget = planned
    assert max(plan.hbm_bytes_per_rank) <= budget, seed
    module = plan.sharding_plan.plan["split_ebc"]
    cached = [t for t in plan.tables if t.cache_rows > 0]
    assert cached, (seed, [t.strategy for t in plan.tables])
    for tp in cached:
        part = tp.name + "__cold" if tp.placement.value == "split" else tp.name
        ps = module[part]
        assert ps.compute_kernel == "fused_uvm_caching", (seed, tp.name)
        assert math.isclose(ps.cache_params.load_factor, tp.cache_load_factor, rel_tol=1e-9)
        assert ps.cache_params.prefetch_pipeline == tp.prefetch
        stats = ps.cache_params.stats  # from the hold-out trace, for TorchRec's proposers
        assert stats is not None and stats.expected_lookups > 0, (seed, tp.name)
        assert 0 <= stats.expected_miss_rate(ps.cache_params.load_factor) <= 1
        assert tp.prefetch == (tp.strategy in ("look_forward", "static_look_forward"))
    for tp in plan.tables:
        if tp.cache_rows == 0:
            kernels = {module[n].compute_kernel for n in module if n.split("__")[0] == tp.name}
            assert "fused_uvm_caching" not in kernels


def test_session_tables_get_a_cache_and_ours_beats_every_single_strategy(planned):
    seed, tables, kinds, plan, _ = planned
    by_name = {t.table: t for t in plan.strategies.tables}
    for name, kind in kinds.items():
        if kind == "session":  # ids live a few batches: a static set cannot follow them
            assert by_name[name].strategy not in ("static", "all_uvm"), (seed, by_name[name])
    ms = plan.strategies.model_ms
    for name, value in ms.items():
        if name != "ours" and not math.isnan(value):
            assert ms["ours"] <= value * (1 + 1e-9), (seed, name, ms)
    assert ms["all HBM (limit)"] <= ms["ours"] * (1 + 1e-9)
    assert ms["ours"] < ms["all static (FAE)"], (seed, ms)
    link = plan.strategies.model_link_bytes  # a single strategy as fast moves no fewer bytes
    for name, value in ms.items():
        if name not in ("ours", "stock TorchRec", "all HBM (limit)") and not math.isnan(value):
            if value <= ms["ours"] * (1 + 1e-12):
                assert link["ours"] <= link[name] * (1 + 1e-9), (seed, name, ms, link)


def test_plan_file_keeps_strategies_and_the_report_shows_them(planned, tmp_path):
    seed, tables, kinds, plan, _ = planned
    plan.to_json(tmp_path / "plan.json")
    back = HotPlan.from_json(tmp_path / "plan.json")
    for a, b in zip(plan.tables, back.tables, strict=True):
        assert (a.strategy, a.cache_rows, a.cache_algorithm, a.prefetch) == (
            b.strategy, b.cache_rows, b.cache_algorithm, b.prefetch)
    assert back.strategies == plan.strategies
    text = format_report(build_report(back))
    assert "[strategy per table]" in text and "stock TorchRec" in text
    for t in plan.strategies.tables:
        assert t.table in text


def test_a_plan_exists_at_a_budget_too_small_for_any_whole_table():
    tables, _, profile, holdout = _workload(int(np.random.default_rng().integers(2**20)))
    total = sum(t.num_embeddings * (t.embedding_dim * 4 + 4) for t in tables)
    budget = int(0.01 * total / WORLD)
    plan = HotPlanner(make_topology(WORLD, "cuda"), budget, batch_size=BATCH,
                      optimizer_class=RowWiseAdagrad, compare_with_stock=False,
                      strategies=StrategyOptions(holdout=holdout)).plan(tables, profile)
    assert max(plan.hbm_bytes_per_rank) <= budget
    assert plan.strategies.model_ms["ours"] < plan.strategies.model_ms["all static (FAE)"] * 1.0001


def test_strategies_need_a_trace_to_measure_on():
    tables = criteo_tables("criteo-kaggle", scale=0.001, embedding_dim=16)
    profile = PopularityProfile(tables, trace_max_ids=0)
    profile.update_all(zipf_batches(tables, 2, 64, 1.1))
    with pytest.raises(ValueError, match="no held-out batches"):
        HotPlanner(make_topology(2, "cuda"), 1 << 20, batch_size=32, compare_with_stock=False,
                   strategies=StrategyOptions()).plan(tables, profile)


@pytest.mark.multiprocess
def test_a_cached_strategy_plan_trains_bit_identically_to_stock_torchrec():
    seed = int(np.random.default_rng().integers(2**20))
    for r in run_on_ranks(strategy_training_worker, 2, seed):
        assert "fused_uvm_caching" in r["kernels"].values(), (seed, r)
        assert r["presummed"] == r["colocated"], (seed, r)
        assert r["forward_diff"] <= 1e-5, (seed, r)
        assert r["moved"] and r["weights_equal"] and r["optim_equal"], (seed, r)


def test_report_of_a_strategy_plan_without_the_stock_comparison():
    """Stock's modeled time is NaN when it was not compared: the report shows '-' there (it
    raised 'cannot convert float NaN to integer' before)."""
    tables = criteo_tables("criteo-kaggle", scale=0.002, embedding_dim=8)
    profile = zipf_profile(tables, 1, 8, 64, 1.05)
    holdout = zipf_profile(tables, 2, 8, 64, 1.05)
    total = sum(t.num_embeddings * (t.embedding_dim * 4 + 4) for t in tables)
    plan = HotPlanner(make_topology(2, "cuda"), int(0.05 * total / 2), batch_size=64,
                      compare_with_stock=False,
                      strategies=StrategyOptions(holdout=holdout)).plan(tables, profile)
    assert math.isnan(plan.strategies.model_ms["stock TorchRec"])
    text = format_report(build_report(plan))
    stock_row = next(line for line in text.splitlines() if line.startswith("stock TorchRec"))
    assert stock_row.split()[2:] == ["-"] * 4, stock_row
    ours_row = next(line for line in text.splitlines() if line.startswith("ours "))
    assert float(ours_row.split()[1]) == pytest.approx(plan.strategies.model_ms["ours"], abs=1e-4)


def test_the_cost_model_sees_the_topology_hosts(monkeypatch):
    """Multi-host topologies charge the all-to-all at network speed: the strategy evaluation
    builds its cost model with the topology's ranks per host (it assumed one host before)."""
    import torchrec_hot.planner.strategy.evaluation as strategy_plan

    seen = []

    class Recording(strategy_plan.CostModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append((self.world_size, self.local_world_size))

    monkeypatch.setattr(strategy_plan, "CostModel", Recording)
    tables = criteo_tables("criteo-kaggle", scale=0.002, embedding_dim=8)
    profile = zipf_profile(tables, 1, 8, 64, 1.05)
    holdout = zipf_profile(tables, 2, 8, 64, 1.05)
    total = sum(t.num_embeddings * (t.embedding_dim * 4 + 4) for t in tables)
    for local in (1, 2):
        HotPlanner(make_topology(2, "cuda", local_world_size=local), int(0.2 * total / 2),
                   batch_size=32, compare_with_stock=False,
                   strategies=StrategyOptions(holdout=holdout)).plan(tables, profile)
    assert seen == [(2, 1), (2, 2)]
