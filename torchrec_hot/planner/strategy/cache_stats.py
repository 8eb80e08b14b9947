"""TorchRec `CacheStatistics` from a profile: LRU miss rates of a table's UVM cache.

TorchRec's planner reads three numbers for a table planned as `fused_uvm_caching` (through
`ParameterConstraints(cache_params=CacheParams(stats=...))`):
  * `expected_lookups`: distinct ids per global batch (the rows a step touches);
  * `expected_miss_rate(clf)`: share of those that miss a cache holding `clf * rows` rows;
  * `cacheability`: area under the miss-rate curve over clf in [0, 1] (0: very cacheable).

`ProfileCacheStatistics.from_profile` computes them from the profile's trace and counts:
  1. each trace run is cut into global batches (`simulate.global_batches`) and each batch
     reduced to its distinct ids (an FBGEMM cache is filled a batch at a time, so repeats
     within a batch are not lookups);
  2. LRU stack distances over that stream, exactly (`lru_stack_distances`): an access whose id
     was seen earlier in the run, with d distinct other ids in between, hits a cache of C rows
     iff d < C;
  3. an access whose id was not seen earlier in its run (the run is a sample, its past unknown)
     hits with the probability the independent-reference model gives: with q_i the chance
     that row i is in a batch (from its profiled count) and tau_C the characteristic time (in
     batches) of a C-row LRU cache, solving sum_i 1 - (1 - q_i)^tau_C = C (Che's
     approximation), a row not seen in the last b batches hits with
     1 - (1 - q_i)^(tau_C - b - 1/2) (on average half of its own batch went in before it).
Without a trace the curve is the independent-reference model's alone. Rows the profile never
saw are not in q; they are added as always-missing lookups at the Good-Turing rate of unseen
rows (rows seen once / lookups), so only a cache of every row (clf 1) reaches a miss rate of 0.
The statistics hold ~1000 curve points (a few KB), so TorchRec's proposers can deep-copy them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torchrec.distributed.types import CacheStatistics

from torchrec_hot.planner.strategy.simulate import global_batches
from torchrec_hot.profiling.profile import PopularityProfile

CURVE_POINTS = 1000
_FIRST_SAMPLE = 50_000  # first-in-run accesses evaluated with the reference model
_TAU_POINTS = 2000
# an id is looked up, on average, after half of its own batch's distinct ids went in first
_IN_BATCH = 0.5


def lru_stack_distances(ids: np.ndarray) -> np.ndarray:
    """LRU stack distance of every access of `ids` (1-D ints): the number of distinct other
    ids accessed since the previous access of the same id; -1 for a first access. int64.

    O(L log^2 L) with vectorised numpy: d(t) = A(t) - B(t), where A(t) = distinct ids in
    [0, t) minus one, and B(t) = #{s <= p : next(s) > t} (p the previous access of ids[t]),
    counted with a merge-sort tree over positions."""
    ids = np.asarray(ids)
    n = ids.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    order = np.argsort(ids, kind="stable")
    same = ids[order[1:]] == ids[order[:-1]]
    prev = np.full(n, -1, dtype=np.int64)
    nxt = np.full(n, n, dtype=np.int64)
    prev[order[1:][same]] = order[:-1][same]
    nxt[order[:-1][same]] = order[1:][same]
    first = prev < 0
    distinct_before = np.cumsum(first) - first
    queries = np.flatnonzero(~first)
    if queries.size == 0:
        return out
    p, t = prev[queries], queries
    a = distinct_before[t] - 1
    b = np.zeros(queries.size, dtype=np.int64)
    m = p + 1  # prefix length [0, p]
    values = nxt.copy()  # level 0: blocks of 1, trivially sorted
    stride = n + 1
    level = 0
    while (1 << level) <= n:
        size = 1 << level
        keys = (np.arange(n, dtype=np.int64) >> level) * stride + values
        use = (m >> level) & 1 == 1
        if use.any():
            block = (m[use] >> level) - 1
            end = np.minimum((block + 1) * size, n)
            needles = block * stride + t[use]
            order = np.argsort(needles)  # sorted needles search ~10x faster
            below = np.empty_like(needles)
            below[order] = np.searchsorted(keys, needles[order], side="right")
            b[use] += end - below
        # next level: merge pairs of sorted blocks (timsort merges the two runs)
        keys_next = (np.arange(n, dtype=np.int64) >> (level + 1)) * stride + values
        values = values[np.argsort(keys_next, kind="stable")]
        level += 1
    out[queries] = a - b
    return out


class ProfileCacheStatistics(CacheStatistics):
    """`CacheStatistics` of one table: a miss-rate curve at ~1000 cache sizes (rows).

    Args:
        height: rows of the table.
        cache_sizes: increasing cache sizes in rows (float64, starting above 0).
        miss_rates: miss rate at each size (float64, same length, non-increasing).
        expected_lookups: distinct ids per global batch.
    """

    def __init__(
        self,
        height: int,
        cache_sizes: np.ndarray,
        miss_rates: np.ndarray,
        expected_lookups: float,
    ) -> None:
        self.height = int(height)
        self.cache_sizes = np.asarray(cache_sizes, dtype=np.float64)
        self.miss_rates = np.minimum.accumulate(np.clip(miss_rates, 0.0, 1.0))
        self._expected_lookups = float(expected_lookups)
        clfs = np.linspace(0.0, 1.0, CURVE_POINTS + 1)
        curve = np.array([self.expected_miss_rate(c) for c in clfs])
        self._cacheability = float(np.sum((curve[1:] + curve[:-1]) * 0.5) / CURVE_POINTS)

    @property
    def expected_lookups(self) -> float:
        return self._expected_lookups

    def expected_miss_rate(self, clf: float) -> float:
        """Miss rate of a cache of `clf * height` rows: 1 at clf 0, 0 at clf 1."""
        if clf <= 0.0:
            return 1.0
        if clf >= 1.0:
            return 0.0
        size = clf * self.height
        if size < self.cache_sizes[0]:
            return 1.0
        return float(np.interp(np.log(size), np.log(self.cache_sizes), self.miss_rates))

    @property
    def cacheability(self) -> float:
        return self._cacheability

    def __repr__(self) -> str:
        return (
            f"ProfileCacheStatistics(height={self.height}, expected_lookups="
            f"{self._expected_lookups:.1f}, cacheability={self._cacheability:.3f})"
        )

    @staticmethod
    def from_profile(
        profile: PopularityProfile,
        table: str,
        global_batch_size: int | None = None,
        window: str | Sequence[str] | None = None,
    ) -> ProfileCacheStatistics:
        """Statistics of `table` for global batches of `global_batch_size` samples (default:
        the batches the trace recorded), from `window`'s counts and the trace."""
        spec = profile.table(table)
        counts = profile.counts(table, window)
        names = _names(window) if window is not None else set(profile.windows)
        samples = sum(profile.window_data(w).num_samples for w in names)
        runs = [r for r in profile.trace.runs if r.window in names]
        streams = []
        for run in runs:
            batches = global_batches(run.batches(table), run.batch_samples, global_batch_size)
            streams.append([np.unique(b) for b in batches])
        batches_seen = sum(profile.window_data(w).num_batches for w in names)
        batch = global_batch_size or (
            float(np.mean([n for r in runs for n in r.batch_samples]))
            if runs
            else samples / max(batches_seen, 1)
        )
        # rows by count: every per-row quantity below depends on a row's count only, so it is
        # computed once per distinct count (a few thousand), not once per row (up to ~10^8)
        nonzero = counts[counts > 0]
        values, mult = np.unique(nonzero, return_counts=True)
        q = _batch_presence(values, samples, batch)  # per distinct count
        if streams and any(len(s) for s in streams):
            expected = float(np.mean([u.size for s in streams for u in s]))
        else:
            expected = float(np.dot(q, mult))
        sizes = np.unique(np.geomspace(1.0, max(spec.num_embeddings, 1), CURVE_POINTS))
        taus = _characteristic_times(q, mult, sizes)
        misses = None
        if expected and streams:

            def presence(ids: np.ndarray) -> np.ndarray:
                return _batch_presence(counts[ids], samples, batch)

            misses = _trace_misses(streams, presence, sizes, taus)
        if misses is None:
            misses = _irm_misses(q, mult, taus)
        # rows the profile never saw still come (Good-Turing: as often as rows seen once)
        rate = min(profile.window_data(w).sample_rate for w in names)
        raw = np.rint(values * rate)
        unseen = float(mult[raw == 1].sum()) / max(float(np.dot(raw, mult)), 1.0)
        misses = unseen + (1.0 - unseen) * misses
        return ProfileCacheStatistics(spec.num_embeddings, sizes, misses, expected)


