"""FBGEMM's UVM cache (`fused_uvm_caching`), simulated a batch at a time, as FBGEMM 1.8 runs it.

What is simulated (FBGEMM source, `fbgemm_gpu/`, in brackets):
  * Geometry: `num_sets` sets of `ASSOC` = 32 slots; TorchRec/FBGEMM derive the sets from the
    load factor as `(int(hash_size * load_factor) + 31) // 32`, at least 1
    (`split_table_batched_embeddings_ops_training.py`, `_apply_cache_state`). Row `i` of a
    table whose linearised offset is `o` lives in set `cache_slot(i + o, num_sets)`: the
    MurmurHash3 64-bit finaliser of the index, modulo the sets (`cache_slot`,
    `src/split_embeddings_cache/common.cuh`).
  * A batch is populated at once (`lru_cache_populate` / `lfu_cache_populate`): its distinct
    ids (ascending, `get_unique_indices`) are looked up; the misses are radix-sorted by set
    (stable, so ascending id within a set; LFU: by set, then count descending); each set sorts
    its 32 slots by cost with a warp bitonic sort (`utils/bitonic_sort.cuh`, emulated exactly
    here, ties included) and walks the `min(misses, 32)` cheapest slots.
  * LRU (`lru_cache_find.cu`, `lru_cache_populate.cu`): cost = timestamp of last use (hits are
    stamped with the batch's timestamp before inserting; empty slots have 0). Walking the
    slots: a locked slot is skipped (`continue`), a slot stamped with the current timestamp
    stops the walk (`break`): rows of the current batch are never evicted in the same batch.
    The j-th free slot takes the j-th miss of the set; misses left over stay uncached and are
    read from UVM in place (conflict misses).
  * LFU (`lfu_cache_find.cu`, `lfu_cache_populate.cu`): a persistent per-row count, increased
    by the row's occurrences in each batch before the lookup; cost = count of the slot's row
    (-1 empty). The l-th cheapest slot takes the l-th miss (highest count first) unless the
    slot's count exceeds the miss's (then the walk stops). Rows hit in the current batch can
    be evicted; there is no locking (FBGEMM's LFU path takes no `lock_cache_line`).
  * Prefetch pipeline (`prefetch_pipeline=True`, `lock_cache_line`; LRU only): with look-ahead
    k, batch t+k is populated while batch t trains; every hit or insert increments the slot's
    `lxu_cache_locking_counter` (once per batch), and when batch t finishes its backward, the
    slots of its locations are decremented once each (`lxu_cache.cu`,
    `lxu_cache_locking_counter_decrement`). k = 1 is TorchRec's
    `PrefetchTrainPipelineSparseDist`; k = 0 (or no look-ahead) is the plain cache. A row the
    prefetch of batch t could not insert is read from UVM when batch t trains.
  * Evicted rows are always written back (`warp_cache_evict`), so after training they count
    as dirty write-backs.
The simulator runs one table's cache; FBGEMM shares one cache between the tables of a TBE group
(`hash_offset` places this table in that linear index space when it matters).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ASSOC = 32
LANES = np.arange(ASSOC, dtype=np.int64)
_M1, _M2, _S33 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33)


def _bitonic_stages() -> list[tuple[int, int]]:
    """(block, half) of each exchange of FBGEMM's 32-lane BitonicSort (Dir = true): a merge of
    size L first pairs lane i with its mirror in blocks of 2L (`shfl_xor(2L - 1)`), then lanes
    `stride` apart (`shfl_xor(stride)`) for stride = L/2 .. 1. half = -1 marks the mirror."""
    stages = []
    for size in (1, 2, 4, 8, 16):
        stages.append((2 * size, -1))
        stride = size // 2
        while stride:
            stages.append((2 * stride, stride))
            stride //= 2
    return stages


_STAGES = _bitonic_stages()


def sets_for_rows(cache_rows: int) -> int:
    """Sets of a cache of `cache_rows` rows: ceil(rows / 32); 0 rows -> 0 sets (no cache)."""
    if cache_rows < 0:
        raise ValueError(f"cache size must be >= 0 rows, got {cache_rows}")
    return (int(cache_rows) + ASSOC - 1) // ASSOC


def murmur_mix64(ids: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser of each id (uint64), as FBGEMM's `cache_slot`."""
    h = np.asarray(ids).astype(np.uint64)
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


def cache_slot(ids: np.ndarray, num_sets: int) -> np.ndarray:
    """The cache set of each (linearised) id: `murmur_mix64(id) % num_sets`, int64."""
    return (murmur_mix64(ids) % np.uint64(num_sets)).astype(np.int64)


