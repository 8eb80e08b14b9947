"""The vectorised FBGEMM cache simulator against a plain per-set Python reference."""

from __future__ import annotations

from collections import Counter, defaultdict, deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrec_hot.data.synthetic import zipf_ranks
from torchrec_hot.planner.strategy.fbgemm_cache import (
    ASSOC,
    cache_slot,
    murmur_mix64,
    prepare_trace,
    sets_for_rows,
    simulate,
    warp_bitonic_sort,
)

PROPS = settings(max_examples=25, deadline=None, derandomize=True)
MASK = (1 << 64) - 1


# ---- plain reference: one Python object per set, line by line after the CUDA kernels -------
def ref_slot(idx: int, num_sets: int) -> int:
    """FBGEMM `cache_slot` with Python integers (MurmurHash3 fmix64, modulo the sets)."""
    h = idx & MASK
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    h ^= h >> 33
    return h % num_sets


def ref_bitonic(keys: list[int]) -> tuple[list[int], list[int]]:
    """The 32-lane warp BitonicSort (Dir = true), one lane at a time with shuffle semantics."""
    k, v = list(keys), list(range(ASSOC))

    def exchange(mask: int, bit: int) -> None:
        ok, ov = (
            [k[lane ^ mask] for lane in range(ASSOC)],
            [v[lane ^ mask] for lane in range(ASSOC)],
        )
        for lane in range(ASSOC):
            small = not (lane & bit)
            swap = k[lane] > ok[lane] if small else k[lane] < ok[lane]
            if swap:
                k[lane], v[lane] = ok[lane], ov[lane]

    for size in (1, 2, 4, 8, 16):
        exchange(2 * size - 1, size)
        stride = size // 2
        while stride > 0:
            exchange(stride, stride)
            stride //= 2
    return k, v


class RefSet:
    """One cache set: 32 slots of (row, LRU stamp, lock counter)."""

    def __init__(self) -> None:
        self.row = [-1] * ASSOC
        self.stamp = [0] * ASSOC
        self.lock = [0] * ASSOC


class RefCache:
    """Per-set reference of FBGEMM's LRU / LFU populate (+ LRU cache-line locking)."""

    def __init__(self, num_sets: int, lfu: bool, locking: bool) -> None:
        self.sets = [RefSet() for _ in range(num_sets)]
        self.num_sets, self.lfu, self.locking = num_sets, lfu, locking
        self.freq: dict[int, int] = defaultdict(int)

    def populate(self, batch: list[int], t: int) -> tuple[list[int], list[tuple[int, int]]]:
        occurrences = Counter(batch)
        hits, misses = 0, defaultdict(list)
        if self.lfu:
            for idx, c in occurrences.items():
                self.freq[idx] += c
        for idx in sorted(occurrences):
            s = ref_slot(idx, self.num_sets)
            cs = self.sets[s]
            if idx in cs.row:
                hits += 1
                way = cs.row.index(idx)
                if not self.lfu:
                    cs.stamp[way] = t
                    if self.locking:
                        cs.lock[way] += 1
            else:
                misses[s].append(idx)
        inserted = evicted = 0
        for s in sorted(misses):
            cs, ids = self.sets[s], misses[s]
            if self.lfu:
                ids = sorted(ids, key=lambda i: -self.freq[i])  # stable: ascending id on ties
                costs = [self.freq[r] if r >= 0 else -1 for r in cs.row]
            else:
                costs = list(cs.stamp)
            sorted_costs, ways = ref_bitonic(costs)
            n_ins = 0
            for lane in range(min(len(ids), ASSOC)):
                way = ways[lane]
                if self.lfu:
                    new = ids[lane]
                    if sorted_costs[lane] > self.freq[new]:
                        break
                else:
                    if self.locking and cs.lock[way] > 0:
                        continue
                    if sorted_costs[lane] == t:
                        break
                    new = ids[n_ins]
                if cs.row[way] >= 0:
                    evicted += 1
                cs.row[way] = new
                if not self.lfu:
                    cs.stamp[way] = t
                    if self.locking:
                        cs.lock[way] += 1
                n_ins += 1
            inserted += n_ins
        located, uncached, uncached_lookups = [], 0, 0
        for idx in sorted(occurrences):
            s = ref_slot(idx, self.num_sets)
            if idx in self.sets[s].row:
                located.append((s, self.sets[s].row.index(idx)))
            else:
                uncached += 1
                uncached_lookups += occurrences[idx]
        return [hits, inserted, evicted, uncached, uncached_lookups], located


