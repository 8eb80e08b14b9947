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
import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

from torchrec_hot.data.synthetic import zipf_ranks


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
    `window`; tables named in `drift_tables` have different hot ids in every window."""
    unknown = set(drift_tables) - {t.name for t in tables}
    if unknown:
        raise ValueError(f"drift tables {sorted(unknown)} are not among the tables")
    perms = {}
    for i, t in enumerate(tables):
        key = [seed, i, window + 1 if t.name in drift_tables else 0]
        perms[t.name] = affine_permutation(t.num_embeddings, np.random.default_rng(key))
    rng = np.random.default_rng([seed, 1_000_003, window])
    features = [(f, t) for t in tables for f in t.feature_names]
    for _ in range(num_batches):
        values = np.empty(batch_size * len(features), dtype=np.int64)
        for j, (_, t) in enumerate(features):
            a, b = perms[t.name]
            ranks = zipf_ranks(t.num_embeddings, alpha, batch_size, rng)
            values[j * batch_size : (j + 1) * batch_size] = (ranks * a + b) % t.num_embeddings
        yield KeyedJaggedTensor.from_lengths_sync(
            keys=[f for f, _ in features],
            values=torch.from_numpy(values),
            lengths=torch.ones(batch_size * len(features), dtype=torch.int32),
        )
