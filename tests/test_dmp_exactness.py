"""Hot/cold training under 2-rank gloo DistributedModelParallel vs stock TorchRec, bit for bit.

Both models start from the same logical weights and see the same batches (multi-hot bags, empty
bags, fresh random data each run); the loss is `sum(pooled * G)` with a fixed random G per step,
so the gradient reaching the embeddings does not depend on float rounding of the forward, and
the weights and optimizer state after 20 steps must be bit-identical (forward within 1e-6).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.types import ShardingPlan
from torchrec.modules.embedding_configs import PoolingType

from tests.builders import (
    CUDA_TW_HOT_RW_COLD,
    OPTIMIZERS,
    colocated,
    ebc_model,
    hot_plan,
    random_tables,
    random_weights,
    stock_plan,
    train_steps,
    vbe_kjt,
    zipf_kjt,
    zipf_profile,
)
from tests.dist_utils import run_on_ranks
from torchrec_hot import HotPlan
from torchrec_hot.checkpoint.gathered import (
    load_logical_optimizer_state,
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
)
from torchrec_hot.sharding.apply import apply_hot_plan

COLUMN_SHARD_DIM = 16  # dims 32/64 -> 2/4 column shards under column-wise plans
CASES = [("table_wise", "sgd"), ("table_wise", "rowwise_adagrad"),
         ("column_wise", "sgd"), ("column_wise", "rowwise_adagrad"),
         ("table_column_wise", "sgd"), ("table_column_wise", "rowwise_adagrad"),
         (CUDA_TW_HOT_RW_COLD, "sgd"), (CUDA_TW_HOT_RW_COLD, "rowwise_adagrad")]


def _hot(tables: list[EmbeddingBagConfig], sharding: str, seed: int
         ) -> tuple[HotPlan, ShardingPlan]:
    """The hot plan of one case and its sharding plan on CPU (see `builders.hot_plan`)."""
    return hot_plan(tables, zipf_profile(tables, seed), sharding,
                    column_shard_dim=COLUMN_SHARD_DIM)


def _stock(model: nn.Module, tables: list[EmbeddingBagConfig], sharding: str) -> ShardingPlan:
    """Stock TorchRec's plan of one case (see `builders.stock_plan`)."""
    return stock_plan(model, tables, sharding, min_partition=COLUMN_SHARD_DIM)


def _a2a_columns(sharded: nn.Module) -> int | None:
    """Columns (sum of dims over ranks) the table-wise output all-to-all moves, None when some
    sharding is not table-wise."""
    if set(sharded._sharding_types) != {"table_wise"}:
        return None
    return sum(sum(getattr(d, "summed", d)._dim_sum_per_rank) for d in sharded._output_dists)


def _same_state(w_a: dict, o_a: dict, w_b: dict, o_b: dict) -> bool:
    """Whether two logical states (weights, optimizer state) are bit-identical, over `w_b`'s
    and `o_b`'s keys."""
    return all(torch.equal(w_a[k], w_b[k]) for k in w_b) and all(
        torch.equal(o_a[k][n], o_b[k][n]) for k in o_b for n in o_b[k])


