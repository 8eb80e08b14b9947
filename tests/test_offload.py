"""Tuned stock: TorchRec's embedding offloading (fused_uvm_caching + CacheStatistics +
EmbeddingOffloadScaleupProposer) planned on a small CUDA topology, beside TorchRec's own
unbudgeted proposer, and carried through HotPlanner, its summary and its file."""

import math
from types import SimpleNamespace

import pytest
from torchrec.distributed.types import CacheAlgorithm
from torchrec.optim import RowWiseAdagrad

from tests.builders import zipf_profile
from torchrec_hot import HotPlan, HotPlanner, ProfileCacheStatistics, make_topology
from torchrec_hot.data.synthetic import criteo_tables
from torchrec_hot.planner.memory import row_bytes
from torchrec_hot.planner.offload import compare_with_tuned_stock
from torchrec_hot.planner.plan_io import parameter_shardings
from torchrec_hot.planner.strategy.cache_stats import CacheStatisticsOf
from torchrec_hot.planner.strategy.evaluation import TUNED_STOCK, StrategyOptions

WORLD, BATCH = 2, 64


@pytest.fixture(scope="module")
def inputs():
    tables = criteo_tables("criteo-kaggle", scale=0.002, embedding_dim=8)[:10]  # 4 large
    profile = zipf_profile(tables, 1, 8, 64, 1.05)
    holdout = zipf_profile(tables, 2, 8, 64, 1.05)
    bpr = {t.name: row_bytes(t, RowWiseAdagrad) for t in tables}
    total = sum(t.num_embeddings * bpr[t.name] for t in tables)
    return tables, profile, holdout, bpr, total


def _rows_in_hbm(comparison, tables, bpr):
    module = parameter_shardings(comparison.sharding_plan)
    out = 0.0
    for t in tables:
        ps = module[t.name]
        share = {"fused": 1.0, "fused_uvm_caching": ps.cache_params.load_factor or 0.0}
        out += share.get(ps.compute_kernel, 0.0) * t.num_embeddings * bpr[t.name]
    return out


def test_offloading_plans_cached_tables_with_the_stats_within_the_row_budget(inputs):
    tables, profile, _, bpr, total = inputs
    counts = {t.name: profile.counts(t.name) for t in tables}
    budget = int(0.05 * total / WORLD)
    args = ({"": tables}, counts, bpr, make_topology(WORLD, "cuda"), BATCH, 0.15,
            RowWiseAdagrad, CacheStatisticsOf(profile, WORLD * BATCH))
    tuned = compare_with_tuned_stock(*args, row_budget=budget)
    assert tuned.error is None
    module = parameter_shardings(tuned.sharding_plan)
    kernels = {ps.compute_kernel for ps in module.values()}
    assert "fused_uvm_caching" in kernels and kernels <= {"fused_uvm_caching", "fused"}
    for ps in module.values():
        assert ps.sharding_type in ("row_wise", "table_wise")
        if ps.compute_kernel == "fused_uvm_caching":
            params = ps.cache_params
            assert params.algorithm == CacheAlgorithm.LRU and params.prefetch_pipeline
            assert isinstance(params.stats, ProfileCacheStatistics)
            assert 0.0 < params.load_factor < 1.0
    rows = _rows_in_hbm(tuned, tables, bpr)
    assert rows <= WORLD * budget * 1.01  # TorchRec's storage per cache row >= ours
    # TorchRec's own proposer on the whole topology (64 GB of HBM per rank) keeps more rows
    free = compare_with_tuned_stock(*args, row_budget=None)
    assert _rows_in_hbm(free, tables, bpr) >= rows
    with pytest.raises(ValueError, match="CUDA"):
        compare_with_tuned_stock({"": tables}, counts, bpr, make_topology(WORLD, "cpu"), BATCH,
                                 0.15, RowWiseAdagrad, CacheStatisticsOf(profile, WORLD * BATCH))


def test_hot_planner_models_tuned_stock_and_keeps_it_in_the_plan_file(inputs, tmp_path):
    tables, profile, holdout, _, total = inputs
    plan = HotPlanner(make_topology(WORLD, "cuda"), int(0.05 * total / WORLD), batch_size=BATCH,
                      optimizer_class=RowWiseAdagrad,
                      strategies=StrategyOptions(holdout=holdout)).plan(tables, profile)
    assert plan.tuned_stock is not None and plan.tuned_stock.error is None
    ms = plan.strategies.model_ms
    assert math.isfinite(ms[TUNED_STOCK]) and ms[TUNED_STOCK] >= ms["all HBM (limit)"] * 0.999
    plan.to_json(tmp_path / "plan.json")
    again = HotPlan.from_json(tmp_path / "plan.json")
    assert again.tuned_stock.hbm_bytes_per_rank == plan.tuned_stock.hbm_bytes_per_rank
    cpu = HotPlanner(make_topology(WORLD, "cpu"), int(0.05 * total / WORLD), batch_size=BATCH,
                     optimizer_class=RowWiseAdagrad).plan(tables, profile)
    assert cpu.tuned_stock is None and cpu.stock is not None


def test_tuned_stock_is_held_to_the_row_budget_on_every_rank(inputs, monkeypatch):
    """TorchRec's partitioner may pack the caches unevenly: a plan whose rows fit world x budget
    in total but not on one rank is redone with a lower scale-up cap (what TorchRec returns is
    faked here: an uneven plan, then an even one)."""
    from torchrec_hot.planner import offload

    tables, profile, _, bpr, total = inputs
    budget = int(0.05 * total / WORLD)
    caps, fake_ranks = [], [(1.5 * budget, 0.2 * budget), (0.9 * budget, 0.6 * budget)]

    def planned(*args):
        caps.append(args[-1][0].row_budget_bytes)  # the BudgetedScaleupProposer's cap
        return SimpleNamespace(sharding_plan=object(), hbm_bytes_per_rank=fake_ranks[len(caps) - 1])

    monkeypatch.setattr(offload, "compare_with_stock", planned)
    counts = {t.name: profile.counts(t.name) for t in tables}
    result = compare_with_tuned_stock({"": tables}, counts, bpr, make_topology(WORLD, "cuda"),
                                      BATCH, 0.15, RowWiseAdagrad,
                                      CacheStatisticsOf(profile, WORLD * BATCH), row_budget=budget)
    assert len(caps) == 2 and caps[0] == WORLD * budget  # 1.7 x budget in all: under the cap
    assert caps[1] == int(WORLD * budget / 1.5 * 0.98)  # lowered by the fullest rank's excess
    assert max(result.hbm_bytes_per_rank) <= budget
