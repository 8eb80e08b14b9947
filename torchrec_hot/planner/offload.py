"""Stock TorchRec at its best for tables larger than HBM: embedding offloading, same budget.

TorchRec's answer for tables larger than HBM ("Toward 100TB Recommendation Models with
Embedding Offloading", RecSys 2024): every table is `fused_uvm_caching` with
`CacheParams(algorithm=LRU, stats=<CacheStatistics of the table>, prefetch_pipeline=True)`,
and the planner's proposer is `EmbeddingOffloadScaleupProposer`, which starts every cache
small and spends spare HBM on the caches whose statistics say it pays (a cache grown to the
whole table becomes `fused`). LRU only (its miss curves model LRU). CUDA topologies only: the
CPU sharders offer no caching kernel. Upstream TorchRec has no `CacheStatistics` computed from
data; `strategy.cache_stats.ProfileCacheStatistics` is what the proposer needs.

Same budget as ours. The proposer spends whatever HBM TorchRec's topology leaves after its own
charges (I/O buffers, reservation), which on the topology our plans get (row budget + an I/O
allowance) is more than the row budget. `BudgetedScaleupProposer` is TorchRec's proposer with
one change: the HBM its search may add to the starting plan is also capped by what is left of
`world x row budget` after the rows the starting plan already keeps in HBM (weights + state;
a cache's rows by its load factor); a proposal over it is replaced by the starting plan; and
a plan that still puts more than the row budget on one rank is redone with a lower cap
(`compare_with_tuned_stock`), so tuned stock is held to our budget on every rank.
Everything else (starting plan, search, promotion of full caches to `fused`, TorchRec's perf
model as the score) is TorchRec's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import torch
from torchrec import EmbeddingBagConfig
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.planner.proposers import EmbeddingOffloadScaleupProposer
from torchrec.distributed.planner.types import ShardingOption
from torchrec.distributed.planner.utils import LuusJaakolaSearch
from torchrec.distributed.types import CacheAlgorithm, CacheParams, CacheStatistics

from torchrec_hot.planner.hot_plan import StockComparison
from torchrec_hot.planner.stock import compare_with_stock

# The proposer only grows caches from their starting load factor (its `allocate_budget` adds
# budget on top of the starting clfs), so they start from almost nothing: TorchRec's default
# 0.2 would not fit small budgets at all.
START_LOAD_FACTOR = 0.001


def offloading_constraints(
    configs: Sequence[EmbeddingBagConfig], stats: Callable[[str], CacheStatistics | None]
) -> dict[str, ParameterConstraints]:
    """TorchRec embedding offloading's constraints: every table row-wise or table-wise, as
    TorchRec's own perf model picks (row-wise spreads a large table's cache over every rank:
    table-wise only, under the per-rank row budget the lightest rank used 12-50% of its budget
    at Kaggle x 0.05, and the plan was 15% slower at 20% of the bytes in HBM),
    `fused_uvm_caching`, LRU, `stats(table name)` as its `CacheStatistics`, prefetch pipeline
    on, starting from `START_LOAD_FACTOR`."""
    return {
        c.name: ParameterConstraints(
            sharding_types=["row_wise", "table_wise"],
            compute_kernels=["fused_uvm_caching"],
            cache_params=CacheParams(
                algorithm=CacheAlgorithm.LRU,
                load_factor=START_LOAD_FACTOR,
                stats=stats(c.name),
                prefetch_pipeline=True,
            ),
        )
        for c in configs
    }


class BudgetedScaleupProposer(EmbeddingOffloadScaleupProposer):
    """`EmbeddingOffloadScaleupProposer` whose scale-up budget is also capped by a row budget
    (module docstring).

    Args:
        row_budget_bytes: HBM bytes for rows, all ranks together.
        bytes_per_row: table name -> HBM bytes of one row (weights + optimizer state).
    """

    def __init__(self, row_budget_bytes: int, bytes_per_row: Mapping[str, int]) -> None:
        super().__init__()
        self.row_budget_bytes = row_budget_bytes
        self.bytes_per_row = dict(bytes_per_row)

    def rows_in_hbm(self, plan: Sequence[ShardingOption]) -> float:
        """Row bytes a proposal keeps in HBM: whole `fused` tables, `clf` of cached ones."""
        total = 0.0
        for so in plan:
            share = 1.0 if so.compute_kernel in ("fused", "dense") else 0.0
            if so.compute_kernel == "fused_uvm_caching":
                share = float(so.cache_load_factor or 0.0)
            total += share * so.tensor.shape[0] * self.bytes_per_row[so.name]
        return total

    def feedback(
        self,
        partitionable: bool,
        plan: list[ShardingOption] | None = None,
        perf_rating: float | None = None,
        storage_constraint: Topology | None = None,
    ) -> None:
        """TorchRec's feedback; on the first (the starting plan's), the search it would start
        gets the budget `min(TorchRec's, world x row budget - rows_in_hbm(plan))`; a next
        proposal whose rows exceed the row budget is replaced by the starting plan."""
        ready = self.enumerator is not None and plan is not None and storage_constraint
        if self.search is None and ready and partitionable:
            used = sum(so.total_storage.hbm for so in plan)
            ceiling = self.get_hbm_ceiling(plan, self.enumerator) - used
            available = self.get_budget(plan, storage_constraint)
            ours = self.row_budget_bytes - self.rows_in_hbm(plan)
            budget = max(0.0, min(available, ceiling, ours))
            self.search = LuusJaakolaSearch(0, budget, max_iterations=16, left_cost=perf_rating)
        super().feedback(partitionable, plan, perf_rating, storage_constraint)
        if self.proposal is not None and self.rows_in_hbm(self.proposal) > self.row_budget_bytes:
            # promotions overshot the rows: offer the starting plan again instead (the
            # planner then never sees a plan over the budget; the search learns that budget
            # scores no better and moves on)
            self.proposal = copy.deepcopy(self.starting_proposal)


def compare_with_tuned_stock(
    modules: Mapping[str, Sequence[EmbeddingBagConfig]],
    counts: Mapping[str, np.ndarray],
    bytes_per_row: Mapping[str, int],
    topology: Topology,
    batch_size: int,
    reservation_percentage: float,
    optimizer_class: type[torch.optim.Optimizer] | None,
    stats: Callable[[str], CacheStatistics | None],
    weighted: Collection[str] = (),
    row_budget: int | None = None,
    rounds: int = 3,
) -> StockComparison:
    """`stock.compare_with_stock` for TorchRec's embedding offloading (module docstring).

    Args:
        stats: table name -> its `CacheStatistics` (e.g. `cache_stats.CacheStatisticsOf`,
            computed from the same input our strategy choice sees).
        row_budget: HBM bytes per rank for rows (weights + state) its scale-up may fill
            (`BudgetedScaleupProposer`, all ranks together); None: TorchRec's own proposer,
            bounded by the topology only. The proposer's cap is on all ranks' rows together;
            should a plan still keep more than `row_budget` on any rank (`hbm_bytes_per_rank`:
            the partitioner may pack caches unevenly, or promotions overshoot), the cap is
            lowered by that rank's excess and the plan redone, at most `rounds` plans (the
            last returned), so tuned stock is held to ours: the budget on every rank.
    Raises:
        ValueError: on a CPU topology (no caching kernel).
    """
    if topology.compute_device == "cpu":
        raise ValueError("embedding offloading needs a CUDA topology (fused_uvm_caching)")
    configs = [c for module in modules.values() for c in module]
    constraints = offloading_constraints(configs, stats)
    world = topology.world_size
    cap = None if row_budget is None else row_budget * world
    for _ in range(max(1, rounds)):
        proposer = (
            EmbeddingOffloadScaleupProposer()
            if cap is None
            else BudgetedScaleupProposer(cap, bytes_per_row)
        )
        result = compare_with_stock(
            modules, counts, bytes_per_row, topology, batch_size, reservation_percentage,
            optimizer_class, weighted, constraints, [proposer],
        )  # fmt: skip
        fullest = max(result.hbm_bytes_per_rank, default=0)
        if cap is None or result.sharding_plan is None or fullest <= row_budget:
            break
        cap = int(cap * row_budget / fullest * 0.98)  # a rank got too many rows: cap lower
    return result
