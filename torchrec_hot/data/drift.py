"""Synthetic windows of input whose popularity is stable in some tables and drifts in others.

Like `synthetic.zipf_batches`, each table draws Zipf(alpha) ranks and maps rank -> id with an
affine permutation `id = (a * rank + b) mod N` (a coprime to N). Here the permutation of a
stable table depends only on `seed`, so every window has the same hot ids; a table listed in
`drift_tables` gets a new permutation in every window, so its hot ids move (as user ids do from
day to day). Draws are independent across windows (`seed`, `window`)."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence

import numpy as np
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor


def affine_permutation(num_rows: int, rng: np.random.Generator) -> tuple[int, int]:
    """(a, b) with gcd(a, num_rows) == 1: rank r -> (a * r + b) mod num_rows is a bijection."""
    a = int(rng.integers(1, max(2, num_rows)))
    while math.gcd(a, num_rows) != 1:
        a += 1
    return a, int(rng.integers(0, max(1, num_rows)))


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
    (`workloads.workload_batches` with those tables `drift`, the others stable)."""
    from torchrec_hot.data.workloads import workload_batches  # it builds on this module

    kinds = dict.fromkeys(drift_tables, "drift")
    return workload_batches(tables, num_batches, batch_size, alpha, kinds, window, seed)
