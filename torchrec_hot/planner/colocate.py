"""Co-locating a split table's cold half with its hot half, so they can be summed on one rank.

TorchRec's planner places `T__hot` and `T__cold` as two unrelated tables, often table-wise on
two different ranks. Then every sample's `T` output crosses the output all-to-all twice (once
per half) and is added afterwards. With both halves table-wise on one rank, the rank adds them
before the all-to-all (`sharding/presum.py`): the all-to-all carries what stock TorchRec's does
for a table-wise `T`, which is also where stock would put the whole table.

Only cold halves that hold no HBM rows (UVM, or any part on a CPU topology) are moved: moving
them changes no rank's HBM rows, so the HBM budget the plan was fitted to still holds. A cold
half with a cache in front (HBM slots) stays where TorchRec put it, and so does one whose move
would put its new rank over its host memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from torch.distributed._shard.sharding_spec import EnumerableShardingSpec, ShardMetadata
from torchrec.distributed.types import ParameterSharding, ShardingPlan

from torchrec_hot.planner.table_plans import TablePlan
from torchrec_hot.tables.split import COLD_SUFFIX, HOT_SUFFIX, Placement

TABLE_WISE = "table_wise"


def _moved(cold: ParameterSharding, hot: ParameterSharding) -> ParameterSharding:
    """`cold` placed table-wise on `hot`'s rank and device."""
    shard = cold.sharding_spec.shards[0]
    placement = hot.sharding_spec.shards[0].placement
    spec = EnumerableShardingSpec(
        [ShardMetadata(list(shard.shard_offsets), list(shard.shard_sizes), placement)]
    )
    return dataclasses.replace(cold, ranks=list(hot.ranks), sharding_spec=spec)


def movable_cold_halves(table_plans: Sequence[TablePlan]) -> dict[str, int]:
    """Split table name -> bytes (rows x bytes per row) of its cold half, for the split tables
    of `table_plans` whose cold half holds no HBM rows (no cache)."""
    return {
        tp.name: (tp.num_embeddings - tp.hot_rows) * tp.row_bytes
        for tp in table_plans
        if tp.placement is Placement.SPLIT and not tp.cache_rows
    }


def colocate_split_tables(
    plan: ShardingPlan,
    cold_bytes: Mapping[str, int],
    host_used: Sequence[int] | None = None,
    host_bytes: Sequence[int] | None = None,
) -> tuple[ShardingPlan, list[str]]:
    """`plan` with the cold half of each split table of `cold_bytes` (logical name -> bytes of
    its cold half, which holds no HBM rows, see `movable_cold_halves`) moved to its hot half's
    rank where both are table-wise, in whichever module of `plan` the halves are; the input
    plan is not modified. With `host_used` / `host_bytes` (host memory used and available per
    rank), a move that would put a rank over its host memory is not made. Returns the plan and
    the logical tables whose halves share a rank."""
    used = None if host_used is None else list(host_used)
    together: list[str] = []
    modules = dict(plan.plan)
    for key, original in plan.plan.items():
        module_plan = dict(original)
        for name in cold_bytes:
            hot = module_plan.get(name + HOT_SUFFIX)
            cold = module_plan.get(name + COLD_SUFFIX)
            if hot is None or cold is None:
                continue
            if hot.sharding_type != TABLE_WISE or cold.sharding_type != TABLE_WISE:
                continue
            if cold.ranks != hot.ranks:
                src, dst = cold.ranks[0], hot.ranks[0]
                if used is not None and host_bytes is not None:
                    size = cold_bytes[name]
                    if used[dst] + size > host_bytes[dst]:
                        continue
                    used[src], used[dst] = used[src] - size, used[dst] + size
                module_plan[name + COLD_SUFFIX] = _moved(cold, hot)
            together.append(name)
        modules[key] = type(original)(module_plan)
    return ShardingPlan(modules), together
