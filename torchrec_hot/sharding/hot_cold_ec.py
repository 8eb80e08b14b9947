"""HotColdEmbeddingCollection: an EmbeddingCollection (sequence features) split hot/cold.

Each logical table `T` (N rows) with 0 < H < N hot ids becomes `T__hot` (H rows) and `T__cold`
(N - H rows), held by a stock `EmbeddingCollection` under the attribute `split_ec`, which
DistributedModelParallel shards with TorchRec's EmbeddingCollectionSharder under a plan keyed
`<module path>.split_ec`. The id remap is the EmbeddingBagCollection's (`remap/`).

Outside, the module looks like a stock `EmbeddingCollection` of the logical tables:
`forward(kjt) -> Dict[str, JaggedTensor]`, per logical feature the (number of ids, D) embeddings
of its ids in input order with the input's lengths; `state_dict()` / `load_state_dict()` use the
stock keys `embeddings.<T>.weight` (N, D). Nothing is pooled, so outputs, gradients and
optimizer updates are bit-identical to the stock module's: each id's row is read from the half
that holds it and put back at the id's position (a gather, whose gradient is a scatter of each
row exactly once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchrec import EmbeddingCollection, EmbeddingConfig, JaggedTensor, KeyedJaggedTensor
from torchrec.distributed.embedding import ShardedEmbeddingCollection

from torchrec_hot.sharding.hot_cold_tables import HotColdTables, HotIds
from torchrec_hot.tables.split import (
    COLD_SUFFIX,
    HOT_SUFFIX,
    SPLIT_EC_ATTR,
    Placement,
)


class HotColdEmbeddingCollection(HotColdTables):
    """A stock-compatible EmbeddingCollection whose tables are split into hot and cold parts.

    Args:
        tables: the logical tables (as for `EmbeddingCollection`); not modified.
        hot_ids: logical table name -> sorted, unique int64 ids (H,) of its hot rows. A table
            missing here, or with H == 0, stays whole and cold; with H == N, whole and hot.
        device: where the weights live (None: TorchRec's default, CPU).
        validate_ids: check in every forward that ids lie in [0, N) (under DMP every rank
            raises a bad id of any rank).
    """

    split_attr = SPLIT_EC_ATTR
    pooled = False

    def __init__(
        self,
        tables: Sequence[EmbeddingConfig],
        hot_ids: Mapping[str, HotIds],
        device: torch.device | None = None,
        *,
        validate_ids: bool = True,
    ) -> None:
        super().__init__()
        split_hot = self._init_tables(tables, hot_ids, validate_ids)
        inner_configs = [
            p for t in self._tables for p in self._part_configs(t, split_hot)
        ]
        self._init_inner(EmbeddingCollection(tables=inner_configs, device=device), split_hot, ())
        self._features = [(f, t.name) for t in self._tables for f in t.feature_names]

    def embedding_configs(self) -> list[EmbeddingConfig]:
        """The LOGICAL table configs (as given, feature names filled in as TorchRec does)."""
        return self._tables

    def forward(self, features: KeyedJaggedTensor) -> dict[str, JaggedTensor]:
        """Per logical feature of `features`, the embeddings of its ids, as the stock module."""
        inner = self.split_module
        out = inner(self._remapped(features, isinstance(inner, ShardedEmbeddingCollection)))
        keys = features.keys()
        index = {key: i for i, key in enumerate(keys)}
        start, stride = features.offset_per_key(), features.stride()
        result: dict[str, JaggedTensor] = {}
        for f, table in self._features:
            if f not in index:
                continue
            if self._placements[table] is not Placement.SPLIT:
                result[f] = out[f]
                continue
            i = index[f]  # f's ids are one slice of the values, its lengths one of the lengths
            is_hot = self.remapper.is_hot(table, features.values()[start[i] : start[i + 1]])
            # row k of cat(hot rows, cold rows) belongs at position order[k]; gather it back
            order = torch.cat([torch.nonzero(is_hot).flatten(), torch.nonzero(~is_hot).flatten()])
            where = torch.empty_like(order)
            where[order] = torch.arange(order.numel(), device=order.device)
            rows = torch.cat([out[f + HOT_SUFFIX].values(), out[f + COLD_SUFFIX].values()])
            result[f] = JaggedTensor(
                values=rows.index_select(0, where),
                lengths=features.lengths()[i * stride : (i + 1) * stride],
            )
        return result

    @classmethod
    def from_ec(
        cls, ec: EmbeddingCollection, hot_ids: Mapping[str, HotIds], *, validate_ids: bool = True
    ) -> HotColdEmbeddingCollection:
        """A hot/cold module with `ec`'s tables, device and weights (copied)."""
        module = cls(ec.embedding_configs(), hot_ids, device=ec.device, validate_ids=validate_ids)
        if ec.device.type != "meta":
            with torch.no_grad():
                module.load_state_dict(ec.state_dict())
        return module
