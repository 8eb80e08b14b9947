"""Per-rank worker functions shared by several test modules; run by `tests.dist_utils.run_on_ranks`
in spawned processes, so they live in a module those processes can import."""

from __future__ import annotations

import numpy as np
import torch
from torchrec.distributed import DistributedModelParallel

from tests.builders import (
    colocated,
    ebc_model,
    random_tables,
    random_weights,
    stock_plan,
    train_steps,
    zipf_profile,
)
from torchrec_hot import HotPlanner, make_topology
from torchrec_hot.checkpoint.gathered import (
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
)
from torchrec_hot.planner.plan_io import retarget_sharding_plan
from torchrec_hot.planner.strategy.evaluation import StrategyOptions
from torchrec_hot.planner.strategy.machinery import NO_MACHINERY
from torchrec_hot.planner.strategy.types import Strategy
from torchrec_hot.sharding.apply import apply_hot_plan


def strategy_training_worker(
    rank: int, world: int, seed: int, cached: bool = True, device_type: str = "cpu"
) -> dict:
    """One rank of training a plan made for a CUDA topology (hot rows in HBM, cold rows in UVM,
    with `cached` also prefetched UVM caches) against stock TorchRec with every table in HBM,
    on the ranks' GPUs or (`device_type="cpu"`) with both plans retargeted to CPU, where
    TorchRec runs every kernel from host memory. Used by tests/test_strategy_plan.py (gloo, CPU)
    and tests/test_gpu.py (nccl, CUDA)."""
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    rng = np.random.default_rng([seed, 0])
    tables = random_tables(rng)
    weights = random_weights(tables, rng)
    profile = zipf_profile(tables, seed, num_batches=16, batch_size=16)
    options = None
    if cached:  # held-out draws bring cold ids, so the caches see misses
        holdout = zipf_profile(tables, seed + 1, num_batches=16, batch_size=16)
        options = StrategyOptions(
            strategies=(Strategy.LRU_CACHE, Strategy.LOOK_FORWARD, Strategy.STATIC_LOOK_FORWARD),
            holdout=holdout,
            machinery=NO_MACHINERY,  # bytes only, so these tiny tables get caches to test
        )
    plan = HotPlanner(make_topology(world, "cuda"), 24 * 1024, batch_size=8,
                      compare_with_stock=False, strategies=options).plan(
        tables, profile, module_path="ebc")  # fmt: skip
    kernels = {n: ps.compute_kernel for n, ps in plan.sharding_plan.plan["ebc.split_ebc"].items()}
    stock_model = ebc_model(tables, "rowwise_adagrad")
    # stock TorchRec for the CUDA topology, every table whole in HBM (`fused`), table-wise
    stock_sharding = stock_plan(stock_model, tables, "table_wise", world=world, device="cuda")
    hot_sharding = plan.sharding_plan
    if device_type != "cuda":
        stock_sharding = retarget_sharding_plan(stock_sharding, device_type)
        hot_sharding = retarget_sharding_plan(hot_sharding, device_type)
    stock = DistributedModelParallel(stock_model, plan=stock_sharding, device=device)
    hot = DistributedModelParallel(
        apply_hot_plan(ebc_model(tables, "rowwise_adagrad"), plan), plan=hot_sharding,
        device=device)  # fmt: skip
    load_logical_state_dict(stock, weights)
    load_logical_state_dict(hot, weights)
    out_stock = train_steps(stock, tables, seed, rank, device)
    out_hot = train_steps(hot, tables, seed, rank, device)
    w_stock, w_hot = logical_state_dict(stock), logical_state_dict(hot)
    o_stock, o_hot = logical_optimizer_state(stock), logical_optimizer_state(hot)
    pairs = zip(out_stock, out_hot, strict=True)
    module_plan = hot_sharding.plan["ebc.split_ebc"]
    return {
        "kernels": kernels,
        "presummed": sorted(hot.module.ebc.presummed_features()),
        "colocated": sorted(t.feature_names[0] for t in plan.tables
                            if colocated(module_plan, t.name)),
        "forward_diff": max(float((a - b).abs().max()) for a, b in pairs),
        "weights_equal": all(torch.equal(w_stock[k].cpu(), w_hot[k].cpu()) for k in w_stock),
        "moved": any(not torch.equal(w_hot[k].cpu(), weights[k]) for k in weights),
        "optim_equal": all(torch.equal(o_stock[k][n].cpu(), o_hot[k][n].cpu())
                           for k in o_stock for n in o_stock[k]),  # fmt: skip
    }