def _exactness_worker(rank: int, world: int, seed: int) -> dict:
    results = {}
    for sharding, optimizer in CASES:
        rng = np.random.default_rng([seed, len(results)])
        tables = random_tables(rng)
        weights = random_weights(tables, rng)
        stock_model = ebc_model(tables, optimizer)
        stock = DistributedModelParallel(stock_model, plan=_stock(stock_model, tables, sharding),
                                         device=torch.device("cpu"))
        plan, sharding_plan = _hot(tables, sharding, seed)
        hot = DistributedModelParallel(apply_hot_plan(ebc_model(tables, optimizer), plan),
                                       plan=sharding_plan, device=torch.device("cpu"))
        load_logical_state_dict(stock, weights)
        load_logical_state_dict(hot, weights)
        out_stock = train_steps(stock, tables, seed, rank)
        out_hot = train_steps(hot, tables, seed, rank)
        w_stock, w_hot = logical_state_dict(stock), logical_state_dict(hot)
        o_stock, o_hot = logical_optimizer_state(stock), logical_optimizer_state(hot)
        results[(sharding, optimizer)] = {
            "split_tables": sum(t.placement.value == "split" for t in plan.tables),
            "split_features": sorted(t.feature_names[0] for t in plan.tables
                                     if t.placement.value == "split"),
            "presummed": sorted(hot.module.ebc.presummed_features()),
            "colocated": sorted(t.feature_names[0] for t in plan.tables
                                if colocated(sharding_plan.plan["ebc.split_ebc"], t.name)),
            "a2a_columns": (_a2a_columns(stock.module.ebc),
                            _a2a_columns(hot.module.ebc.split_module)),
            "max_shards": max(len(ps.sharding_spec.shards)
                              for ps in sharding_plan.plan["ebc.split_ebc"].values()),
            "max_forward_diff": max(float((a - b).abs().max()) for a, b in
                                    zip(out_stock, out_hot, strict=True)),
            "weights_moved": all(not torch.equal(w_stock[k], weights[k]) for k in weights
                                 if k.endswith("t0.weight")),
            "weights_equal": sorted(w_stock) == sorted(w_hot)
            and all(torch.equal(w_stock[k], w_hot[k]) for k in w_stock),
            "optimizer_keys": sorted((k, tuple(v)) for k, v in o_hot.items()),
            "optimizer_equal": sorted(o_stock) == sorted(o_hot)
            and all(torch.equal(o_stock[k][n], o_hot[k][n]) for k in o_stock for n in o_stock[k]),
        }
        if optimizer == "rowwise_adagrad" and sharding == "table_wise":
            # a step whose batch has an out-of-range id fails and changes nothing
            bad = zipf_kjt(tables, np.random.default_rng([seed, 77, rank]))
            values = bad.values().clone()
            values[-1] = -3
            bad = KeyedJaggedTensor.from_lengths_sync(bad.keys(), values, bad.lengths())
            try:
                hot(bad)
                results["bad_step_error"] = None
            except ValueError as e:
                results["bad_step_error"] = str(e)
            w_after, o_after = logical_state_dict(hot), logical_optimizer_state(hot)
            results["bad_step_unchanged"] = _same_state(w_after, o_after, w_hot, o_hot)
            # checkpoint round trip: hot/cold -> stock (weights + optimizer) -> identical
            fresh = ebc_model(tables, optimizer)
            fresh_dmp = DistributedModelParallel(fresh, plan=_stock(fresh, tables, sharding),
                                                 device=torch.device("cpu"))
            load_logical_state_dict(fresh_dmp, w_hot)
            load_logical_optimizer_state(fresh_dmp, o_hot)
            w_back, o_back = logical_state_dict(fresh_dmp), logical_optimizer_state(fresh_dmp)
            results["checkpoint_hot_to_stock"] = _same_state(w_back, o_back, w_hot, o_hot)
            # ... and stock -> hot/cold
            again = DistributedModelParallel(apply_hot_plan(ebc_model(tables, optimizer), plan),
                                             plan=sharding_plan, device=torch.device("cpu"))
            load_logical_state_dict(again, w_back)
            load_logical_optimizer_state(again, o_back)
            w2, o2 = logical_state_dict(again), logical_optimizer_state(again)
            results["checkpoint_stock_to_hot"] = _same_state(w2, o2, w_hot, o_hot)
            # variable batch per feature (VBE; TorchRec's table-wise dist takes it only from
            # a model's first batch on): fresh models, two VBE steps, halves merged after
            # TorchRec's per-feature all-to-all, bit-identical to stock
            cpu = torch.device("cpu")
            fresh_stock = ebc_model(tables, optimizer)
            models = [DistributedModelParallel(fresh_stock, device=cpu,
                                               plan=_stock(fresh_stock, tables, sharding)),
                      DistributedModelParallel(apply_hot_plan(ebc_model(tables, optimizer), plan),
                                               plan=sharding_plan, device=cpu)]
            for m in models:
                load_logical_state_dict(m, weights)
            keys = [t.feature_names[0] for t in tables]
            diffs = []
            for step in range(2):
                vbe = vbe_kjt(tables, np.random.default_rng([seed, 78, step, rank]))
                pooled = [m(vbe).to_dict() for m in models]
                outs = [torch.cat([p[k] for k in keys], dim=1) for p in pooled]
                g = torch.from_numpy(np.random.default_rng([seed, 79, step, rank])
                                     .standard_normal(tuple(outs[0].shape)).astype(np.float32))
                for out in outs:
                    (out * g).sum().backward()
                diffs.append(float((outs[0] - outs[1]).abs().max()))
            results["vbe_forward_diff"] = max(diffs)
            results["vbe_shape"] = tuple(outs[1].shape)
            (w_s, o_s), (w_h, o_h) = ((logical_state_dict(m), logical_optimizer_state(m))
                                      for m in models)
            results["vbe_step_equal"] = _same_state(w_h, o_h, w_s, o_s) and any(
                not torch.equal(w_s[k], weights[k]) for k in w_s)
    return results


