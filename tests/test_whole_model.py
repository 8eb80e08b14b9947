"""Whole models the TorchRec way: `HotShardingPlanner.collective_plan` + `apply_hot_plan` + DMP
on TorchRec's own `TestSparseNN` (an unweighted and a weighted EBC, a table shared by two
features, a MEAN table), trained under 2-rank gloo DMP against stock TorchRec on the same
batches (fresh random data each run, seed printed). One id per bag: losses, every weight (dense
included) and the fused optimizer state are bit-identical.

Also: one budget across modules (the hot rows of two EBCs are the globally hottest by lookups
per byte), the user's ParameterConstraints honoured, the error of rank 0 raised on every rank.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingConfig,
    KeyedJaggedTensor,
)
from torchrec.datasets.utils import Batch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.sharding_plan import construct_module_sharding_plan, table_wise
from torchrec.distributed.test_utils import test_model as tm
from torchrec.distributed.types import ShardingPlan
from torchrec.models.deepfm import SimpleDeepFMNN
from torchrec.models.dlrm import DLRM_DCN, DLRMTrain
from torchrec.modules.embedding_configs import PoolingType
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from tests.builders import ebc_model, hot_plan, profile_of_ids, zipf_kjt, zipf_profile
from tests.dist_utils import run_on_ranks
from torchrec_hot import (
    HotShardingPlanner,
    PlanDoesNotFitError,
    PopularityProfile,
    apply_hot_plan,
    build_report,
    format_report,
    latest_checkpoint,
    load_checkpoint,
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
    make_topology,
    rehot_plan,
    replan,
    save_checkpoint,
)
from torchrec_hot.tables.allocation import TableDemand, allocate_hot_rows
from torchrec_hot.tables.modules import embedding_modules, table_configs
from torchrec_hot.tables.split import Placement, split_module_path

META = torch.device("meta")
# multi-hot TestSparseNN, 20 steps, 2 ranks: the max differences from stock the README states
WEIGHT_BOUND, LOSS_BOUND, STATE_BOUND = 2e-6, 1e-6, 1e-6
BATCH, STEPS, FLOAT_FEATURES = 8, 20, 4
OPTIMIZERS = {"rowwise_adagrad": (RowWiseAdagrad, {"lr": 0.05}),
              "sgd": (torch.optim.SGD, {"lr": 0.05})}


def _tables(rng: np.random.Generator):
    """TestSparseNN's tables: table_0 serves two features, table_1 is MEAN-pooled."""
    def rows() -> int:
        return int(rng.integers(80, 300))

    tables = [
        EmbeddingBagConfig(name="table_0", num_embeddings=rows(), embedding_dim=8,
                           feature_names=["feature_0", "feature_0b"]),
        EmbeddingBagConfig(name="table_1", num_embeddings=rows(), embedding_dim=8,
                           feature_names=["feature_1"], pooling=PoolingType.MEAN),
        EmbeddingBagConfig(name="table_2", num_embeddings=rows(), embedding_dim=16,
                           feature_names=["feature_2"]),
    ]
    weighted = [
        EmbeddingBagConfig(name=f"weighted_table_{i}", num_embeddings=rows(), embedding_dim=8,
                           feature_names=[f"weighted_feature_{i}"])
        for i in range(2)
    ]
    return tables, weighted


def _kjt(tables, rng: np.random.Generator, weighted: bool, multi_hot: bool = False
         ) -> KeyedJaggedTensor:  # fmt: skip
    """BATCH bags per feature of Zipf-skewed ids, weights when `weighted`: one id per bag of
    a pooled table (0-4 when `multi_hot`), 0-4 ids per sequence of an EmbeddingCollection's
    table."""
    keys, values, lengths = [], [], []
    for t in tables:
        for f in t.feature_names:
            keys.append(f)
            several = multi_hot or isinstance(t, EmbeddingConfig)
            lens = rng.integers(0, 5, BATCH) if several else np.ones(BATCH, np.int64)
            ranks = np.minimum(rng.zipf(1.3, int(lens.sum())) - 1, t.num_embeddings - 1)
            values.append((ranks * 7 + 3) % t.num_embeddings)
            lengths.append(lens)
    ids = torch.from_numpy(np.concatenate(values).astype(np.int64))
    return KeyedJaggedTensor.from_lengths_sync(
        keys, ids, torch.from_numpy(np.concatenate(lengths).astype(np.int64)),
        weights=torch.from_numpy(rng.random(ids.numel()).astype(np.float32)) if weighted else None,
    )


