"""HotPlanner with per-table strategies: plans, constraints, budgets, files, reports, exactness.

The workload mixes stable, drifting and session-like tables (fresh seeds every run); the
profile is one window and the hold-out the next, so drift and sessions really move.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.optim import RowWiseAdagrad

from tests import test_dmp_exactness as dmp_cases
from tests.dist_utils import run_on_ranks
from torchrec_hot import HotPlan, HotPlanner, PopularityProfile, make_topology
from torchrec_hot.checkpoint.gathered import (
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
)
from torchrec_hot.data.synthetic import criteo_tables, zipf_batches
from torchrec_hot.data.workloads import workload_batches
from torchrec_hot.planner.plan_io import retarget_sharding_plan
from torchrec_hot.planner.strategy.evaluation import StrategyOptions
from torchrec_hot.planner.strategy.types import Strategy
from torchrec_hot.report import build_report, format_report
from torchrec_hot.sharding.apply import apply_hot_plan

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
                         strategies=StrategyOptions(holdout=holdout))
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


def _stock_plan(model, tables, world: int):
    """Stock TorchRec's plan for a CUDA topology, every table whole in HBM (`fused`)."""
    constraints = {
        t.name: ParameterConstraints(sharding_types=["table_wise"], compute_kernels=["fused"])
        for t in tables
    }
    planner = EmbeddingShardingPlanner(
        topology=make_topology(world, "cuda"), batch_size=8, constraints=constraints
    )
    return planner.plan(model, [EmbeddingBagCollectionSharder()])


def strategy_training_worker(
    rank: int, world: int, seed: int, cached: bool = True, device_type: str = "cpu"
) -> dict:
    """One rank of training a plan made for a CUDA topology (hot rows in HBM, cold rows in UVM,
    with `cached` also prefetched UVM caches) against stock TorchRec with every table in HBM,
    on the ranks' GPUs or (`device_type="cpu"`) with both plans retargeted to CPU, where
    TorchRec runs every kernel from host memory. Also used by tests/test_gpu.py."""
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    rng = np.random.default_rng([seed, 0])
    tables = dmp_cases._tables(rng)
    weights = {
        f"ebc.embedding_bags.{t.name}.weight": torch.from_numpy(
            rng.standard_normal((t.num_embeddings, t.embedding_dim)).astype(np.float32))
        for t in tables
    }  # fmt: skip
    profile = PopularityProfile(tables).update_all(zipf_batches(tables, 16, 16, 1.2, seed=seed))
    options = None
    if cached:  # held-out draws bring cold ids, so the caches see misses
        holdout = PopularityProfile(tables).update_all(
            zipf_batches(tables, 16, 16, 1.2, seed=seed + 1))  # fmt: skip
        options = StrategyOptions(
            strategies=(Strategy.LRU_CACHE, Strategy.LOOK_FORWARD, Strategy.STATIC_LOOK_FORWARD),
            holdout=holdout,
        )
    plan = HotPlanner(make_topology(world, "cuda"), 24 * 1024, batch_size=8,
                      compare_with_stock=False, strategies=options).plan(
        tables, profile, module_path="ebc")  # fmt: skip
    kernels = {n: ps.compute_kernel for n, ps in plan.sharding_plan.plan["ebc.split_ebc"].items()}
    stock_model = dmp_cases._model(tables, "rowwise_adagrad")
    stock_plan, hot_plan = _stock_plan(stock_model, tables, world), plan.sharding_plan
    if device_type != "cuda":
        stock_plan = retarget_sharding_plan(stock_plan, device_type)
        hot_plan = retarget_sharding_plan(hot_plan, device_type)
    stock = DistributedModelParallel(stock_model, plan=stock_plan, device=device)
    hot = DistributedModelParallel(
        apply_hot_plan(dmp_cases._model(tables, "rowwise_adagrad"), plan), plan=hot_plan,
        device=device)  # fmt: skip
    load_logical_state_dict(stock, weights)
    load_logical_state_dict(hot, weights)
    out_stock = dmp_cases._train(stock, tables, seed, rank, device)
    out_hot = dmp_cases._train(hot, tables, seed, rank, device)
    w_stock, w_hot = logical_state_dict(stock), logical_state_dict(hot)
    o_stock, o_hot = logical_optimizer_state(stock), logical_optimizer_state(hot)
    pairs = zip(out_stock, out_hot, strict=True)
    module_plan = hot_plan.plan["ebc.split_ebc"]
    return {
        "kernels": kernels,
        "presummed": sorted(hot.module.ebc.presummed_features()),
        "colocated": sorted(t.feature_names[0] for t in plan.tables
                            if dmp_cases._colocated(module_plan, t.name)),
        "forward_diff": max(float((a - b).abs().max()) for a, b in pairs),
        "weights_equal": all(torch.equal(w_stock[k].cpu(), w_hot[k].cpu()) for k in w_stock),
        "moved": any(not torch.equal(w_hot[k].cpu(), weights[k]) for k in weights),
        "optim_equal": all(torch.equal(o_stock[k][n].cpu(), o_hot[k][n].cpu())
                           for k in o_stock for n in o_stock[k]),  # fmt: skip
    }


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
    profile = PopularityProfile(tables).update_all(zipf_batches(tables, 8, 64, 1.05, seed=1))
    holdout = PopularityProfile(tables).update_all(zipf_batches(tables, 8, 64, 1.05, seed=2))
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
    profile = PopularityProfile(tables).update_all(zipf_batches(tables, 8, 64, 1.05, seed=1))
    holdout = PopularityProfile(tables).update_all(zipf_batches(tables, 8, 64, 1.05, seed=2))
    total = sum(t.num_embeddings * (t.embedding_dim * 4 + 4) for t in tables)
    for local in (1, 2):
        HotPlanner(make_topology(2, "cuda", local_world_size=local), int(0.2 * total / 2),
                   batch_size=32, compare_with_stock=False,
                   strategies=StrategyOptions(holdout=holdout)).plan(tables, profile)
    assert seen == [(2, 1), (2, 2)]
