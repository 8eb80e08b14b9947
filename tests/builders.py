"""Builders shared by the tests: tables, profiles, models and plans (one place for each)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchrec import EmbeddingBagConfig

from torchrec_hot import PopularityProfile
from torchrec_hot.data.chunk import FeatureIds, IdChunk
from torchrec_hot.tables.allocation import TableDemand


def profile_of_ids(
    tables: Sequence[EmbeddingBagConfig], ids: Mapping[str, np.ndarray]
) -> PopularityProfile:
    """A profile of one batch in which sample s looks up row `ids[t][s]` of every table t
    (one id per sample and table; every table gets the same number of samples)."""
    sizes = {len(v) for v in ids.values()}
    if len(sizes) != 1:
        raise ValueError(f"every table needs the same number of samples, got {sizes}")
    chunk = IdChunk(
        sizes.pop(),
        {
            t.feature_names[0]: FeatureIds(torch.from_numpy(np.asarray(ids[t.name], np.int64)))
            for t in tables
        },
    )
    profile = PopularityProfile(tables)
    profile.update_chunk(chunk)
    return profile


def served_lookups(tables: Sequence[TableDemand], hot: Mapping[str, int]) -> int:
    """Lookups served by the `hot[name]` most accessed rows of each table."""
    return sum(int(t.sorted_counts[: hot[t.name]].sum()) for t in tables)
