"""Placing a model's split tables with TorchRec's planner and fitting the result to the budget.

`SplitPlacement` holds what does not change while `HotPlanner` searches the hot sizes: the
model's modules (path -> logical tables, which of them are weighted), the allowed sharding
types, the user's `ParameterConstraints`, pooling factors and cache statistics. `place` turns
one set of `TablePlan`s into a TorchRec `ShardingPlan` of a meta model that holds every
module's split tables at `split_module_path(path)`; `fit` searches the total hot bytes until
every rank is within its HBM budget.

The user's constraints (keyed by logical table name, as TorchRec's) are honoured: a table
whose constraint names compute kernels is kept whole and given to TorchRec exactly as the
user wrote it (`constrained_table_plan` says which tier its rows are in); a constraint that
only names sharding types applies them to both halves of the table.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchrec import EmbeddingBagConfig
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.types import CacheStatistics, ModuleSharder, ShardingPlan

from torchrec_hot.planner.colocate import colocate_split_tables, movable_cold_halves
from torchrec_hot.planner.constraints import is_uvm_part, part_constraints
from torchrec_hot.planner.hot_plan import TablePlan
from torchrec_hot.planner.plan_io import parameter_shardings
from torchrec_hot.planner.stock import hbm_fraction
from torchrec_hot.planner.table_plans import plan_rank_bytes, table_plan_from_counts
from torchrec_hot.planner.torchrec_glue import is_pooled, meta_model, run_torchrec_planner
from torchrec_hot.tables.allocation import TableDemand
from torchrec_hot.tables.split import (
    COLD_SUFFIX,
    HOT_SUFFIX,
    Placement,
    split_module_path,
    split_table_configs,
)

_MAX_ROUNDS = 8
_HBM_KERNELS = {"fused", "dense"}
# TorchRec's default cache load factor when a constraint names fused_uvm_caching without one
_DEFAULT_LOAD_FACTOR = 0.2

Result = tuple[list[TablePlan], ShardingPlan, list[int], list[int]]


class PlanDoesNotFitError(ValueError):
    """No placement fits the topology; the message says how many bytes miss on which rank."""


def pins_kernel(constraint: ParameterConstraints | None) -> bool:
    """Whether the user's constraint fixes the table's compute kernel (then it stays whole)."""
    return constraint is not None and bool(constraint.compute_kernels or constraint.cache_params)


def constrained_table_plan(
    config: EmbeddingBagConfig,
    constraint: ParameterConstraints,
    counts: np.ndarray,
    bytes_per_row: int,
    module_path: str,
) -> TablePlan:
    """The plan of a table the user's constraint places whole: HBM when every kernel it allows
    keeps rows in HBM, a UVM cache of its load factor for `fused_uvm_caching`, else UVM.
    ValueError when it allows kernels of different tiers (which one TorchRec picks decides
    how much HBM the table takes, so the budget could not be kept)."""
    kernels = set(constraint.compute_kernels or [])
    if constraint.cache_params is not None and not kernels:
        kernels = {"fused_uvm_caching"}
    tiers = {"hbm" if k in _HBM_KERNELS else k for k in kernels}
    if len(tiers) != 1:
        raise ValueError(
            f"table {config.name!r}: its ParameterConstraints allow compute kernels "
            f"{sorted(kernels)}; name one kernel (or one of fused/dense) so the HBM budget "
            "can account for it"
        )
    (tier,) = tiers
    n = config.num_embeddings
    cache_rows, strategy, algorithm = 0, "static", "lru"
    if tier == "fused_uvm_caching":
        cp = constraint.cache_params
        load = cp.load_factor if cp is not None and cp.load_factor is not None else None
        cache_rows = int(round((_DEFAULT_LOAD_FACTOR if load is None else load) * n))
        lfu = cp is not None and cp.algorithm is not None and cp.algorithm.name == "LFU"
        algorithm = "lfu" if lfu else "lru"
        strategy = f"{algorithm}_cache"
    whole = table_plan_from_counts(config, counts, n if tier == "hbm" else 0, bytes_per_row)
    return dataclasses.replace(
        whole,
        strategy=strategy,
        cache_rows=cache_rows,
        cache_algorithm=algorithm,
        prefetch=bool(constraint.cache_params and constraint.cache_params.prefetch_pipeline),
        module_path=module_path,
        constrained=True,
        pooled=is_pooled(config),
    )


@dataclass(frozen=True)
class SplitPlacement:
    """What stays fixed while the hot sizes are searched (see the module docstring)."""

    modules: Mapping[str, Sequence[EmbeddingBagConfig]]
    weighted: Collection[str]
    sharding_types: Sequence[str]
    cold_sharding_types: Sequence[str]
    user_constraints: Mapping[str, ParameterConstraints]
    pooling: Mapping[str, float]
    cache_stats: Callable[[str], CacheStatistics | None]
    batch_size: int
    reservation_percentage: float
    optimizer_class: type[torch.optim.Optimizer] | None
    column_shard_dim: int | None
    colocate: bool
    # TorchRec sharders of the split collections (the user's, shaping fused params); None: defaults
    sharders: Sequence[ModuleSharder[nn.Module]] | None = None

    @functools.cached_property
    def _configs(self) -> dict[str, EmbeddingBagConfig]:
        """Logical table name -> config, over every module."""
        return {c.name: c for configs in self.modules.values() for c in configs}

    def place(
        self, table_plans: Sequence[TablePlan], topology: Topology, row_wise: set[str]
    ) -> ShardingPlan:
        """TorchRec's plan of every module's split tables (`row_wise`: parts to spread)."""
        cuda = topology.compute_device != "cpu"
        configs = self._configs
        split: dict[str, list[EmbeddingBagConfig]] = {}
        constraints: dict[str, ParameterConstraints] = {}
        for tp in table_plans:
            config = configs[tp.name]
            user = self.user_constraints.get(tp.name)
            parts = split.setdefault(split_module_path(tp.module_path, tp.pooled), [])
            if pins_kernel(user):
                parts.append(config)
                constraints[tp.name] = user  # as the user wrote it
                continue
            for part in split_table_configs(config, tp.hot_rows):
                if user is not None and user.sharding_types:
                    types = list(user.sharding_types)
                elif part.name in row_wise:
                    types = ["row_wise"]
                elif is_uvm_part(tp, part.name):
                    types = list(self.cold_sharding_types)
                else:
                    types = list(self.sharding_types)
                constraints[part.name] = part_constraints(
                    tp,
                    part.name,
                    part.num_embeddings,
                    len(part.feature_names),
                    types,
                    topology.world_size,
                    cuda,
                    self.pooling[config.name],
                    self.column_shard_dim,
                    self.cache_stats(config.name) if tp.cache_rows and cuda else None,
                )
                parts.append(part)
        weighted = {split_module_path(p) for p in self.weighted}
        model = meta_model(split, self.optimizer_class, weighted)
        plan = run_torchrec_planner(
            model, topology, self.batch_size, self.reservation_percentage, constraints,
            self.sharders,
        )
        if self.colocate:
            movable = movable_cold_halves(table_plans)
            _, host_used = plan_rank_bytes(table_plans, plan, topology.world_size)
            host = [d.storage.ddr for d in topology.devices]
            plan, _ = colocate_split_tables(plan, movable, host_used, host)
        return plan

    def spread(self, plan: ShardingPlan, over: Sequence[int], done: set[str]) -> set[str]:
        """On each over-budget rank, the largest hot table placed there whole (table-wise),
        to be sharded row-wise over all ranks next round (when row-wise is allowed; never a
        table the user constrained)."""
        if "row_wise" not in self.sharding_types:
            return set()
        shardings = parameter_shardings(plan)
        spread: set[str] = set()
        for rank in over:
            whole = [
                (ps.sharding_spec.shards[0].shard_sizes[0] * hbm_fraction(ps, "cuda"), name)
                for name, ps in shardings.items()
                if ps.sharding_type == "table_wise"
                and ps.ranks == [rank]
                and hbm_fraction(ps, "cuda") > 0
                and name not in done
                and name not in self.user_constraints
            ]
            if whole:
                spread.add(max(whole)[1])
        return spread

    def fit(
        self,
        allocate: Callable[[int], list[TablePlan]],
        demands: Sequence[TableDemand],
        topology: Topology,
        budget: int,
    ) -> tuple[int, Result]:
        """Allocates, places and checks per-rank HBM until every rank is within `budget`:
        an over-budget rank gets its largest whole hot table (or cache) spread row-wise, or,
        when none can be (or half the rounds are spent), the total hot bytes shrink by the
        overflow. TorchRec may move tables between ranks as the total shrinks, so that need
        not converge (about 1 plan in 1,000 of a 2-rank test model stayed a row over): then
        the total is bisected between 0 (nothing hot, always fits) and the last that failed,
        and the largest that fits is kept. Returns the total hot bytes (all ranks) settled on
        and (table plans, sharding plan, per-rank HBM, per-rank UVM)."""
        world = topology.world_size
        total = budget * world
        row_wise: set[str] = set()  # hot tables that must be spread over all ranks
        step = max((d.row_bytes for d in demands), default=1)

        def attempt(total: int) -> tuple[Result, list[int]]:
            table_plans = allocate(total)
            if "row_wise" in self.sharding_types:  # a part over half a rank's budget: spread
                row_wise.update(_large_parts(table_plans, budget / 2) - set(self.user_constraints))
            sharding_plan = self.place(table_plans, topology, row_wise)
            hbm, uvm = plan_rank_bytes(table_plans, sharding_plan, world)
            return (table_plans, sharding_plan, hbm, uvm), [
                r for r, b in enumerate(hbm) if b > budget
            ]

        for round_ in range(_MAX_ROUNDS):
            result, over = attempt(total)
            if not over:
                return total, result
            hbm, sharding_plan = result[2], result[1]
            spread = self.spread(sharding_plan, over, row_wise)
            row_wise |= spread
            overflow = max(hbm[r] - budget for r in over)
            failed = total
            if not spread or overflow < budget // 50 or round_ >= _MAX_ROUNDS // 2:
                # Every rank gives up the worst overflow, so the next placement has the slack.
                total = max(0, total - world * (overflow + step))
        lo, hi, best = 0, failed, None
        for _ in range(_MAX_ROUNDS):
            if hi - lo <= world * step:
                break
            mid = (lo + hi) // 2
            result, over = attempt(mid)
            if over:
                hi = mid
            else:
                lo, best = mid, (mid, result)
        if best is None:
            result, over = attempt(0)
            if over:
                raise PlanDoesNotFitError(
                    f"no placement keeps every rank within {budget} bytes even with no hot "
                    "rows; over budget: "
                    + ", ".join(f"rank {r}: {result[2][r] - budget} bytes" for r in over)
                )
            best = (0, result)
        return best


def _large_parts(table_plans: Sequence[TablePlan], limit: float) -> set[str]:
    """Parts whose HBM bytes (hot rows, or cache slots) exceed `limit`."""
    out = set()
    for tp in table_plans:
        split = tp.placement is Placement.SPLIT
        if tp.placement is not Placement.UVM and tp.hot_rows * tp.row_bytes > limit:
            out.add(tp.name + HOT_SUFFIX if split else tp.name)
        if tp.cache_rows * tp.row_bytes > limit:
            out.add(tp.name + COLD_SUFFIX if split else tp.name)
    return out


def with_module_paths(
    table_plans: Sequence[TablePlan],
    module_of: Mapping[str, str],
    constrained: Collection[str],
    sequences: Collection[str] = (),
) -> list[TablePlan]:
    """`table_plans`, each with the path of the module its table belongs to, whether the user
    constrained it and whether it is an EmbeddingCollection's (`sequences`)."""
    return [
        dataclasses.replace(
            tp,
            module_path=module_of[tp.name],
            constrained=tp.name in constrained,
            pooled=tp.name not in sequences,
        )
        for tp in table_plans
    ]
