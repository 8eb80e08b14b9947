"""`HotPlanner`: hot rows per table under a per-rank HBM budget, placed by TorchRec's planner.

Steps of `HotPlanner.plan`:
1. every table's rows, ranked by profiled lookups, compete for `world_size * budget` bytes of
   HBM (`allocation.allocate_hot_rows`: most lookups per byte first);
2. each table becomes `T__hot` + `T__cold` (or stays whole: all rows fit, or none worth it);
3. `ParameterConstraints` per split table: hot -> kernel `fused` (HBM), cold -> `fused_uvm`
   on CUDA topologies (`fused` for both on CPU), pooling factors scaled by each half's share of
   lookups; TorchRec's stock `EmbeddingShardingPlanner` then places the shards against a
   topology whose HBM is the budget plus TorchRec's own charges (I/O buffers, percentage
   reservation);
4. the placed plan is checked rank by rank: weights + optimizer state of hot shards must be
   within the budget on every rank, else the total is shrunk by the overflow and re-planned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.types import CacheStatistics, ShardingPlan

from torchrec_hot.planner.colocate import colocate_split_tables, movable_cold_halves
from torchrec_hot.planner.constraints import is_uvm_part, part_constraints
from torchrec_hot.planner.hot_plan import HotPlan, TablePlan
from torchrec_hot.planner.memory import row_bytes, topology_with_hbm
from torchrec_hot.planner.stock import compare_with_stock, hbm_fraction
from torchrec_hot.planner.strategy.cache_stats import CacheStatisticsOf
from torchrec_hot.planner.strategy.evaluation import StrategyEvaluation, StrategyOptions
from torchrec_hot.planner.table_plans import plan_rank_bytes, table_plan_from_counts
from torchrec_hot.planner.torchrec_glue import (
    explain_planner_error,
    io_reserves,
    meta_model,
    run_torchrec_planner,
    table_io_bytes,
)
from torchrec_hot.profiling.profile import PopularityProfile
from torchrec_hot.tables.allocation import TableDemand, allocate_hot_rows
from torchrec_hot.tables.split import (
    COLD_SUFFIX,
    HOT_SUFFIX,
    Placement,
    split_module_path,
    split_table_configs,
)

_MAX_ROUNDS = 8


class PlanDoesNotFitError(ValueError):
    """No placement fits the topology; the message says how many bytes miss on which rank."""


class HotPlanner:
    """Plans hot rows and their placement for one EmbeddingBagCollection.

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
        compare_with_stock: also plan the unsplit tables with stock TorchRec for the report.
        strategies: choose per table between a static split, UVM caches and look-forward
            prefetch by a cost model on held-out input (`strategy_plan.StrategyOptions`);
            None: static hot/cold splits only.
        colocate: move each table-wise cold half without a cache to its table-wise hot half's
            rank (`colocate.py`), so the two are summed there before the output all-to-all.
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
    ) -> None:
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
        self.column_shard_dim = column_shard_dim
        self.compare_with_stock = compare_with_stock
        self.strategies = strategies
        self.colocate = colocate

    def plan(
        self,
        tables: EmbeddingBagCollection | Sequence[EmbeddingBagConfig],
        profile: PopularityProfile,
        module_path: str = "",
    ) -> HotPlan:
        """Plans `tables` (an EBC, possibly on the meta device, or its configs) from `profile`.

        `module_path` is where the EBC sits in the model, e.g.
        "sparse_arch.embedding_bag_collection" for TorchRec's DLRM ("" for the root)."""
        if isinstance(tables, EmbeddingBagCollection):
            tables = tables.embedding_bag_configs()
        configs = list(tables)
        profile.check_matches(configs, check_dims=False)
        if profile.num_samples == 0:
            raise ValueError("the profile has seen no samples: profile some batches first")
        world = self.topology.world_size
        counts = {c.name: profile.counts(c.name) for c in configs}
        bytes_per_row = {c.name: row_bytes(c, self.optimizer_class) for c in configs}
        demands = [
            TableDemand.from_counts(c.name, counts[c.name], bytes_per_row[c.name]) for c in configs
        ]
        pooling = {
            c.name: max(counts[c.name].sum() / (profile.num_samples * len(c.feature_names)), 1e-3)
            for c in configs
        }
        io = table_io_bytes(configs, self.topology, self.batch_size, pooling)
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
                total_budget_bytes=self._budget(reserves[0]) * world,
            )
        cache_stats = CacheStatisticsOf(
            evaluation.source if evaluation else None, world * self.batch_size
        )
        for io_reserve in reserves:
            budget = self._budget(io_reserve)
            allocate = self._allocator(configs, counts, demands, bytes_per_row, budget, evaluation)
            cap = (
                min(d.storage.hbm for d in self.topology.devices)
                if self.hbm_budget_bytes is None
                else math.ceil((budget + io_reserve) / (1.0 - self.reservation_percentage))
            )
            topology = topology_with_hbm(self.topology, cap)
            try:
                total, (table_plans, sharding_plan, hbm, uvm) = self._fit(
                    configs, allocate, demands, pooling, topology, budget, module_path,
                    cache_stats,
                )  # fmt: skip
                break
            except PlannerError as e:  # TorchRec placed nothing: more room for its buffers
                failure = e
        else:
            raise PlanDoesNotFitError(
                explain_planner_error(configs, bytes_per_row, topology, failure)
            )
        stock = (
            compare_with_stock(
                configs,
                counts,
                bytes_per_row,
                self._stock_topology(io, budget),
                self.batch_size,
                self.reservation_percentage,
                self.optimizer_class,
            )
            if self.compare_with_stock
            else None
        )
        summary = None
        if evaluation is not None:  # the choice behind the plan (cached by total)
            summary = evaluation.summary(
                evaluation.choose_best(total), stock.sharding_plan if stock else None, table_plans
            )
        return HotPlan(
            module_path=module_path,
            tables=tuple(table_plans),
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

    def _fit(
        self,
        configs: Sequence[EmbeddingBagConfig],
        allocate: Callable[[int], list[TablePlan]],
        demands: Sequence[TableDemand],
        pooling: dict[str, float],
        topology: Topology,
        budget: int,
        module_path: str,
        cache_stats: Callable[[str], CacheStatistics | None],
    ) -> tuple[int, tuple[list[TablePlan], ShardingPlan, list[int], list[int]]]:
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

        def attempt(total: int) -> tuple[tuple, list[int]]:
            """(table plans, sharding plan, per-rank HBM, per-rank UVM) and the ranks over."""
            table_plans = allocate(total)
            if "row_wise" in self.sharding_types:  # a part over half a rank's budget: spread
                row_wise.update(_large_parts(table_plans, budget / 2))
            sharding_plan = self._place(
                table_plans, configs, pooling, topology, module_path, row_wise, cache_stats
            )
            hbm, uvm = plan_rank_bytes(table_plans, sharding_plan, module_path, world)
            return (table_plans, sharding_plan, hbm, uvm), [
                r for r, b in enumerate(hbm) if b > budget
            ]

        for round_ in range(_MAX_ROUNDS):
            result, over = attempt(total)
            if not over:
                return total, result
            hbm, sharding_plan = result[2], result[1]
            spread = self._tables_to_spread(sharding_plan, module_path, over, row_wise)
            row_wise |= spread
            overflow = max(hbm[r] - budget for r in over)
            failed = total
            if not spread or overflow < budget // 50 or round_ >= _MAX_ROUNDS // 2:
                # Every rank gives up the worst overflow, so the next placement has the slack.
                total = max(0, total - world * (overflow + max(d.row_bytes for d in demands)))
        lo, hi, best = 0, failed, None  # best: (total, result)
        for _ in range(_MAX_ROUNDS):
            if hi - lo <= world * max(d.row_bytes for d in demands):
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

    def _stock_topology(self, io: dict[str, int], budget: int) -> Topology:
        """The topology stock TorchRec gets: the user's own when its HBM was given, else the
        same row budget plus TorchRec's I/O charges for the unsplit tables spread evenly."""
        if self.hbm_budget_bytes is None:
            return self.topology
        charges = sorted(io.values(), reverse=True)
        reserve = sum(charges[: math.ceil(len(io) / self.topology.world_size)])
        cap = math.ceil((budget + reserve) / (1.0 - self.reservation_percentage))
        return topology_with_hbm(self.topology, cap)

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

    def _tables_to_spread(
        self, plan: ShardingPlan, module_path: str, over: Sequence[int], done: set[str]
    ) -> set[str]:
        """On each over-budget rank, the largest hot table placed there whole (table-wise),
        to be sharded row-wise over all ranks next round (when row-wise is allowed)."""
        if "row_wise" not in self.sharding_types:
            return set()
        module_plan = plan.plan[split_module_path(module_path)]
        spread: set[str] = set()
        for rank in over:
            whole = [
                (ps.sharding_spec.shards[0].shard_sizes[0] * hbm_fraction(ps, "cuda"), name)
                for name, ps in module_plan.items()
                if ps.sharding_type == "table_wise"
                and ps.ranks == [rank]
                and hbm_fraction(ps, "cuda") > 0
                and name not in done
            ]
            if whole:
                spread.add(max(whole)[1])
        return spread

    def _place(
        self,
        table_plans: Sequence[TablePlan],
        configs: Sequence[EmbeddingBagConfig],
        pooling: dict[str, float],
        topology: Topology,
        module_path: str,
        row_wise: set[str],
        cache_stats: Callable[[str], CacheStatistics | None],
    ) -> ShardingPlan:
        cuda = topology.compute_device != "cpu"
        split_configs: list[EmbeddingBagConfig] = []
        constraints: dict[str, ParameterConstraints] = {}
        for config, tp in zip(configs, table_plans, strict=True):
            for part in split_table_configs(config, tp.hot_rows):
                types = ["row_wise"] if part.name in row_wise else (
                    self.cold_sharding_types if is_uvm_part(tp, part.name) else self.sharding_types
                )
                constraints[part.name] = part_constraints(
                    tp,
                    part.name,
                    part.num_embeddings,
                    len(part.feature_names),
                    types,
                    topology.world_size,
                    cuda,
                    pooling[config.name],
                    self.column_shard_dim,
                    cache_stats(config.name) if tp.cache_rows and cuda else None,
                )
                split_configs.append(part)
        model = meta_model(split_configs, split_module_path(module_path), self.optimizer_class)
        plan = run_torchrec_planner(
            model, topology, self.batch_size, self.reservation_percentage, constraints
        )
        if self.colocate:
            movable = movable_cold_halves(table_plans)
            _, host_used = plan_rank_bytes(table_plans, plan, module_path, topology.world_size)
            host = [d.storage.ddr for d in topology.devices]
            plan, _ = colocate_split_tables(plan, movable, module_path, host_used, host)
        return plan


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
