"""What stock TorchRec's planner does with the same tables, topology and budget.

Lookups served from HBM under a stock plan, per table:
- kernel `fused` (or `dense`, data-parallel) on a CUDA topology: all of the table's lookups;
- `fused_uvm_caching` with cache load factor `clf` (TorchRec's default 0.2 where the plan sets
  none): the lookups of the table's `clf * rows` most accessed rows. This is what an ideal
  cache of that size serves on stationary input, so it is an upper bound for LRU/LFU;
- `fused_uvm`, or any kernel on a CPU topology: none.
Bytes: `clf` of a cached table's rows count as HBM, the rest as UVM (cache bookkeeping state is
not counted).

Two stock configurations:
- `compare_with_stock`: `EmbeddingShardingPlanner` with its default proposers and no
  constraints ("stock TorchRec"); it never picks `fused_uvm_caching` by itself.
- `offload.compare_with_tuned_stock`: TorchRec's embedding offloading, through this function
  with its constraints and proposer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import torch
from torchrec import EmbeddingBagConfig
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.planner.constants import UVM_CACHING_RATIO
from torchrec.distributed.planner.types import PlannerError, Proposer
from torchrec.distributed.types import (
    ParameterSharding,
)

from torchrec_hot.planner.hot_plan import StockComparison
from torchrec_hot.planner.plan_io import parameter_shardings, rank_bytes
from torchrec_hot.planner.torchrec_glue import meta_model, run_torchrec_planner
from torchrec_hot.tables.hottest import hot_lookups


def hbm_fraction(ps: ParameterSharding, compute_device: str) -> float:
    """Share of a table's rows that a stock plan keeps in HBM."""
    if compute_device == "cpu":
        return 0.0
    if ps.compute_kernel == "fused_uvm_caching":
        clf = ps.cache_params.load_factor if ps.cache_params else None
        return float(clf if clf is not None else UVM_CACHING_RATIO)
    return 1.0 if ps.compute_kernel in ("fused", "dense") else 0.0


def compare_with_stock(
    modules: Mapping[str, Sequence[EmbeddingBagConfig]],
    counts: Mapping[str, np.ndarray],
    bytes_per_row: Mapping[str, int],
    topology: Topology,
    batch_size: int,
    reservation_percentage: float,
    optimizer_class: type[torch.optim.Optimizer] | None,
    weighted: Collection[str] = (),
    constraints: Mapping[str, ParameterConstraints] | None = None,
    proposer: list[Proposer] | None = None,
) -> StockComparison:
    """Plans the unsplit tables of `modules` (module path -> its tables; `weighted`: paths of
    weighted modules) with stock TorchRec (default sharders; `constraints` and `proposer`:
    TorchRec's, None for its defaults)."""
    world = topology.world_size
    cap = min(d.storage.hbm for d in topology.devices)
    configs = [c for module in modules.values() for c in module]
    model = meta_model(modules, optimizer_class, weighted)
    try:
        plan = run_torchrec_planner(
            model, topology, batch_size, reservation_percentage, constraints, proposer=proposer
        )
    except PlannerError as e:
        return StockComparison(
            None, str(e), {c.name: 0.0 for c in configs}, (0,) * world, (0,) * world, cap
        )
    module_plan = parameter_shardings(plan)
    device = topology.compute_device
    hbm_lookups = {
        c.name: float(
            hot_lookups(
                counts[c.name], round(hbm_fraction(module_plan[c.name], device) * c.num_embeddings)
            )
        )
        for c in configs
    }
    shapes = {c.name: (c.num_embeddings, c.embedding_dim) for c in configs}
    hbm, uvm = rank_bytes(
        module_plan, shapes, bytes_per_row, lambda _, ps: hbm_fraction(ps, device), world
    )
    return StockComparison(plan, None, hbm_lookups, tuple(hbm), tuple(uvm), cap)
