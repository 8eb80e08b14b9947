"""CUDA paths, run where a GPU exists (marked `gpu`; skipped elsewhere by conftest.py).

* The vectorised remap on CUDA (no host sync) against the CPU remap, bit for bit.
* The unsharded hot/cold module on CUDA against a stock EBC on CUDA: forward within 1e-6,
  logical gradients bit-identical (dyadic data, as in test_hot_cold_ebc.py).
* examples/train_dlrm.py on every GPU (up to 2) with a plan whose cold tables are look-forward
  caches: trained through TorchRec's PrefetchTrainPipelineSparseDist, its weights equal stock's.
* DistributedModelParallel over nccl (one rank per GPU, up to 2) with the plan HotPlanner makes
  for a CUDA topology, unchanged: hot rows `fused` in HBM, cold rows `fused_uvm` (or, for a
  strategy plan, `fused_uvm_caching` with prefetching), against stock TorchRec with every table
  `fused`: after the steps, logical weights and row-wise Adagrad state bit-identical, forward
  within 1e-5. FBGEMM's exact GPU optimizers sum a row's gradient over its occurrences in index
  order, and a row's occurrences are the same in its split table as in the whole one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import modules as module_cases
from tests.builders import remap as remap_cases
from tests.builders import zipf_profile
from tests.dist_utils import run_on_ranks
from tests.workers import strategy_training_worker
from torchrec_hot import HotPlanner, make_topology
from torchrec_hot.planner.strategy.evaluation import StrategyOptions
from torchrec_hot.planner.strategy.types import Strategy

CUDA = torch.device("cuda")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.gpu
@settings(max_examples=25, deadline=None, derandomize=True)
@given(remap_cases.layouts(), st.booleans())
def test_cuda_remap_equals_the_cpu_remap(layout, mean):
    gen = torch.Generator().manual_seed(layout["seed"])
    hot = remap_cases.random_hot_ids(layout, gen)
    kjt = remap_cases.random_kjt(layout, gen)
    means = {f for _, _, _, fs in layout["tables"][:1] for f in fs} if mean else ()
    want = remap_cases.make_remapper(layout, hot, means, path="cpu batched")(kjt, validate=True)
    remapper = remap_cases.make_remapper(layout, hot, means, path="vectorised").to(CUDA)
    got = remapper(kjt.to(CUDA), validate=True)
    assert got.keys() == want.keys()
    assert got.values().device.type == CUDA.type
    for a, b in ((got.values(), want.values()), (got.lengths(), want.lengths())):
        assert a.dtype == b.dtype and torch.equal(a.cpu(), b)
    if want.weights_or_none() is None:
        assert got.weights_or_none() is None
    else:
        assert torch.equal(got.weights().cpu(), want.weights())


@pytest.mark.gpu
@settings(max_examples=15, deadline=None, derandomize=True)
@given(module_cases.models())
def test_cuda_unsharded_hot_cold_matches_a_stock_ebc(model):
    gen = torch.Generator().manual_seed(model["seed"])
    stock, hot_cold = module_cases.build(model, gen)
    stock, hot_cold = stock.to(CUDA), hot_cold.to(CUDA)
    kjt = module_cases.random_kjt(model, gen, True).to(CUDA)
    want, got = stock(kjt), hot_cold(kjt)
    assert got.keys() == want.keys()
    torch.testing.assert_close(got.values(), want.values(), atol=1e-6, rtol=0)
    r = module_cases.dyadic(tuple(want.values().shape), gen).to(CUDA)
    (want.values() * r).sum().backward()
    (got.values() * r).sum().backward()
    grads = hot_cold.logical_grads()
    for name, bag in stock.embedding_bags.items():
        assert torch.equal(grads[name], bag.weight.grad), name


@pytest.mark.gpu
@pytest.mark.multiprocess
@pytest.mark.parametrize("cached", [False, True], ids=["hot-hbm-cold-uvm", "strategy-caches"])
def test_nccl_dmp_hot_cold_trains_bit_identically_to_stock(cached):
    world = min(2, torch.cuda.device_count())
    seed = int(np.random.default_rng().integers(2**20))
    print(f"seed {seed}, world {world}")  # shown by pytest when the test fails
    for r in run_on_ranks(strategy_training_worker, world, seed, cached, "cuda", backend="nccl"):
        kernels = r["kernels"]
        hot = {k for n, k in kernels.items() if n.endswith("__hot")}
        cold = {k for n, k in kernels.items() if n.endswith("__cold")}
        assert hot <= {"fused"} and cold, (seed, kernels)  # hot rows in HBM, some table split
        assert cold <= ({"fused_uvm", "fused_uvm_caching"} if cached else {"fused_uvm"})
        if cached:
            assert "fused_uvm_caching" in set(kernels.values()), (seed, kernels)
        assert r["presummed"] == r["colocated"], (seed, r)  # summed before the all-to-all
        assert r["forward_diff"] <= 1e-5, (seed, r)
        assert r["moved"] and r["weights_equal"] and r["optim_equal"], (seed, r)


@pytest.mark.gpu
@pytest.mark.multiprocess
def test_dlrm_example_trains_look_forward_caches_through_the_prefetch_pipeline(tmp_path: Path):
    from torchrec_hot.data.synthetic import criteo_tables

    world = min(2, torch.cuda.device_count())
    seed = int(np.random.default_rng().integers(1000))
    print(f"seed {seed}, world {world}")  # shown by pytest when the test fails
    tables = criteo_tables("criteo-kaggle", scale=0.002, embedding_dim=8)
    profile = zipf_profile(tables, seed, 16, 64, 1.05)
    holdout = zipf_profile(tables, seed + 1, 16, 64, 1.05)
    options = StrategyOptions(strategies=(Strategy.LOOK_FORWARD, Strategy.STATIC_LOOK_FORWARD),
                              holdout=holdout)  # fmt: skip
    total = sum(t.num_embeddings * (t.embedding_dim * 4 + 4) for t in tables)
    plan = HotPlanner(make_topology(world, "cuda"), int(0.05 * total / world), batch_size=64,
                      compare_with_stock=False, strategies=options).plan(
        tables, profile, module_path="model.sparse_arch.embedding_bag_collection")  # fmt: skip
    assert any(t.prefetch for t in plan.tables), [t.strategy for t in plan.tables]
    plan.to_json(tmp_path / "plan.json")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
         str(ROOT / "examples" / "train_dlrm.py"), "--plan", str(tmp_path / "plan.json"),
         "--compare", "--steps", "30", "--batch-size", "64", "--seed", str(seed)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torchrec-hot: PrefetchTrainPipelineSparseDist" in run.stdout, run.stdout[-2000:]
    assert "max abs difference of the final logical weights: 0\n" in run.stdout, run.stdout
