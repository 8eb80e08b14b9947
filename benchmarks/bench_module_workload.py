"""Workload of `bench_module.py`: Criteo-shaped Zipf batches, profiled hot ids, glibc tuning.

`Data` draws one Zipf(alpha) id per feature and sample with a fixed rank -> id permutation per
table; `Data.hot_ids` picks, per table, its top rows in a profile of the same distribution, as
few as serve a given share of the lookups; `hot_share` measures that share on other batches.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

from torchrec_hot.data.synthetic import zipf_ranks
from torchrec_hot.data.workloads import affine_permutation


def tune_malloc() -> None:
    """glibc: serve large buffers from the heap and keep freed memory (no page faults per
    fresh buffer): M_MMAP_THRESHOLD = 1 GiB, M_TRIM_THRESHOLD = 2 GiB."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 30)
    libc.mallopt(-1, (1 << 31) - 1)


class Data:
    """Zipf ids with a fixed rank -> id permutation per table (id = (a r + b) mod N)."""

    def __init__(self, tables: list[EmbeddingBagConfig], alpha: float, seed: int) -> None:
        self.tables, self.alpha = tables, alpha
        rng = np.random.default_rng(seed)
        self.perm = [affine_permutation(t.num_embeddings, rng) for t in tables]

    def ids(self, i: int, size: int, rng: np.random.Generator) -> np.ndarray:
        n, (a, b) = self.tables[i].num_embeddings, self.perm[i]
        return (zipf_ranks(n, self.alpha, size, rng) * a + b) % n

    def batch(self, size: int, seed: tuple[int, ...]) -> KeyedJaggedTensor:
        """One KJT of `size` samples, one id per feature and sample."""
        rng = np.random.default_rng(list(seed))
        values = np.concatenate([self.ids(i, size, rng) for i in range(len(self.tables))])
        return KeyedJaggedTensor.from_lengths_sync(
            keys=[t.feature_names[0] for t in self.tables],
            values=torch.from_numpy(values),
            lengths=torch.ones(size * len(self.tables), dtype=torch.int32),
        )

    def hot_ids(self, share: float, samples: int, seed: int) -> dict[str, torch.Tensor]:
        """Per table: its most frequent ids in a profile of `samples` lookups, as few as
        serve `share` of them (sorted int64)."""
        rng = np.random.default_rng([seed, 1])
        out = {}
        for i, t in enumerate(self.tables):
            counts = np.bincount(self.ids(i, samples, rng), minlength=t.num_embeddings)
            order = np.argsort(-counts, kind="stable")
            need = int(np.searchsorted(np.cumsum(counts[order]), share * samples - 1e-9)) + 1
            out[t.name] = torch.from_numpy(np.sort(order[:need]))
        return out


def hot_share(kjts: list[KeyedJaggedTensor], hot: dict[str, torch.Tensor], tables) -> float:
    """Share of the lookups of `kjts` that hit hot ids."""
    hits = total = 0
    for kjt in kjts:
        for t in tables:
            v = kjt[t.feature_names[0]].values()
            hits += int(torch.isin(v, hot[t.name]).sum())
            total += v.numel()
    return hits / max(total, 1)
