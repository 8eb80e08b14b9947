"""TorchRec's TrainPipelineSparseDist on a hot/cold DLRM under 2-rank gloo DMP, bit for bit.

DLRM with one id per bag (a pooled output is the row itself, so the hot/cold forward is exact
and so is everything downstream), row-wise Adagrad fused into the backward, dense SGD, same
logical initial weights and same batches everywhere. Trained STEPS steps: stock TorchRec
through the pipeline, hot/cold through the pipeline, hot/cold in a plain loop, and hot/cold
through the pipeline with a re-plan every REPLAN_EVERY steps (hot rows moved to the ids trained
most; the pipeline drained and rebuilt around it). All must end with identical losses, logical
embedding weights, optimizer state and dense weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.datasets.utils import Batch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.train_pipeline.postproc import PipelinedPostproc
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from tests.builders import dlrm_model, hot_plan, stock_plan, tables_of, zipf_profile
from tests.dist_utils import run_on_ranks
from torchrec_hot.checkpoint.gathered import (
    hot_cold_modules,
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
)
from torchrec_hot.data.workloads import zipf_batches
from torchrec_hot.runtime.online import OnlineCounter
from torchrec_hot.runtime.pipeline import drain_pipeline, make_train_pipeline, replan_pipelined
from torchrec_hot.runtime.rehot import rehot_plan
from torchrec_hot.sharding.apply import apply_hot_plan

STEPS = 12
REPLAN_EVERY = 4
BATCH = 16
DIM = 16
DENSE = 4
MODULE_PATH = "model.sparse_arch.embedding_bag_collection"
SHARDINGS = ("table_wise", "column_wise")
CPU = torch.device("cpu")


def _batches(tables, seed: int, rank: int) -> list[Batch]:
    rng = np.random.default_rng([seed, rank])
    kjts = zipf_batches(tables, STEPS, BATCH, 1.1, seed=seed * 10 + rank)
    return [
        Batch(
            dense_features=torch.from_numpy(
                rng.standard_normal((BATCH, DENSE)).astype(np.float32)),
            sparse_features=kjt,
            labels=torch.from_numpy(rng.integers(0, 2, BATCH).astype(np.float32)),
        )
        for kjt in kjts
    ]


def _dmp(model, plan, init: dict[str, torch.Tensor]):
    dmp = DistributedModelParallel(model, plan=plan, device=CPU)
    state = logical_state_dict(dmp)
    state.update(init)
    load_logical_state_dict(dmp, state)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda params: torch.optim.SGD(params, lr=0.05))
    return dmp, CombinedOptimizer([dmp.fused_optimizer, dense])


def _train_plain(dmp, optimizer, batches) -> list[float]:
    losses = []
    for batch in batches:
        loss, _ = dmp(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def _train_pipelined(dmp, optimizer, batches, hot_plan=None) -> tuple[list[float], dict]:
    """Trains through the pipeline (re-planning every REPLAN_EVERY steps when `hot_plan`);
    returns the losses and what the pipeline did."""
    pipeline = make_train_pipeline(dmp, optimizer, CPU)
    data = iter(batches)
    modules = list(hot_cold_modules(dmp).values())
    counter = OnlineCounter.for_module(modules[0]) if hot_plan is not None else None
    seen: dict = {"rows_moved": 0, "postproc": False}
    losses = []
    for step, batch in enumerate(batches):
        loss, _, _ = pipeline.progress(data)
        losses.append(float(loss))
        seen["postproc"] |= any(isinstance(m.remap, PipelinedPostproc) for m in modules)
        if counter is not None:
            counter.update(batch.sparse_features)
            if (step + 1) % REPLAN_EVERY == 0 and step + 1 < len(batches):
                hot_plan = rehot_plan(hot_plan, counter.reduce())
                counter.reset()
                pipeline, data, report = replan_pipelined(
                    pipeline, dmp, optimizer, CPU, hot_plan, data)
                seen["rows_moved"] += sum(report.rows_moved.values())
    with pytest.raises(StopIteration):
        pipeline.progress(data)
    drain_pipeline(pipeline)
    return losses, seen


def _result(dmp, losses: list[float], seen: dict | None = None) -> dict:
    dense = {n: p.detach().clone()
             for n, p in in_backward_optimizer_filter(dmp.named_parameters())}
    return {"losses": losses, "weights": logical_state_dict(dmp),
            "optim": logical_optimizer_state(dmp), "dense": dense, "seen": seen or {}}


def _worker(rank: int, world: int, seed: int) -> dict:
    tables = tables_of([900, 400, 60, 7], DIM)
    gen = torch.Generator().manual_seed(seed)
    init = {f"{MODULE_PATH}.embedding_bags.{t.name}.weight":
            torch.rand(t.num_embeddings, DIM, generator=gen) - 0.5 for t in tables}
    batches = _batches(tables, seed, rank)
    out = {}
    for sharding in SHARDINGS:
        hot, _ = hot_plan(tables, zipf_profile(tables, seed), sharding, batch_size=BATCH,
                          column_shard_dim=8, module_path=MODULE_PATH)
        model = dlrm_model(tables, DENSE)
        dmp, opt = _dmp(model, stock_plan(model, tables, sharding, batch_size=BATCH,
                                          min_partition=8), init)
        out[sharding, "stock pipelined"] = _result(dmp, *_train_pipelined(dmp, opt, batches))
        for name in ("pipelined", "plain", "pipelined + replan"):
            dmp, opt = _dmp(apply_hot_plan(dlrm_model(tables, DENSE), hot), hot.sharding_plan,
                            init)
            if name == "plain":
                out[sharding, name] = _result(dmp, _train_plain(dmp, opt, batches))
            else:
                replanned = hot if name.endswith("replan") else None
                out[sharding, name] = _result(dmp, *_train_pipelined(dmp, opt, batches,
                                                                     replanned))
    return out


@pytest.fixture(scope="module")
def results():
    seed = int(np.random.default_rng().integers(1000))
    return seed, run_on_ranks(_worker, 2, seed)


def _assert_same(a: dict, b: dict, what: str) -> None:
    assert a["losses"] == b["losses"], what
    for part in ("weights", "dense"):
        assert a[part].keys() == b[part].keys(), (what, part)
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (what, part, k)
    assert a["optim"].keys() == b["optim"].keys(), what
    for k in a["optim"]:
        for s in a["optim"][k]:
            assert torch.equal(a["optim"][k][s], b["optim"][k][s]), (what, k, s)


@pytest.mark.multiprocess
@pytest.mark.parametrize("sharding", SHARDINGS)
def test_pipelined_hot_cold_training_is_bit_identical_to_stock_and_to_plain_loop(results,
                                                                                  sharding):
    seed, ranks = results
    for rank, out in enumerate(ranks):
        stock = out[sharding, "stock pipelined"]
        for name in ("pipelined", "plain", "pipelined + replan"):
            _assert_same(out[sharding, name], stock, f"seed {seed} rank {rank} {name}")
        assert np.all(np.isfinite(stock["losses"]))


@pytest.mark.multiprocess
def test_pipeline_runs_the_remap_ahead_and_replanning_moves_rows(results):
    """The remap ran as TorchRec's pipelined postproc (so the split EBC's input dist was
    pipelined), and the re-plans did move rows (the replan case is not trivially equal)."""
    _, ranks = results
    for out in ranks:
        for sharding in SHARDINGS:
            assert out[sharding, "pipelined"]["seen"]["postproc"]
            assert out[sharding, "pipelined + replan"]["seen"]["rows_moved"] > 0
