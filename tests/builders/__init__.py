"""Builders shared by the tests: tables, profiles, batches, models, plans and the training loop
(one place for each). Tables are named t0, t1, ... with one feature each, f0, f1, ..."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.types import ShardingPlan
from torchrec.models.dlrm import DLRM, DLRMTrain
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from torchrec_hot import HotPlan, HotPlanner, PopularityProfile, make_topology
from torchrec_hot.data.chunk import FeatureIds, IdChunk
from torchrec_hot.data.workloads import zipf_batches
from torchrec_hot.planner.plan_io import retarget_sharding_plan
from torchrec_hot.tables.allocation import TableDemand

TRAIN_STEPS = 20
# The sharding case "a plan for 2 CUDA ranks (hot rows table-wise, cold rows row-wise), run on
# CPU"; its stock TorchRec counterpart is table-wise.
CUDA_TW_HOT_RW_COLD = "cuda_tw_hot_rw_cold"
# Optimizers fused into the backward, by name: (class, kwargs).
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, float]]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.05}),
    "rowwise_adagrad": (RowWiseAdagrad, {"lr": 0.05, "eps": 1e-8}),
}


# --- tables and profiles ---------------------------------------------------------------------


def tables_of(sizes: Sequence[int], dims: int | Sequence[int]) -> list[EmbeddingBagConfig]:
    """Tables t{i} (feature f{i}) of `sizes[i]` rows and `dims` (or `dims[i]`) columns."""
    dims = [dims] * len(sizes) if isinstance(dims, int) else list(dims)
    return [
        EmbeddingBagConfig(name=f"t{i}", num_embeddings=int(n), embedding_dim=int(d),
                           feature_names=[f"f{i}"])
        for i, (n, d) in enumerate(zip(sizes, dims, strict=True))
    ]  # fmt: skip


def random_tables(rng: np.random.Generator) -> list[EmbeddingBagConfig]:
    """4 tables: rows U[300, 3000), U[50, 400), 40 and 5 (drawn from `rng` in that order);
    dims 64, 32, 64, 32."""
    sizes = [int(rng.integers(300, 3000)), int(rng.integers(50, 400)), 40, 5]
    return tables_of(sizes, [64, 32, 64, 32])


def random_weights(
    tables: Sequence[EmbeddingBagConfig], rng: np.random.Generator, module_path: str = "ebc"
) -> dict[str, torch.Tensor]:
    """Logical weights `{module_path}.embedding_bags.{table}.weight`: float32 N(0, 1) of shape
    (rows, dim), drawn from `rng` table after table."""
    return {
        f"{module_path}.embedding_bags.{t.name}.weight": torch.from_numpy(
            rng.standard_normal((t.num_embeddings, t.embedding_dim)).astype(np.float32))
        for t in tables
    }  # fmt: skip


def zipf_profile(
    tables: Sequence[EmbeddingBagConfig], seed: int, num_batches: int = 4,
    batch_size: int = 256, alpha: float = 1.2,
) -> PopularityProfile:  # fmt: skip
    """A profile of `num_batches` batches of `batch_size` samples of `zipf_batches` (one id per
    sample and feature, Zipf(`alpha`) popularity)."""
    return PopularityProfile(tables).update_all(
        zipf_batches(tables, num_batches, batch_size, alpha, seed=seed))  # fmt: skip


def profile_of_ids(
    tables: Sequence[EmbeddingBagConfig], ids: Mapping[str, np.ndarray]
) -> PopularityProfile:
    """A profile of one batch in which sample s looks up row `ids[t][s]` of every table t
    (one id per sample and table; every table gets the same number of samples)."""
    sizes = {len(v) for v in ids.values()}
    if len(sizes) != 1:
        raise ValueError(f"every table needs the same number of samples, got {sizes}")
    chunk = IdChunk(
        sizes.pop(),
        {
            t.feature_names[0]: FeatureIds(torch.from_numpy(np.asarray(ids[t.name], np.int64)))
            for t in tables
        },
    )
    profile = PopularityProfile(tables)
    profile.update_chunk(chunk)
    return profile


def served_lookups(tables: Sequence[TableDemand], hot: Mapping[str, int]) -> int:
    """Lookups served by the `hot[name]` most accessed rows of each table."""
    return sum(int(t.sorted_counts[: hot[t.name]].sum()) for t in tables)


# --- batches ---------------------------------------------------------------------------------


def zipf_kjt(
    tables: Sequence[EmbeddingBagConfig], rng: np.random.Generator, batch: int = 8,
    weighted: bool = False,
) -> KeyedJaggedTensor:  # fmt: skip
    """A multi-hot batch of `batch` samples: 0-3 ids per bag (empty bags too), Zipf(1.3) ranks
    scattered over each table's rows; float32 weights U[0, 1) when `weighted`."""
    lengths = rng.integers(0, 4, size=batch * len(tables))
    values = []
    for i, t in enumerate(tables):
        n = int(lengths[i * batch:(i + 1) * batch].sum())
        ranks = np.minimum(rng.zipf(1.3, size=n) - 1, t.num_embeddings - 1)
        values.append((ranks * 7919 + 3) % t.num_embeddings)
    return KeyedJaggedTensor.from_lengths_sync(
        keys=[t.feature_names[0] for t in tables],
        values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
        lengths=torch.from_numpy(lengths.astype(np.int32)),
        weights=torch.from_numpy(rng.random(int(lengths.sum())).astype(np.float32))
        if weighted else None,
    )


