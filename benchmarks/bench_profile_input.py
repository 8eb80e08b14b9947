"""The generated input of `bench_profile.py`: where it lives and how it is made.

WORK holds the input `.npy` and every profile the benchmark writes; CHUNK is the rows per chunk
of the input's generation and of the plain loops.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

WORK = Path("/tmp/torchrec_hot_bench")
CHUNK = 1 << 20  # rows per chunk of the plain loops


def make_input(samples: int, alpha: float) -> Path:
    """A samples x 26 int32 `.npy` of Zipf(alpha) ids over the 26 Criteo Terabyte
    cardinalities (seed 0) under WORK; reused when present."""
    from torchrec_hot.data.synthetic import CRITEO_TERABYTE, zipf_ranks

    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"tb_{samples}_{alpha}.npy"
    if path.exists():
        return path
    tmp = path.with_suffix(".part.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(samples, 26))
    rng = np.random.default_rng(0)
    for s in range(0, samples, CHUNK):
        e = min(samples, s + CHUNK)
        for j, rows in enumerate(CRITEO_TERABYTE):
            a = (2654435761 + j) % rows or 1
            while math.gcd(a, rows) != 1:
                a += 1
            out[s:e, j] = (zipf_ranks(rows, alpha, e - s, rng) * a + 7 * j) % rows
    out.flush()
    del out
    tmp.rename(path)
    return path
