"""Planning whole models with `HotShardingPlanner`: one budget across modules (the hot rows of
two EBCs are the globally hottest by lookups per byte), the user's ParameterConstraints
honoured, row-wise refused on CPU topologies at construction, a planning error on rank 0 and a
bad id on one rank raised on every rank. (Training whole models: test_whole_model.py.)"""


import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    KeyedJaggedTensor,
)
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.planner import ParameterConstraints

from tests.builders import ebc_model, hot_plan, profile_of_ids, zipf_kjt, zipf_profile
from tests.dist_utils import run_on_ranks
from torchrec_hot import (
    HotShardingPlanner,
    PlanDoesNotFitError,
    apply_hot_plan,
    build_report,
    format_report,
    make_topology,
)
from torchrec_hot.tables.allocation import TableDemand, allocate_hot_rows
from torchrec_hot.tables.split import Placement

META = torch.device("meta")


def test_one_budget_takes_the_globally_hottest_rows():
    rng = np.random.default_rng(7)
    a = [EmbeddingBagConfig(name=f"a{i}", num_embeddings=int(rng.integers(500, 3000)),
                            embedding_dim=16, feature_names=[f"fa{i}"]) for i in range(3)]
    b = [EmbeddingBagConfig(name=f"b{i}", num_embeddings=int(rng.integers(500, 3000)),
                            embedding_dim=16, feature_names=[f"fb{i}"]) for i in range(2)]
    model = nn.ModuleDict({"first": EmbeddingBagCollection(tables=a, device=META),
                           "second": EmbeddingBagCollection(tables=b, device=META)})
    ids = {t.name: np.minimum(rng.zipf(1.1 + 0.1 * i, 20000) - 1, t.num_embeddings - 1)
           for i, t in enumerate(a + b)}
    profile = profile_of_ids(a + b, ids)
    budget = sum(t.num_embeddings for t in a + b) * 16 * 4 // 10 // 2  # 10% over 2 ranks
    planner = HotShardingPlanner(make_topology(2, "cuda"), profile, hbm_budget_bytes=budget,
                                 batch_size=64, compare_with_stock=False)
    planner.plan(model)
    plan = planner.hot_plan
    assert plan.module_paths == ["first", "second"]
    demands = [TableDemand.from_counts(t.name, profile.counts(t.name), 64) for t in a + b]
    oracle = allocate_hot_rows(demands, 2 * budget)
    best = sum(int(d.sorted_counts[: oracle[d.name]].sum()) for d in demands)
    total = sum(profile.lookups(t.name) for t in a + b)
    assert plan.hot_lookup_share >= best / total - 0.005
    assert plan.hot_lookup_share <= best / total + 1e-12
    assert {t.name for t in plan.tables_in("second")} == {"b0", "b1"}


def test_user_constraints_are_honoured():
    rng = np.random.default_rng(3)
    tables = [EmbeddingBagConfig(name=f"t{i}", num_embeddings=1000, embedding_dim=16,
                                 feature_names=[f"f{i}"]) for i in range(3)]
    profile = profile_of_ids(tables, {t.name: np.minimum(rng.zipf(1.2, 5000) - 1, 999)
                                      for t in tables})
    model = nn.ModuleDict({"ebc": EmbeddingBagCollection(tables=tables, device=META)})
    constraints = {"t0": ParameterConstraints(compute_kernels=["fused_uvm"],
                                              sharding_types=["table_wise"]),
                   "t1": ParameterConstraints(sharding_types=["row_wise"])}
    planner = HotShardingPlanner(make_topology(2, "cuda"), profile, hbm_budget_bytes=40_000,
                                 batch_size=64, constraints=constraints,
                                 compare_with_stock=False)
    plan = planner.plan(model)
    module = plan.plan["ebc.split_ebc"]
    hot = planner.hot_plan
    assert hot.table("t0").constrained and hot.table("t0").placement is Placement.UVM
    assert module["t0"].compute_kernel == "fused_uvm" and module["t0"].sharding_type == "table_wise"
    assert hot.table("t1").constrained and hot.table("t1").placement is Placement.SPLIT
    assert {module[p].sharding_type for p in ("t1__hot", "t1__cold")} == {"row_wise"}
    assert not hot.table("t2").constrained
    text = format_report(build_report(hot))
    assert "placed as your ParameterConstraints say: t0, t1" in text
    with pytest.raises(ValueError, match="name one kernel"):
        HotShardingPlanner(make_topology(2, "cuda"), profile, hbm_budget_bytes=40_000,
                           constraints={"t0": ParameterConstraints(
                               compute_kernels=["fused", "fused_uvm"])}).plan(model)
    with pytest.raises(ValueError, match="not planned"):
        HotShardingPlanner(make_topology(2, "cuda"), profile, hbm_budget_bytes=40_000,
                           constraints={"zz": ParameterConstraints()}).plan(model)


