"""Synthetic input whose tables differ in how popularity moves: stable, drifting, or sessions.

Each table has one of three kinds (`TableKind`):
  * `stable`: Zipf(alpha) ranks mapped to ids by a fixed affine permutation (the same hot ids in
    every window and batch: the static hot split's best case);
  * `drift`: the same, with a new permutation in every window (hot ids move from the profiling
    window to the held-out one, as user ids do from day to day);
  * `session`: temporal locality. The table keeps a pool of active ids (`session_pool` x the
    batch size); every sample draws its id uniformly from the pool, and after every batch a
    share `session_turnover` of the pool is replaced by fresh Zipf draws with a permutation of
    its window (drifting too). An id stays active for about 1 / turnover batches and is looked
    up many times meanwhile: what a cache (and look-forward) exploits and a static set cannot.
Ranks are mapped to ids by a per-table affine permutation `id = (a * rank + b) mod N` (a coprime
to N), so the hot ids are scattered over the table as in real data. `pooling_factor` ids per
feature and sample (default 1). This is the one synthetic generator: `window_batches` (stable
and drifting tables) and `zipf_batches` (all stable) are `workload_batches`, so a profile and a
hold-out drawn with the same seed share their stable tables' hot ids whichever is used.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Iterator, Mapping, Sequence

import numpy as np
import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

from torchrec_hot.data.synthetic import zipf_ranks


class TableKind(str, enum.Enum):
    """How a table's popularity moves (see the module docstring)."""

    STABLE = "stable"
    DRIFT = "drift"
    SESSION = "session"


def affine_permutation(num_rows: int, rng: np.random.Generator) -> tuple[int, int]:
    """(a, b) with gcd(a, num_rows) == 1: rank r -> (a * r + b) mod num_rows is a bijection."""
    a = int(rng.integers(1, max(2, num_rows)))
    while math.gcd(a, num_rows) != 1:
        a += 1
    return a, int(rng.integers(0, max(1, num_rows)))


def workload_batches(
    tables: Sequence[EmbeddingBagConfig],
    num_batches: int,
    batch_size: int,
    alpha: float = 1.1,
    kinds: Mapping[str, TableKind | str] | None = None,
    window: int = 0,
    seed: int = 0,
    session_pool: float = 0.25,
    session_turnover: float = 0.25,
    pooling_factor: int = 1,
) -> Iterator[KeyedJaggedTensor]:
    """`num_batches` KJTs of `batch_size` samples of window `window` (features in table order,
    every length `pooling_factor`); `kinds`: table name -> its `TableKind` (default stable);
    `seed` picks the permutations (the data set), `window` the draws."""
    kinds = {name: TableKind(k) for name, k in (kinds or {}).items()}
    unknown = set(kinds) - {t.name for t in tables}
    if unknown:
        raise ValueError(f"kinds name tables {sorted(unknown)} that are not among the tables")
    if pooling_factor < 1:
        raise ValueError(f"pooling_factor must be >= 1, got {pooling_factor}")
    if not (0 < session_pool and 0 < session_turnover <= 1):
        raise ValueError(
            f"need session_pool > 0 and 0 < session_turnover <= 1, got {session_pool}, "
            f"{session_turnover}"
        )
    rng = np.random.default_rng([seed, 1_000_003, window])
    perms, pools = {}, {}
    for i, t in enumerate(tables):
        kind = kinds.get(t.name, TableKind.STABLE)
        key = [seed, i, 0 if kind is TableKind.STABLE else window + 1]
        perms[t.name] = affine_permutation(t.num_embeddings, np.random.default_rng(key))
        if kind is TableKind.SESSION:
            size = max(1, int(session_pool * batch_size))
            pools[t.name] = _draw(t.num_embeddings, alpha, size, perms[t.name], rng)
    keys = [f for t in tables for f in t.feature_names]
    ids = batch_size * pooling_factor  # per feature and batch
    for _ in range(num_batches):
        values = []  # feature after feature, in table order
        for t in tables:
            pool = pools.get(t.name)
            for _ in t.feature_names:
                if pool is None:
                    values.append(_draw(t.num_embeddings, alpha, ids, perms[t.name], rng))
                else:
                    values.append(pool[rng.integers(0, pool.size, ids)])
            if pool is not None:  # after every batch a share of the active ids turns over
                fresh = rng.random(pool.size) < session_turnover
                pool[fresh] = _draw(t.num_embeddings, alpha, int(fresh.sum()), perms[t.name], rng)
        yield KeyedJaggedTensor.from_lengths_sync(
            keys=keys,
            values=torch.from_numpy(np.concatenate(values)),
            lengths=torch.full((batch_size * len(keys),), pooling_factor, dtype=torch.int32),
        )


def _draw(
    num_rows: int, alpha: float, size: int, perm: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    a, b = perm
    return (zipf_ranks(num_rows, alpha, size, rng) * a + b) % num_rows


def window_batches(
    tables: Sequence[EmbeddingBagConfig],
    num_batches: int,
    batch_size: int,
    alpha: float = 1.1,
    window: int = 0,
    drift_tables: Collection[str] = (),
    seed: int = 0,
) -> Iterator[KeyedJaggedTensor]:
    """`num_batches` KJTs of `batch_size` samples (one id per feature per sample) of window
    `window`; tables named in `drift_tables` have different hot ids in every window
    (`workload_batches` with those tables `drift`, the others stable)."""
    kinds = dict.fromkeys(drift_tables, "drift")
    return workload_batches(tables, num_batches, batch_size, alpha, kinds, window, seed)


def zipf_batches(
    tables: Sequence[EmbeddingBagConfig],
    num_batches: int,
    batch_size: int,
    alpha: float = 1.1,
    pooling_factor: int = 1,
    seed: int = 0,
    window: int = 0,
) -> Iterator[KeyedJaggedTensor]:
    """`num_batches` KJTs of `batch_size` samples, every table stable Zipf(alpha) with
    `pooling_factor` ids per feature and sample (`workload_batches` with no drift)."""
    return workload_batches(
        tables, num_batches, batch_size, alpha, window=window, seed=seed,
        pooling_factor=pooling_factor,
    )