def warp_bitonic_sort(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FBGEMM's warp bitonic sort (ascending) of each row of `keys` (S, 32), applied to all
    rows at once: returns (sorted keys, the lane each came from), both (S, 32) int64. Equal
    keys come out in the order the sorting network leaves them, as on the GPU.

    In each exchange both lanes of a pair swap iff the lesser lane's key is strictly greater
    (`Comparator::gt` on one side, `lt` on the other). Keys and lanes travel packed as
    (key - min) * 32 + lane, so `key_a > key_b` is `packed_a > (packed_b | 31)`."""
    k = np.asarray(keys, dtype=np.int64)
    rows = k.shape[0]
    if rows == 0:
        return k.copy(), np.zeros(k.shape, np.int64)
    low = int(k.min())
    span = int(k.max()) - low
    dtype = np.int32 if span < (1 << 25) else np.int64
    # lane-major (32, rows): every exchange works on contiguous runs of rows
    packed = np.ascontiguousarray(((k - low) * ASSOC + LANES).astype(dtype).T)
    for block, half in _STAGES:
        view = packed.reshape(ASSOC // block, block, rows)
        if half < 0:  # mirror: lane i (i < L) with lane 2L - 1 - i of its block
            a, b = view[:, : block // 2], view[:, block // 2 :][:, ::-1]
        else:
            a, b = view[:, :half], view[:, half:]
        flip = (a > (b | dtype(ASSOC - 1))).astype(dtype)  # 1 where the pair swaps
        flip *= a ^ b
        a ^= flip  # branch-free swap (np.where is several times slower)
        b ^= flip
    packed = packed.T.astype(np.int64)
    return (packed >> 5) + low, packed & (ASSOC - 1)


@dataclass(frozen=True)
class PreparedTrace:
    """A table's batches in compact form, shared by every simulation of that table.

    Attributes:
        universe: int64 (M,), the distinct ids of the trace, ascending.
        hashes: uint64 (M,), `murmur_mix64(universe + hash_offset)`.
        unique: per batch, int64 indices into `universe` of its distinct ids, ascending.
        counts: per batch, int64 occurrences of each of those ids in the batch.
        first_batch: int64 (M,), the batch where each id first occurs (num_batches: never).
    """

    universe: np.ndarray
    hashes: np.ndarray
    unique: list[np.ndarray]
    counts: list[np.ndarray]
    first_batch: np.ndarray

    @property
    def num_batches(self) -> int:
        return len(self.unique)

    def lookups(self) -> np.ndarray:
        """Ids looked up per batch, duplicates counted: int64 (num_batches,)."""
        return np.array([int(c.sum()) for c in self.counts], dtype=np.int64)

    def distinct(self) -> np.ndarray:
        """Distinct ids per batch: int64 (num_batches,)."""
        return np.array([u.size for u in self.unique], dtype=np.int64)

    def subset(self, keep: np.ndarray) -> PreparedTrace:
        """The trace of the ids where `keep` (bool over `universe`) holds; indices stay into
        the same universe."""
        out_u, out_c = [], []
        for u, c in zip(self.unique, self.counts, strict=True):
            m = keep[u]
            out_u.append(u[m])
            out_c.append(c[m])
        first = np.where(keep, self.first_batch, self.num_batches)
        return PreparedTrace(self.universe, self.hashes, out_u, out_c, first)


def prepare_trace(
    batches: Sequence[np.ndarray], num_rows: int | None = None, hash_offset: int = 0
) -> PreparedTrace:
    """Compacts `batches` (1-D integer id arrays, in order) for simulation. Raises ValueError
    for ids outside [0, num_rows) (or negative ids when `num_rows` is None)."""
    arrays = [np.asarray(b) for b in batches]
    for i, b in enumerate(arrays):
        if b.ndim != 1 or (b.size and not np.issubdtype(b.dtype, np.integer)):
            raise ValueError(f"batch {i} must be a 1-D integer array, got {b.dtype} {b.shape}")
        if b.size and (int(b.min()) < 0 or (num_rows is not None and int(b.max()) >= num_rows)):
            raise ValueError(
                f"batch {i} has ids outside [0, {num_rows if num_rows is not None else 'inf'}): "
                f"min {int(b.min())}, max {int(b.max())}"
            )
    if hash_offset < 0:
        raise ValueError(f"hash_offset must be >= 0, got {hash_offset}")
    flat = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)
    top = int(flat.max()) + 1 if flat.size else 0
    if top <= 8 * flat.size:  # dense: a row -> index map beats sorting
        seen = np.bincount(flat, minlength=top) > 0
        universe = np.flatnonzero(seen)
        inverse = (np.cumsum(seen) - 1)[flat]
    else:
        universe, inverse = np.unique(flat, return_inverse=True)
        inverse = inverse.reshape(-1)
    m = int(universe.size)
    unique, per_batch, at = [], [], 0
    for b in arrays:
        part = inverse[at : at + b.size]
        at += b.size
        if m <= 4 * b.size:
            c = np.bincount(part, minlength=m)
            u = np.flatnonzero(c)
            unique.append(u)
            per_batch.append(c[u].astype(np.int64))
        else:
            u, c = np.unique(part, return_counts=True)
            unique.append(u.astype(np.int64))
            per_batch.append(c.astype(np.int64))
    hashes = murmur_mix64(universe + np.int64(hash_offset))
    first = np.full(universe.size, len(arrays), dtype=np.int64)
    for b in range(len(arrays) - 1, -1, -1):
        first[unique[b]] = b
    return PreparedTrace(universe, hashes, unique, per_batch, first)


@dataclass(frozen=True)
class CacheRun:
    """Per-batch results of one simulation; every field int64 (num_batches,), indexed by the
    batch populated (with look-ahead k, batch b is populated while batch b - k trains).

    Attributes:
        lookups: ids of the batch (duplicates counted).
        unique: distinct ids of the batch.
        hits: distinct ids found in the cache before the batch's populate.
        inserted: rows copied host -> HBM by the populate.
        evicted: rows the populate evicted (written back HBM -> host).
        uncached: distinct ids of the batch not in the cache after its populate (conflict
            misses: read from UVM in place when the batch trains).
        uncached_lookups: lookups of those ids.
    """

    lookups: np.ndarray
    unique: np.ndarray
    hits: np.ndarray
    inserted: np.ndarray
    evicted: np.ndarray
    uncached: np.ndarray
    uncached_lookups: np.ndarray


def _radix_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative int64 keys by 16-bit LSD passes (numpy's stable sort of
    16-bit keys is a radix sort, ~10x faster than its int64 merge sort)."""
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    top, shift = (int(keys.max()) >> 16 if keys.size else 0), 16
    while top:
        digit = ((keys[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        top, shift = top >> 16, shift + 16
    return order


class _Cache:
    """State of one set-associative cache over a trace's universe; slot = set * 32 + way."""

    def __init__(self, trace: PreparedTrace, num_sets: int, lfu: bool, locking: bool) -> None:
        self.sets = (trace.hashes % np.uint64(num_sets)).astype(np.int64)
        self.lfu = lfu
        self.locking = locking
        self.row = np.full((num_sets, ASSOC), -1, dtype=np.int64)  # universe index, -1 empty
        self.stamp = np.zeros((num_sets, ASSOC), dtype=np.int64)  # LRU timestamp of last use
        self.lock = np.zeros(num_sets * ASSOC if locking else 0, dtype=np.int32)
        self.loc = np.full(trace.universe.size, -1, dtype=np.int64)  # slot of each row
        # LFU counts, one spare entry of -1 read as the cost of an empty slot (row -1)
        self.freq = np.zeros(trace.universe.size + 1 if lfu else 0, dtype=np.int64)
        if lfu:
            self.freq[-1] = -1

    def populate(self, u: np.ndarray, cnt: np.ndarray, t: int) -> tuple:
        """Populates a batch (distinct ids `u` ascending, occurrences `cnt`) at timestamp `t`.
        Returns (hits, inserted, evicted, uncached, uncached lookups, located slots)."""
        if self.lfu:
            self.freq[u] += cnt
        pos = self.loc[u]
        hit = pos >= 0
        if not self.lfu:
            self.stamp.reshape(-1)[pos[hit]] = t
            if self.locking:
                self.lock[pos[hit]] += 1
        mu = u[~hit]
        inserted = evicted = 0
        if mu.size:
            ms = self.sets[mu]
            if self.lfu:  # by set, then count descending, then id (stable)
                f = self.freq[mu]
                order = _radix_argsort(f.max() - f)
                order = order[_radix_argsort(ms[order])]
            else:  # by set, then id (stable)
                order = _radix_argsort(ms)
            ids, sets = mu[order], ms[order]
            first = np.ones(ids.size, dtype=bool)
            np.not_equal(sets[1:], sets[:-1], out=first[1:])
            starts = np.flatnonzero(first)
            seg = np.diff(starts, append=ids.size)
            touched = sets[starts]  # (k,) sets with misses
            cost = self.freq[self.row[touched]] if self.lfu else self.stamp[touched]
            sorted_cost, way = warp_bitonic_sort(cost)
            walk = LANES < np.minimum(seg, ASSOC)[:, None]
            # The walks stop at their first `break`; these masks equal the cumulative forms:
            #  LFU: slot costs ascend and miss counts descend along the walk, so once a slot
            #       costs more than its miss, every later one does;
            #  LRU: the batch's stamp t is the largest, so stamp == t is a suffix of the walk,
            #       and with locking every such slot (hit or filled this batch) is locked,
            #       hence skipped rather than stopping the walk.
            if self.lfu:
                nth = np.minimum(starts[:, None] + LANES, ids.size - 1)
                take = walk & (sorted_cost <= self.freq[ids][nth])
            else:
                take = walk & (sorted_cost != t)
                if self.locking:
                    take &= self.lock[touched[:, None] * ASSOC + way] == 0
            r, lane = np.nonzero(take)
            if self.locking:  # the j-th free slot of a walk takes the j-th miss
                pick = starts[r] + (np.cumsum(take, axis=1) - 1)[r, lane]
            else:
                pick = starts[r] + lane
            new_slots, new_ids = touched[r] * ASSOC + way[r, lane], ids[pick]
            flat_row = self.row.reshape(-1)
            old = flat_row[new_slots]
            old = old[old >= 0]
            self.loc[old] = -1
            flat_row[new_slots] = new_ids
            self.loc[new_ids] = new_slots
            if not self.lfu:
                self.stamp.reshape(-1)[new_slots] = t
                if self.locking:
                    self.lock[new_slots] += 1
            inserted, evicted = int(new_ids.size), int(old.size)
        after = self.loc[u]
        out = after < 0
        hits, uncached, uvm = int(hit.sum()), int(out.sum()), int(cnt[out].sum())
        return hits, inserted, evicted, uncached, uvm, after[~out]

    def unlock(self, located: np.ndarray) -> None:
        """A batch finished: its located slots (distinct) are unlocked once each."""
        self.lock[located] -= 1


def _first_seen_if_no_conflicts(trace: PreparedTrace, num_sets: int) -> np.ndarray | None:
    """Ids first seen per batch (int64 (num_batches,)) when no set receives more than 32
    distinct ids of the whole trace (then nothing is ever evicted or left uncached, whatever
    the algorithm, look-ahead and slot order); None otherwise."""
    present = trace.first_batch < trace.num_batches
    if present.any() and np.bincount(trace.hashes[present] % np.uint64(num_sets)).max() > ASSOC:
        return None
    first = trace.first_batch[present]
    return np.bincount(first, minlength=trace.num_batches).astype(np.int64)


def simulate(
    trace: PreparedTrace,
    num_sets: int,
    algorithm: str = "lru",
    look_ahead: int | None = None,
) -> CacheRun:
    """Runs FBGEMM's cache of `num_sets` sets (x 32 slots) over the trace from a cold start.

    Args:
        trace: from `prepare_trace`.
        num_sets: cache sets; 0 means no cache (every lookup is read from UVM).
        algorithm: "lru" or "lfu".
        look_ahead: None: the plain cache (populated in the batch's own forward); k >= 0: the
            prefetch pipeline, batch t + k populated while batch t trains, with cache-line
            locking (LRU only).
    """
    if algorithm not in ("lru", "lfu"):
        raise ValueError(f"algorithm must be 'lru' or 'lfu', got {algorithm!r}")
    if num_sets < 0:
        raise ValueError(f"num_sets must be >= 0, got {num_sets}")
    if look_ahead is not None and (look_ahead < 0 or algorithm != "lru"):
        raise ValueError(
            f"look_ahead must be >= 0 and needs LRU (FBGEMM locks cache lines only for LRU), "
            f"got {look_ahead} with {algorithm!r}"
        )
    n = trace.num_batches
    lookups, unique = trace.lookups(), trace.distinct()
    stats = np.zeros((5, n), dtype=np.int64)
    if num_sets == 0:
        stats[3], stats[4] = unique, lookups
        return CacheRun(lookups, unique, *stats)
    first = _first_seen_if_no_conflicts(trace, num_sets)
    if first is not None:  # every set holds all its rows: only cold misses, all inserted
        stats[0], stats[1] = unique - first, first
        return CacheRun(lookups, unique, *stats)
    locking = look_ahead is not None
    cache = _Cache(trace, num_sets, algorithm == "lfu", locking)
    k = look_ahead or 0
    pending: deque[np.ndarray] = deque()

    def run(b: int) -> None:
        *numbers, located = cache.populate(trace.unique[b], trace.counts[b], b + 1)
        stats[:, b] = numbers
        pending.append(located)

    for b in range(min(k, n)):
        run(b)
    for t in range(n):
        if t + k < n:
            run(t + k)
        located = pending.popleft()
        if locking:
            cache.unlock(located)
    return CacheRun(lookups, unique, *stats)