def test_cpu_topology_refuses_row_wise_at_construction():
    tables = [EmbeddingBagConfig(name="t", num_embeddings=10, embedding_dim=4,
                                 feature_names=["f"])]
    profile = profile_of_ids(tables, {"t": np.arange(10)})
    with pytest.raises(ValueError, match="retarget_sharding_plan"):
        HotShardingPlanner(make_topology(2, "cpu"), profile, 1000, sharding_types=["row_wise"])


def _failing_worker(rank: int, world: int) -> str:
    tables = [EmbeddingBagConfig(name="t", num_embeddings=10_000, embedding_dim=64,
                                 feature_names=["f"])]
    profile = profile_of_ids(tables, {"t": np.arange(100)})
    topology = make_topology(world, "cpu", ddr_cap=1000)  # no rank can hold the table
    model = nn.ModuleDict({"ebc": EmbeddingBagCollection(tables=tables, device=META)})
    try:
        HotShardingPlanner(topology, profile, 100, batch_size=8,
                           compare_with_stock=False).collective_plan(model)
    except PlanDoesNotFitError as e:
        dist.barrier()
        return str(e)
    return "planned"


@pytest.mark.multiprocess
def test_a_planning_error_reaches_every_rank():
    messages = run_on_ranks(_failing_worker, 2)
    assert all(m != "planned" for m in messages)
    assert messages[0] == messages[1]


def _bad_id_worker(rank: int, world: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    tables = [EmbeddingBagConfig(name=f"t{i}", num_embeddings=int(rng.integers(50, 200)),
                                 embedding_dim=8, feature_names=[f"f{i}"]) for i in range(3)]
    model = ebc_model(tables, "sgd")
    plan, sharding = hot_plan(tables, zipf_profile(tables, seed))
    dmp = DistributedModelParallel(apply_hot_plan(model, plan), plan=sharding,
                                   device=torch.device("cpu"))
    for step in range(3):
        kjt = zipf_kjt(tables, np.random.default_rng([seed, step, rank]))
        if step == 1 and rank == 1:  # one bad id, on one rank only
            values = kjt.values().clone()
            values[-1] = tables[-1].num_embeddings + 5
            kjt = KeyedJaggedTensor.from_lengths_sync(kjt.keys(), values, kjt.lengths())
        try:
            dmp(kjt).values().sum().backward()
        except ValueError as e:
            return f"step {step}: {e}"
    return "no error"


@pytest.mark.multiprocess
def test_a_bad_id_on_one_rank_stops_every_rank_with_its_message():
    seed = int(np.random.default_rng().integers(2**31))
    print("seed", seed)
    start = time.perf_counter()
    messages = run_on_ranks(_bad_id_worker, 2, seed, timeout_s=45)
    assert time.perf_counter() - start < 60
    for m in messages:
        assert m.startswith("step 1: bad input on 1 rank(s): rank 1:"), m
        assert "feature 'f2'" in m and "outside [0," in m, m
