"""What FBGEMM's UVM cache costs in GPU time for its own machinery, beside the bytes it moves.

A `fused_uvm_caching` table runs, every batch, before its lookup kernel (FBGEMM 1.8,
`SplitTableBatchedEmbeddingBagsCodegen.prefetch` / `_prefetch`; one cache per TBE, i.e. per
group of tables TorchRec fuses on a rank):
  1. `linearize_cache_indices`: every id -> its index in the TBE's linear cache space;
  2. `get_unique_indices`: a radix sort of those (int64) plus run-length encoding;
  3. `lru_cache_find_uncached` / `lfu_cache_find_uncached`: each unique id probes the 32 tags
     of its set (hits are re-stamped), then the misses are radix-sorted by set;
  4. `lru_cache_insert` / `lfu_cache_insert`: per set, a warp bitonic sort of the slots and
     the evictions/inserts (the row copies themselves are the fill bytes of `cost_model`);
  5. `lxu_cache_lookup`: every id -> its cache slot (or -1), read by the lookup kernel;
  6. with `prefetch_pipeline=True`: `lxu_cache_locking_counter_decrement` after backward.
A static split (`fused` + `fused_uvm`) runs none of these.

Charges (ms per step per rank; global-step counts divided by the world size `n`):
  * per id:  `(L x per_lookup_ns + Q x per_unique_ns + F x per_insert_ns) / n x 1e-6`, with
    `L` lookups, `Q` unique rows and `F` inserted (fetched) rows of the cached table;
  * per batch: `per_batch_us x 1e-3` once per cache on a rank. Tables with the same
    replacement policy and prefetch setting share one TBE (and one cache) per rank, so a
    plan pays it once per distinct (policy, prefetch) pair among its cached tables.
Where: on the step's critical path for a plain cache (the populate runs inside the forward);
in the overlap window for a look-forward cache (TorchRec's `PrefetchTrainPipelineSparseDist`
runs `prefetch` for batch t+1 on a side stream while batch t trains; the same stream also
moves the fills, so these kernels and the fills are summed there).

Sources of the constants. TorchRec's own estimator charges caches no machinery time at all
(`torchrec/distributed/planner/shard_estimators.py` and `estimator/estimator.py` in 1.8:
`prefetch_compute = expected_cache_fetches x dim x dtype bytes / hbm_to_ddr_mem_bw`, bytes
only; `constants.kernel_bw_lookup` mixes HBM and DDR bandwidth by the load factor). FBGEMM
ships a cache benchmark (`bench/split_table_batched_embeddings_benchmark.py cache`, timing
`lru_cache_populate` and `lxu_cache_lookup` per batch) but publishes no numbers, and no GPU was
available to run it here. The defaults below are therefore ESTIMATES from the kernel list
above, not measurements:
  * per_batch_us = 50: about ten kernel launches per batch, two of them multi-pass CUB radix
    sorts whose time at 10^4-10^5 ids per rank is latency-bound (each pass a few us on an
    H100-class GPU);
  * per_lookup_ns = 0.3: linearize (16 B/id), unique sort (~8 passes x 16 B/id) and slot
    lookup (a 256 B set probe, mostly L2) at ~30% of HBM bandwidth;
  * per_unique_ns = 0.3: the find-uncached probe of the set (256 B) and its stamp;
  * per_insert_ns = 1.0: the sort of the misses by set and the per-set slot sort and state
    writes of an insert/eviction.
`scaled(f)` multiplies all four; docs/BENCHMARKS.md shows how the plans change from 0 to 4x.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from torchrec_hot.planner.strategy.types import Strategy, TableTraffic

_NS_PER_MS = 1e6
_US_PER_MS = 1e3


@dataclass(frozen=True)
class CacheMachinery:
    """GPU time of FBGEMM's cache and prefetch kernels (module docstring: formulas, sources).

    Attributes:
        per_batch_us: microseconds per step per cache (per TBE with a cache, per rank).
        per_lookup_ns: nanoseconds per lookup of a cached table (linearize, unique, lookup).
        per_unique_ns: nanoseconds per unique row of a cached table (set probe, stamp).
        per_insert_ns: nanoseconds per row inserted into the cache (sort, evict, insert).
    """

    per_batch_us: float = 50.0
    per_lookup_ns: float = 0.3
    per_unique_ns: float = 0.3
    per_insert_ns: float = 1.0

    def __post_init__(self) -> None:
        values = (self.per_batch_us, self.per_lookup_ns, self.per_unique_ns, self.per_insert_ns)
        if any(not v >= 0 for v in values):
            raise ValueError(f"CacheMachinery costs must be >= 0, got {self}")

    def scaled(self, factor: float) -> CacheMachinery:
        """Every constant times `factor` (>= 0)."""
        if not factor >= 0:
            raise ValueError(f"scale must be >= 0, got {factor}")
        return replace(
            self,
            per_batch_us=self.per_batch_us * factor,
            per_lookup_ns=self.per_lookup_ns * factor,
            per_unique_ns=self.per_unique_ns * factor,
            per_insert_ns=self.per_insert_ns * factor,
        )

    def table_ms(self, traffic: TableTraffic, world_size: int) -> float:
        """Per-id machinery ms per step per rank of one table (0 when it has no cache)."""
        if cache_kind(traffic) is None:
            return 0.0
        ns = (
            traffic.lookups * self.per_lookup_ns
            + traffic.unique_rows * self.per_unique_ns
            + traffic.fetched_rows * self.per_insert_ns
        )
        return ns / world_size / _NS_PER_MS

    def batch_ms(self, kinds: Iterable[tuple[str, bool] | None]) -> tuple[float, float]:
        """(critical, overlappable) per-batch ms per rank of a plan whose tables use caches
        of `kinds` (`cache_kind` per table; None: no cache): one charge per distinct kind,
        overlappable for prefetched caches."""
        kinds = {k for k in kinds if k is not None}
        each = self.per_batch_us / _US_PER_MS
        prefetched = sum(1 for _, ahead in kinds if ahead)
        return each * (len(kinds) - prefetched), each * prefetched


NO_MACHINERY = CacheMachinery(0.0, 0.0, 0.0, 0.0)


def cache_kind(traffic: TableTraffic) -> tuple[str, bool] | None:
    """(replacement policy, prefetched) of the TBE cache a table's option uses, or None when it
    has none: not a cached strategy, or no cache slots (the plan makes it a plain table)."""
    s = traffic.strategy
    if s not in _CACHED or traffic.hbm_rows - traffic.hot_rows <= 0:
        return None
    return s.cache_algorithm, s.prefetched


_CACHED = frozenset(s for s in Strategy if s.cached)