def _batch(tables, weighted, rng: np.random.Generator, multi_hot: bool = False
           ) -> tm.ModelInput:  # fmt: skip
    return tm.ModelInput(
        float_features=torch.from_numpy(rng.standard_normal((BATCH, FLOAT_FEATURES))
                                        .astype(np.float32)),
        idlist_features=_kjt(tables, rng, False, multi_hot),
        idscore_features=_kjt(weighted, rng, True, multi_hot) if weighted else None,
        label=torch.from_numpy(rng.integers(0, 2, BATCH).astype(np.float32)),
    )


class _DeepFMTrain(nn.Module):
    """TorchRec's SimpleDeepFMNN with a logistic loss, called like DLRMTrain."""

    def __init__(self, ebc: EmbeddingBagCollection) -> None:
        super().__init__()
        self.model = SimpleDeepFMNN(FLOAT_FEATURES, ebc, hidden_layer_size=8,
                                    deep_fm_dimension=4)

    def forward(self, batch: Batch):  # type: ignore[no-untyped-def]
        logits = self.model(batch.dense_features, batch.sparse_features).squeeze(-1)
        return nn.functional.binary_cross_entropy_with_logits(logits, batch.labels), logits


FP_TABLE = EmbeddingBagConfig(name="fp_feature", num_embeddings=97, embedding_dim=8,
                              feature_names=["fp_feature"])


def _model(kind: str, tables, weighted, optimizer: str) -> nn.Module:
    """One of TorchRec's models over meta-device tables, the fused optimizer attached.
    test_sparse_nn_fp: TestSparseNN whose `fp_ebc` (a FeatureProcessedEmbeddingBagCollection,
    position-weighted, over FP_TABLE) is left to TorchRec's planner and FP-EBC sharder."""
    if kind.startswith("test_sparse_nn"):
        fp = {FP_TABLE.name: 4} if kind == "test_sparse_nn_fp" else None
        model = tm.TestSparseNN(tables=tables, weighted_tables=weighted,
                                num_float_features=FLOAT_FEATURES, sparse_device=META,
                                max_feature_lengths=fp)
    elif kind == "mixed":  # an EBC and an EmbeddingCollection over one KJT
        model = tm.TestMixedEmbeddingSparseArch(tables=tables, num_float_features=FLOAT_FEATURES,
                                                dense_device=torch.device("cpu"))
    else:
        ebc = EmbeddingBagCollection(tables=tables, device=META)
        model = _DeepFMTrain(ebc) if kind == "deepfm" else DLRMTrain(DLRM_DCN(
            ebc, FLOAT_FEATURES, dense_arch_layer_sizes=[8, 8], over_arch_layer_sizes=[8, 1],
            dcn_num_layers=2, dcn_low_rank_dim=4))
    cls, kwargs = OPTIMIZERS[optimizer]
    for module in embedding_modules(model).values():
        inner = getattr(module, "_embedding_bag_collection", module)  # not the FP's weights
        apply_optimizer_in_backward(cls, inner.parameters(), dict(kwargs))
    return model


def _model_batch(kind: str, tables, weighted, rng: np.random.Generator):
    if kind.startswith("test_sparse_nn"):
        return _batch(tables, weighted, rng, multi_hot=kind == "test_sparse_nn_multi_hot")
    if kind == "mixed":
        return _batch(tables, [], rng)
    dense = rng.standard_normal((BATCH, FLOAT_FEATURES)).astype(np.float32)
    return Batch(dense_features=torch.from_numpy(dense),
                 sparse_features=_kjt(tables, rng, False),
                 labels=torch.from_numpy(rng.integers(0, 2, BATCH).astype(np.float32)))