def _reference_worker(rank: int, world: int, seed: int) -> dict:
    """MEAN pooling and weighted features under DMP against an unsharded EBC that trains on
    both ranks' batches (SGD on the mean of the ranks' losses); plus a bad id, which must fail
    before any lookup."""
    results: dict = {}
    for pooling, weighted in ((PoolingType.MEAN, False), (PoolingType.SUM, True)):
        rng = np.random.default_rng([seed, 99, int(weighted)])
        tables = [dataclasses.replace(t, pooling=pooling) for t in random_tables(rng)]
        weights = random_weights(tables, rng)
        plan, sharding_plan = _hot(tables, "table_wise", seed)
        hot = DistributedModelParallel(apply_hot_plan(ebc_model(tables, "sgd", weighted), plan),
                                       plan=sharding_plan, device=torch.device("cpu"))
        load_logical_state_dict(hot, weights)
        reference = EmbeddingBagCollection(tables=tables, is_weighted=weighted)
        reference.load_state_dict({k.removeprefix("ebc."): v for k, v in weights.items()})
        ref_opt = torch.optim.SGD(reference.parameters(), lr=OPTIMIZERS["sgd"][1]["lr"])
        keys = [t.feature_names[0] for t in tables]
        forward_diff = 0.0
        for step in range(5):
            ref_loss = torch.zeros(())
            for r in range(world):  # the reference sees every rank's batch
                rng_r = np.random.default_rng([seed, step, r, 7])
                kjt = zipf_kjt(tables, rng_r, weighted=weighted)
                ref = reference(kjt).to_dict()
                ref_values = torch.cat([ref[k] for k in keys], dim=1)
                g = torch.from_numpy(rng_r.standard_normal(tuple(ref_values.shape))
                                     .astype(np.float32))
                ref_loss = ref_loss + (ref_values * g).sum()
                if r == rank:
                    out = hot(kjt).to_dict()
                    values = torch.cat([out[k] for k in keys], dim=1)
                    forward_diff = max(forward_diff, float((values - ref_values).abs().max()))
                    (values * g).sum().backward()
            # TorchRec averages embedding gradients over ranks (as DDP does for dense ones)
            (ref_loss / world).backward()
            ref_opt.step()
            ref_opt.zero_grad()
        trained = logical_state_dict(hot)
        results[(pooling.value, weighted)] = {
            "forward_diff": forward_diff,
            "weight_diff": max(float((trained[f"ebc.{k}"] - v.detach()).abs().max())
                               for k, v in reference.state_dict().items()),
        }
    # a bad id fails with its feature and value named, and changes nothing
    before = logical_state_dict(hot)
    bad = zipf_kjt(tables, np.random.default_rng([seed, 5]), weighted=True)
    values = bad.values().clone()
    values[0] = tables[0].num_embeddings + 5 if bad.lengths()[:8].sum() else values[0]
    bad = KeyedJaggedTensor.from_lengths_sync(bad.keys(), values, bad.lengths(), bad.weights())
    try:
        hot(bad)
        results["bad_id_error"] = None
    except ValueError as e:
        results["bad_id_error"] = str(e)
    after = logical_state_dict(hot)
    results["bad_id_unchanged"] = all(torch.equal(before[k], after[k]) for k in before)
    results["bad_id_value"] = int(values[0])
    return results


