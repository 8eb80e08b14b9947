"""Trace-driven evaluation of one table's placement strategies on held-out batches.

`evaluate_table` measures, for each HBM size (rows, all ranks together) and each `Strategy`,
the traffic of one training step (one global batch), averaged over the measured batches:
  * STATIC: the `hbm_rows` rows with the highest profiled counts (ties broken by smaller id,
    as `table_plan_from_counts` picks them) serve their lookups from HBM, the rest read UVM.
  * LRU_CACHE / LFU_CACHE: FBGEMM's cache of `ceil(hbm_rows / 32)` sets (`cache_sim`).
  * LOOK_FORWARD: the LRU cache of the same size run as TorchRec's prefetch pipeline with a
    look-ahead of k batches (fills overlap the previous step; rows of in-flight batches
    locked). `look_forward_rows` gives the size at which no lookup of the current batch
    misses.
  * STATIC_LOOK_FORWARD: h static hot rows plus a look-forward cache over the other (cold)
    ids; h is the largest found with h + (look-forward size of the cold stream) <= hbm_rows
    (bisection on h with an estimate, then the cold stream's exact look-forward size; if it
    does not fit, the cache keeps its exact size and h shrinks; if even h = 0 does not fit,
    this is LOOK_FORWARD at that size). Current-batch misses are reported as simulated.
  * ALL_HBM / ALL_UVM: the bounds (the same entry for every size; `hbm_rows` is the table's
    rows and 0).
Warm-up: caches start cold on the first batches; the first `warmup_batches` (default a quarter
of them, at least one when there are two or more) only warm the caches, and every strategy,
STATIC included, is measured on the remaining batches. Held-out batches come from a hold-out
profile's trace or the profile's own trace (`holdout_batches`); several trace runs are chained
as if consecutive (a cache's state carries over each join, slightly pessimistic there).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from torchrec_hot.planner.strategy.fbgemm_cache import (
    ASSOC,
    PreparedTrace,
    prepare_trace,
    sets_for_rows,
    simulate,
)
from torchrec_hot.planner.strategy.types import Strategy, TableTraffic
from torchrec_hot.profiling.profile import PopularityProfile
from torchrec_hot.tables.hottest import hotness_ranks


def holdout_batches(
    profile: PopularityProfile,
    table: str,
    global_batch_size: int | None = None,
    window: str | Sequence[str] | None = None,
) -> list[np.ndarray]:
    """The trace's batches of `table` (int64 id arrays, in order), each run of `window` (None:
    every window) cut into global batches of `global_batch_size` samples (None: as recorded;
    a run's trailing partial batch is dropped when the run has a full one)."""
    profile.table(table)
    chosen = [window] if isinstance(window, str) else window
    names = set(profile.windows if chosen is None else chosen)
    out: list[np.ndarray] = []
    for run in profile.trace.runs:
        if run.window not in names:
            continue
        batches = global_batches(run.batches(table), run.batch_samples, global_batch_size)
        if (
            global_batch_size
            and len(batches) > 1
            and _tail_partial(run.batch_samples, global_batch_size)
        ):
            batches = batches[:-1]
        out += [np.asarray(b, dtype=np.int64) for b in batches]
    return out


def global_batches(
    batches: Sequence[np.ndarray], samples: Sequence[int], size: int | None
) -> list[np.ndarray]:
    """A trace run's batches regrouped into global batches of at least `size` samples.

    Args:
        batches: one table's ids in each batch the run recorded, in order (int64 arrays,
            (ids in the batch,)); a recorded batch is what the profiled loop fed, typically
            one rank's batch, so `size` is world size x per-rank batch size.
        samples: samples in each recorded batch (ints, same length as `batches`).
        size: samples per global batch; None keeps the recorded batches (a new list).
    Returns:
        int64 id arrays, each the concatenation of consecutive recorded batches that first
        reaches `size` samples (it may overshoot: batches are never cut), in order; the last
        one holds the leftover batches and may be short (`_tail_partial` tells).
    """
    if size is None:
        return list(batches)
    out, parts, have = [], [], 0
    for ids, n in zip(batches, samples, strict=True):
        parts.append(ids)
        have += n
        if have >= size:
            out.append(np.concatenate(parts))
            parts, have = [], 0
    if parts:
        out.append(np.concatenate(parts))
    return out


def _tail_partial(samples: Sequence[int], size: int) -> bool:
    """Whether `global_batches` leaves a last batch of fewer than `size` samples."""
    have = 0
    for n in samples:
        have += n
        if have >= size:
            have = 0
    return have > 0


class _Windows:
    """The distinct ids of every k + 1 consecutive batches (universe indices), with their
    hashes and hot ranks, for look-forward sizing."""

    def __init__(self, trace: PreparedTrace, k: int, ranks: np.ndarray | None = None) -> None:
        n = trace.num_batches
        mark = np.zeros(trace.universe.size, dtype=bool)
        unions = []
        for w in range(min(k, n - 1), n):
            parts = trace.unique[max(0, w - k) : w + 1]
            if trace.universe.size <= 4 * sum(p.size for p in parts):  # dense marks
                mark[:] = False
                for p in parts:
                    mark[p] = True
                unions.append(np.flatnonzero(mark))
            else:
                unions.append(np.unique(np.concatenate(parts)))
        unions = unions or [np.zeros(0, np.int64)]
        self.sizes = np.array([u.size for u in unions], dtype=np.int64)
        self.wid = np.repeat(np.arange(len(unions), dtype=np.int64), self.sizes)
        ids = np.concatenate(unions)
        self.hashes = trace.hashes[ids]
        self.ranks = ranks[ids] if ranks is not None else None
        self.sorted_ranks = [np.sort(ranks[u]) for u in unions] if ranks is not None else None

    def cold_size(self, hot: int) -> int:
        """Largest working set of ids ranked >= `hot` (needs ranks)."""
        assert self.sorted_ranks is not None
        return max(int(r.size - np.searchsorted(r, hot)) for r in self.sorted_ranks)

    def sets(self, hot: int = 0) -> int:
        """Fewest sets found such that no window maps more than 32 distinct ids (ranked >=
        `hot`) to one set: from ceil(W / 32), doubling, then bisection to 1/64."""
        keep = None if self.ranks is None or hot == 0 else self.ranks >= hot
        h = self.hashes if keep is None else self.hashes[keep]
        wid = self.wid if keep is None else self.wid[keep]
        width = int(self.sizes.size)
        if h.size == 0:
            return 0

        def fits(c: int) -> bool:
            keys = wid * c + (h % np.uint64(c)).astype(np.int64)
            return int(np.bincount(keys, minlength=width * c).max()) <= ASSOC

        most = int(np.bincount(wid, minlength=width).max())
        lo = sets_for_rows(most)
        if fits(lo):
            return lo
        hi = lo * 2
        while not fits(hi):
            lo, hi = hi, hi * 2
        while hi - lo > max(1, hi // 64):
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        return hi


def look_forward_rows(batches: Sequence[np.ndarray], k: int, hash_offset: int = 0) -> int:
    """Cache rows (a multiple of 32) at which FBGEMM's prefetch pipeline with look-ahead `k`
    serves every lookup of the current batch from HBM, on these batches: the largest working
    set W of k + 1 consecutive batches, grown so that no set receives more than 32 distinct
    rows of any such window (then the locked rows of the in-flight batches and the new rows
    always fit their set). Rule: sets from ceil(W / 32), doubling until that holds, then
    bisection (to 1/64) between the last failing and first holding count."""
    if k < 0:
        raise ValueError(f"look-ahead must be >= 0 batches, got {k}")
    return ASSOC * _Windows(prepare_trace(batches, hash_offset=hash_offset), k).sets()


def _traffic(
    table: str,
    strategy: Strategy,
    hbm_rows: int,
    measured: slice,
    trace: PreparedTrace,
    uvm: np.ndarray,
    fetched: np.ndarray | None = None,
    evicted: np.ndarray | None = None,
    overlap: bool = False,
    hot_rows: int = 0,
) -> TableTraffic:
    """TableTraffic from per-batch arrays (int64 (num_batches,)), averaged over `measured`;
    `hot_rows`: the static hot rows among `hbm_rows`."""
    lookups = trace.lookups()[measured].astype(np.float64)
    total = max(float(lookups.sum()), 1.0)
    uvm_m = float(uvm[measured].sum())
    zero = np.zeros(trace.num_batches)
    return TableTraffic(
        table=table,
        strategy=strategy,
        hbm_rows=int(hbm_rows),
        lookups=float(lookups.mean()),
        unique_rows=float(trace.distinct()[measured].mean()),
        hbm_hit_rate=1.0 - uvm_m / total if lookups.sum() else 1.0,
        uvm_lookups=float(uvm[measured].mean()),
        fetched_rows=float((zero if fetched is None else fetched)[measured].mean()),
        written_back_rows=float((zero if evicted is None else evicted)[measured].mean()),
        fetch_overlappable=overlap,
        misses_current_batch=float(uvm[measured].mean()) if overlap else 0.0,
        hot_rows=int(hot_rows),
    )


def _split(size: int, rows: int, windows: _Windows, growth: float) -> tuple[int, int]:
    """(static hot rows, cache sets) of STATIC_LOOK_FORWARD at `size` rows (module docstring)."""
    est: Callable[[int], int] = lambda h: int(np.ceil(growth * windows.cold_size(h)))  # noqa: E731
    lo, hi = 0, min(size, rows)
    if hi + est(hi) <= size:
        lo = hi
    while hi - lo > max(1, hi // 256):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if mid + est(mid) <= size else (lo, mid)
    hot = lo
    sets = windows.sets(hot)
    if hot + ASSOC * sets > size:
        hot = max(0, size - ASSOC * sets)
        if hot == 0:
            sets = sets_for_rows(min(size, rows))
    return hot, sets


def default_warmup(num_batches: int) -> int:
    """Held-out batches that only warm the caches by default: a quarter, at least one when
    there are two or more (module docstring)."""
    return max(1, num_batches // 4) if num_batches > 1 else 0


def evaluate_table(
    table: str,
    counts: np.ndarray,
    batches: Sequence[np.ndarray],
    hbm_sizes: Sequence[int],
    *,
    look_ahead: int = 1,
    warmup_batches: int | None = None,
    hash_offset: int = 0,
    threads: int | None = None,
    strategies: Collection[Strategy] | None = None,
) -> dict[Strategy, list[TableTraffic]]:
    """Traffic per step of every `Strategy` at every HBM size, measured on held-out batches.

    Args:
        table: table name (copied into the results).
        counts: profiled lookups per row, int64 (num_rows,): the profiling window.
        batches: held-out global batches of this table, int64 id arrays in [0, num_rows).
        hbm_sizes: HBM rows to evaluate (>= 0), all ranks together.
        look_ahead: batches of look-ahead k for the look-forward strategies (1: TorchRec's
            prefetch pipeline).
        warmup_batches: batches that only warm the caches (default: len(batches) // 4, at
            least 1 when there are 2 or more batches).
        hash_offset: the table's offset in its TBE's linear cache index space.
        threads: simulations run at once (default: min(2, CPUs)).
        strategies: the simulated strategies to run (default: all; the two bounds always).

    Returns:
        strategy -> one `TableTraffic` per size, in the order of `hbm_sizes`.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and not np.issubdtype(counts.dtype, np.integer)):
        raise ValueError(f"counts must be a 1-D integer array, got {counts.dtype} {counts.shape}")
    if counts.size and int(counts.min()) < 0:
        raise ValueError("counts must be >= 0")
    sizes = [int(s) for s in hbm_sizes]
    if any(s < 0 for s in sizes):
        raise ValueError(f"HBM sizes must be >= 0 rows, got {sizes}")
    if look_ahead < 0:
        raise ValueError(f"look_ahead must be >= 0 batches, got {look_ahead}")
    if not batches:
        raise ValueError("need at least one held-out batch")
    rows = int(counts.size)
    trace = prepare_trace(batches, rows, hash_offset)
    n = trace.num_batches
    warm = default_warmup(n) if warmup_batches is None else int(warmup_batches)
    if not 0 <= warm < n:
        raise ValueError(f"warmup_batches must be in [0, {n}), got {warmup_batches}")
    measured = slice(warm, n)
    wanted = set(Strategy) if strategies is None else set(strategies)
    ranks = hotness_ranks(counts, trace.universe)
    if Strategy.STATIC_LOOK_FORWARD in wanted:
        windows = _Windows(trace, look_ahead, ranks)
        growth = ASSOC * windows.sets() / max(int(windows.sizes.max()), 1)
    lookups = trace.lookups()
    zeros = np.zeros(n, np.int64)

    def static(size: int) -> TableTraffic:
        hot = min(size, rows)
        pairs = zip(trace.unique, trace.counts, strict=True)
        cold = np.array([int(c[ranks[u] >= hot].sum()) for u, c in pairs], dtype=np.int64)
        return _traffic(table, Strategy.STATIC, hot, measured, trace, cold, hot_rows=hot)

    def cached(strategy: Strategy, size: int) -> TableTraffic:
        sets = sets_for_rows(min(size, rows))
        ahead = look_ahead if strategy is Strategy.LOOK_FORWARD else None
        run = simulate(trace, sets, strategy.cache_algorithm, ahead)
        return _traffic(
            table, strategy, ASSOC * sets, measured, trace, run.uncached_lookups,
            run.inserted, run.evicted, ahead is not None,
        )  # fmt: skip

    def static_look_forward(size: int) -> TableTraffic:
        hot, sets = _split(size, rows, windows, growth)
        run = simulate(trace.subset(ranks >= hot), sets, "lru", look_ahead)
        return _traffic(
            table, Strategy.STATIC_LOOK_FORWARD, hot + ASSOC * sets, measured, trace,
            run.uncached_lookups, run.inserted, run.evicted, True, hot,
        )  # fmt: skip

    jobs: list[tuple[Strategy, Callable[[], TableTraffic]]] = []
    for size in sizes:
        jobs.append((Strategy.STATIC, partial(static, size)))
        for strategy in (Strategy.LRU_CACHE, Strategy.LFU_CACHE, Strategy.LOOK_FORWARD):
            jobs.append((strategy, partial(cached, strategy, size)))
        jobs.append((Strategy.STATIC_LOOK_FORWARD, partial(static_look_forward, size)))
    jobs = [job for job in jobs if job[0] in wanted]
    workers = threads or min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # numpy releases the GIL in its heavy loops
        done = list(pool.map(lambda job: job[1](), jobs))
    out: dict[Strategy, list[TableTraffic]] = {s: [] for s in Strategy if s in wanted}
    for (strategy, _), traffic in zip(jobs, done, strict=True):
        out[strategy].append(traffic)
    out[Strategy.ALL_HBM] = [
        _traffic(table, Strategy.ALL_HBM, rows, measured, trace, zeros) for _ in sizes
    ]
    out[Strategy.ALL_UVM] = [
        _traffic(table, Strategy.ALL_UVM, 0, measured, trace, lookups) for _ in sizes
    ]
    return out