def ref_simulate(batches, num_sets, algorithm="lru", look_ahead=None) -> np.ndarray:
    """(5, num_batches) hits, inserted, evicted, uncached, uncached lookups per batch."""
    cache = RefCache(num_sets, algorithm == "lfu", look_ahead is not None)
    k, n = look_ahead or 0, len(batches)
    out = np.zeros((5, n), dtype=np.int64)
    pending: deque = deque()

    def run(b: int) -> None:
        stats, located = cache.populate([int(i) for i in batches[b]], b + 1)
        out[:, b] = stats
        pending.append(located)

    for b in range(min(k, n)):
        run(b)
    for t in range(n):
        if t + k < n:
            run(t + k)
        for s, way in pending.popleft():
            if look_ahead is not None:
                cache.sets[s].lock[way] -= 1
    return out


def run_stats(run) -> np.ndarray:
    return np.stack([run.hits, run.inserted, run.evicted, run.uncached, run.uncached_lookups])


# ---- traces -------------------------------------------------------------------------------
def make_batches(seed: int, rows: int, batches: int, size: int, zipf: float | None):
    rng = np.random.default_rng(seed)
    if zipf is None:
        return [rng.integers(0, rows, size) for _ in range(batches)]
    perm = rng.permutation(rows)
    return [perm[zipf_ranks(rows, zipf, size, rng)] for _ in range(batches)]


traces = st.tuples(
    st.integers(0, 10_000),  # seed
    st.sampled_from([50, 400, 3000]),  # rows
    st.sampled_from([1, 2, 3, 7, 40]),  # sets (40: no conflicts at 50 rows)
    st.sampled_from([None, 0.9, 1.2]),  # uniform or Zipf exponent
    st.integers(20, 200),  # ids per batch
)


# ---- tests --------------------------------------------------------------------------------
def test_hash_matches_python_fmix64():
    ids = np.array([0, 1, 2, 31, 12345, 2**31 - 1, 2**40 + 7, 48_937_456], dtype=np.int64)
    expected = [ref_slot(int(i), 1 << 64) for i in ids]
    assert [int(h) for h in murmur_mix64(ids)] == expected
    assert cache_slot(ids, 97).tolist() == [ref_slot(int(i), 97) for i in ids]


def test_set_counts_follow_fbgemm():
    assert sets_for_rows(0) == 0 and sets_for_rows(1) == 1 and sets_for_rows(64) == 2
    with pytest.raises(ValueError, match=">= 0 rows"):
        sets_for_rows(-1)


@PROPS
@given(st.lists(st.integers(-3, 40), min_size=ASSOC, max_size=ASSOC), st.integers(1, 5))
def test_bitonic_sorts_like_the_warp(keys, rows):
    batch = np.array([keys] * rows)
    k, lanes = warp_bitonic_sort(batch)
    ref_k, ref_v = ref_bitonic(keys)
    assert (np.diff(k, axis=1) >= 0).all()
    assert all(sorted(r) == list(range(ASSOC)) for r in lanes.tolist())
    assert (np.take_along_axis(batch, lanes, axis=1) == k).all()
    assert k[0].tolist() == ref_k and lanes[0].tolist() == ref_v


@PROPS
@given(traces, st.sampled_from(["lru", "lfu"]))
def test_plain_cache_agrees_with_reference(trace, algorithm):
    seed, rows, sets, zipf, size = trace
    batches = make_batches(seed, rows, 6, size, zipf)
    run = simulate(prepare_trace(batches), sets, algorithm)
    assert (run_stats(run) == ref_simulate(batches, sets, algorithm)).all()
    assert (run.hits + run.inserted + run.uncached == run.unique).all()


