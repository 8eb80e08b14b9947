"""`HotPlanner`: hot rows per table under a per-rank HBM budget, placed by TorchRec's planner.

Steps of `HotPlanner.plan`, for one embedding module or a whole model's (every table of every
module competes for the same budget):
1. every table's rows, ranked by profiled lookups, compete for `world_size * budget` bytes of
   HBM (`allocation.allocate_hot_rows`: most lookups per byte first); tables the user's
   `ParameterConstraints` pin to a kernel stay whole where the user put them, and their HBM
   rows come out of the budget first;
2. each table becomes `T__hot` + `T__cold` (or stays whole: all rows fit, or none worth it);
3. `ParameterConstraints` per split table: hot -> kernel `fused` (HBM), cold -> `fused_uvm`
   on CUDA topologies (`fused` for both on CPU), pooling factors scaled by each half's share of
   lookups; TorchRec's stock `EmbeddingShardingPlanner` then places the shards of every
   module at once against a topology whose HBM is the budget plus TorchRec's own charges (I/O
   buffers, percentage reservation) (`placement.py`);
4. the placed plan is checked rank by rank: weights + optimizer state of hot shards must be
   within the budget on every rank, else the total is shrunk by the overflow and re-planned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, EmbeddingCollection
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.types import ModuleSharder
from torchrec.modules.embedding_configs import BaseEmbeddingConfig

from torchrec_hot.planner.expected import HeldOutShares
from torchrec_hot.planner.hot_plan import HotPlan, TablePlan
from torchrec_hot.planner.memory import row_bytes, topology_with_hbm
from torchrec_hot.planner.offload import compare_with_tuned_stock
from torchrec_hot.planner.placement import (
    PlanDoesNotFitError,
    SplitPlacement,
    constrained_table_plan,
    pins_kernel,
    with_module_paths,
)
from torchrec_hot.planner.stock import compare_with_stock
from torchrec_hot.planner.strategy.cache_stats import CacheStatisticsOf
from torchrec_hot.planner.strategy.evaluation import StrategyEvaluation, StrategyOptions
from torchrec_hot.planner.table_plans import table_plan_from_counts
from torchrec_hot.planner.torchrec_glue import (
    explain_planner_error,
    io_reserves,
    is_pooled,
    table_io_bytes,
)
from torchrec_hot.profiling.profile import PopularityProfile
from torchrec_hot.profiling.stats import expected_counts
from torchrec_hot.tables.allocation import TableDemand, allocate_hot_rows
from torchrec_hot.tables.modules import check_unique_tables

Tables = EmbeddingBagCollection | EmbeddingCollection | Sequence[BaseEmbeddingConfig]
# Sharding types TorchRec's EmbeddingBagCollectionSharder offers on CPU (row-wise needs CUDA)
CPU_TYPES = {"data_parallel", "table_wise", "column_wise", "table_column_wise"}
RANK_ROWS_BY = ("counts", "expected")  # HotPlanner(rank_rows_by=...)



def _modules(
    tables: Tables | Mapping[str, Tables], module_path: str
) -> tuple[dict[str, list[EmbeddingBagConfig]], set[str]]:
    """(module path -> its logical tables, paths of weighted modules). An EmbeddingCollection's
    tables are `EmbeddingConfig`s (`torchrec_glue.is_pooled`)."""
    items = tables.items() if isinstance(tables, Mapping) else [(module_path, tables)]
    modules: dict[str, list[EmbeddingBagConfig]] = {}
    weighted: set[str] = set()
    for path, module in items:
        if isinstance(module, EmbeddingBagCollection):
            if module.is_weighted():
                weighted.add(path)
            module = module.embedding_bag_configs()
        elif isinstance(module, EmbeddingCollection):
            module = module.embedding_configs()
        modules[path] = list(module)
    check_unique_tables(modules)
    return modules, weighted


class HotPlanner:
    """Plans hot rows and their placement for one EmbeddingBagCollection or a whole model's.

    Args:
        topology: TorchRec topology (world size, compute device, DDR per rank, bandwidths).
        hbm_budget_bytes: HBM per rank for embedding rows (weights + optimizer state). When None,
            derived from the topology's `hbm_cap` minus TorchRec's reservation and I/O charges.
        batch_size: per-rank batch size TorchRec's estimators assume.
        optimizer_class: the fused optimizer that will train the tables (its state is charged).
        reservation_percentage: share of HBM TorchRec's storage reservation keeps back.
        sharding_types: sharding types allowed for hot (and whole) tables (default: table-wise
            and row-wise on CUDA, table-wise on CPU).
        cold_sharding_types: sharding types allowed for cold halves (default: `sharding_types`).
        column_shard_dim: width of column-wise shards (TorchRec's `min_partition`; None: its
            default).
        compare_with_stock: also plan the unsplit tables with stock TorchRec for the report:
            its default planner and, on CUDA topologies, its embedding offloading
            (`offload.compare_with_tuned_stock`, same row budget).
        strategies: choose per table between a static split, UVM caches and look-forward
            prefetch by a cost model on held-out input (`strategy_plan.StrategyOptions`);
            None: static hot/cold splits only.
        colocate: move each table-wise cold half without a cache to its table-wise hot half's
            rank (`colocate.py`), so the two are summed there before the output all-to-all.
        constraints: the user's TorchRec `ParameterConstraints` by logical table name: a table
            whose constraint names a compute kernel (or cache) stays whole, placed as given;
            one that names sharding types only is split and both halves get those types.
        sharders: TorchRec sharders of the split EBCs / ECs (e.g. with the user's fused
            params); None: TorchRec's defaults.
        rank_rows_by: what a row is worth when tables compete for the budget: "counts" (its
            profiled lookups) or "expected" (its Good-Turing expected lookups in new input,
            `profiling.stats.expected_counts`; within a table the order stays the hottest-rows
            order, only the budget's split between tables changes; docs/BENCHMARKS.md,
            bench_allocation).
    """

    def __init__(
        self,
        topology: Topology,
        hbm_budget_bytes: int | None = None,
        *,
        batch_size: int = 8192,
        optimizer_class: type[torch.optim.Optimizer] | None = None,
        reservation_percentage: float = 0.15,
        sharding_types: Sequence[str] | None = None,
        cold_sharding_types: Sequence[str] | None = None,
        column_shard_dim: int | None = None,
        compare_with_stock: bool = True,
        strategies: StrategyOptions | None = None,
        colocate: bool = True,
        constraints: Mapping[str, ParameterConstraints] | None = None,
        sharders: Sequence[ModuleSharder[nn.Module]] | None = None,
        rank_rows_by: str = "counts",
    ) -> None:
        if rank_rows_by not in RANK_ROWS_BY:
            raise ValueError(f"rank_rows_by must be one of {RANK_ROWS_BY}, got {rank_rows_by!r}")
        self.rank_rows_by = rank_rows_by
        if hbm_budget_bytes is not None and hbm_budget_bytes < 0:
            raise ValueError(f"hbm_budget_bytes must be >= 0, got {hbm_budget_bytes}")
        self.topology = topology
        self.hbm_budget_bytes = hbm_budget_bytes
        self.batch_size = batch_size
        self.optimizer_class = optimizer_class
        self.reservation_percentage = reservation_percentage
        cuda = topology.compute_device != "cpu"
        default_types = ["table_wise", "row_wise"] if cuda else ["table_wise"]
        self.sharding_types = list(sharding_types or default_types)
        self.cold_sharding_types = list(cold_sharding_types or self.sharding_types)
        if not cuda and (bad := set(self.sharding_types + self.cold_sharding_types) - CPU_TYPES):
            raise ValueError(
                f"sharding types {sorted(bad)} are not available on a CPU topology: TorchRec's "
                f"CPU sharders offer {sorted(CPU_TYPES)}. Plan row-wise for a CUDA topology "
                "(make_topology(world, 'cuda')) and, to run that plan on CPU (tests), move its "
                "shards with retarget_sharding_plan(plan.sharding_plan, 'cpu')"
            )
        self.column_shard_dim = column_shard_dim
        self.compare_with_stock = compare_with_stock
        self.strategies = strategies
        self.colocate = colocate
        self.constraints = dict(constraints or {})
        self.sharders = list(sharders) if sharders is not None else None

    def plan(
        self,
        tables: Tables | Mapping[str, Tables],
        profile: PopularityProfile,
        module_path: str = "",
    ) -> HotPlan:
        """Plans `tables` from `profile`: an EBC (possibly on the meta device) or its configs,
        sitting at `module_path` in the model (e.g. "sparse_arch.embedding_bag_collection" for
        TorchRec's DLRM; "" for the root), or a whole model's modules as {module path: EBC or
        configs}, whose tables all compete for the one budget."""
        modules, weighted = _modules(tables, module_path)
        all_configs = [c for configs in modules.values() for c in configs]
        module_of = {c.name: path for path, configs in modules.items() for c in configs}
        sequences = {c.name for c in all_configs if not is_pooled(c)}
        unknown = sorted(set(self.constraints) - set(module_of))
        if unknown:
            raise ValueError(f"ParameterConstraints name tables {unknown} that are not planned")
        profile.check_matches(all_configs, check_dims=False)
        if profile.num_samples == 0:
            raise ValueError("the profile has seen no samples: profile some batches first")
        world = self.topology.world_size
        counts = {c.name: profile.counts(c.name) for c in all_configs}
        bytes_per_row = {c.name: row_bytes(c, self.optimizer_class) for c in all_configs}
        pinned = [
            constrained_table_plan(
                c,
                self.constraints[c.name],
                counts[c.name],
                bytes_per_row[c.name],
                module_of[c.name],
            )
            for c in all_configs
            if pins_kernel(self.constraints.get(c.name))
        ]
        pinned_hbm = sum((tp.hot_rows + tp.cache_rows) * tp.row_bytes for tp in pinned)
        pinned_names = {tp.name for tp in pinned}
        configs = [c for c in all_configs if c.name not in pinned_names]
        shares = HeldOutShares(
            counts, profile, self.strategies.holdout if self.strategies is not None else None
        )
        value = (
            (lambda name: expected_counts(counts[name], shares.sample_rate))
            if self.rank_rows_by == "expected" else (lambda name: counts[name])
        )  # fmt: skip
        demands = [
            TableDemand.from_counts(c.name, value(c.name), bytes_per_row[c.name]) for c in configs
        ]
        pooling = {
            c.name: max(counts[c.name].sum() / (profile.num_samples * len(c.feature_names)), 1e-3)
            for c in all_configs
        }
        io = table_io_bytes(all_configs, self.topology, self.batch_size, pooling)
        failure: PlannerError | None = None
        reserves = io_reserves(io, world)
        evaluation = None
        if self.strategies is not None:
            evaluation = StrategyEvaluation(
                configs=configs,
                counts=counts,
                demands=demands,
                profile=profile,
                options=self.strategies,
                world_size=world,
                local_world_size=self.topology.local_world_size,
                batch_size=self.batch_size,
                optimizer_class=self.optimizer_class,
                total_budget_bytes=max(0, self._budget(reserves[0]) * world - pinned_hbm),
                shares=shares,
            )
        # TorchRec CacheStatistics per table, from the input the strategies are measured on
        source = evaluation.source if evaluation else profile
        stats = CacheStatisticsOf(source, world * self.batch_size)
        placement = SplitPlacement(
            modules=modules,
            weighted=weighted,
            sharding_types=self.sharding_types,
            cold_sharding_types=self.cold_sharding_types,
            user_constraints=self.constraints,
            pooling=pooling,
            cache_stats=stats,
            batch_size=self.batch_size,
            reservation_percentage=self.reservation_percentage,
            optimizer_class=self.optimizer_class,
            column_shard_dim=self.column_shard_dim,
            colocate=self.colocate,
            sharders=self.sharders,
        )
        order = {c.name: i for i, c in enumerate(all_configs)}
        for io_reserve in reserves:
            budget = self._budget(io_reserve)
            split = self._allocator(configs, counts, demands, bytes_per_row, budget, evaluation)

            def allocate(total: int, split=split) -> list[TablePlan]:
                planned = with_module_paths(
                    split(max(0, total - pinned_hbm)), module_of, self.constraints, sequences
                )
                return sorted(planned + pinned, key=lambda tp: order[tp.name])

            cap = (
                min(d.storage.hbm for d in self.topology.devices)
                if self.hbm_budget_bytes is None
                else math.ceil((budget + io_reserve) / (1.0 - self.reservation_percentage))
            )
            topology = topology_with_hbm(self.topology, cap)
            try:
                total, (table_plans, sharding_plan, hbm, uvm) = placement.fit(
                    allocate, demands, topology, budget
                )
                break
            except PlannerError as e:  # TorchRec placed nothing: more room for its buffers
                failure = e
        else:
            raise PlanDoesNotFitError(
                explain_planner_error(all_configs, bytes_per_row, topology, failure)
            )
        stock = shares.stock_expected(
            compare_with_stock(
                modules,
                counts,
                bytes_per_row,
                self._stock_topology(io, budget),
                self.batch_size,
                self.reservation_percentage,
                self.optimizer_class,
                weighted,
            )
            if self.compare_with_stock
            else None,
            self.topology.compute_device,
        )
        tuned = shares.stock_expected(  # the same out-of-sample share as default stock
            compare_with_tuned_stock(
                modules, counts, bytes_per_row, self._tuned_topology(io, budget),
                self.batch_size, self.reservation_percentage, self.optimizer_class, stats,
                weighted, row_budget=budget,
            )  # fmt: skip
            if self.compare_with_stock and self.topology.compute_device != "cpu"
            else None,
            self.topology.compute_device,
        )
        summary = None
        if evaluation is not None:  # the choice behind the plan (cached by total)
            summary = evaluation.summary(
                evaluation.choose_best(max(0, total - pinned_hbm)),
                stock.sharding_plan if stock else None,
                [tp for tp in table_plans if tp.name not in pinned_names],
                tuned.sharding_plan if tuned else None,
            )
        return HotPlan(
            tables=tuple(shares.with_expected(table_plans)),
            world_size=world,
            compute_device=self.topology.compute_device,
            batch_size=self.batch_size,
            optimizer=self.optimizer_class.__name__ if self.optimizer_class else None,
            hbm_budget_bytes=budget,
            hbm_cap_bytes=cap,
            hbm_bytes_per_rank=tuple(hbm),
            uvm_bytes_per_rank=tuple(uvm),
            sharding_plan=sharding_plan,
            stock=stock,
            strategies=summary,
            hbm_share_source=shares.source,
            tuned_stock=tuned,
        )

    def _allocator(self, configs, counts, demands, bytes_per_row, budget, evaluation):
        """total HBM bytes (all ranks) -> one TablePlan per table: the static allocation, or
        the strategy choice."""

        def allocate(total: int) -> list[TablePlan]:
            if evaluation is not None:
                return evaluation.table_plans(evaluation.choose_best(total))
            hot_rows = allocate_hot_rows(demands, total, max_whole_table_bytes=budget)
            return [
                table_plan_from_counts(c, counts[c.name], hot_rows[c.name], bytes_per_row[c.name])
                for c in configs
            ]

        return allocate

    def _stock_topology(self, io: dict[str, int], budget: int) -> Topology:
        """The topology stock TorchRec gets: the user's own when its HBM was given, else the
        same row budget plus TorchRec's I/O charges for the unsplit tables spread evenly."""
        if self.hbm_budget_bytes is None:
            return self.topology
        charges = sorted(io.values(), reverse=True)
        reserve = sum(charges[: math.ceil(len(io) / self.topology.world_size)])
        cap = math.ceil((budget + reserve) / (1.0 - self.reservation_percentage))
        return topology_with_hbm(self.topology, cap)

    def _tuned_topology(self, io: dict[str, int], budget: int) -> Topology:
        """The topology TorchRec's embedding offloading gets: the user's own when its HBM was
        given, else the row budget plus every table's I/O charge on each rank. Its proposer
        caps the rows at world x budget (`offload.BudgetedScaleupProposer`); the room on top
        only keeps TorchRec's I/O charges from deciding where its tables fit."""
        if self.hbm_budget_bytes is None:
            return self.topology
        reserve = io_reserves(io, self.topology.world_size)[-1]
        return topology_with_hbm(
            self.topology, math.ceil((budget + reserve) / (1.0 - self.reservation_percentage))
        )

    def _budget(self, io_reserve: int) -> int:
        """Row budget per rank: as given, or the topology's HBM less TorchRec's charges."""
        if self.hbm_budget_bytes is not None:
            return self.hbm_budget_bytes
        if self.topology.compute_device == "cpu":
            raise ValueError("a CPU topology has no HBM: pass hbm_budget_bytes explicitly")
        hbm = min(d.storage.hbm for d in self.topology.devices)
        usable = int(hbm * (1.0 - self.reservation_percentage))
        budget = usable - io_reserve
        if budget < 0:
            raise PlanDoesNotFitError(
                f"every rank (0..{self.topology.world_size - 1}) misses {-budget} bytes of HBM: "
                f"TorchRec reserves {hbm - usable} bytes ({self.reservation_percentage:.0%}) "
                f"and charges {io_reserve} bytes of I/O buffers, hbm_cap is {hbm} bytes"
            )
        return budget
