"""Small adapters around TorchRec's planner: meta models, I/O charges, running a plan and
explaining its failures.

TorchRec charges every shard on a CUDA device its input/output buffers in HBM (for a table-wise
shard at per-rank batch B and world size W: about B * W * (pooling * 8 + dim * 4) bytes). These
are not embedding rows, so torchrec-hot adds them on top of the user's row budget when it builds
the topology TorchRec plans against.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingCollection,
    EmbeddingConfig,
)
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import PlannerError, Proposer
from torchrec.distributed.types import ModuleSharder, ShardingPlan
from torchrec.modules.embedding_configs import BaseEmbeddingConfig
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward


def is_pooled(config: BaseEmbeddingConfig) -> bool:
    """Whether a table config is an EmbeddingBagCollection's (else an EmbeddingCollection's)."""
    return not isinstance(config, EmbeddingConfig)


def meta_model(
    modules: Mapping[str, Sequence[BaseEmbeddingConfig]],
    optimizer_class: type[torch.optim.Optimizer] | None,
    weighted: Collection[str] = (),
) -> nn.Module:
    """A meta-device model holding, at each module path ("" = the model itself, then the only
    module), an EmbeddingBagCollection of `modules[path]` (weighted for the paths in
    `weighted`), or an EmbeddingCollection when its configs are `EmbeddingConfig`s, with
    `optimizer_class` attached the way `apply_optimizer_in_backward` does, so TorchRec's
    planner charges its state."""
    root = nn.Module()
    for path, configs in modules.items():
        meta = torch.device("meta")
        if configs and not is_pooled(configs[0]):
            module: nn.Module = EmbeddingCollection(tables=list(configs), device=meta)
        else:
            module = EmbeddingBagCollection(
                tables=list(configs), is_weighted=path in weighted, device=meta
            )
        if optimizer_class is not None:
            apply_optimizer_in_backward(optimizer_class, module.parameters(), {"lr": 0.01})
        if not path:
            if len(modules) > 1:
                raise ValueError("a module at the model's root must be its only module")
            return module
        parent = root
        *parents, name = path.split(".")
        for part in parents:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(name, module)
    return root


def sharders() -> list:
    """TorchRec's default sharders of the collections torchrec-hot plans."""
    return [EmbeddingBagCollectionSharder(), EmbeddingCollectionSharder()]


def table_io_bytes(
    configs: Sequence[EmbeddingBagConfig],
    topology: Topology,
    batch_size: int,
    pooling_factors: Mapping[str, float],
) -> dict[str, int]:
    """TorchRec's HBM charge for the I/O buffers of each table placed table-wise, in bytes
    (0 on CPU topologies). Read from TorchRec's own enumerator and storage estimator."""
    if topology.compute_device == "cpu":
        return {c.name: 0 for c in configs}
    constraints = {
        c.name: ParameterConstraints(
            sharding_types=["table_wise"],
            compute_kernels=["fused_uvm"],
            pooling_factors=[pooling_factors[c.name]] * len(c.feature_names),
        )
        for c in configs
    }
    enumerator = EmbeddingEnumerator(topology, batch_size, constraints=constraints)
    groups = {
        "bags": [c for c in configs if is_pooled(c)],
        "sequences": [c for c in configs if not is_pooled(c)],
    }
    model = meta_model({path: cs for path, cs in groups.items() if cs}, None)
    options = enumerator.enumerate(model, sharders())
    return {o.name: int(o.shards[0].storage.hbm) for o in options}


def run_torchrec_planner(
    model: nn.Module,
    topology: Topology,
    batch_size: int,
    reservation_percentage: float,
    constraints: Mapping[str, ParameterConstraints] | None,
    module_sharders: Sequence[ModuleSharder[nn.Module]] | None = None,
    proposer: Proposer | list[Proposer] | None = None,
) -> ShardingPlan:
    """Stock `EmbeddingShardingPlanner.plan` on `model` with `module_sharders` (None: `sharders()`;
    raises TorchRec's `PlannerError`); `proposer`: TorchRec's proposers (None: its defaults)."""
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=batch_size,
        storage_reservation=FixedPercentageStorageReservation(reservation_percentage),
        constraints=dict(constraints) if constraints is not None else None,
        proposer=proposer,
    )
    return planner.plan(model, list(module_sharders) if module_sharders else sharders())


def io_reserves(io: dict[str, int], world_size: int) -> list[int]:
    """HBM per rank to keep for TorchRec's I/O buffers, in the order tried: the largest
    charges of the share of split tables (up to two per logical table) one rank gets when
    spread evenly; twice that; every table's charge (all buffers on one rank)."""
    charges = sorted(io.values(), reverse=True)
    even = sum(charges[: math.ceil(2 * len(io) / world_size)])
    everything = 2 * sum(charges)
    return sorted({min(even, everything), min(2 * even, everything), everything})


def explain_planner_error(
    configs: Sequence[EmbeddingBagConfig],
    bytes_per_row: dict[str, int],
    topology: Topology,
    error: PlannerError | None,
) -> str:
    """Why no placement exists, as bytes missing per rank: cold rows against host memory
    (the most that could be cold), else TorchRec's own words."""
    world = topology.world_size
    rows_bytes = sum(c.num_embeddings * bytes_per_row[c.name] for c in configs)
    need = math.ceil(rows_bytes / world)
    lines = [
        f"rank {r}: the tables need {need} bytes of host memory per rank, it has "
        f"{d.storage.ddr} (missing {need - d.storage.ddr})"
        for r, d in enumerate(topology.devices)
        if need > d.storage.ddr
    ]
    detail = "\n  ".join(lines) if lines else "no rank lacks host memory on average"
    return f"TorchRec found no placement for the split tables:\n  {detail}\nTorchRec: {error}"