def vbe_kjt(
    tables: Sequence[EmbeddingBagConfig], rng: np.random.Generator, batch: int = 8
) -> KeyedJaggedTensor:
    """A batch with a variable batch size per feature (TorchRec's VBE): feature i has
    batch // 2**i samples of 1-2 uniform ids, mapped back to `batch` by inverse indices."""
    strides = [max(1, batch >> i) for i in range(len(tables))]
    lengths = rng.integers(1, 3, size=sum(strides))
    values, start = [], 0
    for t, stride in zip(tables, strides, strict=True):
        n = int(lengths[start:start + stride].sum())
        values.append(rng.integers(0, t.num_embeddings, size=n))
        start += stride
    keys = [t.feature_names[0] for t in tables]
    inverse = torch.stack([torch.from_numpy(rng.integers(0, s, size=batch)) for s in strides])
    return KeyedJaggedTensor(
        keys=keys, values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(lengths.astype(np.int32)),
        stride_per_key_per_rank=[[s] for s in strides], inverse_indices=(keys, inverse))


# --- models ----------------------------------------------------------------------------------


class EbcModel(nn.Module):
    """A model whose only module is `ebc`, an EBC of `tables` on the meta device."""

    def __init__(self, tables: Sequence[EmbeddingBagConfig], weighted: bool = False) -> None:
        super().__init__()
        self.ebc = EmbeddingBagCollection(tables=list(tables), device=torch.device("meta"),
                                          is_weighted=weighted)

    def forward(self, kjt: KeyedJaggedTensor):  # type: ignore[no-untyped-def]
        return self.ebc(kjt)


def ebc_model(
    tables: Sequence[EmbeddingBagConfig], optimizer: str, weighted: bool = False
) -> nn.Module:
    """An `EbcModel` with `OPTIMIZERS[optimizer]` fused into the backward of its EBC."""
    model = EbcModel(tables, weighted)
    cls, kwargs = OPTIMIZERS[optimizer]
    apply_optimizer_in_backward(cls, model.ebc.parameters(), dict(kwargs))
    return model


def dlrm_model(tables: Sequence[EmbeddingBagConfig], dense_in_features: int) -> DLRMTrain:
    """TorchRec's DLRMTrain over a meta-device EBC of `tables` (one dim D for all): dense arch
    [16, D], over arch [16, 1], dense layers from torch seed 0; row-wise Adagrad (lr 0.05) fused
    into the EBC's backward."""
    torch.manual_seed(0)  # dense layers: the same in every model
    ebc = EmbeddingBagCollection(tables=list(tables), device=torch.device("meta"))
    dim = tables[0].embedding_dim
    model = DLRMTrain(DLRM(embedding_bag_collection=ebc, dense_in_features=dense_in_features,
                           dense_arch_layer_sizes=[16, dim], over_arch_layer_sizes=[16, 1]))
    apply_optimizer_in_backward(RowWiseAdagrad, ebc.parameters(), {"lr": 0.05, "eps": 1e-8})
    return model


# --- plans -----------------------------------------------------------------------------------