def _names(window: str | Sequence[str]) -> set[str]:
    return {window} if isinstance(window, str) else set(window)


def _batch_presence(counts: np.ndarray, samples: int, batch: float) -> np.ndarray:
    """q: chance that a row with profiled count `counts` is in a global batch of `batch`
    samples (IRM, Poisson), elementwise."""
    if samples <= 0:
        return np.zeros(counts.shape[0])
    return -np.expm1(-counts.astype(np.float64) * (batch / samples))


def _characteristic_times(q: np.ndarray, mult: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """tau_C (batches) for each cache size C: sum_i 1 - (1 - q_i)^tau = C over rows i, given
    as presences `q` each shared by `mult` rows; inf when C is at least the rows ever seen."""
    keep = q > 0
    values, mult = q[keep], mult[keep]
    if values.size == 0:
        return np.full(sizes.shape, np.inf)
    log1m = np.log1p(-np.minimum(values, 1 - 1e-12))
    grid = np.geomspace(1e-3, 1e13, _TAU_POINTS)
    filled = np.array([np.dot(mult, -np.expm1(tau * log1m)) for tau in grid])
    taus = np.interp(sizes, filled, grid, right=np.inf)
    taus[sizes >= mult.sum()] = np.inf
    return taus


def _irm_misses(q: np.ndarray, mult: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Miss rate per distinct lookup under the independent-reference model (presences `q`,
    each shared by `mult` rows)."""
    keep = q > 0
    values, mult = q[keep], mult[keep]
    if values.size == 0:
        return np.zeros(taus.shape)
    log1m = np.log1p(-np.minimum(values, 1 - 1e-12))
    weight = mult * values
    out = np.empty(taus.shape)
    for j, tau in enumerate(taus):
        span = max(tau - _IN_BATCH, 0.0)
        out[j] = 0.0 if np.isinf(tau) else np.dot(weight, np.exp(span * log1m)) / weight.sum()
    return out


def _trace_misses(
    streams: list[list[np.ndarray]],
    presence: Callable[[np.ndarray], np.ndarray],
    sizes: np.ndarray,
    taus: np.ndarray,
) -> np.ndarray | None:
    """Miss rate at each size from the trace: exact LRU for reuses within a run, the
    reference model for first accesses in a run (a sample of them); `presence(ids)` is the
    rows' q."""
    reuse: list[np.ndarray] = []
    first_q: list[np.ndarray] = []
    first_b: list[np.ndarray] = []
    for batches in streams:
        if not batches:
            continue
        ids = np.concatenate(batches)
        batch_of = np.repeat(np.arange(len(batches)), [b.size for b in batches])
        d = lru_stack_distances(ids)
        reuse.append(d[d >= 0])
        firsts = d < 0
        first_q.append(presence(ids[firsts]))
        first_b.append(batch_of[firsts])
    total = sum(r.size for r in reuse) + sum(f.size for f in first_q)
    if total == 0:
        return None
    dist = np.sort(np.concatenate(reuse))
    misses = (dist.size - np.searchsorted(dist, sizes, side="left")).astype(np.float64)
    fq, fb = np.concatenate(first_q), np.concatenate(first_b)
    if fq.size:
        rng = np.random.default_rng(0)
        pick = rng.choice(fq.size, min(fq.size, _FIRST_SAMPLE), replace=False)
        weight = fq.size / pick.size
        log1m = np.log1p(-np.minimum(fq[pick], 1 - 1e-12))
        for j, tau in enumerate(taus):
            if np.isinf(tau):
                continue
            span = np.maximum(tau - fb[pick] - _IN_BATCH, 0.0)
            misses[j] += weight * float(np.exp(span * log1m).sum())
    return misses / total


class CacheStatisticsOf:
    """TorchRec `CacheStatistics` of a table from `source`, the profile whose trace its
    strategies were measured on (`ProfileCacheStatistics`, global batches of `global_batch`
    samples), built once per table on first use; None without a source."""

    def __init__(self, source: PopularityProfile | None, global_batch: int) -> None:
        self._source, self._global_batch = source, global_batch
        self._stats: dict[str, CacheStatistics] = {}

    def __call__(self, table: str) -> CacheStatistics | None:
        if self._source is None:
            return None
        if table not in self._stats:
            self._stats[table] = ProfileCacheStatistics.from_profile(
                self._source, table, self._global_batch
            )
        return self._stats[table]