def _all_cases(rank: int, world: int, seed: int) -> dict:
    return {**_exactness_worker(rank, world, seed), **_reference_worker(rank, world, seed)}


@pytest.fixture(scope="module")
def two_rank_results() -> tuple[int, list[dict]]:
    """One spawn of 2 gloo ranks runs every case (process start-up is most of the cost)."""
    seed = int(np.random.default_rng().integers(2**31))
    print(f"seed {seed}")  # shown by pytest when a test of this module fails
    return seed, run_on_ranks(_all_cases, 2, seed)


@pytest.mark.multiprocess
def test_two_rank_training_is_bit_identical_to_stock_torchrec(two_rank_results):
    seed, per_rank = two_rank_results
    for case in CASES:
        for rank, results in enumerate(per_rank):
            r = results[case]
            where = f"{case} rank {rank} (seed {seed})"
            assert r["split_tables"] >= 1, where
            # halves table-wise on one rank are summed before the all-to-all, others after
            assert r["presummed"] == r["colocated"], where
            if case[0] == "table_wise":  # where the planner co-locates every split table
                assert r["presummed"] == r["split_features"], where
                assert r["a2a_columns"][0] == r["a2a_columns"][1], (where, r["a2a_columns"])
            if case[0] != "table_wise":  # column-wise tables really are cut, row-wise spread
                assert r["max_shards"] >= 2, where
            assert r["weights_moved"], where
            assert r["max_forward_diff"] <= 1e-6, (where, r["max_forward_diff"])
            assert r["weights_equal"], where
            assert r["optimizer_equal"], where
            if case[1] == "rowwise_adagrad":
                assert r["optimizer_keys"], where
    for results in per_rank:
        assert results["checkpoint_hot_to_stock"] and results["checkpoint_stock_to_hot"]
        assert "id -3" in results["bad_step_error"], results["bad_step_error"]
        assert results["vbe_shape"] == (8, sum(t.embedding_dim for t in random_tables(
            np.random.default_rng([seed, 1])))), results["vbe_shape"]
        assert results["vbe_forward_diff"] <= 1e-6 and results["vbe_step_equal"], results
        assert results["bad_step_unchanged"]


@pytest.mark.multiprocess
def test_mean_pooling_and_weighted_features_match_an_unsharded_reference(two_rank_results):
    seed, per_rank = two_rank_results
    for rank, results in enumerate(per_rank):
        for case in (("MEAN", False), ("SUM", True)):
            r = results[case]
            assert r["forward_diff"] <= 1e-6, (case, rank, seed, r)
            assert r["weight_diff"] <= 1e-6, (case, rank, seed, r)


@pytest.mark.multiprocess
def test_out_of_range_id_fails_before_any_lookup_under_dmp(two_rank_results):
    seed, per_rank = two_rank_results
    for results in per_rank:
        msg = results["bad_id_error"]
        assert msg is not None and "'f0'" in msg and str(results["bad_id_value"]) in msg, msg
        assert results["bad_id_unchanged"]
