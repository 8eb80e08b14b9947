"""Synthetic Criteo-shaped tables (the published cardinalities) and bounded Zipf ranks.

`zipf_ranks` draws row ranks from a bounded Zipf law (P(rank r) ~ r^-alpha, r = 1..N) by inverse
transform of its continuous approximation, with O(1) memory even for tables of tens of
millions of rows; `workloads.py` maps ranks to ids and builds the batches.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torchrec import EmbeddingBagConfig

# Sparse feature cardinalities, in feature order (public; see DESIGN.md).
CRITEO_KAGGLE: tuple[int, ...] = (
    1460,
    583,
    10131227,
    2202608,
    305,
    24,
    12517,
    633,
    3,
    93145,
    5683,
    8351593,
    3194,
    27,
    14992,
    5461306,
    10,
    5652,
    2173,
    4,
    7046547,
    18,
    15,
    286181,
    105,
    142572,
)
CRITEO_TERABYTE: tuple[int, ...] = (
    45833188,
    36746,
    17245,
    7413,
    20243,
    3,
    7114,
    1441,
    62,
    29275261,
    1572176,
    345138,
    10,
    2209,
    11267,
    128,
    4,
    974,
    14,
    48937457,
    11316796,
    40094537,
    452104,
    12606,
    104,
    35,
)
WORKLOADS: dict[str, tuple[int, ...]] = {
    "criteo-kaggle": CRITEO_KAGGLE,
    "criteo-terabyte": CRITEO_TERABYTE,
}


def criteo_tables(
    workload: str = "criteo-kaggle", scale: float = 1.0, embedding_dim: int = 128
) -> list[EmbeddingBagConfig]:
    """One `EmbeddingBagConfig` per sparse feature (`t_cat_i` / feature `cat_i`), every table's
    row count multiplied by `scale` (at least 1 row)."""
    from torchrec import EmbeddingBagConfig

    return [
        EmbeddingBagConfig(
            name=f"t_cat_{i}",
            embedding_dim=embedding_dim,
            num_embeddings=n,
            feature_names=[f"cat_{i}"],
        )
        for i, n in enumerate(workload_rows(workload, scale))
    ]


def workload_rows(workload: str = "criteo-kaggle", scale: float = 1.0) -> list[int]:
    """Rows of each of `workload`'s tables, multiplied by `scale` (at least 1 row); what
    `criteo_tables` builds, without importing TorchRec."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose from {sorted(WORKLOADS)}")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    return [max(1, int(round(n * scale))) for n in WORKLOADS[workload]]


def zipf_ranks(num_rows: int, alpha: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` ranks in [0, num_rows), rank 0 most likely, P(r) ~ (r + 1)^-alpha (approximately,
    by the continuous inverse CDF). int64."""
    u = rng.random(size)
    n = float(num_rows)
    if abs(alpha - 1.0) < 1e-9:
        x = np.exp(u * math.log(n + 1.0))
    else:
        e = 1.0 - alpha
        x = (u * ((n + 1.0) ** e - 1.0) + 1.0) ** (1.0 / e)
    return np.clip(np.floor(x).astype(np.int64) - 1, 0, num_rows - 1)
