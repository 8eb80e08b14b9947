"""TorchRec `ShardingPlan` <-> plain JSON-able dicts, and per-rank bytes of a module plan.

Serialised per parameter: sharding type, compute kernel, ranks, every shard's offsets, sizes and
placement, and the cache parameters the planner sets (algorithm, load factor, prefetch
pipeline). Plans that use key-value (SSD) tables are refused rather than half-saved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch.distributed._shard.sharding_spec import EnumerableShardingSpec, ShardMetadata
from torchrec.distributed.types import (
    BoundsCheckMode,
    CacheAlgorithm,
    CacheParams,
    EmbeddingModuleShardingPlan,
    ParameterSharding,
    ShardingPlan,
)


def _parameter_to_dict(name: str, ps: ParameterSharding) -> dict[str, Any]:
    if ps.key_value_params is not None:
        raise ValueError(f"{name}: key-value (SSD) table plans cannot be saved")
    shards = None
    if ps.sharding_spec is not None:
        if not isinstance(ps.sharding_spec, EnumerableShardingSpec):
            raise ValueError(f"{name}: unsupported sharding spec {type(ps.sharding_spec)}")
        shards = [
            {
                "offsets": list(s.shard_offsets),
                "sizes": list(s.shard_sizes),
                "placement": str(s.placement),
            }
            for s in ps.sharding_spec.shards
        ]
    cache = None
    if ps.cache_params is not None:
        c = ps.cache_params
        cache = {
            "algorithm": c.algorithm.name if c.algorithm is not None else None,
            "load_factor": c.load_factor,
            "prefetch_pipeline": c.prefetch_pipeline,
        }
    return {
        "sharding_type": ps.sharding_type,
        "compute_kernel": ps.compute_kernel,
        "ranks": list(ps.ranks) if ps.ranks is not None else None,
        "shards": shards,
        "cache_params": cache,
        "enforce_hbm": ps.enforce_hbm,
        "stochastic_rounding": ps.stochastic_rounding,
        "bounds_check_mode": (
            ps.bounds_check_mode.name if ps.bounds_check_mode is not None else None
        ),
    }


def _parameter_from_dict(d: Mapping[str, Any]) -> ParameterSharding:
    spec = None
    if d["shards"] is not None:
        spec = EnumerableShardingSpec(
            [
                ShardMetadata(
                    shard_offsets=list(s["offsets"]),
                    shard_sizes=list(s["sizes"]),
                    placement=s["placement"],
                )
                for s in d["shards"]
            ]
        )
    cache = None
    if d["cache_params"] is not None:
        c = d["cache_params"]
        cache = CacheParams(
            algorithm=CacheAlgorithm[c["algorithm"]] if c["algorithm"] else None,
            load_factor=c["load_factor"],
            prefetch_pipeline=c["prefetch_pipeline"],
        )
    bounds = d.get("bounds_check_mode")
    return ParameterSharding(
        sharding_type=d["sharding_type"],
        compute_kernel=d["compute_kernel"],
        ranks=list(d["ranks"]) if d["ranks"] is not None else None,
        sharding_spec=spec,
        cache_params=cache,
        enforce_hbm=d.get("enforce_hbm"),
        stochastic_rounding=d.get("stochastic_rounding"),
        bounds_check_mode=BoundsCheckMode[bounds] if bounds else None,
    )


def sharding_plan_to_dict(plan: ShardingPlan) -> dict[str, dict[str, Any]]:
    """{module path: {parameter name: parameter sharding as a dict}}."""
    return {
        path: {name: _parameter_to_dict(f"{path}.{name}", ps) for name, ps in module.items()}
        for path, module in plan.plan.items()
    }


def sharding_plan_from_dict(d: Mapping[str, Mapping[str, Any]]) -> ShardingPlan:
    """Inverse of `sharding_plan_to_dict`."""
    return ShardingPlan(
        {
            path: EmbeddingModuleShardingPlan(
                {name: _parameter_from_dict(p) for name, p in module.items()}
            )
            for path, module in d.items()
        }
    )


def parameter_shardings(plan: ShardingPlan) -> dict[str, ParameterSharding]:
    """Table name -> its ParameterSharding, over every module of `plan` (table names are
    unique across a model, as TorchRec's constraints assume)."""
    return {name: ps for module in plan.plan.values() for name, ps in module.items()}


def retarget_sharding_plan(plan: ShardingPlan, device_type: str) -> ShardingPlan:
    """A copy of `plan` whose shards are placed on `device_type` ("cpu": `rank:i/cpu`; "cuda":
    `rank:i/cuda:i` with local device = rank). Kernels are kept: TorchRec runs `fused_uvm`
    shards from host memory on CPU. Lets CPU machines run plans made for CUDA topologies."""

    def place(rank: int) -> str:
        return f"rank:{rank}/cpu" if device_type == "cpu" else f"rank:{rank}/{device_type}:{rank}"

    doc = sharding_plan_to_dict(plan)
    for module in doc.values():
        for p in module.values():
            for shard in p["shards"] or []:
                rank = int(shard["placement"].split("/")[0].split(":")[1])
                shard["placement"] = place(rank)
    return sharding_plan_from_dict(doc)


def shard_rows_per_rank(ps: ParameterSharding, num_rows: int, dim: int, world_size: int):
    """Yields (rank, rows x columns as a fraction of a full row count) for every shard of a
    parameter: `(rank, rows * cols / dim)`, i.e. the shard's size in full-width rows.
    A data-parallel parameter (no sharding spec) lies whole on every rank."""
    if ps.sharding_spec is None:
        for rank in range(world_size):
            yield rank, float(num_rows)
        return
    for shard in ps.sharding_spec.shards:
        rank = shard.placement.rank()
        rows, cols = shard.shard_sizes
        yield rank, rows * cols / dim


def rank_bytes(
    module_plan: Mapping[str, ParameterSharding],
    shapes: Mapping[str, tuple[int, int]],
    bytes_per_row: Mapping[str, int],
    hbm_fraction: Callable[[str, ParameterSharding], float],
    world_size: int,
) -> tuple[list[int], list[int]]:
    """Bytes of weights + optimizer state per rank, split into (HBM, UVM) lists of length
    `world_size`. `hbm_fraction(table, ps)` says which share of a table's rows lies in HBM."""
    hbm = [0.0] * world_size
    uvm = [0.0] * world_size
    for table, ps in module_plan.items():
        rows, dim = shapes[table]
        share = hbm_fraction(table, ps)
        for rank, full_rows in shard_rows_per_rank(ps, rows, dim, world_size):
            b = full_rows * bytes_per_row[table]
            hbm[rank] += b * share
            uvm[rank] += b * (1.0 - share)
    return [round(x) for x in hbm], [round(x) for x in uvm]
