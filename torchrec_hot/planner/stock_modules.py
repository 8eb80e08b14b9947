"""The modules of a model that torchrec-hot does not split, planned by TorchRec's own planner.

`HotShardingPlanner` splits stock `EmbeddingBagCollection`s and `EmbeddingCollection`s. Every
other module that one of the user's sharders handles (a `FeatureProcessedEmbeddingBagCollection`,
a managed-collision collection, a user's own module with its own sharder) is planned here by
TorchRec's `EmbeddingShardingPlanner`, with those sharders, the user's constraints of its tables
and the same topology, batch size and storage reservation, exactly as stock TorchRec would plan
it. Its shards take HBM that the hot rows then cannot use: `hbm_by_rank` says how much (bytes per
rank, TorchRec's own storage estimate of the chosen shards), and `reduced_topology` takes it off
each device before the hot rows are planned, so that the whole model shares one budget.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingCollection
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.distributed.types import ModuleSharder, ShardingPlan

from torchrec_hot.tables.modules import table_configs

SPLIT_KINDS = (EmbeddingBagCollection, EmbeddingCollection)


@dataclass(frozen=True)
class StockModulesPlan:
    """TorchRec's plan of the modules left to it, and the HBM its shards take.

    plan: parameter shardings keyed by those modules' paths (empty when there are none).
    hbm_by_rank: HBM bytes per rank of their shards (length world size).
    tables: module path -> names of the tables inside it.
    """

    plan: ShardingPlan
    hbm_by_rank: tuple[int, ...]
    tables: dict[str, list[str]]


def split_sharders(
    sharders: Sequence[ModuleSharder[nn.Module]] | None,
) -> tuple[list[ModuleSharder[nn.Module]], list[ModuleSharder[nn.Module]]]:
    """(sharders of the split collections, sharders of everything else) from the user's list
    (None: TorchRec's defaults). The first list always has one sharder per split kind: the
    user's where given (its fused params then shape the split tables' kernels), else TorchRec's
    default."""
    given = list(sharders) if sharders is not None else get_default_sharders()
    defaults = {s.module_type: s for s in get_default_sharders() if s.module_type in SPLIT_KINDS}
    users = {s.module_type: s for s in given if s.module_type in SPLIT_KINDS}
    split = [users.get(kind, defaults[kind]) for kind in SPLIT_KINDS]
    return split, [s for s in given if s.module_type not in SPLIT_KINDS]


def inner_table_names(module: nn.Module) -> list[str]:
    """Names of the tables held anywhere inside `module`."""
    return [c.name for m in module.modules() for c in (table_configs(m) or [])]


def plan_stock_modules(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    sharders: Sequence[ModuleSharder[nn.Module]],
    topology: Topology,
    batch_size: int,
    reservation_percentage: float,
    constraints: Mapping[str, ParameterConstraints],
) -> StockModulesPlan:
    """TorchRec's plan of `modules` (path -> module) of `model` with `sharders` (none of them for
    the split kinds) and the user's `constraints` of their tables."""
    tables = {path: inner_table_names(m) for path, m in modules.items()}
    handled = {s.module_type for s in sharders}
    if not any(type(m) in handled for m in modules.values()):
        return StockModulesPlan(ShardingPlan({}), (0,) * topology.world_size, tables)
    names = {t for ts in tables.values() for t in ts}
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=batch_size,
        storage_reservation=FixedPercentageStorageReservation(reservation_percentage),
        constraints={n: c for n, c in constraints.items() if n in names} or None,
    )
    plan = planner.plan(model, list(sharders))
    hbm = [0] * topology.world_size
    for option in planner._best_plan or []:  # TorchRec's storage estimate of the chosen shards
        for shard in option.shards:
            if shard.rank is not None and shard.storage is not None:
                hbm[shard.rank] += int(shard.storage.hbm)
    return StockModulesPlan(plan, tuple(hbm), tables)


def reduced_topology(topology: Topology, hbm_by_rank: Sequence[int]) -> Topology:
    """A copy of `topology` whose devices have `hbm_by_rank` bytes less HBM."""
    if not any(hbm_by_rank):
        return topology
    reduced = copy.deepcopy(topology)
    for device, used in zip(reduced.devices, hbm_by_rank, strict=True):
        device.storage.hbm = max(0, device.storage.hbm - used)
    return reduced
