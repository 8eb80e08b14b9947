"""`HotShardingPlanner`: TorchRec's `ShardingPlanner` interface over `HotPlanner`, for whole
models.

    planner = HotShardingPlanner(topology, profile, hbm_budget_bytes=16 << 30, batch_size=8192)
    plan = planner.collective_plan(model, sharders, pg)   # rank 0 plans, every rank gets it
    model = apply_hot_plan(model, planner.hot_plan)       # every planned EBC -> hot/cold
    dmp = DistributedModelParallel(model, plan=plan, device=device)

`plan(module, sharders)` finds every EmbeddingBagCollection (weighted or not) and
EmbeddingCollection of the model, as TorchRec's sharders do, plans the rows of all their tables
under the one per-rank HBM budget and returns the `ShardingPlan` of the split tables (keyed
`<module path>.split_ebc` / `.split_ec`); the `HotPlan` behind it is `planner.hot_plan`. Every
other module one of `sharders` handles (a FeatureProcessedEmbeddingBagCollection, a
managed-collision collection, a user's module with its own sharder) is planned first by
TorchRec's own planner as stock TorchRec would (`stock_modules.py`; `planner.stock_modules`),
its HBM taken off the budget, and its shardings are in the returned plan too. Pass the same
`sharders` to DistributedModelParallel. The
fused optimizer is read from the model (what `apply_optimizer_in_backward` attached) unless
given. `collective_plan` plans on rank 0 and broadcasts the plan, or the error, so that every
rank returns the same plan or raises the same error (no rank waits in a collective for a rank
that failed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.planner import ParameterConstraints, Topology
from torchrec.distributed.types import ModuleSharder, ShardingPlan, ShardingPlanner

from torchrec_hot.planner.hot_plan import HotPlan
from torchrec_hot.planner.hot_planner import HotPlanner
from torchrec_hot.planner.placement import PlanDoesNotFitError
from torchrec_hot.planner.stock_modules import (
    SPLIT_KINDS,
    StockModulesPlan,
    plan_stock_modules,
    reduced_topology,
    split_sharders,
)
from torchrec_hot.planner.strategy.evaluation import StrategyOptions
from torchrec_hot.profiling.profile import PopularityProfile
from torchrec_hot.tables.modules import embedding_modules, fused_optimizer, is_stock_sharded


def fused_optimizer_class(modules: Mapping[str, nn.Module]) -> type[torch.optim.Optimizer] | None:
    """The optimizer `apply_optimizer_in_backward` attached to the modules' weights (None when
    none is); ValueError when they use different ones (their state costs differ)."""
    found = [fused_optimizer(module) for module in modules.values()]
    classes = {f[0] for f in found if f is not None}
    if len(classes) > 1:
        names = sorted(c.__name__ for c in classes)
        raise ValueError(
            f"the embedding modules use different fused optimizers {names}: pass "
            "optimizer_class to plan them under one budget"
        )
    return next(iter(classes), None)


class HotShardingPlanner(ShardingPlanner):
    """A TorchRec `ShardingPlanner` that splits every table of a model into hot rows (HBM) and
    cold rows (UVM) from a profile, under one HBM budget per rank.

    Args:
        topology: TorchRec topology, as for `EmbeddingShardingPlanner`.
        profile: row popularity of every planned table (`PopularityProfile.for_model`).
        hbm_budget_bytes: HBM per rank for embedding rows (weights + optimizer state); None:
            the topology's HBM less TorchRec's reservation and I/O charges.
        batch_size: per-rank batch size, as for `EmbeddingShardingPlanner`.
        constraints: TorchRec `ParameterConstraints` by table name, honoured (`HotPlanner`).
        reservation_percentage: TorchRec's `FixedPercentageStorageReservation` percentage.
        optimizer_class: the fused optimizer whose state is charged; None: read from the model.
        strategies, colocate, compare_with_stock, sharding_types, cold_sharding_types,
        column_shard_dim, rank_rows_by: as for `HotPlanner`.
    """

    def __init__(
        self,
        topology: Topology,
        profile: PopularityProfile,
        hbm_budget_bytes: int | None = None,
        *,
        batch_size: int = 8192,
        constraints: Mapping[str, ParameterConstraints] | None = None,
        reservation_percentage: float = 0.15,
        optimizer_class: type[torch.optim.Optimizer] | None = None,
        strategies: StrategyOptions | None = None,
        colocate: bool = True,
        compare_with_stock: bool = True,
        sharding_types: Sequence[str] | None = None,
        cold_sharding_types: Sequence[str] | None = None,
        column_shard_dim: int | None = None,
        rank_rows_by: str = "counts",
    ) -> None:
        self.profile = profile
        self.optimizer_class = optimizer_class
        self._options: dict[str, Any] = dict(
            hbm_budget_bytes=hbm_budget_bytes,
            batch_size=batch_size,
            constraints=constraints,
            reservation_percentage=reservation_percentage,
            strategies=strategies,
            colocate=colocate,
            compare_with_stock=compare_with_stock,
            sharding_types=sharding_types,
            cold_sharding_types=cold_sharding_types,
            column_shard_dim=column_shard_dim,
            rank_rows_by=rank_rows_by,
        )
        self.topology = topology
        HotPlanner(topology, **self._options)  # checks the options now, not at plan time
        self.hot_plan: HotPlan | None = None
        self.stock_modules: StockModulesPlan | None = None

    def plan(
        self, module: nn.Module, sharders: list[ModuleSharder[nn.Module]] | None = None
    ) -> ShardingPlan:
        """Plans `module` (see the module docstring): every stock EmbeddingBagCollection and
        EmbeddingCollection split hot/cold, every other module that one of `sharders` (None:
        TorchRec's defaults) handles as stock TorchRec plans it, under the one budget. The
        user's EBC / EC sharders, when given, also plan the split tables."""
        split_with, other = split_sharders(sharders)
        modules = embedding_modules(module, leaves=tuple(s.module_type for s in other))
        handled = {s.module_type for s in other}
        hot = {p: m for p, m in modules.items() if type(m) in SPLIT_KINDS}
        stock = {p: m for p, m in modules.items() if type(m) in handled or is_stock_sharded(m)}
        unknown = [p or "the model" for p in modules if p not in hot and p not in stock]
        if unknown:
            raise NotImplementedError(
                f"{unknown}: neither a stock EmbeddingBagCollection / EmbeddingCollection (which "
                "torchrec-hot splits) nor a module one of the given sharders handles (left to "
                "TorchRec's planner); is it a subclass, or already swapped by apply_hot_plan?"
            )
        if not hot:
            raise ValueError(f"{type(module).__name__} has no embedding collection to plan")
        options = dict(self._options)
        constraints = dict(options.pop("constraints") or {})
        others = plan_stock_modules(
            module, stock, other, self.topology, options["batch_size"],
            options["reservation_percentage"], constraints,
        )  # fmt: skip
        stock_tables = {t for ts in others.tables.values() for t in ts}
        budget = options.pop("hbm_budget_bytes")
        if budget is not None and any(others.hbm_by_rank):
            used = max(others.hbm_by_rank)
            if used > budget:
                raise PlanDoesNotFitError(
                    f"the modules left to TorchRec's planner ({sorted(others.tables)}) take "
                    f"{used} bytes of HBM on one rank, {used - budget} more than the budget of "
                    f"{budget} bytes per rank"
                )
            budget -= used
        optimizer = self.optimizer_class or fused_optimizer_class(hot)
        planner = HotPlanner(
            reduced_topology(self.topology, others.hbm_by_rank),
            budget,
            optimizer_class=optimizer,
            constraints={n: c for n, c in constraints.items() if n not in stock_tables},
            sharders=split_with,
            **options,
        )
        self.hot_plan = planner.plan(hot, self.profile)
        self.stock_modules = others
        return ShardingPlan({**others.plan.plan, **self.hot_plan.sharding_plan.plan})

    def collective_plan(
        self,
        module: nn.Module,
        sharders: list[ModuleSharder[nn.Module]] | None = None,
        pg: dist.ProcessGroup | None = None,
    ) -> ShardingPlan:
        """`plan` on rank 0 of `pg` (default: the world), broadcast to every rank, which also
        gets `hot_plan` and `stock_modules`; an error on rank 0 is raised on every rank."""
        if not dist.is_initialized():
            raise RuntimeError("collective_plan needs torch.distributed; use plan() on one rank")
        rank = dist.get_rank(pg)
        box: list[Any] = [None]
        if rank == 0:
            try:
                plan = self.plan(module, sharders)
                box[0] = ("ok", (self.hot_plan, self.stock_modules, plan))
            except Exception as e:  # every rank raises it, none waits for the plan
                box[0] = ("error", e)
        src = dist.get_global_rank(pg, 0) if pg is not None else 0
        dist.broadcast_object_list(box, src=src, group=pg)
        status, value = box[0]
        if status == "error":
            raise value
        self.hot_plan, self.stock_modules, plan = value
        return plan