def _train(dmp: nn.Module, kind: str, tables, weighted, seed: int, rank: int) -> list[float]:
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda params: torch.optim.SGD(params, lr=0.1))
    losses = []
    for step in range(STEPS):
        batch = _model_batch(kind, tables, weighted, np.random.default_rng([seed, step, rank]))
        loss, _ = dmp(batch)
        loss.backward()
        dense.step()
        dense.zero_grad()
        losses.append(loss.detach())
    return losses


def _mixed_bags(kind: str, tables, weighted, seed: int, rank: int, hot_plan) -> int:
    """Bags of this rank's training batches that hold both hot and cold rows of a split table."""
    hot = {f: tp.hot_ids for tp in hot_plan.tables if tp.placement is Placement.SPLIT
           for f in tp.feature_names}
    mixed = 0
    for step in range(STEPS):
        batch = _model_batch(kind, tables, weighted, np.random.default_rng([seed, step, rank]))
        for kjt in (batch.idlist_features, batch.idscore_features):
            for f, jt in (kjt.to_dict().items() if kjt is not None else []):
                if f in hot:
                    for bag in jt.to_dense():
                        is_hot = np.isin(bag.numpy(), hot[f])
                        mixed += bool(is_hot.any() and not is_hot.all())
    return mixed


def _config_order_plan(model: nn.Module, world: int) -> ShardingPlan:
    """A stock table-wise plan whose sharded EBC output comes in config order: each module's
    tables in contiguous blocks over the ranks. TestMixedEmbeddingSparseArch reads its EBC's
    `values()` by position, and a stock sharded EBC's columns come in its plan's rank order, so
    the stock model computes what its unsharded self computes only under such a plan (the
    hot/cold EBC always returns config order)."""
    plan = {}
    for path, module in embedding_modules(model).items():
        names = [c.name for c in table_configs(module)]
        per_rank = -(-len(names) // world)
        plan[path] = construct_module_sharding_plan(
            module, {n: table_wise(rank=i // per_rank) for i, n in enumerate(names)},
            world_size=world, device_type="cpu")
    return ShardingPlan(plan)


def _worker(rank: int, world: int, seed: int, kind: str, optimizer: str, colocate: bool,
            checkpoint_dir: str | None = None) -> dict:
    rng = np.random.default_rng(seed)
    tables, weighted = _tables(rng)
    if kind == "test_sparse_nn_fp":
        tables = [*tables, FP_TABLE]
    elif kind != "test_sparse_nn":  # one embedding dim, no weighted features
        tables, weighted = [dataclasses.replace(t, embedding_dim=8) for t in tables], []
    if kind == "mixed":  # the weighted tables' shapes as the EmbeddingCollection's tables
        tables = [t for t in tables if t.pooling == PoolingType.SUM] + [
            EmbeddingConfig(name=f"seq_{i}", num_embeddings=t.num_embeddings, embedding_dim=8,
                            feature_names=[f"seq_feature_{i}"])
            for i, t in enumerate(_tables(rng)[1])
        ]
    stock_model = _model(kind, tables, weighted, optimizer)
    stock_plan = (_config_order_plan(stock_model, world) if kind == "mixed" else
                  EmbeddingShardingPlanner(topology=make_topology(world, "cpu"), batch_size=BATCH)
                  .collective_plan(stock_model))
    stock = DistributedModelParallel(stock_model, plan=stock_plan, device=torch.device("cpu"))
    init = logical_state_dict(stock)

    hot_model = _model(kind, tables, weighted, optimizer)
    profile = PopularityProfile.for_model(hot_model)
    for step in range(8):
        rng = np.random.default_rng([seed, 99, step])
        profile.update(_model_batch(kind, tables, weighted, rng))
    total = sum(t.num_embeddings * t.embedding_dim * 4 for t in tables + weighted
                if t is not FP_TABLE)
    # a sixth of all rows' bytes: every module keeps >= 2 split tables (a quarter let a small
    # table fit whole in about 1 seed of 10)
    planner = HotShardingPlanner(make_topology(world, "cpu"), profile,
                                 hbm_budget_bytes=total // (6 * world), batch_size=BATCH,
                                 compare_with_stock=False, colocate=colocate)
    plan = planner.collective_plan(hot_model)
    hot_plan = planner.hot_plan
    hot_model = apply_hot_plan(hot_model, hot_plan, config_order=kind == "mixed")
    hot = DistributedModelParallel(hot_model, plan=plan, device=torch.device("cpu"))
    load_logical_state_dict(hot, init)

    out = {"losses": [_train(m, kind, tables, weighted, seed, rank) for m in (stock, hot)]}
    out["state"] = [logical_state_dict(m) for m in (stock, hot)]
    out["optim"] = [logical_optimizer_state(m) for m in (stock, hot)]
    if kind == "test_sparse_nn_multi_hot":
        out["mixed_bags"] = _mixed_bags(kind, tables, weighted, seed, rank, hot_plan)
    out["fp_plan"] = [str(p.plan.get("sparse.fp_ebc")) for p in (stock_plan, plan)]
    out["split_per_module"] = {
        path: sum(t.placement is Placement.SPLIT for t in hot_plan.tables_in(path))
        for path in hot_plan.module_paths
    }
    out["apart"] = sum(
        module[t.name + "__hot"].ranks != module[t.name + "__cold"].ranks
        for t in hot_plan.tables if t.placement is Placement.SPLIT
        for module in [plan.plan[split_module_path(t.module_path, t.pooled)]]
    )
    if checkpoint_dir is not None:
        # re-planning moves rows between the hot and cold halves of every module (the
        # EmbeddingCollection's too) and leaves the logical model as it was
        before = out["state"][1], out["optim"][1]
        counts = {t.name: np.random.default_rng([seed, 7]).integers(0, 50, t.num_embeddings)
                  for t in hot_plan.tables}
        report = replan(hot, rehot_plan(hot_plan, counts))
        out["replanned"] = {name for name, rows in report.rows_moved.items() if rows}
        out["after_replan"] = logical_state_dict(hot), logical_optimizer_state(hot)
        out["before_replan"] = before
        # sharded DCP: hot/cold -> stock -> hot/cold, both ways
        save_checkpoint(hot, Path(checkpoint_dir) / "hot", STEPS)
        fresh_stock = DistributedModelParallel(_model(kind, tables, weighted, optimizer),
                                               plan=stock_plan, device=torch.device("cpu"))
        load_checkpoint(fresh_stock, latest_checkpoint(Path(checkpoint_dir) / "hot"))
        save_checkpoint(fresh_stock, Path(checkpoint_dir) / "stock", STEPS)
        fresh_hot = DistributedModelParallel(
            apply_hot_plan(_model(kind, tables, weighted, optimizer), hot_plan,
                           config_order=True), plan=plan,
            device=torch.device("cpu"))
        load_checkpoint(fresh_hot, latest_checkpoint(Path(checkpoint_dir) / "stock"))
        out["dcp"] = [(logical_state_dict(m), logical_optimizer_state(m))
                      for m in (fresh_stock, fresh_hot)]
    return out


MODULES = {"test_sparse_nn": {"sparse.ebc", "sparse.weighted_ebc"},
           "test_sparse_nn_fp": {"sparse.ebc", "sparse.weighted_ebc"},
           "test_sparse_nn_multi_hot": {"sparse.ebc", "sparse.weighted_ebc"},
           "dlrm_dcn": {"model.sparse_arch.embedding_bag_collection"},
           "deepfm": {"model.sparse_arch.embedding_bag_collection"},
           "mixed": {"ebc", "ec"}}


@pytest.mark.multiprocess
@pytest.mark.parametrize("kind,optimizer,colocate", [
    ("test_sparse_nn", "rowwise_adagrad", True), ("test_sparse_nn", "sgd", False),
    ("dlrm_dcn", "rowwise_adagrad", True), ("dlrm_dcn", "sgd", False),
    ("deepfm", "rowwise_adagrad", True), ("deepfm", "sgd", False),
    ("mixed", "rowwise_adagrad", True), ("mixed", "sgd", False),
    ("test_sparse_nn_fp", "rowwise_adagrad", False)])
def test_torchrec_models_train_bit_identical_to_stock(kind, optimizer, colocate, tmp_path):
    seed = int(np.random.default_rng().integers(2**31))
    print("seed", seed)
    dcp = str(tmp_path) if (kind, optimizer) == ("mixed", "rowwise_adagrad") else None
    results = run_on_ranks(_worker, 2, seed, kind, optimizer, colocate, dcp)
    for r in results:
        split = r["split_per_module"]
        assert split.keys() == MODULES[kind]
        assert min(split.values()) >= 2, split  # at least two split tables per module
        (stock_losses, hot_losses) = r["losses"]
        assert all(torch.equal(a, b) for a, b in zip(stock_losses, hot_losses, strict=True))
        stock_state, hot_state = r["state"]
        assert stock_state.keys() == hot_state.keys()
        assert kind != "test_sparse_nn" or any("weighted_ebc" in k for k in stock_state)
        if kind == "test_sparse_nn_fp":  # left to TorchRec's planner (test_stock_modules.py)
            assert any("fp_ebc" in k for k in stock_state)
            assert "None" not in r["fp_plan"], r["fp_plan"]  # sharded in both models
        for key in stock_state:
            assert torch.equal(stock_state[key], hot_state[key]), key
        stock_optim, hot_optim = r["optim"]
        assert stock_optim.keys() == hot_optim.keys()
        for key, entry in stock_optim.items():
            for name, value in entry.items():
                assert torch.equal(value, hot_optim[key][name]), (key, name)
        if "replanned" in r:
            assert any(name.startswith("seq_") for name in r["replanned"]), r["replanned"]
            (s0, o0), (s1, o1) = r["before_replan"], r["after_replan"]
            assert all(torch.equal(s0[k], s1[k]) for k in s0)
            assert all(torch.equal(v, o1[k][n]) for k, e in o0.items() for n, v in e.items())
        for state, optim in r.get("dcp", []):  # the checkpoint, EmbeddingCollection included
            assert state.keys() == hot_state.keys() and any("ec.embeddings." in k for k in state)
            assert all(torch.equal(state[k], hot_state[k]) for k in state)
            assert all(torch.equal(v, hot_optim[k][n]) for k, e in optim.items()
                       for n, v in e.items())
    if colocate:
        assert results[0]["apart"] == 0
    print("split tables with halves on different ranks:", results[0]["apart"])


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


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0
               for k in a)


@pytest.mark.multiprocess
@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "sgd"])
def test_multi_hot_bags_train_within_the_documented_bound(optimizer):
    """Several ids per bag: a bag mixing hot and cold rows is pooled in another order than
    stock's, so the forward differs by float rounding (bounded per pooled value in
    test_hot_cold_ebc.py) and the difference propagates through the full model. The README
    states what 20 steps of TestSparseNN give; this holds it to that, and to the model having
    actually mixed bags (else the check is vacuous)."""
    seed = int(np.random.default_rng().integers(2**31))
    print("seed", seed)
    results = run_on_ranks(_worker, 2, seed, "test_sparse_nn_multi_hot", optimizer, True, None)
    for r in results:
        (stock_losses, hot_losses) = r["losses"]
        losses = max(abs(float(a) - float(b)) for a, b in zip(stock_losses, hot_losses,
                                                              strict=True))
        weights = _max_difference(*r["state"])
        states = max((_max_difference(a, r["optim"][1][k]) for k, a in r["optim"][0].items()),
                     default=0.0)
        print(f"{optimizer}: max |loss diff| {losses:.2e}, weights {weights:.2e}, "
              f"optimizer state {states:.2e}")
        print(f"bags mixing hot and cold rows on rank: {r['mixed_bags']}")
        assert r["mixed_bags"] > 0  # else the check is vacuous
        assert weights <= WEIGHT_BOUND and losses <= LOSS_BOUND and states <= STATE_BOUND
