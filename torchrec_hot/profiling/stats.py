"""Hot-share estimates with their uncertainty, from exact, sampled or sketched counts.

The hot share of a table at `k` rows is the share of its lookups taken by its `k` most looked-up
rows, as exact counts over all of the input would give it (`S`). A profile estimates `S` from:

* exact counts of all input: `S` itself, standard error 0;
* counts of a per-sample Bernoulli(p) sample: the plug-in top-k share of the sampled counts is
  biased *up* (the rows that happen to be over-sampled are the ones chosen), while the share those
  chosen rows get on new data is biased *down* from `S` (they are not all truly the top k). The
  latter is estimated with Good-Turing (a row seen c times is expected to be seen
  (c+1) N[c+1] / N[c] times in as much new data, N[c] = rows seen c times), so
  `lower = Good-Turing share <= S <= upper = plug-in share`, approximately; where the hot set's
  boundary runs through large counts, `lower` is also at most the plug-in share less its
  winner's curse estimated by a Poisson bootstrap of the rows near the boundary. The estimate is the
  midpoint and its standard error combines the sampling variance of a ratio of sums under
  Bernoulli sampling of samples (delta method: (1 - p) * deff * s (1 - s) / n, n sampled lookups,
  deff = E[x^2] / E[x] over samples of x lookups of the table, 1 for one id per sample) with the
  half-width of that bracket;
* a heavy-hitter sketch: deterministic bounds from its error bound D (see counters.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_GT_MAX_COUNT = 20  # Good-Turing adjusts counts up to this; larger counts are kept as they are
_GT_MIN_ROWS = 5  # ... where at least this many rows share the count


@dataclass(frozen=True)
class HotShare:
    """Estimated share (0..1) of a table's lookups taken by its `rows` most looked-up rows.

    Attributes:
        rows: k, the hot size.
        share: the estimate of the full-data share.
        se: its standard error (0 for exact counts of all input).
        lower, upper: the bracket the estimate sits in (selection effects of sampling, or a
            sketch's deterministic bounds); equal to `share` for exact counts.
    """

    rows: int
    share: float
    se: float
    lower: float
    upper: float


def top_k_values(counts: np.ndarray, k: int) -> np.ndarray:
    """The `k` largest values of `counts` (any order). k is clipped to [0, len]."""
    k = max(0, min(int(k), counts.shape[0]))
    if k == 0:
        return counts[:0]
    if k == counts.shape[0]:
        return counts
    return np.partition(counts, counts.shape[0] - k)[counts.shape[0] - k :]


def good_turing_values(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Good-Turing expected count in as much new data of rows observed `values` times, given
    the table's observed `counts` (float64, same shape as `values`)."""
    hist = np.bincount(np.minimum(counts, _GT_MAX_COUNT + 2), minlength=_GT_MAX_COUNT + 3)
    adjusted = np.arange(_GT_MAX_COUNT + 2, dtype=np.float64)
    for c in range(1, _GT_MAX_COUNT + 1):
        if hist[c] >= _GT_MIN_ROWS and hist[c + 1] > 0:
            adjusted[c] = (c + 1) * hist[c + 1] / hist[c]
    out = values.astype(np.float64)
    small = values <= _GT_MAX_COUNT
    out[small] = adjusted[values[small]]
    return out


def expected_counts(counts: np.ndarray, sample_rate: float = 1.0) -> np.ndarray:
    """Each row's expected lookups in as much new input (float64, shape of `counts`), from the
    profile's per-row `counts` of which a `sample_rate` share of samples was counted (counts
    scaled by 1/rate; so is the result).

    Good-Turing (`good_turing_values`) on the table's own count histogram, made non-decreasing
    in the count (pool-adjacent-violators, weighted by rows per count) so that the rows it
    values most are still the most counted ones, in `tables.hottest` order; rows never seen stay
    0. Tables compete for one budget: a row seen once is worth 2 N[2] / N[1] of its table, which
    is small where a long tail of rows seen once is mostly luck, and nearer 1 where it is not."""
    raw = np.rint(counts * sample_rate).astype(np.int64) if sample_rate < 1 else counts
    top = _GT_MAX_COUNT + 2
    hist = np.bincount(np.minimum(raw, top), minlength=top + 1)[: top + 1]
    levels = np.arange(top + 1, dtype=np.int64)
    value = good_turing_values(raw, levels)
    value[0] = 0.0
    # pool adjacent violators over the levels seen (weights: rows at each level)
    blocks: list[list[float]] = []  # [value, weight, first level, last level]
    for c in range(1, top + 1):
        if hist[c] == 0:
            continue
        blocks.append([float(value[c]), float(hist[c]), c, c])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, _, l2 = blocks.pop()
            v1, w1, f1, _ = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, f1, l2])
    for v, _, first, last in blocks:
        value[first : last + 1] = v
    out = raw.astype(np.float64)
    small = raw <= _GT_MAX_COUNT
    out[small] = value[raw[small]]
    return out / sample_rate if sample_rate < 1 else out


