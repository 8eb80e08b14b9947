"""TorchRec `ParameterConstraints` for the parts of a planned table (hot half, cold half, whole).

Kernels, on a CUDA topology:
  * rows meant for HBM (a hot half, a whole table in HBM): `fused`;
  * rows meant for UVM without a cache: `fused_uvm` (looked up in place over the host link);
  * rows in UVM behind a cache (`TablePlan.cache_rows > 0`): `fused_uvm_caching` with
    `CacheParams(algorithm=LRU|LFU, load_factor=cache_rows / uvm_rows,
    prefetch_pipeline=TablePlan.prefetch, stats=...)`.
On a CPU topology every part is `fused` (host memory is all there is). Every part gets FBGEMM's
FATAL bounds check (a bad id fails instead of being clamped to a wrong row) and pooling factors
scaled by its share of the table's lookups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torchrec.distributed.planner import ParameterConstraints
from torchrec.distributed.types import BoundsCheckMode, CacheAlgorithm, CacheParams, CacheStatistics

from torchrec_hot.planner.hot_plan import TablePlan
from torchrec_hot.tables.split import COLD_SUFFIX, Placement


def is_uvm_part(tp: TablePlan, part_name: str) -> bool:
    """Whether `part_name` (a part of `tp`'s table) holds UVM rows: a cold half, or the whole
    table when it has no hot rows."""
    return part_name.endswith(COLD_SUFFIX) or (
        tp.placement is Placement.UVM and part_name == tp.name
    )


def cache_params(tp: TablePlan, stats: CacheStatistics | None = None) -> CacheParams | None:
    """The cache in front of `tp`'s UVM rows, as TorchRec takes it; None without a cache."""
    if tp.cache_rows <= 0 or tp.uvm_rows <= 0:
        return None
    return CacheParams(
        algorithm=CacheAlgorithm.LFU if tp.cache_algorithm == "lfu" else CacheAlgorithm.LRU,
        load_factor=min(1.0, tp.cache_load_factor),
        prefetch_pipeline=tp.prefetch,
        stats=stats,
    )


def part_constraints(
    tp: TablePlan,
    part_name: str,
    num_rows: int,
    num_features: int,
    sharding_types: Sequence[str],
    world_size: int,
    cuda: bool,
    pooling_factor: float,
    column_shard_dim: int | None = None,
    stats: CacheStatistics | None = None,
) -> ParameterConstraints:
    """Constraints of one part (`num_rows` rows) of `tp`'s table; `pooling_factor` is the
    table's average ids per sample and feature before the split."""
    uvm = is_uvm_part(tp, part_name)
    if tp.placement is Placement.SPLIT:
        share = 1.0 - tp.hot_lookup_share if uvm else tp.hot_lookup_share
    else:
        share = 1.0
    types = list(sharding_types)
    if math.ceil(num_rows / world_size) * (world_size - 1) >= num_rows:
        # TorchRec's row-wise split would have an empty shard, and FBGEMM 1.8's CPU row-wise
        # Adagrad reads past its row counts then: never cut a table into empty shards
        types = [t for t in types if t != "row_wise"] or ["table_wise"]
    cache = cache_params(tp, stats) if (uvm and cuda) else None
    if not cuda:
        kernel = "fused"
    elif not uvm:
        kernel = "fused"
    else:
        kernel = "fused_uvm_caching" if cache is not None else "fused_uvm"
    return ParameterConstraints(
        sharding_types=types,
        compute_kernels=[kernel],
        min_partition=column_shard_dim,
        cache_params=cache,
        bounds_check_mode=BoundsCheckMode.FATAL,
        pooling_factors=[max(pooling_factor * share, 1e-3)] * num_features,
    )
