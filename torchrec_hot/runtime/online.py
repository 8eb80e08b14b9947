"""Online profiling: count, on the input's device, the ids a running job actually trains on.

    counter = OnlineCounter.for_module(model.sparse_arch.embedding_bag_collection)
    ...  each step: counter.update(batch.sparse_features)   # one index_add_ per feature
    ...  every N steps: counts = counter.reduce(); plan = rehot_plan(plan, counts); replan(...)

Only split tables are counted (the others have nothing to re-plan): one int64 counter per row
of each split table on the input's device (8 bytes per row; on a GPU that is HBM, so count on a
subset of steps or keep the counter on the host by passing device="cpu" where that matters).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torchrec import KeyedJaggedTensor

from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection


class OnlineCounter:
    """Per-row lookup counts of the split tables of one hot/cold module since the last reset.

    Args:
        table_of_feature: feature name -> logical table, for the tables to count.
        num_embeddings: logical table -> rows.
        device: where the counters live (the input's device).
    """

    def __init__(self, table_of_feature: dict[str, str], num_embeddings: dict[str, int],
                 device: torch.device | str = "cpu") -> None:
        self._table_of_feature = dict(table_of_feature)
        self._counts = {t: torch.zeros(n, dtype=torch.int64, device=device)
                        for t, n in num_embeddings.items()}

    @staticmethod
    def for_module(module: HotColdEmbeddingBagCollection,
                   device: torch.device | str = "cpu") -> OnlineCounter:
        split = {t.name: t for t in module.embedding_bag_configs()
                 if module.placements()[t.name].value == "split"}
        features = {f: name for name, t in split.items() for f in t.feature_names}
        return OnlineCounter(features, {n: t.num_embeddings for n, t in split.items()}, device)

    def update(self, kjt: KeyedJaggedTensor) -> None:
        """Counts one batch's ids (already validated by the module's forward); no host sync."""
        per_key = kjt.values().split(kjt.length_per_key())
        for key, ids in zip(kjt.keys(), per_key, strict=True):
            table = self._table_of_feature.get(key)
            if table is not None and ids.numel():
                counts = self._counts[table]
                counts.index_add_(0, ids.to(counts.device, torch.int64),
                                  torch.ones_like(ids, dtype=torch.int64, device=counts.device))

    def reduce(self) -> dict[str, np.ndarray]:
        """Counts summed over all ranks (collective under torch.distributed), as int64 arrays."""
        out = {}
        for table in sorted(self._counts):
            counts = self._counts[table].clone()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(counts)
            out[table] = counts.cpu().numpy()
        return out

    def reset(self) -> None:
        for counts in self._counts.values():
            counts.zero_()