def hot_plan(
    tables: Sequence[EmbeddingBagConfig], profile: PopularityProfile, sharding: str | None = None,
    *, budget: int = 24 * 1024, batch_size: int = 8, column_shard_dim: int | None = None,
    module_path: str = "ebc",
) -> tuple[HotPlan, ShardingPlan]:  # fmt: skip
    """HotPlanner's plan for 2 ranks with `budget` HBM bytes per rank, and the sharding plan to
    run it on CPU. `sharding`: `CUDA_TW_HOT_RW_COLD` (a CUDA plan, hot table-wise and cold
    row-wise, retargeted to CPU), else a CPU plan of that sharding type (None: HotPlanner's
    default) with column-wise shards `column_shard_dim` wide."""
    if sharding == CUDA_TW_HOT_RW_COLD:
        planner = HotPlanner(make_topology(2, "cuda"), budget, batch_size=batch_size,
                             sharding_types=["table_wise"], cold_sharding_types=["row_wise"],
                             compare_with_stock=False)
        plan = planner.plan(tables, profile, module_path=module_path)
        return plan, retarget_sharding_plan(plan.sharding_plan, "cpu")
    planner = HotPlanner(make_topology(2, "cpu"), budget, batch_size=batch_size,
                         sharding_types=None if sharding is None else [sharding],
                         column_shard_dim=column_shard_dim, compare_with_stock=False)
    plan = planner.plan(tables, profile, module_path=module_path)
    return plan, plan.sharding_plan


def stock_plan(
    model: nn.Module, tables: Sequence[EmbeddingBagConfig], sharding: str, *, world: int = 2,
    device: str = "cpu", batch_size: int = 8, min_partition: int | None = None,
) -> ShardingPlan:  # fmt: skip
    """Stock TorchRec's plan of `model` on `world` `device` ranks, every table whole (`fused`)
    and `sharding`-sharded (`CUDA_TW_HOT_RW_COLD`: table-wise), column shards >= min_partition
    wide."""
    kind = "table_wise" if sharding == CUDA_TW_HOT_RW_COLD else sharding
    constraints = {t.name: ParameterConstraints(sharding_types=[kind], compute_kernels=["fused"],
                                                min_partition=min_partition)
                   for t in tables}  # fmt: skip
    planner = EmbeddingShardingPlanner(topology=make_topology(world, device),
                                       batch_size=batch_size, constraints=constraints)
    return planner.plan(model, [EmbeddingBagCollectionSharder()])


def colocated(module_plan: Mapping, table: str) -> bool:
    """Whether the module plan puts both halves of `table` table-wise on one rank."""
    halves = [module_plan.get(table + suffix) for suffix in ("__hot", "__cold")]
    return all(h is not None and h.sharding_type == "table_wise" for h in halves) and (
        halves[0].ranks == halves[1].ranks)


# --- training --------------------------------------------------------------------------------


def train_steps(
    dmp: nn.Module, tables: Sequence[EmbeddingBagConfig], seed: int, rank: int,
    device: str | torch.device = "cpu", steps: int = TRAIN_STEPS,
    before_step: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:  # fmt: skip
    """`steps` steps of loss = sum(pooled * G) on `device`, step s on `zipf_kjt` of rng
    [seed, s, rank] and G ~ N(0, 1) from the same rng (so the embedding gradient does not depend
    on float rounding of the forward); `before_step(s)` runs first in step s. Returns the
    pooled outputs, (batch, sum of dims) in logical key order, on CPU."""
    outputs = []
    keys = [t.feature_names[0] for t in tables]
    for step in range(steps):
        if before_step is not None:
            before_step(step)
        rng = np.random.default_rng([seed, step, rank])
        kjt = zipf_kjt(tables, rng).to(device)
        pooled = dmp(kjt).to_dict()  # by name: sharded outputs come in sharding-group order
        values = torch.cat([pooled[k] for k in keys], dim=1)
        g = torch.from_numpy(rng.standard_normal(tuple(values.shape)).astype(np.float32))
        (values * g.to(device)).sum().backward()
        outputs.append(values.detach().cpu())
    return outputs


def states_equal(a, b) -> bool:
    """Nested dicts of tensors and values (state dicts, optimizer states) equal bit for bit."""
    if isinstance(a, dict):
        return sorted(a) == sorted(b) and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b