@PROPS
@given(traces, st.integers(0, 3))
def test_prefetch_pipeline_agrees_with_reference(trace, k):
    seed, rows, sets, zipf, size = trace
    batches = make_batches(seed, rows, 7, size, zipf)
    run = simulate(prepare_trace(batches), sets, "lru", look_ahead=k)
    assert (run_stats(run) == ref_simulate(batches, sets, "lru", look_ahead=k)).all()


def test_look_ahead_zero_is_the_plain_lru_cache():
    batches = make_batches(3, 2000, 8, 300, 1.0)
    trace = prepare_trace(batches)
    plain, k0 = simulate(trace, 5, "lru"), simulate(trace, 5, "lru", look_ahead=0)
    assert (run_stats(plain) == run_stats(k0)).all()


def test_lru_never_evicts_rows_of_the_current_batch():
    # one set, a batch of 40 distinct rows: 32 go in, 8 stay uncached; the next batch's new
    # rows may evict only rows the current batch does not use
    batches = [np.arange(40), np.arange(40)]
    run = simulate(prepare_trace(batches), 1, "lru")
    assert run.inserted.tolist() == [32, 0] and run.uncached.tolist() == [8, 8]
    assert run.evicted.tolist() == [0, 0]


def test_a_cache_of_every_row_only_misses_cold():
    batches = make_batches(1, 64, 5, 100, None)
    run = simulate(prepare_trace(batches), 64, "lru")  # 2048 slots, 64 rows: no conflicts
    assert run.uncached.sum() == 0
    assert run.inserted.sum() == np.unique(np.concatenate(batches)).size
    assert run.evicted.sum() == 0


def test_no_cache_reads_everything_from_uvm():
    batches = make_batches(2, 100, 3, 50, 1.1)
    run = simulate(prepare_trace(batches), 0, "lru")
    assert (run.uncached_lookups == 50).all() and run.inserted.sum() == 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="outside"):
        prepare_trace([np.array([0, 5])], num_rows=5)
    with pytest.raises(ValueError, match="outside"):
        prepare_trace([np.array([-1, 2])])
    with pytest.raises(ValueError, match="1-D integer"):
        prepare_trace([np.array([0.5])])
    trace = prepare_trace([np.arange(4)])
    with pytest.raises(ValueError, match="LRU"):
        simulate(trace, 1, "lfu", look_ahead=1)
    with pytest.raises(ValueError, match="algorithm"):
        simulate(trace, 1, "fifo")
    with pytest.raises(ValueError, match="num_sets"):
        simulate(trace, -1)


def test_dense_and_sparse_compaction_agree():
    batches = make_batches(5, 300, 4, 100, 1.0)
    dense = prepare_trace(batches)
    sparse = prepare_trace([b * 1_000_003 for b in batches])  # ids far apart: sorted path
    assert (sparse.universe == dense.universe * 1_000_003).all()
    for a, b in zip(dense.unique + dense.counts, sparse.unique + sparse.counts, strict=True):
        assert (a == b).all()
    assert (dense.first_batch == sparse.first_batch).all()


def test_look_ahead_locks_by_hand():
    # one set (32 slots), three batches of 32 new rows each. k = 1: batch 1 is populated while
    # batch 0 still trains, so batch 0's rows are locked and batch 1 stays uncached; batch 2
    # is populated once batch 0 is done and batch 1 holds no slot. k = 2: batches 1 and 2 are
    # both populated while batch 0 trains: both stay uncached.
    batches = [np.arange(0, 32), np.arange(32, 64), np.arange(64, 96)]
    trace = prepare_trace(batches)
    one, two = simulate(trace, 1, "lru", look_ahead=1), simulate(trace, 1, "lru", look_ahead=2)
    assert one.inserted.tolist() == [32, 0, 32] and one.uncached.tolist() == [0, 32, 0]
    assert two.inserted.tolist() == [32, 0, 0] and two.uncached.tolist() == [0, 32, 32]
