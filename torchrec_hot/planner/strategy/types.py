"""Placement strategies for one table and the traffic each causes per training step.

This module is the contract between the trace simulators (`strategy_sim`, which measure a
strategy on held-out batches) and the cost model (`cost_model`, which turns traffic into modeled
milliseconds per step). It holds data only.

Strategies (FBGEMM / TorchRec kernel that implements each in brackets):
  * `STATIC`: the profiled `hbm_rows` most popular rows in an HBM table, the rest in UVM,
    looked up in place over the host link (torchrec-hot split: hot `fused` + cold `fused_uvm`);
  * `LRU_CACHE`, `LFU_CACHE`: FBGEMM's 32-way set-associative UVM cache of `hbm_rows` rows
    (`fused_uvm_caching`, `CacheAlgorithm.LRU` / `LFU`), filled at lookup time;
  * `LOOK_FORWARD`: the same cache, filled for batch t+k while batch t trains, so every lookup
    of the current batch is in HBM (`fused_uvm_caching` with `prefetch_pipeline=True` and
    TorchRec's `PrefetchTrainPipelineSparseDist`; ScratchPipe's look-forward cache);
  * `STATIC_LOOK_FORWARD`: a static hot split whose cold half is a look-forward cache
    (hot `fused` + cold `fused_uvm_caching` with prefetch);
  * `ALL_HBM`, `ALL_UVM`: the two bounds (`fused`, `fused_uvm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Strategy(str, Enum):
    """Where a table's rows live and how they reach HBM (see the module docstring)."""

    STATIC = "static"
    LRU_CACHE = "lru_cache"
    LFU_CACHE = "lfu_cache"
    LOOK_FORWARD = "look_forward"
    STATIC_LOOK_FORWARD = "static_look_forward"
    ALL_HBM = "all_hbm"
    ALL_UVM = "all_uvm"

    @property
    def cached(self) -> bool:
        """Its rows (or cold rows) sit in a `fused_uvm_caching` table behind FBGEMM's cache."""
        return self in _CACHED

    @property
    def prefetched(self) -> bool:
        """Its cache is filled batches ahead (TorchRec's prefetch pipeline)."""
        return self in (Strategy.LOOK_FORWARD, Strategy.STATIC_LOOK_FORWARD)

    @property
    def cache_algorithm(self) -> str:
        """FBGEMM's replacement policy of its cache: "lfu" or "lru" (look-forward caches too)."""
        return "lfu" if self is Strategy.LFU_CACHE else "lru"


_CACHED = frozenset(
    {Strategy.LRU_CACHE, Strategy.LFU_CACHE, Strategy.LOOK_FORWARD, Strategy.STATIC_LOOK_FORWARD}
)


@dataclass(frozen=True)
class TableTraffic:
    """One table under one strategy at one HBM size: average traffic per training step.

    "Per step" is per global batch (all ranks together); rows are rows of this table.

    Attributes:
        table: table name.
        strategy: the strategy measured.
        hbm_rows: rows of HBM the strategy occupies (static hot rows + cache slots), all ranks.
        lookups: ids looked up per step (duplicates counted).
        unique_rows: distinct rows looked up per step.
        hbm_hit_rate: share of `lookups` served from HBM, in [0, 1].
        uvm_lookups: lookups per step read in place from UVM over the host link (misses that
            are not brought into HBM; for a cache: misses of sets that could not take them).
        fetched_rows: rows per step copied host -> HBM (cache fills, prefetches).
        written_back_rows: rows per step copied HBM -> host (evicted rows, dirty after training).
        fetch_overlappable: True when fetches for a step run during the previous step
            (look-forward), False when they are on the step's critical path.
        misses_current_batch: lookups of the current batch that were not in HBM when the step
            began although the strategy meant them to be (0 for a look-forward size computed
            from the same trace).
        hot_rows: of `hbm_rows`, the static hot rows (STATIC: all of them; STATIC_LOOK_FORWARD:
            the static part, the rest being cache slots; 0 for caches and the bounds).
    """

    table: str
    strategy: Strategy
    hbm_rows: int
    lookups: float
    unique_rows: float
    hbm_hit_rate: float
    uvm_lookups: float
    fetched_rows: float
    written_back_rows: float
    fetch_overlappable: bool = False
    misses_current_batch: float = 0.0
    hot_rows: int = 0