def expected_share(counts: np.ndarray, ids: np.ndarray, sample_rate: float = 1.0) -> float:
    """Expected share (0..1) of a table's lookups in new input (as much again, same
    distribution) that the rows `ids` (int64, (k,)) take, from the profile's per-row `counts`
    (N,) of which a `sample_rate` share of samples was counted (counts scaled by 1/rate).

    The in-sample share of rows chosen for their counts over-states them (a row seen once was
    lucky more often than not); Good-Turing gives a row seen c times (c+1) N[c+1] / N[c] in new
    input, and the rows never seen share the mass of the rows seen once, N[1] / N[0] each. The
    result is at most the in-sample share, and 1 when `ids` cover the whole table."""
    n_rows = int(counts.shape[0])
    ids = np.asarray(ids, dtype=np.int64)
    if n_rows == 0 or ids.size == 0:
        return 0.0
    if ids.size >= n_rows:
        return 1.0
    raw = np.rint(counts * sample_rate).astype(np.int64) if sample_rate < 1 else counts
    n = int(raw.sum())
    if n == 0:
        return float(ids.size) / n_rows
    values = raw[ids]
    in_sample = float(values.sum()) / n
    seen = good_turing_values(raw, values[values > 0]).sum()
    unseen = int(np.count_nonzero(values == 0))
    if unseen:
        n0 = n_rows - int(np.count_nonzero(raw))
        seen += unseen * int(np.count_nonzero(raw == 1)) / max(n0, 1)
    return min(in_sample, float(seen) / n) if in_sample > 0 else min(1.0, float(seen) / n)


def _boundary_bias(counts: np.ndarray, k: int, kth: int, replicates: int = 16) -> float:
    """Parametric-bootstrap estimate of how much the top-k sum of noisy counts over-states the
    rows it picks, from the rows near the k-th count `kth` (counts resampled as Poisson): the
    winner's curse where the hot set's boundary runs through large counts, which Good-Turing
    (small counts only) does not fully see. In lookups; 0 when kth < 3."""
    if kth < 3 or k >= counts.shape[0]:
        return 0.0
    spread = 6.0 * math.sqrt(kth) + 2.0
    sure = int(np.count_nonzero(counts > kth + spread))
    middle = counts[(counts >= kth - spread) & (counts <= kth + spread)].astype(np.float64)
    take = k - sure
    if take <= 0 or take >= middle.shape[0]:
        return 0.0
    base = float(np.sort(middle)[::-1][:take].sum())
    rng = np.random.default_rng(0)
    boot = [float(np.sort(rng.poisson(middle))[::-1][:take].sum()) for _ in range(replicates)]
    return max(0.0, float(np.mean(boot)) - base)


def exact_hot_share(counts: np.ndarray, k: int) -> HotShare:
    total = int(counts.sum())
    share = float(top_k_values(counts, k).sum()) / total if total and k > 0 else 0.0
    return HotShare(int(k), share, 0.0, share, share)


def exact_hot_shares(counts: np.ndarray, ks) -> list[HotShare]:
    """`exact_hot_share` at each of `ks` in O(rows): a histogram of the count values (rows with
    a count of at least 2^16 are few and sorted apart), no sort of the table."""
    total = int(counts.sum())
    limit = 1 << 16
    big = np.sort(counts[counts >= limit])[::-1].astype(np.int64)
    hist = np.bincount(counts[counts < limit], minlength=limit)[::-1]  # value limit-1 .. 0
    values = np.arange(limit - 1, -1, -1, dtype=np.int64)
    rows_cum = np.cumsum(hist)
    look_cum = np.cumsum(hist * values)
    big_cum = np.concatenate([[0], np.cumsum(big)])
    out = []
    for asked in ks:
        k = max(0, min(int(asked), counts.shape[0]))
        if k <= big.shape[0]:
            hot = int(big_cum[k])
        else:
            rest = k - big.shape[0]
            i = int(np.searchsorted(rows_cum, rest))  # level where the k-th row sits
            before_rows = int(rows_cum[i - 1]) if i else 0
            before = int(look_cum[i - 1]) if i else 0
            hot = int(big_cum[-1]) + before + (rest - before_rows) * int(values[i])
        share = hot / total if total else 0.0
        out.append(HotShare(int(asked), share, 0.0, share, share))  # rows as asked, as before
    return out


def sampled_hot_share(
    counts: np.ndarray, k: int, sample_rate: float, design_effect: float = 1.0
) -> HotShare:
    """Hot share at `k` from raw counts of a Bernoulli(`sample_rate`) sample of samples."""
    n = int(counts.sum())
    if n == 0 or k <= 0:
        return HotShare(int(k), 0.0, 0.0, 0.0, 0.0)
    top = top_k_values(counts, k)
    upper = float(top.sum()) / n
    lower = min(
        upper,
        float(good_turing_values(counts, top).sum()) / n,
        upper - _boundary_bias(counts, int(top.shape[0]), int(top.min()) if top.size else 0) / n,
    )
    share = 0.5 * (lower + upper)
    var = (1.0 - sample_rate) * max(design_effect, 1.0) * share * (1.0 - share) / n
    se = math.sqrt(var + (0.5 * (upper - lower)) ** 2)
    return HotShare(int(k), share, se, lower, upper)


def sketch_hot_share(
    lower_counts: np.ndarray,
    bound: int,
    total: int,
    num_rows: int,
    k: int,
    sample_rate: float = 1.0,
    design_effect: float = 1.0,
) -> HotShare:
    """Hot share at `k` from a sketch's tracked counters (`lower_counts`, true counts within
    [c, c + bound]) of a table of `num_rows` rows that saw `total` (raw) lookups."""
    if total == 0 or k <= 0:
        return HotShare(int(k), 0.0, 0.0, 0.0, 0.0)
    k = min(int(k), num_rows)
    top = top_k_values(lower_counts, k)
    lower = float(top.sum()) / total
    untracked = max(0, k - top.shape[0])
    upper = min(1.0, (float(top.sum()) + bound * (top.shape[0] + untracked)) / total)
    share = 0.5 * (lower + upper)
    var = (1.0 - sample_rate) * max(design_effect, 1.0) * share * (1.0 - share) / total
    return HotShare(k, share, math.sqrt(var + (0.5 * (upper - lower)) ** 2), lower, upper)
